// The size ceiling's ratchet (js/tools/sizes.mjs): a ceiling follows the measured size down, is
// never raised without VAULTSTORE_SIZE_RAISE=1, and npm test's build ignores the variables that
// would let a size pass.
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { CEILINGS_FILE, CEILING_MARGIN, ratchet, readCeilings, sizePolicy, writeCeilings } from "../../js/tools/sizes.mjs";
import { root } from "../../js/tools/toolchain.mjs";

const budgets = { browser: 150_000, edge: 1_000_000 };

test("a smaller measurement lowers the ceiling to it plus the margin", () => {
  const result = ratchet({ browser: 180_000 }, { browser: 178_200, edge: 434_000 }, { budgets, margin: 1_000 });
  assert.deepEqual(result.ceilings, { browser: 179_200 });
  assert.deepEqual(result.over, []);
  assert.equal(result.changes.length, 1);
  assert.match(result.changes[0], /lowered from 180\.0 kB to 179\.2 kB/);
});

test("a measurement within the margin leaves the ceiling alone", () => {
  const result = ratchet({ browser: 180_000 }, { browser: 179_500, edge: 434_000 }, { budgets, margin: 1_000 });
  assert.deepEqual(result.ceilings, { browser: 180_000 });
  assert.deepEqual(result.changes, []);
  assert.deepEqual(result.over, []);
});

test("growth above the ceiling fails and does not move it", () => {
  const result = ratchet({ browser: 179_200 }, { browser: 179_201, edge: 434_000 }, { budgets, margin: 1_000 });
  assert.deepEqual(result.over, ["browser"]);
  assert.deepEqual(result.ceilings, { browser: 179_200 }, "never raised silently");
  assert.deepEqual(result.changes, []);
});

test("only an explicit raise moves a ceiling up, and it says so", () => {
  const result = ratchet({ browser: 179_200 }, { browser: 185_000, edge: 434_000 }, { budgets, margin: 1_000, raise: true });
  assert.deepEqual(result.over, []);
  assert.deepEqual(result.ceilings, { browser: 186_000 });
  assert.match(result.changes[0], /RAISED from 179\.2 kB to 186\.0 kB/);
});

test("over a budget with no ceiling fails", () => {
  const result = ratchet({}, { browser: 140_000, edge: 1_000_001 }, { budgets, margin: 1_000 });
  assert.deepEqual(result.over, ["edge"]);
  assert.deepEqual(result.ceilings, {});
});

test("a met budget removes its ceiling: the budget is the limit from then on", () => {
  const result = ratchet({ browser: 179_200 }, { browser: 149_000, edge: 434_000 }, { budgets, margin: 1_000 });
  assert.deepEqual(result.ceilings, {});
  assert.deepEqual(result.over, []);
  assert.match(result.changes[0], /ceiling is removed/);
});

test("the ceilings file round-trips, and the committed one is a ceiling above the budget", () => {
  const dir = mkdtempSync(join(tmpdir(), "ceilings-"));
  try {
    const file = join(dir, "c.json");
    writeCeilings({ browser: 179_200 }, file);
    assert.deepEqual(readCeilings(file), { browser: 179_200 });
    assert.deepEqual(readCeilings(join(dir, "missing.json")), {});
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const committed = readCeilings(CEILINGS_FILE);
  assert.ok(committed.browser > 150_000 && committed.browser <= 280_000, `browser ceiling ${committed.browser}`);
  assert.equal(CEILING_MARGIN, 1_000);
});

test("VAULTSTORE_SIZE_BUDGET=warn and VAULTSTORE_SIZE_RAISE=1 count, except under --enforce-sizes", () => {
  const env = { VAULTSTORE_SIZE_BUDGET: "warn", VAULTSTORE_SIZE_RAISE: "1" };
  assert.deepEqual(sizePolicy(env, []), { warnOnly: true, raise: true });
  assert.deepEqual(sizePolicy({}, []), { warnOnly: false, raise: false });
  assert.deepEqual(sizePolicy(env, ["--enforce-sizes"]), { warnOnly: false, raise: false });
});

test("npm test builds with --enforce-sizes and without the caller's size variables", () => {
  const run = readFileSync(join(root, "tests", "run.mjs"), "utf8");
  assert.match(run, /run\("node", \["js\/tools\/build\.mjs", "--enforce-sizes"\], \{ env: buildEnv \}\)/);
  assert.match(run, /delete buildEnv\.VAULTSTORE_SIZE_BUDGET;/);
  assert.match(run, /delete buildEnv\.VAULTSTORE_SIZE_RAISE;/);
});
