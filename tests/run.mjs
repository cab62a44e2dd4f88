#!/usr/bin/env node
// `npm test`: install what a fresh machine lacks, then run every test level, stopping at the
// first failure. Each step prints what it does and how long it took. Only Node built-ins and this
// repository's own modules are imported at module load (nothing is installed yet).
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { ensureChromium, ensureFirefox, ensureNodeModules, ensureRustComponents, ensureWasmBindgen, ensureWasmTarget, root, run } from "../js/tools/toolchain.mjs";

const started = Date.now();
ensureWasmTarget();
ensureRustComponents();
ensureWasmBindgen();
ensureNodeModules();
ensureChromium();
const geckodriver = ensureFirefox();

// 0. Formatting, checked before anything is built; then the build tools' own logic, in seconds:
//    the size ceiling's ratchet, the benchmark's statistics and provenance check, and that every
//    entry script loads with nothing installed.
run("cargo", ["fmt", "--check"]);
run("node", ["--test", "--test-reporter=spec", "tests/tools/"]);

// npm test's own build checks the size limits whatever the caller's environment says: a
// VAULTSTORE_SIZE_BUDGET=warn (or a ceiling raise) left in a shell must not pass it
// (--enforce-sizes ignores both; the fresh clone's builds get neither).
const buildEnv = { ...process.env };
delete buildEnv.VAULTSTORE_SIZE_BUDGET;
delete buildEnv.VAULTSTORE_SIZE_RAISE;

// 1. Native: unit, known-answer, conformance (GlueSQL, SQL on SQLite) and vault tests.
run("cargo", ["test", "--locked"]);

// 2. Lints, as errors: src/lib.rs denies unwrap/expect/panic, which only clippy enforces. Native
//    with every target; wasm32 as each engine is built (the browser's IndexedDB-only engine, and
//    the full one with its wasm tests; the benches need rusqlite, which is native-only); and the
//    core without the bindings, which must build for wasm32 on its own.
const wasm32 = ["--locked", "--target", "wasm32-unknown-unknown", "--no-default-features"];
run("cargo", ["clippy", "--locked", "--all-targets", "--", "-D", "warnings"]);
run("cargo", ["clippy", ...wasm32, "--lib", "--features", "wasm,idb", "--", "-D", "warnings"]);
run("cargo", ["clippy", ...wasm32, "--lib", "--tests", "--features", "idb,gluesql,sql,snapshot-import", "--", "-D", "warnings"]);
run("cargo", ["clippy", ...wasm32, "--lib", "--features", "gluesql,sql", "--", "-D", "warnings"]);

// 3. wasm tests: the JavaScript boundary in Node; the conformance suite on IndexedDB and the
//    IndexedDB vault tests in headless Chromium, then the same two suites in headless Firefox
//    ESR: their IndexedDB is not the same code (Firefox committed the rest of a transaction
//    whose write failed after `commit()`). One build; the runner picks Node or the browser per
//    test file, and the browser by which driver it is given.
const wasmTests = ["test", "--locked", "--target", "wasm32-unknown-unknown", "--no-default-features", "--features", "idb,gluesql,sql,snapshot-import"];
const webdriver = (env) => {
  const driven = { ...process.env, ...env };
  // The runner takes GECKODRIVER before CHROMEDRIVER: only the one named here may be set.
  for (const name of ["GECKODRIVER", "CHROMEDRIVER"]) if (!(name in env)) delete driven[name];
  // The runner's limit is for a whole test file, 20 s by default; the IndexedDB suite takes
  // about that on a busy 2-core machine. A hang still fails, after 5 minutes.
  driven.WASM_BINDGEN_TEST_TIMEOUT = process.env.WASM_BINDGEN_TEST_TIMEOUT ?? "300";
  return { env: driven };
};
run("cargo", [...wasmTests, "--test", "wasm_node", "--test", "storage_idb", "--test", "idb_browser"], webdriver({
  CHROMEDRIVER: process.env.CHROMEDRIVER ?? "/usr/bin/chromedriver",
  WASM_BINDGEN_TEST_WEBDRIVER_JSON: join(root, "tests", "browser", "webdriver.json"),
}));
run("cargo", [...wasmTests, "--test", "storage_idb", "--test", "idb_browser"], webdriver({
  GECKODRIVER: geckodriver,
  WASM_BINDGEN_TEST_WEBDRIVER_JSON: join(root, "tests", "browser", "webdriver-firefox.json"),
}));

// 4. The package (with its download sizes); 5. the JS suite against the packed tarball (libSQL
//    included); 6. the storage conformance suite on D1 and Durable Object SQLite in workerd,
//    through the packed package's adapters; 7. the example worker (www/worker) as users deploy
//    it: wrangler's dry-run bundle in Miniflare on D1 and on a Durable Object, WebCrypto PBKDF2
//    capped as in production; 8. the bundler matrix; 9. end to end in Chromium (the package's
//    pages again in Firefox); 10. the benchmark, once with tiny counts, as a smoke test: it
//    fails if a benchmark throws or disagrees with its baseline, never on timings. 11. The
//    README's commands on a fresh clone of
//    HEAD (tests/tools/fresh-clone.mjs), with no node_modules and no dist/ to start from:
//    `npm start` (the demo used in Chromium), then `npm run bench -- --quick`, which runs
//    `npm run build` first.
const consumer = join(root, ".test-tmp", "packed", "consumer");
run("node", ["js/tools/build.mjs", "--enforce-sizes"], { env: buildEnv });
run("node", ["js/tools/docs.mjs", "--check"]); // js/REFERENCE.md is what the doc comments generate
run("node", ["tests/js/run-packed.mjs"]);
run("node", ["tests/workers/run-conformance.mjs"]);
run("node", ["--test", "--test-reporter=spec", "tests/worker/example.test.mjs"]);
const packed = join(root, ".test-tmp", "packed");
const tarball = join(packed, readdirSync(packed).find((f) => f.endsWith(".tgz")));
run("node", ["--test", "--test-reporter=spec", "tests/bundlers/bundlers.test.mjs"], { env: { ...process.env, TARBALL: tarball } });
run("node", ["--test", "--test-reporter=spec", "tests/browser/e2e.test.mjs", "tests/browser/demo.test.mjs", "tests/browser/concurrency.test.mjs",
  "tests/browser/passkey.test.mjs", "tests/browser/sync.test.mjs"], {
  env: { ...process.env, CONSUMER_DIR: consumer, TEST_BROWSER: "chromium" },
});
// The package's end-to-end and two-tab tests again in Firefox ESR: the packaged glue, the lazy
// GlueSQL engine, quota and another tab's upgrade on Firefox's own IndexedDB.
run("node", ["--test", "--test-reporter=spec", "tests/browser/e2e.test.mjs", "tests/browser/concurrency.test.mjs"], {
  env: { ...process.env, CONSUMER_DIR: consumer, TEST_BROWSER: "firefox" },
});
run("node", ["tests/benches/bench.mjs", "--quick"], { env: { ...process.env, CONSUMER_DIR: consumer } });
run("node", ["tests/tools/fresh-clone.mjs"], { env: buildEnv });

console.log(`\nAll test levels passed in ${((Date.now() - started) / 60000).toFixed(1)} min.`);
