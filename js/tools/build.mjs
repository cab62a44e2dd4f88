#!/usr/bin/env node
// `npm run build`: the package in dist/, from the Rust crate and the TypeScript layer.
//
//   dist/wasm/vaultstore_idb.*    IndexedDB only: what a browser loads on its first open (small)
//   dist/wasm/vaultstore_full.*   IndexedDB + GlueSQL memory + SQL + snapshot import: Node,
//                                 workerd, and browsers on the first `backend: "memory"` or
//                                 `"sql"` open, or an open from a snapshot
//   dist/{node,browser,workerd}.js + .d.ts   entry points (tsc), dist/node.cjs (esbuild)
//
// The browser's part comes first: when `npm start` runs this script (with an IPC channel), it is
// told as soon as the IndexedDB engine and the JavaScript are in dist/, and serves the demo while
// the GlueSQL engine (most of the build time) is built.
//
//   --no-opt   skip wasm-opt (about 60 s) for quick local iterations; packages never do. An
//              unchanged engine's wasm-opt output is reused anyway (wasm-opt-cache.mjs).
//   --ts-only  rebuild only the TypeScript layer, keeping the wasm already in dist/wasm
//   --names    keep wasm function names, for profiles (tests/benches/profile.mjs); much bigger,
//              so the size budgets are not checked
//   --enforce-sizes   ignore VAULTSTORE_SIZE_BUDGET and VAULTSTORE_SIZE_RAISE (`npm test`)
//
// dist/BUILD, written last, names what dist/ was built from (JSON: commit, dirty, changes; see
// toolchain.mjs sourceState): `npm run bench` refuses a dist/ from another source state.
//
// wasm-opt is npm's binaryen@132, never Debian's (its output fails at instantiation).
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { formatBytes, measureSizes, ratchet, readCeilings, sizePolicy, writeCeilings } from "./sizes.mjs";
import { ensureNodeModules, ensureWasmBindgen, ensureWasmTarget, root, run, sourceState, targetDir } from "./toolchain.mjs";
import { optimizeCached } from "./wasm-opt-cache.mjs";

const dist = join(root, "dist");
const optimize = !process.argv.includes("--no-opt");
const tsOnly = process.argv.includes("--ts-only");
const names = process.argv.includes("--names");
const bin = (name) => join(root, "node_modules", ".bin", name);

/**
 * One wasm build: the cargo features it carries, the name of its files, the cargo profile and
 * the wasm-opt level. The IndexedDB engine is what a browser downloads, so it is optimised for
 * size (its budget is enforced below); the full engine serves Node and workers, where speed
 * matters and the size budget leaves room, so it is optimised for speed (Cargo.toml). For the
 * IndexedDB engine, wasm-opt's -Os gzips 0.9 kB smaller than -Oz (bigger before gzip, but what
 * a browser downloads is the gzip; measured with binaryen 132 on this crate), and -Os again
 * after flattening and re-looping the code and after GUFA's whole-program type flow 1.7 kB
 * smaller than -Os alone, for about 25 s more of wasm-opt; the engine's own wasm time in a
 * Chromium profile of tokensRead(10,000) did not move (README, Performance, 7 December).
 *
 * Both builds also tell wasm-opt that the lowest 1 kB of memory is unused, so that it folds a
 * constant added to an address into the load or store (1.2 kB smaller gzipped for the IndexedDB
 * engine). Rust's wasm targets put the stack first, below 1 MiB and growing down, so only a
 * stack about to overflow reaches that kilobyte; there, an access the folding changes traps
 * (out of bounds) instead of wrapping. And both drop the `producers` and `target_features`
 * sections, which name the tools and features for other tools and which no runtime reads
 * (0.2 kB).
 */
const builds = [
  { name: "vaultstore_idb", features: "wasm,idb", profile: "release", opt: ["--low-memory-unused", "-Os", "--flatten", "--rereloop", "-Os", "--gufa", "-Os", "--strip-producers", "--strip-target-features"] },
  { name: "vaultstore_full", features: "wasm,idb,gluesql,sql,snapshot-import", profile: "release-speed", opt: ["--low-memory-unused", "-O3", "--strip-producers", "--strip-target-features"] },
];

