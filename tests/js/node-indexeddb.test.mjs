// In Node, the indexeddb backend works wherever something provides `globalThis.indexedDB`
// (here the fake-indexeddb polyfill), and it becomes the default backend.
import assert from "node:assert/strict";
import { test } from "node:test";
import "fake-indexeddb/auto";
import { Vault } from "vaultstore-wasm";
import { PASSWORD, rejects } from "./helpers.mjs";

test("Node with an indexedDB polyfill: the indexeddb backend is the default and persists across connections", async () => {
  const name = `node-idb-${Date.now()}`;
  const v = await Vault.open({ name, kdfIterations: 1000, passwordIdentity: true });
  const tokens = await v.tokensCreate(["a", "b"], PASSWORD);
  assert.ok((await indexedDB.databases()).some((d) => d.name === name), "stored in IndexedDB");
  const again = await Vault.open({ name, kdfIterations: 1000 });
  assert.deepEqual(await again.tokensRead(tokens, PASSWORD), { [tokens[0]]: "a", [tokens[1]]: "b" });
  assert.equal(await again.bulkRekey(PASSWORD, "another long password"), 2);
  await rejects(v.tokenRead(tokens[0], PASSWORD), "INVALID_PASSWORD");
  // A snapshot goes only into an empty database.
  await rejects(Vault.open({ name, kdfIterations: 1000, snapshot: await v.exportSnapshot() }), "INVALID_ARGUMENT");
  const copy = await Vault.open({ name: `${name}-copy`, kdfIterations: 1000, snapshot: await v.exportSnapshot() });
  assert.equal(await copy.tokenRead(tokens[1], "another long password"), "b");
});

test("two tabs on one empty IndexedDB vault join a server's vault at once, and both syncs succeed", async () => {
  // SYNC.md 9. Found by an audit: the tab whose adoption of the server's vault came second read
  // the store's own kdf row, then found it changed by the first, and rejected with STORAGE.
  const server = await Vault.open({ backend: "memory", kdfIterations: 1000 });
  const seed = await Vault.open({ backend: "memory", kdfIterations: 1000 });
  const tokens = await seed.tokensCreate(["x", "y", "z"], PASSWORD);
  const remote = (request) => server.syncHandle(request);
  await seed.sync(remote);
  for (let round = 0; round < 5; round++) {
    const name = `node-idb-tabs-${Date.now()}-${round}`;
    const [tab1, tab2] = [await Vault.open({ name, kdfIterations: 1000 }), await Vault.open({ name, kdfIterations: 1000 })];
    const reports = await Promise.all([tab1.sync(remote), tab2.sync(remote)]);
    assert.equal(reports.length, 2);
    for (const tab of [tab1, tab2]) {
      assert.deepEqual(await tab.tokensRead(tokens, PASSWORD), { [tokens[0]]: "x", [tokens[1]]: "y", [tokens[2]]: "z" });
    }
  }
});

test("calls running when close() is called either finish or reject with CLOSED having stored nothing", async () => {
  const name = `node-idb-close-${Date.now()}`;
  const v = await Vault.open({ name, kdfIterations: 1000 });
  await v.unlock(PASSWORD); // the key is cached: the calls go straight to storage
  const calls = Array.from({ length: 10 }, (_, i) => v.tokenCreate(`value ${i}`, PASSWORD));
  await v.close();
  const settled = await Promise.allSettled(calls);
  const made = settled.filter((s) => s.status === "fulfilled").map((s) => s.value);
  for (const s of settled) {
    if (s.status === "rejected") assert.equal(s.reason.code, "CLOSED", String(s.reason));
  }
  const again = await Vault.open({ name, kdfIterations: 1000 });
  assert.equal(await again.recordCount(), made.length, "exactly the calls that resolved were stored");
  for (const token of made) assert.match(await again.tokenRead(token, PASSWORD), /^value \d$/);
});
