// Several secrets for one identity (API.md "Unlocking, and several secrets for one identity")
// through the packed package, on every backend Node can host: memory, SQL (libSQL on a local
// file) and IndexedDB (the fake-indexeddb polyfill). secretAdd with a password and with a
// 32-byte raw key (what a passkey's PRF gives), unlock with either, secretRemove, a rotation that
// removes the other slots, and the error codes.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import "fake-indexeddb/auto";
import { createClient } from "@libsql/client";
import { Vault, libsql } from "vaultstore-wasm";
import { OTHER, PASSWORD, rejects } from "./helpers.mjs";

const THIRD = "a third long password";
const KEY = new Uint8Array(32).fill(7);
const dir = mkdtempSync(join(tmpdir(), "vaultstore-slots-"));
after(() => rmSync(dir, { recursive: true, force: true }));
let opened = 0;

const backends = {
  memory: (options) => Vault.open({ backend: "memory", kdfIterations: 1000, ...options }),
  sql(options) {
    const client = createClient({ url: `file:${join(dir, `db-${++opened}.sqlite`)}` });
    return Vault.open({ backend: "sql", sql: libsql(client), kdfIterations: 1000, ...options });
  },
  indexeddb: (options) =>
    Vault.open({ backend: "indexeddb", name: `slots-${++opened}-${Date.now()}`, kdfIterations: 1000, ...options }),
};

/** Rejects with `code`, and the message repeats no secret. */
async function refused(promise, code, what) {
  const e = await rejects(promise, code);
  for (const secret of [PASSWORD, OTHER, THIRD, "short"]) {
    assert.ok(!e.message.includes(secret), `${what}: the error repeats a secret: ${e.message}`);
  }
  return e;
}

for (const [backend, open] of Object.entries(backends)) {
  test(`secretAdd (${backend}): a password and a raw key both open every record, old and new`, async () => {
    const v = await open({ passwordIdentity: true });
    const tokens = await v.tokensCreate(["one", "two"], PASSWORD);
    const before = JSON.parse(new TextDecoder().decode(await v.exportSnapshot())).records;
    assert.equal(await v.secretAdd(PASSWORD, KEY), undefined);
    await v.secretAdd(KEY, OTHER);
    const afterAdd = JSON.parse(new TextDecoder().decode(await v.exportSnapshot())).records;
    assert.deepEqual(afterAdd, before, "no record was rewritten");
    for (const secret of [PASSWORD, KEY, OTHER]) {
      assert.equal(await v.unlock(secret), true);
      assert.deepEqual(Object.values(await v.tokensRead(tokens, secret)).sort(), ["one", "two"]);
    }
    const [byKey] = await v.tokensCreate(["by the key"], KEY);
    assert.equal(await v.tokenRead(byKey, PASSWORD), "by the key");
    assert.equal(await v.tokenRead(byKey, OTHER), "by the key");
    await v.close();
  });

  test(`secretRemove (${backend}): the removed secret opens nothing, the others everything`, async () => {
    const v = await open({ passwordIdentity: true });
    const [token] = await v.tokensCreate(["kept"], PASSWORD);
    await v.secretAdd(PASSWORD, KEY);
    await v.secretAdd(PASSWORD, OTHER);
    assert.equal(await v.secretRemove(PASSWORD), undefined);
    await refused(v.unlock(PASSWORD), "INVALID_PASSWORD", "the removed first secret");
    await refused(v.tokenRead(token, PASSWORD), "INVALID_PASSWORD", "the removed first secret");
    await v.secretRemove(OTHER);
    await refused(v.unlock(OTHER), "INVALID_PASSWORD", "the removed slot");
    assert.equal(await v.tokenRead(token, KEY), "kept");
    const e = await refused(v.secretRemove(KEY), "INVALID_ARGUMENT", "the last secret of an identity with records");
    assert.match(e.message, /secretAdd/);
    assert.equal(await v.tokenRead(token, KEY), "kept", "the refusal changed nothing");
    await refused(v.secretRemove(THIRD), "IDENTITY_NOT_FOUND", "an unknown secret");
    await v.close();
  });

  test(`bulkRekey (${backend}): a re-wrap replaces one slot, a rotation removes every other`, async () => {
    const v = await open({ passwordIdentity: true });
    const [token] = await v.tokensCreate(["value"], PASSWORD);
    await v.secretAdd(PASSWORD, KEY);
    assert.equal(await v.bulkRekey(PASSWORD, OTHER), 1);
    assert.equal(await v.tokenRead(token, OTHER), "value");
    assert.equal(await v.tokenRead(token, KEY), "value", "the other slot keeps working");
    await refused(v.unlock(PASSWORD), "INVALID_PASSWORD", "the replaced secret");
    await refused(v.bulkRekey(PASSWORD, THIRD), "IDENTITY_NOT_FOUND", "a rekey from the replaced secret");
    assert.equal(await v.bulkRekey(OTHER, THIRD, { rotate: true }), 1);
    assert.equal(await v.tokenRead(token, THIRD), "value");
    await refused(v.unlock(KEY), "INVALID_PASSWORD", "a slot of the rotated identity");
    await refused(v.tokenRead(token, KEY), "INVALID_PASSWORD", "a slot of the rotated identity");
    await v.close();
  });

  test(`secretAdd/secretRemove (${backend}): error codes`, async () => {
    const off = await open({});
    await off.tokensCreate(["x"], PASSWORD);
    await refused(off.secretAdd(PASSWORD, KEY), "IDENTITY_DISABLED", "identities off");
    await refused(off.secretRemove(PASSWORD), "IDENTITY_DISABLED", "identities off");
    await off.close();
    const v = await open({ passwordIdentity: true });
    await v.tokensCreate(["mine"], PASSWORD);
    await v.tokensCreate(["theirs"], OTHER);
    await refused(v.secretAdd(THIRD, KEY), "IDENTITY_NOT_FOUND", "an unknown existing secret");
    await refused(v.secretAdd(PASSWORD, PASSWORD), "INVALID_ARGUMENT", "the secret itself");
    await refused(v.secretAdd(PASSWORD, OTHER), "INVALID_ARGUMENT", "a secret of another identity");
    await refused(v.secretAdd(PASSWORD, "short"), "PASSWORD_POLICY", "a password the policy refuses");
    await refused(v.secretAdd(PASSWORD, new Uint8Array(16)), "INVALID_ARGUMENT", "a raw key of the wrong length");
    await refused(v.secretAdd(PASSWORD), "INVALID_ARGUMENT", "no secret to add");
    await refused(v.secretRemove(42), "INVALID_ARGUMENT", "not a secret");
    await v.close();
  });
}
