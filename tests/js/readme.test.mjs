// The README's quick start, copied verbatim into a .mjs file, prints exactly what the README says
// in every runtime the README names: Node, Deno 2 and Bun 1 (DENO and BUN name their binaries;
// run-packed.mjs installs them from npm).
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { test } from "node:test";

function block(readme, marker) {
  const at = readme.indexOf(`<!-- ${marker} -->`);
  assert.ok(at >= 0, `README has a ${marker} block`);
  const match = readme.slice(at).match(/```\w*\n([\s\S]*?)```/);
  return match[1];
}

const readme = readFileSync("README.md", "utf8");
writeFileSync("quickstart.mjs", block(readme, "quickstart"));
const expected = block(readme, "quickstart-output");
const env = { ...process.env, NO_COLOR: "1" };

// The command lines the README's Runtimes table gives.
const runtimes = [
  ["Node", process.execPath, ["quickstart.mjs"]],
  ["Deno", process.env.DENO, ["run", "--allow-read", "quickstart.mjs"]],
  ["Bun", process.env.BUN, ["quickstart.mjs"]],
];

for (const [name, binary, args] of runtimes) {
  test(`the README quick start runs in ${name} and prints what the README says`, { skip: !binary && `${name} not installed` }, () => {
    const printed = execFileSync(binary, args, { encoding: "utf8", env });
    assert.equal(printed, expected);
  });
}
