#!/usr/bin/env node
// The floor IndexedDB itself sets under two of issue 16's Chromium rows, measured without the
// package: plain JavaScript against stores shaped as the package's schema 2 (same key paths and
// indexes, 200-byte values, no crypto). What the README's Performance section cites for "what is
// left" on a single create and on a deep page.
//
//   node tests/benches/idb-model.mjs [--rounds N] [--records N] [--only create,bulk,listing]
//
// create   1,000 transactions in a row, each awaited, one per create:
//            add        one add of a record row (what a Dexie `add` issues)
//            package    the package's create transaction: the add, the put of the seq counter's
//                       row (which holds the write epoch), and the reads it checks (counter,
//                       tombstone, unlinked mark) issued with them, committed when its last
//                       request is done (no explicit commit(), as in the package since Firefox
//                       showed it unsafe)
//            epochRow   the same with the write epoch as a meta row of its own, one more put
//                       (the package's transaction until 6 December 2026)
//            noTombstone  the package's without the tombstone read (what an insert that knows
//                       its id is fresh from the CSPRNG would save)
//            noMark     the package's without the read of the unlinked mark (what keeping the
//                       mark in the counter's row too would save)
// bulk     10,000 new rows, what a first sync writes, against the sync row's baseline (one Dexie
//          bulkAdd), and which part of the difference is which:
//            schema2Pages       schema 2's rows as a pull stores them (revisions, seq, flags;
//                               no dirty mark) into its stores and indexes, 2,000 per
//                               transaction (a pulled page), each with the counter put
//            schema2            the same in one transaction
//            schema2Rows        schema 2's rows into the baseline's table (key token; id
//                               unique, createdAt, updatedAt, expiresAt, softDeletedAt)
//            noRevisions        the same rows without their four revisions, one transaction
//            sparseDeleted      schema 2's stores, rows without the soft-delete flag (only a
//                               soft-deleted record would have a `deleted` entry)
//            sparseFlags        schema 2's stores, rows without the soft-delete flag and the
//                               expiry order (a sparse layout: only deleted or expiring records
//                               would have those index entries)
//            fourIndexes        schema 2's rows, the record store with only the token, created,
//                               updated and seq indexes (no expiry order, identity, soft-delete
//                               flag or dirty mark: what the listings and rekeys need is gone)
//            baseline           the baseline's rows into its table, one transaction
//          each shape after schema2 differs from it in one way; the order reverses every round
// listing  a page of 20 at offset 0 and at offset records/2 (default 20,000 records):
//            storeAdvance / indexAdvance   one `advance(offset)` on the store / the created index
//            keyCursorAdvance              `advance` on a key cursor, then a cursor from its key
//            getAllKeys                    the index's first offset+20 keys, then 20 gets
//
// Prints the median of the rounds (default 5) for each shape; the shapes of a round run in turn.
import { createServer } from "node:http";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { root } from "../../js/tools/toolchain.mjs";

const args = process.argv.slice(2);
const option = (name, fallback) => (args.includes(name) ? Number(args[args.indexOf(name) + 1]) : fallback);
const rounds = option("--rounds", 5);
const records = option("--records", 20_000);

