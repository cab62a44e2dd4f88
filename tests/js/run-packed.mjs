#!/usr/bin/env node
// Pack the package, install the tarball into an empty folder, and run the JS suites there, as a
// user would: `import ... from "vaultstore-wasm"` resolves to the installed tarball, and no Rust
// toolchain is on PATH.
import { execFileSync } from "node:child_process";
import { cpSync, mkdirSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { delimiter, join } from "node:path";
import { root, run } from "../../js/tools/toolchain.mjs";

export const work = join(root, ".test-tmp", "packed");
rmSync(work, { recursive: true, force: true });
mkdirSync(work, { recursive: true });

const packed = JSON.parse(
  execFileSync("npm", ["pack", "--json", "--pack-destination", work], { cwd: root, encoding: "utf8" }),
)[0];
const tarball = join(work, packed.filename);
console.log(`packed ${packed.filename}: ${packed.entryCount} files, ${(packed.size / 1024).toFixed(0)} KiB`);

const consumer = join(work, "consumer");
mkdirSync(consumer);
writeFileSync(join(consumer, "package.json"), JSON.stringify({ name: "consumer", private: true, type: "module" }));
// fake-indexeddb (a dev dependency) lets one suite run the indexeddb backend in Node;
// @libsql/client, the SQL backend on a local libSQL file.
const devDependency = (name) => join(root, "node_modules", name);
run(
  "npm",
  ["install", "--no-audit", "--no-fund", "--ignore-scripts", tarball, devDependency("fake-indexeddb"), devDependency("@libsql/client")],
  { cwd: consumer },
);

for (const file of readdirSync(join(root, "tests", "js"))) {
  if (/\.test\.(mjs|cjs)$/.test(file) || file === "consumer.ts" || file === "helpers.mjs") {
    cpSync(join(root, "tests", "js", file), join(consumer, file));
  }
}
cpSync(join(root, "tests", "fixtures"), join(consumer, "fixtures"), { recursive: true });
cpSync(join(root, "README.md"), join(consumer, "README.md"));

// No Rust here: the installed package must not need it.
const path = process.env.PATH.split(delimiter).filter((p) => !/\.cargo|rustup/.test(p)).join(delimiter);
const env = { ...process.env, PATH: path };

// The shipped types, as a strict TypeScript user sees them.
run(join(root, "node_modules", ".bin", "tsc"), [
  "--noEmit", "--strict", "--target", "ES2022", "--module", "NodeNext", "--moduleResolution", "NodeNext",
  "--lib", "ES2022,DOM", "--types", "node", "--typeRoots", join(root, "node_modules", "@types"), "consumer.ts",
], { cwd: consumer, env });

const tests = readdirSync(consumer).filter((f) => /\.test\.(mjs|cjs)$/.test(f)).sort();
const tools = { WORKERD: join(root, "node_modules", ".bin", "workerd"), ESBUILD: join(root, "node_modules", ".bin", "esbuild") };
run("node", ["--test", "--test-reporter=spec", ...tests], { cwd: consumer, env: { ...env, ...tools } });
