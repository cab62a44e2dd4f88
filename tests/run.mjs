#!/usr/bin/env node
// `npm test`: install what a fresh machine lacks, then run every test level, stopping at the
// first failure. Each step prints what it does and how long it took.
import { ensureNodeModules, ensureWasmBindgen, ensureWasmTarget, run } from "../js/tools/toolchain.mjs";

const started = Date.now();
ensureWasmTarget();
ensureWasmBindgen();
ensureNodeModules();

// 1. Native: unit, known-answer, conformance (GlueSQL) and vault tests.
run("cargo", ["test", "--locked"]);

// 2. The core builds for wasm32 without the bindings.
run("cargo", ["check", "--locked", "--lib", "--target", "wasm32-unknown-unknown", "--no-default-features", "--features", "gluesql"]);

// 3. The JavaScript boundary, in Node.
run("cargo", ["test", "--locked", "--target", "wasm32-unknown-unknown", "--no-default-features", "--features", "wasm,gluesql", "--test", "wasm_node"]);

// 4. The package, and 5. the JS suite against the packed tarball.
run("node", ["js/tools/build.mjs"]);
run("node", ["tests/js/run-packed.mjs"]);

console.log(`\nAll test levels passed in ${((Date.now() - started) / 60000).toFixed(1)} min.`);
