// The README's quick start, copied verbatim into a .mjs file, prints what the README says.
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

test("the README quick start runs and prints what it says", () => {
  const readme = readFileSync("README.md", "utf8");
  writeFileSync("quickstart.mjs", block(readme, "quickstart"));
  const printed = execFileSync(process.execPath, ["quickstart.mjs"], { encoding: "utf8" });
  assert.equal(printed, block(readme, "quickstart-output"));
});
