// The benchmark's statistics and provenance (tests/benches/protocol.mjs, provenance.mjs,
// report.mjs): sides run in a seeded shuffled order, every ratio gets a bootstrap interval, a goal
// is met only when the whole interval is on its side, and a dist/ from another commit is refused.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { sourceState } from "../../js/tools/toolchain.mjs";
import { alternate, medianInterval, medianRatio, seededRandom, shuffle, verdict } from "../benches/protocol.mjs";
import { buildMismatch } from "../benches/provenance.mjs";
import { lines } from "../benches/report.mjs";

/** `n` numbers around `center`, spread ± `spread` (relative), from a seeded generator. */
function noisy(n, center, spread, seed) {
  const random = seededRandom(seed);
  return Array.from({ length: n }, () => center * (1 + spread * (2 * random() - 1)));
}

test("the order of the sides changes between rounds, the same way for the same seed", async () => {
  const orders = async (seed) => {
    const order = [];
    const side = (name) => async () => {
      order.push(name);
      return { ms: 1 };
    };
    const samples = await alternate(12, { package: side("package"), baseline: side("baseline"), nodeHkdf: side("nodeHkdf") }, seed);
    assert.deepEqual(Object.values(samples).map((s) => s.length), [12, 12, 12]);
    return Array.from({ length: 12 }, (_, round) => order.slice(round * 3, round * 3 + 3).join(","));
  };
  const first = await orders(5);
  assert.deepEqual(await orders(5), first, "a seed repeats its orders");
  assert.ok(new Set(first.map((o) => o.split(",")[0])).size >= 2, `the first side varies: ${first.join(" | ")}`);
  assert.notDeepEqual(await orders(6), first, "another seed, other orders");
  assert.deepEqual(shuffle([1, 2, 3, 4], seededRandom(1)).sort(), [1, 2, 3, 4]);
});

test("a clear difference gives a tight interval that decides the goal", () => {
  const fast = noisy(7, 50, 0.02, 1);
  const slow = noisy(7, 100, 0.02, 2);
  const r = medianRatio(fast, slow);
  assert.ok(r.low <= r.ratio && r.ratio <= r.high);
  assert.ok(r.low > 0.45 && r.high < 0.55, `[${r.low}, ${r.high}]`);
  assert.equal(verdict(r, 1.0), "met");
  assert.equal(verdict(medianRatio(slow, fast), 1.0), "not met");
});

test("a ratio of 0.91 inside the noise of 5 rounds is undecided, not met", () => {
  const pkg = noisy(5, 91, 0.3, 3);
  const base = noisy(5, 100, 0.3, 4);
  const r = medianRatio(pkg, base);
  assert.ok(r.low < 1 && r.high > 1, `[${r.low}, ${r.high}] should span 1`);
  assert.equal(verdict(r, 1.0), "undecided");
});

test("the median's interval holds the median", () => {
  const values = noisy(9, 10, 0.1, 9);
  const m = medianInterval(values);
  assert.ok(m.low <= m.value && m.value <= m.high);
  assert.ok(m.low >= Math.min(...values) && m.high <= Math.max(...values));
});

test("the report calls a goal met only from its interval, and has the node:crypto rows", () => {
  const config = { records1k: 1000, records10k: 10_000, records100k: 100_000, chunk: 5000, kdfDefault: 600_000 };
  const sample = (list) => list.map((ms) => ({ ms }));
  const results = {
    // Package at ~0.95× of the WebCrypto baseline with 30% noise: undecided against ≤ 1.0×.
    "node.sequentialCreate": { package: sample(noisy(5, 95, 0.3, 11)), baseline: sample(noisy(5, 100, 0.3, 12)), nodeHkdf: sample(noisy(5, 100, 0.02, 13)), nodePlain: sample(noisy(5, 40, 0.02, 14)) },
    // Clearly faster: met.
    "node.batchCreate": { package: sample(noisy(5, 50, 0.02, 15)), baseline: sample(noisy(5, 100, 0.02, 16)), nodeHkdf: sample(noisy(5, 95, 0.02, 17)), nodePlain: sample(noisy(5, 39, 0.02, 18)) },
  };
  const out = lines(config, results);
  const find = (operation, baseline) => out.find((l) => l.operation === operation && l.baselineWhat.startsWith(baseline));
  assert.equal(out.find((l) => l.runtime === "node" && l.operation.startsWith("10,000 × await tokenCreate")).met, "undecided");
  assert.equal(out.find((l) => l.runtime === "node" && l.operation === "tokensCreate(10,000)").met, "met");
  const hkdf = find("tokensCreate(10,000)", "node:crypto + HKDF");
  const plain = find("tokensCreate(10,000), against one key", "node:crypto, one key");
  assert.ok(hkdf && plain, "both node:crypto rows are reported");
  assert.ok(Math.abs(hkdf.ratio - 50 / 95) < 0.03, `ratio against node:crypto + HKDF ${hkdf.ratio}`);
  assert.ok(Math.abs(plain.ratio - 50 / 39) < 0.06, `ratio against node:crypto, one key ${plain.ratio}`);
  assert.ok(plain.ratioInterval.low <= plain.ratio && plain.ratio <= plain.ratioInterval.high);
});