/**
 * Panic locations name their source files, and so where the engine was built: the crates'
 * folder in this machine's cargo registry (`/root/.cargo/registry/src/index.crates.io-<hash>/…`).
 * Mapped to `crates/…`, the engine no longer depends on the user or machine that built it (85
 * bytes smaller gzipped, too). The standard library's paths are `/rustc/<commit>/…` already,
 * which no flag of a stable toolchain maps. Passed with `--config`, which adds to the rustflags
 * of `.cargo/config.toml` rather than replacing them.
 */
function remapFlags() {
  const registry = join(process.env.CARGO_HOME ?? join(homedir(), ".cargo"), "registry", "src");
  const flags = existsSync(registry) ? readdirSync(registry).map((index) => `--remap-path-prefix=${join(registry, index)}=crates`) : [];
  return ["--config", `target.wasm32-unknown-unknown.rustflags=${JSON.stringify(flags)}`];
}

function buildWasm(build) {
  run("cargo", [
    "build", "--locked", "--profile", build.profile, "--lib",
    "--target", "wasm32-unknown-unknown",
    "--no-default-features", "--features", build.features,
    ...remapFlags(),
  ]);
  run("wasm-bindgen", [
    ...(names ? ["--keep-debug"] : []),
    "--target", "web",
    "--out-dir", join(dist, "wasm"),
    "--out-name", build.name,
    join(targetDir, "wasm32-unknown-unknown", build.profile, "vaultstore_wasm.wasm"),
  ]);
  const wasm = join(dist, "wasm", `${build.name}_bg.wasm`);
  const features = ["bulk-memory", "nontrapping-float-to-int", "sign-ext", "mutable-globals", "reference-types", "multivalue", "simd"];
  if (!optimize) return;
  const args = [...build.opt, ...(names ? ["-g"] : []), ...features.map((f) => `--enable-${f}`)];
  const cached = optimizeCached({
    dir: join(targetDir, "wasm-opt-cache"),
    version: JSON.parse(readFileSync(join(root, "node_modules", "binaryen", "package.json"), "utf8")).version,
    args,
    wasm,
    optimize: (args, wasm) => run(bin("wasm-opt"), [...args, wasm, "-o", wasm]),
  });
  if (cached) console.log(`\n✔ wasm-opt ${build.opt.join(" ")}: ${build.name}_bg.wasm unchanged since an earlier build, its optimised output reused (target/wasm-opt-cache)`);
}

