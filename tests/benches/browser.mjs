// The Chromium half of the benchmark: the packed browser build on IndexedDB against WebCrypto
// HKDF+AES-GCM and Dexie, the IndexedDB library most apps would reach for. Loaded by page.html;
// the driver calls `window.bench(row, side, config)` once per round and side, and gets one sample
// (milliseconds). Every round uses a new database, deleted afterwards, so rounds are independent.
import Dexie from "dexie";
import { Vault } from "vaultstore-wasm";
import { hkdf, newRecord, newSalt, newToken, pbkdf2 } from "./baselines.mjs";
import { NEW_PASSWORD, PASSWORD, expectEqual, medianCall, time, values } from "./protocol.mjs";

const uniqueName = (side) => `bench-${side}-${Date.now()}-${Math.random().toString(36).slice(2)}`;

/** An IndexedDB vault in a new database, with PASSWORD's key derived and cached. */
async function unlockedVault(config, options = {}) {
  const name = uniqueName("package");
  const vault = await Vault.open({ backend: "indexeddb", name, kdfIterations: config.kdfSmall, ...options });
  await vault.tokenDelete(await vault.tokenCreate("unlock", PASSWORD));
  return { vault, name };
}

/** n × `await tokenCreate` on a vault opened with `options`, against n × (seal, Dexie add). */
function sequentialCreate(options) {
  return {
    async package(config) {
      const input = values(config.records1k);
      const handle = await unlockedVault(config, options);
      const tokens = [];
      const ms = await time(async () => {
        for (const value of input) tokens.push(await handle.vault.tokenCreate(value, PASSWORD));
      });
      await expectPackageValues(handle.vault, tokens, input);
      await dropVault(handle);
      return { ms };
    },
    async baseline(config) {
      const input = values(config.records1k);
      const key = await hkdf.deriveKey(PASSWORD, newSalt(), config.kdfSmall);
      const db = await openDexie();
      const ms = await time(async () => {
        for (const value of input) await db.tokens.add(await sealedRecord(key, value));
      });
      await expectDexieValues(db, key, input);
      await db.delete();
      return { ms };
    },
  };
}

async function dropVault({ vault, name }) {
  await vault.close();
  await new Promise((resolve, reject) => {
    const request = indexedDB.deleteDatabase(name);
    request.onsuccess = resolve;
    request.onerror = () => reject(request.error);
  });
}

async function expectPackageValues(vault, tokens, expected, password = PASSWORD) {
  const read = await vault.tokensRead(tokens, password);
  expectEqual(tokens.map((t) => read[t]), expected, "package values read back");
}

/**
 * The baseline's database. The token is the primary key (it is what callers look records up by);
 * the indexes are the package's (unique id, created, updated, expiry, soft delete), so both sides
 * maintain as much on every write.
 */
async function openDexie() {
  const db = new Dexie(uniqueName("dexie"));
  db.version(1).stores({ tokens: "token, &id, createdAt, updatedAt, expiresAt, softDeletedAt" });
  await db.open();
  return db;
}

/** A new record for `value`, sealed under `key`. */
async function sealedRecord(key, value) {
  const token = newToken();
  return newRecord(token, await hkdf.seal(key, token, value));
}

async function expectDexieValues(db, key, expected) {
  const rows = await db.tokens.toArray();
  const read = await Promise.all(rows.map((r) => hkdf.open(key, r.token, r.value)));
  expectEqual(read.sort(), [...expected].sort(), "baseline values read back");
}

/** `tokensCreate(count)` in one call, a fresh database each time. */
async function packageBatchCreate(config, count) {
  const input = values(count);
  const handle = await unlockedVault(config);
  let tokens;
  const ms = await time(async () => {
    tokens = await handle.vault.tokensCreate(input, PASSWORD);
  });
  await expectPackageValues(handle.vault, tokens, input);
  await dropVault(handle);
  return { ms };
}

/** What a user writes for a batch: seal everything at once, then one bulkAdd. */
async function dexieBatchCreate(config, count) {
  const input = values(count);
  const key = await hkdf.deriveKey(PASSWORD, newSalt(), config.kdfSmall);
  const db = await openDexie();
  const ms = await time(async () => {
    const rows = await Promise.all(input.map((value) => sealedRecord(key, value)));
    await db.tokens.bulkAdd(rows);
  });
  await expectDexieValues(db, key, input);
  await db.delete();
  return { ms };
}

