#!/usr/bin/env node
// `npm run build`: the package in dist/, from the Rust crate and the TypeScript layer.
//
//   dist/wasm/vaultstore_idb.*    IndexedDB only: what a browser loads up front (small)
//   dist/wasm/vaultstore_full.*   IndexedDB + GlueSQL memory + SQL: Node, workerd, and browsers
//                                 on the first `backend: "memory"` or `"sql"` open
//   dist/{node,browser,workerd}.js + .d.ts   entry points (tsc), dist/node.cjs (esbuild)
//
// wasm-opt is npm's binaryen@132, never Debian's (its output fails at instantiation).
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ensureNodeModules, ensureWasmBindgen, ensureWasmTarget, root, run } from "./toolchain.mjs";

const dist = join(root, "dist");
// `--no-opt` skips wasm-opt (about a minute) for quick local iterations; packages never do.
const optimize = !process.argv.includes("--no-opt");
const bin = (name) => join(root, "node_modules", ".bin", name);

/** One wasm build: which cargo features it carries and the name of its files. */
const builds = [
  { name: "vaultstore_idb", features: "wasm,idb" },
  { name: "vaultstore_full", features: "wasm,idb,gluesql,sql" },
];

ensureWasmTarget();
ensureWasmBindgen();
ensureNodeModules();

rmSync(dist, { recursive: true, force: true });
mkdirSync(join(dist, "wasm"), { recursive: true });

for (const build of builds) {
  run("cargo", [
    "build", "--locked", "--release", "--lib",
    "--target", "wasm32-unknown-unknown",
    "--no-default-features", "--features", build.features,
  ]);
  run("wasm-bindgen", [
    "--target", "web",
    "--out-dir", join(dist, "wasm"),
    "--out-name", build.name,
    join(root, "target", "wasm32-unknown-unknown", "release", "vaultstore_wasm.wasm"),
  ]);
  const wasm = join(dist, "wasm", `${build.name}_bg.wasm`);
  if (optimize) run(bin("wasm-opt"), ["-Oz", "--enable-bulk-memory", "--enable-nontrapping-float-to-int", "--enable-sign-ext", "--enable-mutable-globals", "--enable-reference-types", "--enable-multivalue", wasm, "-o", wasm]);
}

run(bin("tsc"), ["-p", join(root, "js", "tsconfig.json")]);

// CommonJS for `require("vaultstore-wasm")`: the ESM Node entry bundled, with import.meta.url
// rebuilt from __filename.
run(bin("esbuild"), [
  join(dist, "node.js"),
  "--bundle", "--platform=node", "--format=cjs", "--target=node20",
  "--define:import.meta.url=__vaultstore_url",
  "--banner:js=const __vaultstore_url = require(\"node:url\").pathToFileURL(__filename).href;",
  `--outfile=${join(dist, "node.cjs")}`,
  "--log-level=warning",
]);

// The shipped types must type-check on their own, and say nothing as loose as `any`.
run(bin("tsc"), ["--noEmit", "--strict", "--skipLibCheck", "false", "--lib", "ES2022,DOM", "--types", "node",
  "--module", "NodeNext", "--moduleResolution", "NodeNext",
  join(dist, "node.d.ts"), join(dist, "browser.d.ts"), join(dist, "workerd.d.ts")]);
const publicTypes = readdirSync(dist).filter((f) => f.endsWith(".d.ts"));
for (const file of publicTypes) {
  const text = readFileSync(join(dist, file), "utf8");
  if (/\bany\b/.test(text.replace(/\/\*[\s\S]*?\*\/|\/\/.*$/gm, ""))) {
    throw new Error(`dist/${file} exposes \`any\` in the public API`);
  }
}

// Written last: a dist/ with this file is complete.
writeFileSync(join(dist, "BUILD"), `${new Date().toISOString()}\n`);
console.log(`\npackage built in ${dist}${existsSync(join(dist, "node.cjs")) ? "" : " (no CJS)"}`);