ensureNodeModules();
rmSync(join(dist, "BUILD"), { force: true });
// Read before building: what the build is made of, not what the tree holds once it is done.
const source = sourceState();
if (tsOnly) {
  if (!builds.every((b) => existsSync(join(dist, "wasm", `${b.name}_bg.wasm`)))) {
    throw new Error("--ts-only needs the wasm of a previous full build in dist/wasm");
  }
  for (const file of readdirSync(dist)) if (file !== "wasm") rmSync(join(dist, file), { recursive: true, force: true });
} else {
  ensureWasmTarget();
  ensureWasmBindgen();
  rmSync(dist, { recursive: true, force: true });
  mkdirSync(join(dist, "wasm"), { recursive: true });
  buildWasm(builds[0]);
  if (process.send) {
    // What a browser page needs, transpiled without type-checking (that needs the full engine's
    // types); tsc replaces these files below. Not types.ts: it has no code, and a dist/types.js
    // would shadow it when tsc resolves the glue's `import type … from "../types.js"`.
    const sources = readdirSync(join(root, "js")).filter((f) => f.endsWith(".ts") && !f.endsWith(".d.ts") && f !== "types.ts");
    run(bin("esbuild"), [...sources.map((f) => join(root, "js", f)),
      "--format=esm", "--target=es2022", `--outdir=${dist}`, "--log-level=warning"]);
    process.send({ browserReady: true });
  }
  buildWasm(builds[1]);
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

// What a browser downloads without a bundler (issue 8's budget): the browser entry with the
// TypeScript layer it imports, as one minified module, and the IndexedDB engine's glue, minified.
// The glue stays a file of its own next to its .wasm, so its `new URL(…, import.meta.url)`
// still resolves; the full engine stays a separate file, imported on demand. Node and workerd
// keep the readable modules.
// The passkey ceremony (webauthn.js) stays a module of its own too, imported on a passkey's first use.
run(bin("esbuild"), [join(dist, "browser.js"), "--bundle", "--minify", "--format=esm", "--target=es2022",
  "--external:./wasm/*", "--external:./webauthn.js", "--allow-overwrite", `--outfile=${join(dist, "browser.js")}`, "--log-level=warning"]);
run(bin("esbuild"), [join(dist, "webauthn.js"), "--minify", "--format=esm", "--target=es2022",
  "--allow-overwrite", `--outfile=${join(dist, "webauthn.js")}`, "--log-level=warning"]);
run(bin("esbuild"), [join(dist, "wasm", "vaultstore_idb.js"), "--minify", "--format=esm", "--target=es2022",
  "--allow-overwrite", `--outfile=${join(dist, "wasm", "vaultstore_idb.js")}`, "--log-level=warning"]);

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

// No entry may wait at import: bundlers targeting es2020 (Vite's default) refuse top-level await.
const { build } = await import("esbuild");
for (const entry of ["browser.js", "node.js", "workerd.js"]) {
  await build({
    entryPoints: [join(dist, entry)], bundle: true, write: false, format: "esm", target: "es2020",
    platform: entry === "node.js" ? "node" : "browser", external: ["*.wasm"], logLevel: "silent",
  }).catch((error) => {
    throw new Error(`dist/${entry} does not bundle for es2020 (top-level await?): ${error.message}`);
  });
}

// Written last: a dist/ with this file is complete.
writeFileSync(join(dist, "BUILD"), `${JSON.stringify({ built: new Date().toISOString(), ...source, names, optimized: optimize, tsOnly }, null, 2)}\n`);
console.log(`\npackage built in ${dist}${existsSync(join(dist, "node.cjs")) ? "" : " (no CJS)"}`);

// The download budgets of issue 8 (gzip -9; see sizes.mjs). The build fails over a budget, or,
// while a budget is not met yet, over its ceiling (js/tools/size-ceilings.json): a size may not
// grow, and a ceiling follows the measured size down (the file is rewritten; commit it).
// VAULTSTORE_SIZE_BUDGET=warn turns the failure into a warning (`npm start` serves the demo
// regardless; `npm test` never passes it on); VAULTSTORE_SIZE_RAISE=1 raises a ceiling to the
// measured size plus the margin, and says so.
if (names || !optimize) {
  console.log(`(${names ? "--names" : "--no-opt"}: size budgets not checked)`);
  process.exit(0);
}
const ceilings = readCeilings();
const sizes = await measureSizes(root, join(root, "target", "size-edge"), bin("wrangler"), ceilings);
for (const size of sizes) {
  const enforced = size.limit === size.budget ? "" : `; not met yet, the build fails above its ceiling, ${formatBytes(size.limit)}`;
  console.log(`${size.ok ? "✔" : "✘"} ${size.what}: ${formatBytes(size.gzip)} gzip (budget ${formatBytes(size.budget)}${enforced})`);
}
const { warnOnly, raise } = sizePolicy(process.env, process.argv.slice(2));
const result = ratchet(ceilings, Object.fromEntries(sizes.map((size) => [size.name, size.gzip])), { raise });
if (result.changes.length > 0) {
  writeCeilings(result.ceilings);
  for (const change of result.changes) console.log(`size ceiling: ${change}`);
  console.log("(js/tools/size-ceilings.json rewritten: commit it)");
}
if (result.over.length > 0) {
  const over = sizes.filter((size) => result.over.includes(size.name)).map((size) => `${size.name} ${formatBytes(size.gzip)} > ${formatBytes(size.limit)}`);
  const message = `over the size limit: ${over.join(", ")}`;
  if (!warnOnly) {
    console.error(`\n${message} (VAULTSTORE_SIZE_BUDGET=warn makes this a warning; VAULTSTORE_SIZE_RAISE=1 raises a ceiling on purpose)`);
    process.exit(1);
  }
  console.warn(`\nwarning: ${message} (VAULTSTORE_SIZE_BUDGET=warn)`);
}