const rows = {
  batchCreate1k: {
    package: (config) => packageBatchCreate(config, config.records1k),
    baseline: (config) => dexieBatchCreate(config, config.records1k),
  },
  batchCreate10k: {
    package: (config) => packageBatchCreate(config, config.records10k),
    baseline: (config) => dexieBatchCreate(config, config.records10k),
  },

  /** The physical limit: the same rows, sealed before the clock starts; only the write is timed. */
  batchCreateVsBulkAdd: {
    package: (config) => packageBatchCreate(config, config.records1k),
    async baseline(config) {
      const input = values(config.records1k);
      const key = await hkdf.deriveKey(PASSWORD, newSalt(), config.kdfSmall);
      const rows = await Promise.all(input.map((value) => sealedRecord(key, value)));
      const db = await openDexie();
      const ms = await time(() => db.tokens.bulkAdd(rows));
      await expectDexieValues(db, key, input);
      await db.delete();
      return { ms };
    },
  },

  batchRead: {
    async package(config) {
      const input = values(config.records1k);
      const handle = await unlockedVault(config);
      const tokens = await handle.vault.tokensCreate(input, PASSWORD);
      let read;
      const ms = await time(async () => {
        read = await handle.vault.tokensRead(tokens, PASSWORD);
      });
      expectEqual(tokens.map((t) => read[t]), input, "package tokensRead");
      await dropVault(handle);
      return { ms };
    },
    async baseline(config) {
      const input = values(config.records1k);
      const key = await hkdf.deriveKey(PASSWORD, newSalt(), config.kdfSmall);
      const db = await openDexie();
      const stored = await Promise.all(input.map((value) => sealedRecord(key, value)));
      await db.tokens.bulkAdd(stored);
      const tokens = stored.map((r) => r.token);
      let read;
      const ms = await time(async () => {
        const rows = await db.tokens.bulkGet(tokens);
        read = await Promise.all(rows.map((r) => hkdf.open(key, r.token, r.value)));
      });
      expectEqual(read, input, "baseline reads");
      await db.delete();
      return { ms };
    },
  },

  sequentialCreate: sequentialCreate({}),

  /**
   * The same with `passwordIdentity` (what the demo and apps with password changes use): a
   * create seals with the identity its key last wrote with, guarded in its write transaction,
   * instead of reading it in a transaction of its own first.
   */
  sequentialCreateIdentities: sequentialCreate({ passwordIdentity: true }),

  /**
   * A rotating rekey of records10k records at the default iteration count. The baseline derives
   * the new key, reads every row, re-seals it, and writes them all back. The third side times one
   * PBKDF2 alone, for "beyond the new password's derivation".
   */
  rekeyRotate: {
    async package(config) {
      const input = values(config.records10k);
      const handle = await unlockedVault(config, { passwordIdentity: true, kdfIterations: config.kdfDefault });
      const tokens = await handle.vault.tokensCreate(input, PASSWORD);
      let moved;
      const ms = await time(async () => {
        moved = await handle.vault.bulkRekey(PASSWORD, NEW_PASSWORD, { rotate: true });
      });
      expectEqual(moved, input.length, "package records rekeyed");
      await expectPackageValues(handle.vault, tokens, input, NEW_PASSWORD);
      await dropVault(handle);
      return { ms };
    },
    async baseline(config) {
      const input = values(config.records10k);
      const salt = newSalt();
      const oldKey = await hkdf.deriveKey(PASSWORD, salt, config.kdfDefault);
      const db = await openDexie();
      await db.tokens.bulkAdd(await Promise.all(input.map((value) => sealedRecord(oldKey, value))));
      let newKey;
      const ms = await time(async () => {
        newKey = await hkdf.deriveKey(NEW_PASSWORD, salt, config.kdfDefault);
        const rows = await db.tokens.toArray();
        const resealed = await Promise.all(
          rows.map(async (row) => {
            const value = await hkdf.open(oldKey, row.token, row.value);
            return { ...row, value: await hkdf.seal(newKey, row.token, value), updatedAt: Date.now() };
          }),
        );
        await db.tokens.bulkPut(resealed);
      });
      await expectDexieValues(db, newKey, input);
      await db.delete();
      return { ms };
    },
    async pbkdf2(config) {
      return { ms: await time(() => pbkdf2(NEW_PASSWORD, newSalt(), config.kdfDefault)) };
    },
  },
};

/** How many times each listing call is timed; its figure is the median. */
const LISTING_CALLS = 9;

/** The median of LISTING_CALLS timings of `call`, each answer checked by `check`. */
const listingCall = (call, check) => medianCall(LISTING_CALLS, call, check);

