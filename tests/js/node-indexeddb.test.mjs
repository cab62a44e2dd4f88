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
