// The Chromium half of the sync benchmark (tests/benches/sync.mjs), loaded by page.html: a first
// sync of the server's vault into a new, empty IndexedDB vault, against what an app without the
// package does at best: fetch the same sealed rows as JSON and write them with one Dexie bulkAdd.
// Both sides talk to the same Miniflare worker over HTTP (cross-origin, as a deployed app would).
import Dexie from "dexie";
import { Vault } from "vaultstore-wasm";
import { PASSWORD, expectEqual, time } from "./protocol.mjs";

const uniqueName = (side) => `bench-sync-${side}-${Date.now()}-${Math.random().toString(36).slice(2)}`;
let setup;

/** Sorted `[token, envelope]` pairs: what a store holds, comparable across both sides. */
const pairs = (rows) => rows.map((r) => [r.token, r.value]).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));

function deleteDatabase(name) {
  return new Promise((resolve, reject) => {
    const request = indexedDB.deleteDatabase(name);
    request.onsuccess = resolve;
    request.onerror = () => reject(request.error);
  });
}

window.syncBench = {
  /**
   * Once per page: the server's URLs, the user's credential, and the plaintext of every token
   * (from the Node replica that created them). The server's rows, fetched once untimed, are
   * what both sides must end up holding.
   */
  async setup({ syncUrl, rowsUrl, authorization, plaintexts, kdfIterations }) {
    const rows = await (await fetch(rowsUrl)).json();
    setup = { syncUrl, rowsUrl, authorization, plaintexts, kdfIterations, expected: pairs(rows) };
    expectEqual(rows.length, Object.keys(plaintexts).length, "the server's rows");
    return rows.length;
  },

  /** `vault.sync` into a new IndexedDB vault: join, pull every page, push nothing, pull again. */
  async package() {
    const name = uniqueName("package");
    // The server's vault derives keys with the benchmark's small iteration count (the replica
    // takes the server's KDF settings; its floor must allow them).
    const vault = await Vault.open({ backend: "indexeddb", name, kdfIterations: setup.kdfIterations });
    // Counts the requests by kind and the bytes sent, without parsing a body (it is timed), and
    // the time spent waiting for the server's whole answer (`wireMs`): the rest is the replica's.
    const wire = { pulls: 0, pushes: 0, bytesUp: 0, wireMs: 0 };
    // Each request as [op, sent, answered (ms from the sync's start), bytes], for SYNC_BENCH_DEBUG.
    const timeline = (globalThis.lastTimeline = []);
    let t0 = 0;
    const counting = async (url, init) => {
      const sentAt = performance.now() - t0;
      const op = init.body.startsWith('{"sync":1,"op":"push"') ? "push" : "pull";
      wire[op === "push" ? "pushes" : "pulls"]++;
      wire.bytesUp += init.body.length;
      const started = performance.now();
      const response = await fetch(url, init);
      const body = await response.arrayBuffer();
      wire.wireMs += performance.now() - started;
      timeline.push([op, Math.round(sentAt), Math.round(performance.now() - t0), body.byteLength]);
      return new Response(body, { status: response.status, statusText: response.statusText, headers: response.headers });
    };
    let report;
    const ms = await time(async () => {
      t0 = performance.now();
      report = await vault.sync({ url: setup.syncUrl, headers: { authorization: setup.authorization }, fetch: counting });
    });
    expectEqual(report.pulled >= setup.expected.length, true, `pulled ${report.pulled}`);
    expectEqual(pairs(await vault.recordList()), setup.expected, "the replica's records (token, envelope)");
    const tokens = Object.keys(setup.plaintexts);
    const read = await vault.tokensRead(tokens, PASSWORD);
    expectEqual(tokens.map((t) => read[t]), Object.values(setup.plaintexts), "the replica's values, opened with the password");
    await vault.close();
    await deleteDatabase(name);
    return { ms, ...wire };
  },

  /** fetch the rows as JSON, one Dexie bulkAdd of them as they are (already sealed). */
  async baseline() {
    const db = new Dexie(uniqueName("dexie"));
    db.version(1).stores({ tokens: "token, &id, createdAt, updatedAt, expiresAt, softDeletedAt" });
    await db.open();
    let wireMs = 0;
    const ms = await time(async () => {
      const started = performance.now();
      const text = await (await fetch(setup.rowsUrl)).text();
      wireMs = performance.now() - started;
      await db.tokens.bulkAdd(JSON.parse(text));
    });
    expectEqual(pairs(await db.tokens.toArray()), setup.expected, "the Dexie rows (token, envelope)");
    await db.delete();
    return { ms, wireMs };
  },
};
