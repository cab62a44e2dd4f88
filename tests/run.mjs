#!/usr/bin/env node
// `npm test`: install what a fresh machine lacks, then run every test level, stopping at the
// first failure. Each step prints what it does and how long it took.
import { execFileSync } from "node:child_process";

function run(cmd, args, opts = {}) {
  const started = Date.now();
  console.log(`\n▶ ${cmd} ${args.join(" ")}`);
  execFileSync(cmd, args, { stdio: "inherit", ...opts });
  console.log(`✔ ${cmd} ${args[0] ?? ""} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
}

function output(cmd, args) {
  try {
    return execFileSync(cmd, args, { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] });
  } catch {
    return "";
  }
}

// 1. Toolchain: the wasm target (a fresh machine has x86_64 only).
if (!output("rustup", ["target", "list", "--installed"]).includes("wasm32-unknown-unknown")) {
  run("rustup", ["target", "add", "wasm32-unknown-unknown"]);
}

// 2. Native: unit, known-answer, conformance (GlueSQL) and vault tests.
run("cargo", ["test", "--locked"]);

// 3. The core builds for wasm32 with the GlueSQL backend.
run("cargo", ["build", "--locked", "--target", "wasm32-unknown-unknown", "--features", "gluesql"]);

console.log("\nAll test levels passed.");