const page = `<!doctype html><script>
const req = (r) => new Promise((ok, no) => { r.onsuccess = () => ok(r.result); r.onerror = () => no(r.error); });
const done = (tx) => new Promise((ok, no) => { tx.oncomplete = ok; tx.onerror = () => no(tx.error); tx.onabort = () => no(tx.error); });
// Schema 2's stores and indexes (src/storage/indexeddb.rs); \`only\` keeps only those record
// indexes (and the token's), for the layouts the bulk section compares.
async function open(name, only) {
  await req(indexedDB.deleteDatabase(name));
  const request = indexedDB.open(name, 1);
  request.onupgradeneeded = () => {
    const db = request.result;
    const records = db.createObjectStore("records", { keyPath: "id" });
    records.createIndex("token", "token", { unique: true });
    const kept = (n) => !only || only.includes(n);
    for (const [n, k] of [["created", "createdAt"], ["updated", "updatedAt"], ["expires", "expiresSort"], ["identity", "passwordId"]]) if (kept(n)) records.createIndex(n, [k, "id"]);
    for (const n of ["deleted", "seq", "dirty"]) if (kept(n)) records.createIndex(n, n);
    const meta = db.createObjectStore("meta", { keyPath: ["objectType", "objectId", "key"] });
    meta.createIndex("by_value", ["objectType", "key", "value"]);
    for (const n of ["seq", "dirty"]) meta.createIndex(n, n);
    const tombstones = db.createObjectStore("tombstones", { keyPath: "key" });
    for (const n of ["seq", "dirty"]) tombstones.createIndex(n, n);
    db.createObjectStore("counters");
  };
  return req(request);
}
let clock = 1_700_000_000_000;
const row = (seq) => ({ id: crypto.randomUUID(), token: "tk_" + crypto.randomUUID(), createdAt: ++clock, updatedAt: clock, expiresSort: 0, deleted: 0, passwordId: "", seq, dirty: seq, value: "x".repeat(200) });
const STORES = ["records", "meta", "tombstones", "counters"];
function packageCreate(db, state, epochRow, tombstone = true, mark = true) {
  const tx = db.transaction(STORES, "readwrite");
  const [records, meta, tombstones, counters] = STORES.map((s) => tx.objectStore(s));
  const seq = ++state.seq;
  const record = row(seq);
  // In the package's order: the counter, the insert's tombstone lookup and add, the mark.
  const reads = [req(counters.get("seq"))];
  if (tombstone) reads.push(req(tombstones.getKey("record:" + record.id)));
  reads.push(req(records.add(record)));
  if (mark) reads.push(req(meta.get(["vault", "state", "unlinked"])));
  const writes = crypto.randomUUID();
  if (epochRow) meta.put({ objectType: "vault", objectId: "state", key: "writes", value: writes });
  counters.put(epochRow ? seq : { seq, writes }, "seq");
  return Promise.all(reads).then(() => done(tx));
}
const creates = {
  add: (db, state) => { const tx = db.transaction("records", "readwrite"); tx.objectStore("records").add(row(++state.seq)); return done(tx); },
  package: (db, state) => packageCreate(db, state, false),
  epochRow: (db, state) => packageCreate(db, state, true),
  noTombstone: (db, state) => packageCreate(db, state, false, false),
  noMark: (db, state) => packageCreate(db, state, false, true, false),
};
window.createRound = async (n) => {
  const out = {};
  for (const [name, create] of Object.entries(creates)) {
    const db = await open("model-create-" + name);
    const state = { seq: 0 };
    await done((() => { const tx = db.transaction("meta", "readwrite"); tx.objectStore("meta").put({ objectType: "vault", objectId: "state", key: "unlinked", value: "true" }); return tx; })());
    const started = performance.now();
    for (let i = 0; i < n; i++) await create(db, state);
    out[name] = performance.now() - started;
    db.close();
    await req(indexedDB.deleteDatabase("model-create-" + name));
  }
  return out;
};
// The sync benchmark's baseline table (tests/benches/sync-page.mjs, as Dexie creates it).
async function openBaseline(name) {
  await req(indexedDB.deleteDatabase(name));
  const request = indexedDB.open(name, 1);
  request.onupgradeneeded = () => {
    const tokens = request.result.createObjectStore("tokens", { keyPath: "token" });
    tokens.createIndex("id", "id", { unique: true });
    for (const k of ["createdAt", "updatedAt", "expiresAt", "softDeletedAt"]) tokens.createIndex(k, k);
  };
  return req(request);
}
const rev = "0".repeat(32);
// A pulled row as the package stores it (clean: no dirty mark) and as the baseline stores it.
const pulledRow = (seq) => ({ ...row(seq), passwordId: "i_1", expiresSort: Infinity, expiresAt: null, softDeletedAt: null, valueRev: rev, sealRev: rev, expiresRev: rev, deletedRev: rev });
const withoutRevisions = (seq) => { const { valueRev, sealRev, expiresRev, deletedRev, ...rest } = pulledRow(seq); return rest; };
// The same row with the soft-delete flag and the expiry order left out while the record is live
// and never expires: the sparse layout, where only deleted or expiring records have those entries.
const sparseRow = (seq) => { const { deleted, expiresSort, ...rest } = pulledRow(seq); return rest; };
const sparseDeletedRow = (seq) => { const { deleted, ...rest } = pulledRow(seq); return rest; };
const fourIndexes = (name) => open(name, ["created", "updated", "seq"]);
const baselineRow = () => { const { id, token, createdAt, updatedAt, value } = row(0); return { id, token, createdAt, updatedAt, expiresAt: null, softDeletedAt: null, value }; };
let bulkRounds = 0;
window.bulkRound = async (n) => {
  const shapes = [
    ["schema2Pages", open, pulledRow, 2000],
    ["schema2", open, pulledRow, n],
    ["schema2Rows", openBaseline, pulledRow, n],
    ["noRevisions", open, withoutRevisions, n],
    ["sparseDeleted", open, sparseDeletedRow, n],
    ["sparseFlags", open, sparseRow, n],
    ["fourIndexes", fourIndexes, pulledRow, n],
    ["baseline", openBaseline, baselineRow, n],
  ];
  if (bulkRounds++ % 2) shapes.reverse();
  const out = {};
  for (const [name, openShape, make, page] of shapes) {
    // LevelDB compacts the previous shape's deleted database in the background: let it, so that
    // a shape's time does not depend on which one ran before it.
    await new Promise((ok) => setTimeout(ok, 2000));
    const db = await openShape("model-bulk-" + name);
    const rows = Array.from({ length: n }, (_, i) => { const r = make(i + 1); delete r.dirty; return r; });
    const stores = db.objectStoreNames.contains("tokens") ? ["tokens"] : STORES;
    const started = performance.now();
    for (let i = 0; i < n; i += page) {
      const tx = db.transaction(stores, "readwrite");
      const target = tx.objectStore(stores[0]);
      for (let j = i; j < Math.min(n, i + page); j++) target.add(rows[j]);
      if (stores.length > 1) tx.objectStore("counters").put(Math.min(n, i + page), "seq");
      await done(tx);
    }
    out[name] = performance.now() - started;
    db.close();
    await req(indexedDB.deleteDatabase("model-bulk-" + name));
  }
  return out;
};
function listPage(db, how, offset) {
  return new Promise((resolve, reject) => {
    const tx = db.transaction("records", "readonly");
    tx.onerror = () => reject(tx.error);
    const store = tx.objectStore("records");
    const index = store.index("created");
    const out = [];
    const collect = (request) => { request.onsuccess = () => { const c = request.result; if (!c) return resolve(out); out.push(c.value); if (out.length < 20) c.continue(); else resolve(out); }; };
    if (how === "storeAdvance" || how === "indexAdvance") {
      const request = (how === "storeAdvance" ? store : index).openCursor();
      let skipped = offset === 0;
      request.onsuccess = () => { const c = request.result; if (!c) return resolve(out); if (!skipped) { skipped = true; return c.advance(offset); } out.push(c.value); if (out.length < 20) c.continue(); else resolve(out); };
    } else if (how === "keyCursorAdvance") {
      const request = index.openKeyCursor();
      let skipped = offset === 0;
      request.onsuccess = () => { const c = request.result; if (!c) return resolve(out); if (!skipped) { skipped = true; return c.advance(offset); } collect(index.openCursor(IDBKeyRange.lowerBound(c.key))); };
    } else {
      index.getAllKeys(null, offset + 20).onsuccess = (e) => {
        const keys = e.target.result.slice(offset);
        if (!keys.length) return resolve(out);
        let got = 0;
        keys.forEach((k, i) => { store.get(k).onsuccess = (g) => { out[i] = g.target.result; if (++got === keys.length) resolve(out); }; });
      };
    }
  });
}
let listing;
window.listRound = async (n) => {
  if (!listing) {
    listing = await open("model-listing");
    for (let i = 0; i < n; i += 1000) {
      const tx = listing.transaction("records", "readwrite");
      for (let j = i; j < Math.min(n, i + 1000); j++) tx.objectStore("records").add(row(j + 1));
      await done(tx);
    }
  }
  const out = {};
  for (const how of ["storeAdvance", "indexAdvance", "keyCursorAdvance", "getAllKeys"]) {
    for (const offset of [0, n >> 1]) {
      const started = performance.now();
      const rows = await listPage(listing, how, offset);
      out[how + " @" + offset] = performance.now() - started;
      if (rows.length !== 20) throw new Error(how + " at " + offset + " read " + rows.length + " rows, not 20");
    }
  }
  return out;
};
</script>`;

