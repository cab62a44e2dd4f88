// vault.unlock(secret) through the packed package (API.md "Unlocking"), on every backend Node can
// host: memory, SQL (libSQL on a local file) and IndexedDB (the fake-indexeddb polyfill), with
// password identities off and on: true when a stored record or identity opens with the secret
// (the trash and expired records count), false when nothing is stored yet, INVALID_PASSWORD
// otherwise; one key derivation, cached for the calls after it; an event that repeats nothing.
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import "fake-indexeddb/auto";
import { createClient } from "@libsql/client";
import { Vault, libsql } from "vaultstore-wasm";
import { OTHER, PASSWORD, rejects } from "./helpers.mjs";

const THIRD = "a third long password";
const dir = mkdtempSync(join(tmpdir(), "vaultstore-unlock-"));
after(() => rmSync(dir, { recursive: true, force: true }));
let opened = 0;

/** Opens a new, empty vault of one backend; `again(vault)` opens a second connection to it. */
const backends = {
  memory: {
    open: (options) => Vault.open({ backend: "memory", kdfIterations: 1000, ...options }),
  },
  sql: {
    open(options) {
      const client = createClient({ url: `file:${join(dir, `db-${++opened}.sqlite`)}` });
      return Vault.open({ backend: "sql", sql: libsql(client), kdfIterations: 1000, ...options });
    },
  },
  indexeddb: {
    open: (options) => Vault.open({ backend: "indexeddb", name: `unlock-${++opened}-${Date.now()}`, kdfIterations: 1000, ...options }),
  },
};

/** Counts PBKDF2 runs: the engine calls WebCrypto's deriveBits once per password derivation. */
function countDerivations() {
  const proto = Object.getPrototypeOf(crypto.subtle);
  const real = proto.deriveBits;
  const counter = { pbkdf2: 0, restore: () => (proto.deriveBits = real) };
  proto.deriveBits = function (algorithm, ...rest) {
    if (algorithm?.name === "PBKDF2") counter.pbkdf2 += 1;
    return real.call(this, algorithm, ...rest);
  };
  return counter;
}

async function refused(promise, what) {
  const e = await rejects(promise, "INVALID_PASSWORD");
  for (const secret of [PASSWORD, OTHER, THIRD]) {
    assert.ok(!e.message.includes(secret) && !String(e.stack).includes(secret), `${what}: the error repeats a password`);
  }
}