test("the sync rows: the first sync against its 1.5× goal, one change O(1) only when no count grows with the vault", () => {
  const config = { records1k: 1000, records10k: 10_000, records100k: 100_000, chunk: 5000, kdfDefault: 600_000, syncRecords: 100_000, syncReplicas: 8, syncCycles: 10 };
  const sample = (list) => list.map((ms) => ({ ms }));
  const figures = (d1Read) => ({ requests: 3, rows: 2, bytes: 2600, d1Read, d1Written: 13, statements: 19 });
  const pull = { requests: 2, rows: 1, bytes: 1800, d1Read: 21, d1Written: 0, statements: 10 };
  const results = (bigRead) => ({
    "sync.firstSync": { package: sample(noisy(7, 130, 0.02, 21)), baseline: sample(noisy(7, 100, 0.02, 22)) },
    "sync.oneChange": { small: { records: 1000, push: figures(45), pull }, big: { records: 100_000, push: figures(bigRead), pull } },
    "sync.load": { package: noisy(7, 50, 0.1, 23).map((perSecond, i) => ({ ms: 1000, requests: 50, perSecond, p50: 100 + i, p95: 300 + i })) },
  });
  const sync = (out) => out.filter((l) => l.runtime === "sync");
  const flat = sync(lines(config, results(45)));
  assert.equal(flat.find((l) => l.operation.startsWith("first sync of 10,000")).met, "met", "1.3× the bulkAdd is within 1.5×");
  const push = (out) => out.find((l) => l.operation.includes("the changing replica's sync"));
  assert.equal(push(flat).met, "met");
  assert.equal(push(flat).show(push(flat).package), "3 / 2 / 45 / 13");
  assert.match(push(flat).goal.text, /100× the records/);
  // A full scan on the server: the D1 rows read grow with the vault, and the goal fails.
  const scanning = push(sync(lines(config, results(45 + 100_000))));
  assert.equal(scanning.met, "not met");
  assert.ok(scanning.ratio > 2000, `growth ${scanning.ratio}`);
  assert.equal(flat.find((l) => l.operation.includes("another replica's sync")).met, "met");
  const load = flat.find((l) => l.operation.endsWith("requests/s"));
  assert.match(load.operation, /^8 Node replicas/);
  assert.ok(load.valueInterval.low <= load.package && load.package <= load.valueInterval.high);
  assert.ok(flat.some((l) => l.operation.includes("p95")), "the p95 latency is reported");
  // Slower than 1.5× the bulkAdd, clearly: not met.
  const slow = { ...results(45), "sync.firstSync": { package: sample(noisy(7, 300, 0.02, 24)), baseline: sample(noisy(7, 100, 0.02, 25)) } };
  assert.equal(sync(lines(config, slow)).find((l) => l.operation.startsWith("first sync")).met, "not met");
});

test("a dist/ from another commit or another set of edits is refused", () => {
  const commit = "a".repeat(40);
  const build = (fields) => JSON.stringify({ built: "2026-12-02T00:00:00Z", commit, dirty: false, changes: "", names: false, optimized: true, ...fields });
  const clean = { commit, dirty: false, changes: "" };
  assert.equal(buildMismatch(build({}), clean), undefined);
  assert.match(buildMismatch(build({ commit: "b".repeat(40) }), clean), /built from bbbbbbb, the tree is at aaaaaaa/);
  assert.match(buildMismatch(build({}), { commit, dirty: true, changes: "1234" }), /uncommitted changes \(1234\)/);
  assert.match(buildMismatch(build({ dirty: true, changes: "1234" }), { commit, dirty: true, changes: "5678" }), /built from/);
  assert.equal(buildMismatch(build({ dirty: true, changes: "1234" }), { commit, dirty: true, changes: "1234" }), undefined);
  assert.match(buildMismatch("2026-11-30T13:22:14.000Z\n", clean), /older build script/);
  assert.match(buildMismatch(build({ optimized: false }), clean), /--no-opt/);
  assert.match(buildMismatch(build({ tsOnly: true }), clean), /--ts-only/);
});

test("the source state tells commits and uncommitted edits apart, and ignores what dist/ is not made of", () => {
  const dir = mkdtempSync(join(tmpdir(), "source-state-"));
  try {
    const git = (...args) => execFileSync("git", ["-c", "user.name=t", "-c", "user.email=t@t.invalid", ...args], { cwd: dir, stdio: "ignore" });
    git("init", "-q");
    mkdirSync(join(dir, "src"));
    mkdirSync(join(dir, "tests"));
    writeFileSync(join(dir, "src", "lib.rs"), "fn a() {}\n");
    writeFileSync(join(dir, "tests", "t.mjs"), "1\n");
    git("add", ".");
    git("commit", "-qm", "one");
    const clean = sourceState(dir);
    assert.match(clean.commit, /^[0-9a-f]{40}$/);
    assert.deepEqual([clean.dirty, clean.changes], [false, ""]);

    writeFileSync(join(dir, "tests", "t.mjs"), "2\n");
    assert.equal(sourceState(dir).dirty, false, "a test edit does not change what dist/ is built from");

    writeFileSync(join(dir, "src", "lib.rs"), "fn b() {}\n");
    const edited = sourceState(dir);
    assert.equal(edited.dirty, true);
    assert.match(edited.changes, /^[0-9a-f]{16}$/);
    writeFileSync(join(dir, "src", "lib.rs"), "fn c() {}\n");
    assert.notEqual(sourceState(dir).changes, edited.changes, "other edits, another state");
    writeFileSync(join(dir, "src", "lib.rs"), "fn b() {}\n");
    assert.equal(sourceState(dir).changes, edited.changes, "the same edits, the same state");

    writeFileSync(join(dir, "src", "new.rs"), "x\n");
    assert.notEqual(sourceState(dir).changes, edited.changes, "an untracked source file counts");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