const server = createServer((_, res) => res.writeHead(200, { "content-type": "text/html" }).end(page));
await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
const browser = await chromium.launchPersistentContext(join(root, ".test-tmp", "idb-model", "chromium"), {
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--headless=new", "--disable-gpu", "--disable-dev-shm-usage"],
});
const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
try {
  const tab = await browser.newPage();
  await tab.goto(`http://localhost:${server.address().port}/`);
  const sections = [["create", "1,000 create transactions, each awaited", "createRound", 1000], ["bulk", "10,000 new rows", "bulkRound", 10_000], ["listing", `a page of 20 in ${records.toLocaleString("en")} records`, "listRound", records]];
  const only = args.includes("--only") ? args[args.indexOf("--only") + 1].split(",") : null;
  for (const [, title, fn, n] of sections.filter(([name]) => !only || only.includes(name))) {
    const samples = {};
    for (let r = 0; r < rounds; r++) {
      for (const [shape, ms] of Object.entries(await tab.evaluate(([f, count]) => window[f](count), [fn, n]))) (samples[shape] ??= []).push(ms);
    }
    console.log(`${title} (median of ${rounds}):`);
    const first = median(Object.values(samples)[0]);
    for (const [shape, ms] of Object.entries(samples)) console.log(`  ${shape.padEnd(24)} ${median(ms).toFixed(1).padStart(8)} ms  ${(median(ms) / first).toFixed(2)}× the first`);
  }
} finally {
  await browser.close();
  server.close();
}
