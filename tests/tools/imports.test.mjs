// `npm start`, `npm run build`, `npm test` and `npm run bench` run on a fresh clone before any
// `npm ci`: their scripts (everything under js/tools/, tests/run.mjs, tests/benches/bench.mjs)
// and every module they import statically may import only Node built-ins and this repository's
// own files at module load; an npm package is imported with `await import()` once installed.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync, readdirSync } from "node:fs";
import { builtinModules } from "node:module";
import { dirname, join, relative, resolve } from "node:path";
import { test } from "node:test";
import { root } from "../../js/tools/toolchain.mjs";

const { init, parse } = await import("es-module-lexer");
await init;

const entries = [
  ...readdirSync(join(root, "js", "tools")).filter((f) => f.endsWith(".mjs")).map((f) => join(root, "js", "tools", f)),
  join(root, "tests", "run.mjs"),
  join(root, "tests", "benches", "bench.mjs"),
];

/** Bare specifiers imported statically by `entry` or any module it reaches statically. */
function staticPackages(entry) {
  const seen = new Set();
  const found = [];
  const queue = [entry];
  while (queue.length > 0) {
    const file = queue.shift();
    if (seen.has(file)) continue;
    seen.add(file);
    const [imports] = parse(readFileSync(file, "utf8"));
    for (const { n: specifier, d } of imports) {
      if (d !== -1 || !specifier) continue; // dynamic import() and import.meta are fine
      if (specifier.startsWith(".")) queue.push(resolve(dirname(file), specifier));
      else if (!specifier.startsWith("node:") && !builtinModules.includes(specifier)) found.push(`${relative(root, file)} imports "${specifier}"`);
    }
  }
  return found;
}

for (const entry of entries) {
  test(`${relative(root, entry)} imports no npm package at module load`, () => {
    assert.deepEqual(staticPackages(entry), []);
  });
}

test("the check sees a static import of an npm package", () => {
  const [imports] = parse('import { x } from "es-module-lexer";\nconst y = await import("playwright-core");');
  assert.deepEqual(imports.map((i) => [i.n, i.d === -1]), [["es-module-lexer", true], ["playwright-core", false]]);
});

test("build.mjs reads the wasm from CARGO_TARGET_DIR when it is set", () => {
  const script = 'import { targetDir } from "./js/tools/toolchain.mjs"; console.log(targetDir);';
  const read = (env) => execFileSync(process.execPath, ["--input-type=module", "-e", script], { cwd: root, env: { ...process.env, ...env }, encoding: "utf8" }).trim();
  assert.equal(read({ CARGO_TARGET_DIR: "/elsewhere/target" }), "/elsewhere/target");
  assert.equal(read({ CARGO_TARGET_DIR: "" }), join(root, "target"));
  const build = readFileSync(join(root, "js", "tools", "build.mjs"), "utf8");
  assert.match(build, /join\(targetDir, "wasm32-unknown-unknown", build\.profile, "vaultstore_wasm\.wasm"\)/);
  assert.doesNotMatch(build, /join\(root, "target", "wasm32/);
});
