// Two tabs on one IndexedDB database in headless Chromium, at random: one rekeys while the other
// renews, soft-deletes, restores, updates, creates and deletes as fast as it can. Afterwards
// nothing that resolved may be lost: every record holds the metadata and the value of the last
// write to it that resolved, every value opens with exactly one of the two passwords, and every
// record that existed when the rekey began opens with the new one. Seeded; CONCURRENCY_ROUNDS
// runs more rounds (default: one per rekey kind). CONSUMER_DIR is the packed-package folder.
import assert from "node:assert/strict";
import { test } from "node:test";
import { dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { packagePages } from "./chromium.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const consumer = process.env.CONSUMER_DIR;
assert.ok(consumer, "CONSUMER_DIR must name the folder with the installed package");
const rounds = Number(process.env.CONCURRENCY_ROUNDS ?? 3);
const OLD = "the old password";
const NEW = "the new password";
const RECORDS = 300;

const pages = packagePages([here, consumer]);
const tab = async (context) => (await pages.open(context)).page;

/** The writer tab: random writes, one after the other, until the rekey tab says it is done. */
async function writer(page, { name, identities, tokens, seed }) {
  return page.evaluate(
    async ({ name, identities, tokens, seed, OLD }) => {
      let state = seed >>> 0;
      const random = () => ((state = (state * 1664525 + 1013904223) >>> 0) / 2 ** 32);
      const pick = (list) => list[Math.floor(random() * list.length)];
      const v = await window.vaultstore.Vault.open({ name, kdfIterations: 1000, passwordIdentity: identities });
      const channel = new BroadcastChannel(name);
      const done = new Promise((resolve) => {
        channel.onmessage = () => resolve();
      });
      let stop = false;
      done.then(() => (stop = true));
      const log = [];
      const live = [...tokens];
      for (let i = 0; i < 2000 && !stop; i++) {
        const token = pick(live);
        const kind = pick(["renew", "soft", "restore", "update", "update", "create", "delete"]);
        const entry = { kind, token, i, startedAt: Date.now() };
        // The rekey starts once this tab is writing (it waits for this, and may start listening
        // late, hence every write says it), so writes overlap it.
        if (i >= 3) channel.postMessage("writing");
        try {
          if (kind === "renew") {
            entry.expiresAt = Date.now() + 1_000_000 + i;
            await v.tokenRenew(token, entry.expiresAt);
          } else if (kind === "soft") {
            await v.tokenSoftDelete(token);
          } else if (kind === "restore") {
            await v.tokenRestore(token);
          } else if (kind === "update") {
            entry.value = `updated ${i}`;
            await v.tokenUpdate(token, entry.value, OLD);
          } else if (kind === "create") {
            entry.value = `created ${i}`;
            entry.token = await v.tokenCreate(entry.value, OLD);
            live.push(entry.token);
          } else {
            await v.tokenDelete(token);
            live.splice(live.indexOf(token), 1);
          }
          entry.ok = true;
        } catch (e) {
          entry.code = e.code;
        }
        entry.at = Date.now();
        log.push(entry);
      }
      await v.close();
      return log;
    },
    { name, identities, tokens, seed, OLD },
  );
}

/** What every token must hold, from the starting values and the writer's resolved writes. */
function expected(initial, log) {
  const state = new Map(Object.entries(initial).map(([token, value]) => [token, { value, soft: false, expiresAt: null, created: false }]));
  for (const e of log) {
    const r = state.get(e.token);
    if (e.kind === "create") {
      if (e.ok) state.set(e.token, { value: e.value, soft: false, expiresAt: null, created: true });
      continue;
    }
    if (!e.ok) {
      // Nothing may fail but an update with a password the rekey already replaced, or a write
      // to a record this tab deleted or soft-deleted itself.
      assert.ok(
        (e.kind === "update" && ["INVALID_PASSWORD", "RECORD_NOT_FOUND"].includes(e.code)) ||
          (e.code === "RECORD_NOT_FOUND" && (!r || r.soft)),
        `${e.kind} #${e.i} failed with ${e.code}`,
      );
      continue;
    }
    assert.ok(r, `${e.kind} #${e.i} resolved on a token this tab had deleted`);
    if (e.kind === "renew") r.expiresAt = e.expiresAt;
    if (e.kind === "soft") r.soft = true;
    if (e.kind === "restore") r.soft = false;
    if (e.kind === "update") r.value = e.value;
    if (e.kind === "delete") state.delete(e.token);
  }
  return state;
}

for (let round = 0; round < rounds; round++) {
  const kind = ["key check (identities off)", "re-wrap (identities on)", "rotation (identities on)"][round % 3];
  test(`round ${round + 1}: a rekey (${kind}) racing another tab's writes loses nothing`, async () => {
    const identities = round % 3 !== 0;
    const rotate = round % 3 === 2;
    const name = `concurrency-${round}-${Date.now()}`;
    const context = await pages.browser.newContext();
    const [rekeyer, writing, reader] = [await tab(context), await tab(context), await tab(context)];

    const initial = await rekeyer.evaluate(
      async ({ name, identities, RECORDS, OLD }) => {
        const v = await window.vaultstore.Vault.open({ name, kdfIterations: 1000, passwordIdentity: identities });
        const values = Array.from({ length: RECORDS }, (_, i) => `value ${i}`);
        const tokens = await v.tokensCreate(values, OLD);
        await v.close();
        return Object.fromEntries(tokens.map((t, i) => [t, values[i]]));
      },
      { name, identities, RECORDS, OLD },
    );
    const tokens = Object.keys(initial);

    const rekeying = rekeyer.evaluate(
      async ({ name, identities, rotate, OLD, NEW }) => {
        const v = await window.vaultstore.Vault.open({ name, kdfIterations: 1000, passwordIdentity: identities });
        // Start once the writer tab is writing: it keeps writing until this rekey is done.
        await new Promise((resolve) => {
          const channel = new BroadcastChannel(name);
          channel.onmessage = () => {
            channel.close();
            resolve();
          };
        });
        try {
          const started = Date.now();
          const moved = await v.bulkRekey(OLD, NEW, { rotate });
          return { moved, started, ended: Date.now() };
        } catch (e) {
          return { code: e.code, message: e.message };
        } finally {
          new BroadcastChannel(name).postMessage("done");
          await v.close();
        }
      },
      { name, identities, rotate, OLD, NEW },
    );
    const [rekeyed, log] = await Promise.all([rekeying, writer(writing, { name, identities, tokens, seed: 7919 * (round + 1) })]);
    assert.ok("moved" in rekeyed, `the rekey failed: ${rekeyed.code} ${rekeyed.message}`);
    // The round only tests something if writes ran while the rekey did: some write was in flight
    // between its start and its end (the writer was writing when it started, and stops after).
    const during = log.filter((e) => e.startedAt <= rekeyed.ended && e.at >= rekeyed.started).length;
    const resolved = log.filter((e) => e.ok).length;
    assert.ok(during >= 1, `the writes overlapped the rekey (${during} writes in flight during its ${rekeyed.ended - rekeyed.started} ms)`);
    const failed = log.filter((e) => !e.ok).length;
    console.log(`  ${kind}: ${resolved} writes resolved and ${failed} were refused; ${during} writes were in flight during the ${rekeyed.ended - rekeyed.started} ms rekey; it moved ${rekeyed.moved}`);

    const want = expected(initial, log);
    const found = await reader.evaluate(
      async ({ name, identities, tokens, OLD, NEW }) => {
        const { Vault } = window.vaultstore;
        const v = await Vault.open({ name, kdfIterations: 1000, passwordIdentity: identities });
        const records = await v.recordList({ softDeletedInclude: true });
        // A copy where soft-deleted records can be read, with the same identities setting.
        const copy = await Vault.open({ backend: "memory", kdfIterations: 1000, passwordIdentity: identities, snapshot: await v.exportSnapshot() });
        const out = {};
        for (const r of records) {
          await copy.tokenRestore(r.token);
          const read = async (pw) => copy.tokenRead(r.token, pw).then((value) => ({ value }), (e) => ({ code: e.code }));
          out[r.token] = {
            soft: r.softDeletedAt !== null,
            expiresAt: r.expiresAt === null ? null : r.expiresAt.getTime(),
            old: await read(OLD),
            new: await read(NEW),
          };
        }
        return out;
      },
      { name, identities, tokens, OLD, NEW },
    );
    assert.deepEqual(Object.keys(found).sort(), [...want.keys()].sort(), "every record that should exist, and no other");
    let underNew = 0;
    for (const [token, w] of want) {
      const f = found[token];
      assert.equal(f.soft, w.soft, `${token}: soft-deleted`);
      assert.equal(f.expiresAt, w.expiresAt, `${token}: expiry`);
      const opened = [f.old, f.new].filter((r) => "value" in r);
      assert.equal(opened.length, 1, `${token} opens with exactly one password: ${JSON.stringify(f)}`);
      assert.equal(opened[0].value, w.value, `${token}: the last value written`);
      if ("value" in f.new) underNew++;
      if (!w.created) assert.ok("value" in f.new, `${token} existed before the rekey, so it opens with the new password`);
      if (!("value" in f.new)) assert.equal(f.new.code, "INVALID_PASSWORD");
    }
    const deleted = log.filter((e) => e.ok && e.kind === "delete").length;
    assert.ok(rekeyed.moved >= underNew && rekeyed.moved <= underNew + deleted, `moved ${rekeyed.moved}, ${underNew} under the new password`);
    await context.close();
  });
}

test("no page threw an uncaught exception", () => {
  assert.deepEqual(pages.uncaught, []);
});
