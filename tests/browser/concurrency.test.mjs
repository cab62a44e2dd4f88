// Tabs on one IndexedDB database in headless Chromium, at random: one rekeys while two others
// renew, soft-delete, restore, update, create and delete as fast as they can, each on its own
// half of the records (two writers keep more commits in flight, so that one lands inside a
// re-wrap's short window even on a loaded machine). Afterwards
// nothing that resolved may be lost: every record holds the metadata and the value of the last
// write to it that resolved, every value opens with exactly one of the two passwords, and every
// record that existed when the rekey began opens with the new one. A round counts only if some
// write committed between the rekey's first read and its commit (seen through the rekey tab's
// IndexedDB calls), and reports how many did. Seeded; CONCURRENCY_ROUNDS
// runs more rounds (default: one per rekey kind). CONSUMER_DIR is the packed-package folder.
import assert from "node:assert/strict";
import { test } from "node:test";
import { dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { packagePages } from "./pages.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const consumer = process.env.CONSUMER_DIR;
assert.ok(consumer, "CONSUMER_DIR must name the folder with the installed package");
const rounds = Number(process.env.CONCURRENCY_ROUNDS ?? 3);
const OLD = "the old password";
const NEW = "the new password";
const RECORDS = 300;

const pages = packagePages([here, consumer]);
const tab = async (context) => (await pages.open(context)).page;

/** A writer tab: random writes, one after the other, until the rekey tab says it is done. */
async function writer(page, { name, identities, tokens, seed, w }) {
  return page.evaluate(
    async ({ name, identities, tokens, seed, w, OLD }) => {
      let state = seed >>> 0;
      const random = () => ((state = (state * 1664525 + 1013904223) >>> 0) / 2 ** 32);
      const pick = (list) => list[Math.floor(random() * list.length)];
      const v = await window.vaultstore.Vault.open({ name, kdfIterations: 1000, passwordIdentity: identities });
      const channel = new BroadcastChannel(name);
      const done = new Promise((resolve) => {
        // The other writer says "writing" on the same channel: only the rekey's "done" stops.
        channel.onmessage = (e) => e.data === "done" && resolve();
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
        if (i >= 3) channel.postMessage({ writing: w });
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
    { name, identities, tokens, seed, w, OLD },
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

/**
 * One race on a fresh database: everything that resolved must be there afterwards. Returns how
 * many writes committed between the rekey's first read and its commit.
 */
async function race(round, kind, attempt) {
  const identities = round % 3 !== 0;
  const rotate = round % 3 === 2;
  const name = `concurrency-${round}-${attempt}-${Date.now()}`;
  const context = await pages.browser.newContext();
  const [rekeyer, reader] = [await tab(context), await tab(context)];
  const writing = [await tab(context), await tab(context)];

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
    async ({ name, identities, rotate, writers, OLD, NEW }) => {
      const v = await window.vaultstore.Vault.open({ name, kdfIterations: 1000, passwordIdentity: identities });
      // Start once every writer tab is writing: each keeps writing until this rekey is done (a
      // writer that had not started yet would miss the "done" below and write on to its cap).
      await new Promise((resolve) => {
        const channel = new BroadcastChannel(name);
        const heard = new Set();
        channel.onmessage = (e) => {
          heard.add(e.data.writing);
          if (heard.size < writers) return;
          channel.close();
          resolve();
        };
      });
      // Watch this page's IndexedDB calls (only the rekey makes any from here on): the rekey
      // reads the vault's write marker (kept in the seq counter's row, the `counters` store)
      // before any record, every write renews it, and its commit is a readwrite transaction.
      // A write in the other tab that started after the first marker read came back and
      // resolved before the last readwrite transaction was opened committed between the
      // rekey's first read and its commit: the rekey had to see it.
      const markerReads = [];
      const readwrites = [];
      const get = IDBObjectStore.prototype.get;
      IDBObjectStore.prototype.get = function (key) {
        const request = get.call(this, key);
        if (this.name === "counters") request.addEventListener("success", () => markerReads.push(Date.now()));
        return request;
      };
      const transaction = IDBDatabase.prototype.transaction;
      IDBDatabase.prototype.transaction = function (stores, mode, ...rest) {
        if (mode === "readwrite") readwrites.push(Date.now());
        return transaction.call(this, stores, mode, ...rest);
      };
      try {
        const started = Date.now();
        const moved = await v.bulkRekey(OLD, NEW, { rotate });
        return { moved, started, ended: Date.now(), firstRead: markerReads[0], commit: readwrites.at(-1) };
      } catch (e) {
        return { code: e.code, message: e.message };
      } finally {
        new BroadcastChannel(name).postMessage("done");
        await v.close();
      }
    },
    { name, identities, rotate, writers: writing.length, OLD, NEW },
  );
  const [rekeyed, ...logs] = await Promise.all([
    rekeying,
    ...writing.map((page, w) =>
      writer(page, { name, identities, tokens: tokens.filter((_, i) => i % writing.length === w), seed: 7919 * (round + 1) + w, w }),
    ),
  ]);
  // Each writer touches only its own records (and those it creates), so the logs side by side
  // say what each record must hold.
  const log = logs.flat();
  assert.ok("moved" in rekeyed, `the rekey failed: ${rekeyed.code} ${rekeyed.message}`);
  // The round only tests something if writes committed between the rekey's first read and
  // its commit (a write merely in flight while it ran proves nothing: the back-to-back writer
  // always has one).
  assert.ok(rekeyed.firstRead && rekeyed.commit, `the rekey read the write marker and committed: ${JSON.stringify(rekeyed)}`);
  const committedInside = log.filter((e) => e.ok && e.startedAt > rekeyed.firstRead && e.at < rekeyed.commit).length;
  const resolved = log.filter((e) => e.ok).length;
  const failed = log.filter((e) => !e.ok).length;
  console.log(
    `  ${kind}: ${resolved} writes resolved and ${failed} were refused; ${committedInside} committed between the rekey's first read and its commit (${rekeyed.commit - rekeyed.firstRead} ms apart); it moved ${rekeyed.moved}`,
  );

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
  return committedInside;
}

for (let round = 0; round < rounds; round++) {
  const kind = ["key check (identities off)", "re-wrap (identities on)", "rotation (identities on)"][round % 3];
  test(`round ${round + 1}: a rekey (${kind}) racing two other tabs' writes loses nothing`, async () => {
    // A round tests the race only if some write committed between the rekey's first read and
    // its commit. A re-wrap's window is a few reads long (10–30 ms), and with one writer about
    // one round in fifteen saw no write land in it, and on a loaded machine (CI beside other
    // builds) three tries in a row did; with two writers, such a round runs again on a fresh
    // database, up to five tries, and fails if no try saw a write land there.
    let committedInside = 0;
    for (let attempt = 1; attempt <= 5 && committedInside === 0; attempt++) {
      committedInside = await race(round, kind, attempt);
      if (committedInside === 0) console.log(`  try ${attempt}: no write committed inside the rekey's window`);
    }
    assert.ok(committedInside >= 1, "writes committed between the rekey's first read and its commit in one of five tries");
  });
}

test("no page threw an uncaught exception", () => {
  assert.deepEqual(pages.uncaught, []);
});
