#!/usr/bin/env node
// Pack the package, install the tarball into an empty folder, and run the JS suites there, as a
// user would: `import ... from "vaultstore-wasm"` resolves to the installed tarball, and no Rust
// toolchain is on PATH.
import { cpSync, readdirSync } from "node:fs";
import { delimiter, join } from "node:path";
import { ensureNpmFolder, root, run } from "../../js/tools/toolchain.mjs";
import { installPacked } from "./pack.mjs";

export const work = join(root, ".test-tmp", "packed");
// Dev dependencies the suites use next to the package: fake-indexeddb runs the indexeddb backend
// in Node; @libsql/client, the SQL backend on a local libSQL file; fast-check drives the
// property-based suite; edge-runtime is Vercel's Edge Runtime, and workers-types the types a
// Worker is checked against.
const devDependencies = ["fake-indexeddb", "@libsql/client", "fast-check"].map((name) => join(root, "node_modules", name));
const consumer = installPacked(work, [...devDependencies, "edge-runtime@4.0.1", "@cloudflare/workers-types@5.20261117.1"]);
// Deno and Bun, from npm (about 200 MB, kept between runs in .test-tmp/tools/).
const runtimes = join(root, ".test-tmp", "tools", "runtimes");
await ensureNpmFolder(runtimes, { deno: "2.9.6", bun: "1.4.5" });

for (const file of readdirSync(join(root, "tests", "js"))) {
  if (/\.test\.(mjs|cjs)$/.test(file) || /\.ts$/.test(file) || file === "helpers.mjs") {
    cpSync(join(root, "tests", "js", file), join(consumer, file));
  }
}
cpSync(join(root, "tests", "fixtures"), join(consumer, "fixtures"), { recursive: true });
cpSync(join(root, "README.md"), join(consumer, "README.md"));

// No Rust here: the installed package must not need it.
const path = process.env.PATH.split(delimiter).filter((p) => !/\.cargo|rustup/.test(p)).join(delimiter);
const env = { ...process.env, PATH: path };

// The shipped types, as a strict TypeScript user sees them: Node's resolution, a bundler's, and a
// Cloudflare Worker's (workers-types, the `workerd` condition, no DOM).
const tsc = (args) => run(join(root, "node_modules", ".bin", "tsc"), ["--noEmit", "--strict", "--target", "ES2022", ...args], { cwd: consumer, env });
tsc(["--module", "NodeNext", "--moduleResolution", "NodeNext", "--lib", "ES2022,DOM", "--types", "node", "--typeRoots", join(root, "node_modules", "@types"), "consumer.ts"]);
tsc(["--module", "ESNext", "--moduleResolution", "bundler", "--lib", "ES2022,DOM", "--typeRoots", join(consumer, "no-types"), "consumer.ts"]);
tsc(["--module", "ESNext", "--moduleResolution", "bundler", "--customConditions", "workerd", "--lib", "ES2022", "--types", "@cloudflare/workers-types", "worker.ts"]);

const tests = readdirSync(consumer).filter((f) => /\.test\.(mjs|cjs)$/.test(f)).sort();
const tools = {
  WORKERD: join(root, "node_modules", ".bin", "workerd"),
  ESBUILD: join(root, "node_modules", ".bin", "esbuild"),
  DENO: join(runtimes, "node_modules", ".bin", "deno"),
  BUN: join(runtimes, "node_modules", ".bin", "bun"),
};
run("node", ["--test", "--test-reporter=spec", ...tests], { cwd: consumer, env: { ...env, ...tools } });