/**
 * Issue 16: a page deep in an IndexedDB vault (offset n/2 of n = 2 × records10k) against the
 * first page; `recordCount()`, then the last page; the pages after the deep one read one after another, then back;
 * and, with a few records soft-deleted, the trash view and the deep page again. Each answer is
 * checked against one listing of the whole vault.
 */
rows.listing = {
  async package(config) {
    const PAGE = 20;
    const count = 2 * config.records10k;
    const handle = await unlockedVault(config);
    const tokens = [];
    for (let i = 0; i < count; i += config.chunk) {
      tokens.push(...(await handle.vault.tokensCreate(values(Math.min(config.chunk, count - i)), PASSWORD)));
    }
    const everything = (await handle.vault.recordList()).map((r) => r.token);
    expectEqual([...everything].sort(), [...tokens].sort(), "recordList() lists the vault's tokens");
    const deep = count >> 1;
    const page = (offset) => (records) => expectEqual(records.map((r) => r.token), everything.slice(offset, offset + PAGE), `recordList page at offset ${offset}`);
    const firstMs = await listingCall(() => handle.vault.recordList({ limit: PAGE }), page(0));
    const deepMs = await listingCall(() => handle.vault.recordList({ limit: PAGE, offset: deep }), page(deep));
    const countMs = await listingCall(() => handle.vault.recordCount(), (n) => expectEqual(n, count, "recordCount()"));
    // A pager's last page, once it has counted the vault (as a pager showing "page x of y" does).
    const lastMs = await listingCall(() => handle.vault.recordList({ limit: PAGE, offset: count - PAGE }), page(count - PAGE));
    // The mean time of a page at each of `offsets`, read in that order (each checked).
    const meanPageMs = async (offsets) => {
      let total = 0;
      for (const offset of offsets) {
        const start = performance.now();
        const records = await handle.vault.recordList({ limit: PAGE, offset });
        total += performance.now() - start;
        page(offset)(records);
      }
      return total / offsets.length;
    };
    // Paging on from there, as a list that loads more on scroll does: each page right after
    // the one before it, PAGES_ON of them.
    const PAGES_ON = 25;
    const onward = Array.from({ length: PAGES_ON }, (_, i) => deep + (i + 1) * PAGE);
    const pagingOnMs = await meanPageMs(onward);
    // And back, as a pager's "previous" does: the 24 pages before the last one read, each the
    // page before the one read just before it.
    const pagingBackMs = await meanPageMs(onward.slice(0, -1).reverse());
    // The same vault with a few records in the trash (soft-deleted, spread through it): the
    // trash view's first page, and the deep page of live records, read afresh each time.
    const TRASH = 20;
    const trashed = everything.filter((_, i) => i % Math.floor(count / TRASH) === 7).slice(0, TRASH);
    for (const token of trashed) await handle.vault.tokenSoftDelete(token);
    const live = everything.filter((t) => !trashed.includes(t));
    const trashMs = await listingCall(
      () => handle.vault.recordList({ softDeletedOnly: true, limit: PAGE }),
      (records) => expectEqual(records.map((r) => r.token), trashed.slice(0, PAGE), "the trash's first page"),
    );
    const deepLiveMs = await listingCall(
      () => handle.vault.recordList({ limit: PAGE, offset: deep }),
      (records) => expectEqual(records.map((r) => r.token), live.slice(deep, deep + PAGE), `live records at offset ${deep}, some soft-deleted`),
    );
    // A trash larger than one read of it (more than 500 soft-deleted records): its pages walk
    // the order, after a count of the live records, which the connection's tally answers.
    const MORE_TRASH = 600;
    const bigTrash = new Set(trashed);
    for (const token of live.filter((_, i) => i % Math.floor(live.length / MORE_TRASH) === 3).slice(0, MORE_TRASH)) {
      await handle.vault.tokenSoftDelete(token);
      bigTrash.add(token);
    }
    await handle.vault.recordCount();
    const inTrash = everything.filter((t) => bigTrash.has(t));
    const bigTrashMs = await listingCall(
      () => handle.vault.recordList({ softDeletedOnly: true, limit: PAGE, offset: 100 }),
      (records) => expectEqual(records.map((r) => r.token), inTrash.slice(100, 100 + PAGE), "a page of a trash of 620"),
    );
    await dropVault(handle);
    return { firstMs, deepMs, countMs, lastMs, pagingOnMs, pagingBackMs, trashMs, deepLiveMs, bigTrashMs };
  },
};

window.bench = (row, side, config) => rows[row][side](config);
window.benchRows = Object.fromEntries(Object.entries(rows).map(([row, sides]) => [row, Object.keys(sides)]));
