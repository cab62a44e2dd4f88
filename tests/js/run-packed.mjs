#!/usr/bin/env node
// Pack the package, install the tarball into an empty folder, and run the JS suites there, as a
// user would: `import ... from "vaultstore-wasm"` resolves to the installed tarball, and no Rust
// toolchain is on PATH.
import { cpSync, readdirSync } from "node:fs";
import { delimiter, join } from "node:path";
import { root, run } from "../../js/tools/toolchain.mjs";
import { installPacked } from "./pack.mjs";

export const work = join(root, ".test-tmp", "packed");
// fake-indexeddb (a dev dependency) lets one suite run the indexeddb backend in Node.
const consumer = installPacked(work, [join(root, "node_modules", "fake-indexeddb")]);

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
