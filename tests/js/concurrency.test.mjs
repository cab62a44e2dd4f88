// Concurrent calls on one memory Vault in Node, as a worker serving many requests makes them:
// a rekey runs while other calls renew, soft-delete, restore, update, create and delete. The rekey
// yields to the event loop while it works, so they interleave with it. Nothing that resolved may
// be lost, and every value opens with exactly the password the outcome implies.
import assert from "node:assert/strict";
import { test } from "node:test";
import { open } from "./helpers.mjs";

const OLD = "the old password";
const NEW = "the new password";

for (const [kind, options] of [
  ["key check", { passwordIdentity: false }],
  ["re-wrap", { passwordIdentity: true }],
  ["rotation", { passwordIdentity: true, rotate: true }],
]) {
  test(`one memory Vault: a rekey (${kind}) and a stream of writes, nothing lost`, async () => {
    const v = await open({ passwordIdentity: options.passwordIdentity });
    const values = Array.from({ length: 3000 }, (_, i) => `value ${i}`);
    const tokens = await v.tokensCreate(values, OLD);
    const want = new Map(tokens.map((t, i) => [t, { value: values[i], soft: false, expiresAt: null }]));
    let state = 12345;
    const random = () => ((state = (state * 1664525 + 1013904223) >>> 0) / 2 ** 32);
    const live = [...tokens];
    let done = false;
    // When each write started and resolved, on one clock with the rekey's progress reports.
    const spans = [];
    const writer = (async () => {
      let resolved = 0;
      for (let i = 0; !done; i++) {
        const startedAt = performance.now();
        const token = live[Math.floor(random() * live.length)];
        const w = want.get(token);
        const kind = ["renew", "soft", "restore", "update", "create", "delete"][Math.floor(random() * 6)];
        try {
          if (kind === "renew") {
            const at = Date.now() + 1_000_000 + i;
            await v.tokenRenew(token, at);
            w.expiresAt = at;
          } else if (kind === "soft") {
            await v.tokenSoftDelete(token);
            w.soft = true;
          } else if (kind === "restore") {
            await v.tokenRestore(token);
            w.soft = false;
          } else if (kind === "update") {
            await v.tokenUpdate(token, `updated ${i}`, OLD);
            w.value = `updated ${i}`;
          } else if (kind === "create") {
            const t = await v.tokenCreate(`created ${i}`, OLD);
            want.set(t, { value: `created ${i}`, soft: false, expiresAt: null, created: true });
            live.push(t);
          } else {
            await v.tokenDelete(token);
            want.delete(token);
            live.splice(live.indexOf(token), 1);
          }
          resolved++;
          spans.push({ startedAt, at: performance.now() });
        } catch (e) {
          assert.ok(["INVALID_PASSWORD", "RECORD_NOT_FOUND"].includes(e.code) && kind === "update", `${kind}: ${e.code} ${e.message}`);
        }
        await new Promise((r) => setImmediate(r));
      }
      return resolved;
    })();
    // The writer's first write is issued before the rekey starts and resolves while it runs, so
    // it proves nothing: count only writes issued after the rekey was called. A progress report
    // comes after the reads it counts and before the commit, so a write issued after the first
    // report and resolved before the last one landed between the rekey's reads and its commit.
    const progress = [];
    const called = performance.now();
    const moved = await v
      .bulkRekey(OLD, NEW, { rotate: options.rotate ?? false, onProgress: () => progress.push(performance.now()) })
      .finally(() => (done = true));
    const returned = performance.now();
    await writer;
    const during = spans.filter((w) => w.startedAt > called && w.at < returned).length;
    const betweenReadAndCommit = spans.filter((w) => w.startedAt > progress[0] && w.at < progress.at(-1)).length;
    console.log(`# ${kind}: ${during} writes issued and resolved while the rekey ran, ${betweenReadAndCommit} of them between its reads and its commit`);
    assert.ok(during > 0, "writes issued after the rekey started resolved before it did");
    // A re-wrap reads a few rows and commits without yielding (the memory backend answers at
    // once), so its writes land during the key derivation; the others re-seal 3,000 values,
    // yielding as they go, and writes must land in that window.
    if (kind !== "re-wrap") assert.ok(betweenReadAndCommit > 0, "writes landed between the rekey's reads and its commit");
    const records = await v.recordList({ softDeletedInclude: true });
    assert.deepEqual(records.map((r) => r.token).sort(), [...want.keys()].sort());
    let underNew = 0;
    for (const r of records) {
      const w = want.get(r.token);
      assert.equal(r.softDeletedAt !== null, w.soft, r.token);
      assert.equal(r.expiresAt === null ? null : r.expiresAt.getTime(), w.expiresAt, r.token);
      if (w.soft) await v.tokenRestore(r.token);
      const read = (pw) => v.tokenRead(r.token, pw).then((value) => ({ value }), (e) => ({ code: e.code }));
      const [old, now] = [await read(OLD), await read(NEW)];
      const opened = [old, now].filter((x) => "value" in x);
      assert.equal(opened.length, 1, `${r.token} opens with exactly one password`);
      assert.equal(opened[0].value, w.value, r.token);
      if (!w.created) assert.ok("value" in now, `${r.token} existed before the rekey`);
      if ("value" in now) underNew++;
    }
    assert.ok(moved >= underNew, `moved ${moved}, ${underNew} open with the new password`);
  });
}