for (const [backend, { open }] of Object.entries(backends)) {
  for (const passwordIdentity of [false, true]) {
    const label = `${backend}, identities ${passwordIdentity ? "on" : "off"}`;

    test(`unlock (${label}): an empty vault is false, the right secret true, a wrong one INVALID_PASSWORD`, async () => {
      const v = await open({ passwordIdentity });
      assert.equal(await v.unlock(PASSWORD), false, "nothing stored yet");
      assert.equal(await v.unlock(crypto.getRandomValues(new Uint8Array(32))), false, "nothing stored yet, raw key");
      const tokens = await v.tokensCreate(["a", "b"], PASSWORD);
      assert.equal(await v.unlock(PASSWORD), true);
      await refused(v.unlock(OTHER), label);
      // A second secret's records open with it; a secret without records is still refused.
      await v.tokenCreate("c", OTHER);
      assert.equal(await v.unlock(OTHER), true);
      await refused(v.unlock(THIRD), label);
      // Deleted for good, every one: nothing left to check against.
      for (const t of [...tokens, ...(await v.recordList()).map((r) => r.token)]) await v.tokenDelete(t);
      assert.equal(await v.unlock(THIRD), false, "emptied");
      await rejects(v.unlock(42), "INVALID_ARGUMENT");
      await rejects(v.unlock(new Uint8Array(16)), "INVALID_ARGUMENT");
    });

    test(`unlock (${label}): the trash and expired records still check the secret`, async () => {
      const v = await open({ passwordIdentity });
      const [trashed] = await v.tokensCreate(["in the trash"], PASSWORD);
      await v.tokenSoftDelete(trashed);
      assert.equal(await v.unlock(PASSWORD), true, "only entry in the trash");
      await refused(v.unlock(OTHER), `${label}, all in the trash`);

      const w = await open({ passwordIdentity });
      await w.tokenCreate("already expired", PASSWORD, { expiresAt: Date.now() - 60_000 });
      await rejects(w.tokenRead((await w.recordList())[0].token, PASSWORD), "RECORD_NOT_FOUND");
      assert.equal(await w.unlock(PASSWORD), true, "only entry expired");
      await refused(w.unlock(OTHER), `${label}, all expired`);
    });

    test(`unlock (${label}): raw keys, one derivation cached for later calls, and an event`, async () => {
      const events = [];
      const v = await open({ passwordIdentity, onEvent: (e) => events.push(e) });
      const key = crypto.getRandomValues(new Uint8Array(32));
      const rawToken = await v.tokenCreate("raw", key);
      assert.equal(await v.unlock(key), true);
      const other = new Uint8Array(key);
      other[0] ^= 1;
      await refused(v.unlock(other), `${label}, raw`);
      await refused(v.unlock(PASSWORD), `${label}, a password against a raw key`);
      assert.equal(await v.tokenRead(rawToken, key), "raw");

      const token = await v.tokenCreate("pw", PASSWORD);
      v.lock();
      const kdf = countDerivations();
      try {
        assert.equal(await v.unlock(PASSWORD), true);
        assert.equal(kdf.pbkdf2, 1, "unlock derives the key once");
        assert.equal(await v.tokenRead(token, PASSWORD), "pw");
        assert.equal(await v.unlock(PASSWORD), true);
        assert.equal(kdf.pbkdf2, 1, "later calls use the key unlock cached");
        v.lock();
        assert.equal(await v.unlock(PASSWORD), true);
        assert.equal(kdf.pbkdf2, 2, "lock() wiped it: derived again");
      } finally {
        kdf.restore();
      }

      const unlocks = events.filter((e) => e.op === "unlock");
      assert.deepEqual(unlocks.map((e) => e.code), ["OK", "INVALID_PASSWORD", "INVALID_PASSWORD", "OK", "OK", "OK"]);
      // Cheap: with identities the lookup answers and no record is looked at; without, the
      // key checks stop at the first record that opens (the raw key's record is scanned past).
      const checked = unlocks.filter((e) => e.code === "OK").map((e) => e.records);
      assert.deepEqual(checked, passwordIdentity ? [0, 0, 0, 0] : [1, checked[1], checked[1], checked[1]]);
      if (!passwordIdentity) assert.ok(checked[1] >= 1 && checked[1] <= 2, `records checked: ${checked[1]}`);
      const seen = JSON.stringify(events);
      assert.ok(!seen.includes(PASSWORD) && !seen.includes(token) && !seen.includes(rawToken), "events repeat nothing");
    });
  }
}

test("unlock: a vault written with identities off unlocks with them on, and the other way round", async () => {
  const name = `unlock-switch-${Date.now()}`;
  const off = await Vault.open({ backend: "indexeddb", name, kdfIterations: 1000 });
  await off.tokenCreate("sealed with the master key", PASSWORD);
  const on = await Vault.open({ backend: "indexeddb", name, kdfIterations: 1000, passwordIdentity: true });
  assert.equal(await on.unlock(PASSWORD), true, "an unlinked record");
  await on.tokenCreate("sealed under an identity", OTHER);
  assert.equal(await off.unlock(OTHER), true, "an identity");
  await refused(on.unlock(THIRD), "switch");
  await refused(off.unlock(THIRD), "switch");
});

test("unlock: a vault written by an earlier release (the frozen snapshot) checks both of its secrets", async () => {
  const snapshot = readFileSync("fixtures/snapshot_v1.json");
  for (const passwordIdentity of [false, true]) {
    const v = await Vault.open({ backend: "memory", minKdfIterations: 1000, passwordIdentity, snapshot });
    assert.equal(await v.unlock(PASSWORD), true, "the identity's password");
    assert.equal(await v.unlock(OTHER), true, "the password of a record written before identities");
    await refused(v.unlock(THIRD), `frozen snapshot, identities ${passwordIdentity}`);
  }
});
