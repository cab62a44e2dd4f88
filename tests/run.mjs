#!/usr/bin/env node
// `npm test`: install what a fresh machine lacks, then run every test level, stopping at the
// first failure. Each step prints what it does and how long it took.
import { join } from "node:path";
import { ensureChromium, ensureNodeModules, ensureWasmBindgen, ensureWasmTarget, root, run } from "../js/tools/toolchain.mjs";

const started = Date.now();
ensureWasmTarget();
ensureWasmBindgen();
ensureNodeModules();
ensureChromium();

// 1. Native: unit, known-answer, conformance (GlueSQL, SQL on SQLite) and vault tests.
run("cargo", ["test", "--locked"]);

// 2. The core builds for wasm32 without the bindings.
run("cargo", ["check", "--locked", "--lib", "--target", "wasm32-unknown-unknown", "--no-default-features", "--features", "gluesql,sql"]);

// 3. wasm tests: the JavaScript boundary in Node; the conformance suite on IndexedDB and the
//    IndexedDB vault tests in headless Chromium. One build; the runner picks Node or Chromium
//    per test file.
run(
  "cargo",
  [
    "test", "--locked", "--target", "wasm32-unknown-unknown", "--no-default-features", "--features", "idb,gluesql,sql",
    "--test", "wasm_node", "--test", "storage_idb", "--test", "idb_browser",
  ],
  {
    env: {
      ...process.env,
      CHROMEDRIVER: process.env.CHROMEDRIVER ?? "/usr/bin/chromedriver",
      WASM_BINDGEN_TEST_WEBDRIVER_JSON: join(root, "tests", "browser", "webdriver.json"),
    },
  },
);

// 4. The package; 5. the JS suite against the packed tarball (libSQL included); 6. the storage
// conformance suite on D1 and Durable Object SQLite in workerd, through the packed package's
// adapters; 8. end to end in Chromium.
run("node", ["js/tools/build.mjs"]);
run("node", ["tests/js/run-packed.mjs"]);
run("node", ["tests/workers/run-conformance.mjs"]);
// 7. The example worker (www/worker) as users deploy it: wrangler's dry-run bundle in Miniflare on
//    D1 and on a Durable Object, and WebCrypto PBKDF2 capped as in production.
run("node", ["--test", "--test-reporter=spec", "tests/worker/example.test.mjs"]);
run("node", ["--test", "--test-reporter=spec", "tests/browser/e2e.test.mjs"], {
  env: { ...process.env, CONSUMER_DIR: join(root, ".test-tmp", "packed", "consumer") },
});

console.log(`\nAll test levels passed in ${((Date.now() - started) / 60000).toFixed(1)} min.`);
