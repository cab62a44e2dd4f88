import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { Vault } from "vaultstore-wasm";
import { PASSWORD, open, rejects } from "./helpers.mjs";

test("a new vault: version 1, not migrated, settings round-trip", async () => {
  const v = await open();
  assert.equal(await v.getVaultVersion(), "1");
  assert.equal(await v.isVaultMigrated(), false);
  await v.markVaultMigrated();
  assert.equal(await v.isVaultMigrated(), true);
  await v.setVaultVersion("2");
  assert.equal(await v.getVaultVersion(), "2");
  await v.setVaultSetting("theme", "dark");
  assert.equal(await v.getVaultSetting("theme"), "dark");
  assert.equal(await v.getVaultSetting("nothing"), null);
  assert.match(await v.getVaultSetting("kdf"), /^\{"alg":"pbkdf2-sha256","iterations":1000,"salt":"[A-Za-z0-9_-]{22}"\}$/);
  await rejects(v.setVaultSetting("kdf", "{}"), "INVALID_ARGUMENT");
  await rejects(v.setVaultSetting("", "x"), "INVALID_ARGUMENT");
  await rejects(v.setVaultSetting("k", 5), "INVALID_ARGUMENT");
});

test("two memory vaults never share state, whatever their name", async () => {
  const a = await open({ name: "same" });
  const b = await open({ name: "same" });
  const t = await a.tokenCreate("v", PASSWORD);
  assert.equal(await b.tokenExists(t), false);
});

test("snapshots: export, reopen, same rows; refusals", async () => {
  const v = await open({ passwordIdentity: true });
  const t = await v.tokenCreate("persisted", PASSWORD);
  await v.setVaultSetting("k", "v");
  const bytes = await v.exportSnapshot();
  assert.ok(bytes instanceof Uint8Array);
  const text = new TextDecoder().decode(bytes);
  assert.ok(!text.includes("persisted") && !text.includes(PASSWORD), "no plaintext, no password");
  const fromBytes = await Vault.open({ backend: "memory", kdfIterations: 1000, snapshot: bytes, passwordIdentity: true });
  const fromText = await Vault.open({ backend: "memory", kdfIterations: 1000, snapshot: text });
  assert.equal(await fromBytes.tokenRead(t, PASSWORD), "persisted");
  assert.equal(await fromText.tokenRead(t, PASSWORD), "persisted", "linked records read with identities off too");
  assert.deepEqual(await fromBytes.exportSnapshot(), bytes, "re-export gives the same rows");
  for (const bad of ["{", "{}", JSON.stringify({ ...JSON.parse(text), version: 2 }), new Uint8Array([0xff, 0xfe])]) {
    await rejects(Vault.open({ backend: "memory", kdfIterations: 1000, snapshot: bad }), "INVALID_ARGUMENT");
  }
});

test("the frozen snapshot of an earlier release opens", async () => {
  const v = await Vault.open({ backend: "memory", minKdfIterations: 1000, snapshot: readFileSync("fixtures/snapshot_v1.json") });
  assert.equal(await v.tokenRead("tk_identityrecord000000000001", PASSWORD), "linked value");
  assert.equal(await v.tokenRead("tk_legacyrecord00000000000001", "another long password"), "unlinked value");
});

test("a tampered value or identity key is DECRYPTION_FAILED; a snapshot missing one is refused", async () => {
  const v = await open({ passwordIdentity: true });
  const t = await v.tokenCreate("value", PASSWORD);
  const doc = JSON.parse(new TextDecoder().decode(await v.exportSnapshot()));
  const flip = (s) => s.slice(0, -2) + (s.at(-2) === "A" ? "B" : "A") + s.at(-1);
  const reopen = (d) => Vault.open({ backend: "memory", kdfIterations: 1000, snapshot: JSON.stringify(d), passwordIdentity: true });
  const tampered = structuredClone(doc);
  tampered.records[0].value = flip(tampered.records[0].value);
  const e = await rejects((await reopen(tampered)).tokenRead(t, PASSWORD), "DECRYPTION_FAILED");
  assert.deepEqual(e.tokens, [t]);
  const badDek = structuredClone(doc);
  const dek = badDek.meta.find((m) => m.key === "dek");
  dek.value = flip(dek.value);
  const x = await reopen(badDek);
  await rejects(x.tokenRead(t, PASSWORD), "DECRYPTION_FAILED");
  // After any rejection the same vault keeps working (for secrets whose identity is intact).
  const other = await x.tokenCreate("still works", "another long password");
  assert.equal(await x.tokenRead(other, "another long password"), "still works");
  const noDek = structuredClone(doc);
  noDek.meta = noDek.meta.filter((m) => m.key !== "dek");
  const refused = await rejects(reopen(noDek), "INVALID_ARGUMENT");
  assert.match(refused.message, /lacks its tag or its dek/);
});

test("lock() wipes keys; close() closes for good", async () => {
  const v = await open();
  const t = await v.tokenCreate("v", PASSWORD);
  v.lock();
  assert.equal(await v.tokenRead(t, PASSWORD), "v", "a locked vault derives again on the next call");
  await v.close();
  await v.close();
  v.lock();
  const e = await rejects(v.tokenRead(t, PASSWORD), "CLOSED");
  assert.match(e.message, /open a new Vault/);
  for (const call of [() => v.tokenCreate("x", PASSWORD), () => v.recordList(), () => v.exportSnapshot(), () => v.getVaultVersion(), () => v.bulkRekey(PASSWORD, "x")]) {
    await rejects(call(), "CLOSED");
  }
});

test("a closed vault rejects with CLOSED whatever the arguments, and reports it to onEvent", async () => {
  const events = [];
  const v = await open({ onEvent: (event) => events.push(event) });
  await v.close();
  const unreadable = new Proxy({}, { ownKeys: () => { throw new Error("a trap that throws"); } });
  const calls = [
    ["tokenRead", () => v.tokenRead(42, PASSWORD)],
    ["recordList", () => v.recordList({ limit: "x" })],
    ["recordList", () => v.recordList(unreadable)],
    ["recordCount", () => v.recordCount(unreadable)],
    ["tokenCreateCustom", () => v.tokenCreateCustom("", "x", PASSWORD)],
    ["bulkRekey", () => v.bulkRekey(PASSWORD, "x", { signal: AbortSignal.abort() })],
    ["sync", () => v.sync(42)],
    ["syncHandle", () => v.syncHandle(new Request("http://localhost/sync", { method: "GET" }))],
    ["syncHandle", () => v.syncHandle()],
    ["syncHandle", () => v.syncHandle("not a request")],
  ];
  for (const [op, call] of calls) {
    events.length = 0;
    await rejects(call(), "CLOSED");
    assert.deepEqual(events.map((e) => [e.op, e.code]), [[op, "CLOSED"]], op);
  }
  // Open, the same bad remote is its own error, and onEvent hears of it too.
  const w = await open({ onEvent: (event) => events.push(event) });
  events.length = 0;
  const bad = await rejects(w.sync(42), "INVALID_ARGUMENT");
  assert.match(bad.message, /remote|URL/);
  assert.deepEqual(events.map((e) => [e.op, e.code]), [["sync", "INVALID_ARGUMENT"]]);
  // So is a query the engine cannot read.
  events.length = 0;
  await rejects(w.recordList(unreadable), "INVALID_ARGUMENT");
  await rejects(w.recordCount(unreadable), "INVALID_ARGUMENT");
  assert.deepEqual(events.map((e) => [e.op, e.code]), [["recordList", "INVALID_ARGUMENT"], ["recordCount", "INVALID_ARGUMENT"]]);
});

test("100 concurrent tokenCreate on one Vault all succeed and read back", async () => {
  const v = await open();
  const tokens = await Promise.all(Array.from({ length: 100 }, (_, i) => v.tokenCreate(`value ${i}`, PASSWORD)));
  assert.equal(new Set(tokens).size, 100);
  const values = await Promise.all(tokens.map((t) => v.tokenRead(t, PASSWORD)));
  values.forEach((value, i) => assert.equal(value, `value ${i}`));
  assert.equal(await v.recordCount(), 100);
  // Mixed concurrent traffic, including failing calls, leaves the vault consistent.
  const mixed = await Promise.allSettled([
    ...tokens.slice(0, 20).map((t) => v.tokenUpdate(t, "updated", PASSWORD)),
    ...tokens.slice(20, 40).map((t) => v.tokenDelete(t)),
    ...tokens.slice(40, 60).map((t) => v.tokenRead(t, "wrong password!")),
    v.tokensRead(tokens.slice(60), PASSWORD),
  ]);
  assert.equal(mixed.filter((r) => r.status === "rejected").length, 20);
  assert.equal(await v.recordCount(), 80);
  assert.equal(await v.tokenRead(tokens[0], PASSWORD), "updated");
});

test("lock() and close() clear the cached key's expiry timer, for hosts that cannot unreference it", async () => {
  // Such a host (edge-runtime; setTimeout returns a number there) stays alive for a pending
  // timer, so a vault's 15-minute key expiry must go when the key does. Timers of the engine's
  // yields (0 ms) pass through; the long ones are recorded here instead of set.
  const realSet = globalThis.setTimeout;
  const realClear = globalThis.clearTimeout;
  const pending = new Map();
  let next = 1;
  globalThis.setTimeout = (callback, ms, ...rest) => {
    if (!(ms > 60_000)) return realSet(callback, ms, ...rest);
    pending.set(next, ms);
    return next++;
  };
  globalThis.clearTimeout = (id) => (pending.has(id) ? pending.delete(id) : realClear(id));
  try {
    const v = await open({ keyCacheTtlMs: 900_000 });
    const t = await v.tokenCreate("value", PASSWORD);
    assert.equal(pending.size, 1, "one key cached, one expiry");
    const [delay] = pending.values();
    assert.ok(delay > 890_000 && delay <= 900_000, `the cached key expires in keyCacheTtlMs (${delay} ms)`);
    v.lock();
    assert.equal(pending.size, 0, "lock() cleared it");
    assert.equal(await v.tokenRead(t, PASSWORD), "value");
    assert.equal(pending.size, 1, "unlocking again schedules the expiry again");
    await v.close();
    assert.equal(pending.size, 0, "close() cleared it");
  } finally {
    globalThis.setTimeout = realSet;
    globalThis.clearTimeout = realClear;
  }
});

test("a call holding a key when lock() runs does not use it: ABORTED, nothing written", async () => {
  const { createClient } = await import("@libsql/client");
  const { mkdtempSync, rmSync } = await import("node:fs");
  const { tmpdir } = await import("node:os");
  const { join } = await import("node:path");
  const { libsql } = await import("vaultstore-wasm");
  const dir = mkdtempSync(join(tmpdir(), "vaultstore-lock-"));
  const client = createClient({ url: `file:${join(dir, "db.sqlite")}` });
  const inner = libsql(client);
  // An executor that locks the vault when the engine looks an identity up, which it does while
  // holding the master key (the lookup's parameters end in "password_identity", "tag", tag;
  // a read of values sends it with the records, after the namespace and the tokens).
  let lockAtLookup = false;
  let vault;
  const looksUpIdentity = (params) => {
    const at = params.indexOf("password_identity");
    return at >= 0 && params[at + 1] === "tag";
  };
  const sql = {
    async all(statement, params) {
      if (lockAtLookup && looksUpIdentity(params)) {
        lockAtLookup = false;
        await Promise.resolve();
        vault.lock();
      }
      return inner.all(statement, params);
    },
    batch: (statements) => inner.batch(statements),
  };
  try {
    vault = await Vault.open({ backend: "sql", sql, kdfIterations: 1000, passwordIdentity: true });
    const token = await vault.tokenCreate("before", PASSWORD);
    for (const [what, call] of [
      ["tokenRead", () => vault.tokenRead(token, PASSWORD)],
      ["tokensRead", () => vault.tokensRead([token], PASSWORD)],
      ["tokenCreate", () => vault.tokenCreate("late", PASSWORD)],
      ["tokenUpdate", () => vault.tokenUpdate(token, "late", PASSWORD)],
    ]) {
      await vault.tokenRead(token, PASSWORD); // the key is cached when the call starts
      lockAtLookup = true;
      const e = await rejects(call(), "ABORTED");
      assert.match(e.message, /locked/, what);
      assert.equal(lockAtLookup, false, `${what} looked its identity up`);
    }
    assert.equal(await vault.recordCount(), 1, "the create wrote nothing");
    assert.equal(await vault.tokenRead(token, PASSWORD), "before", "the update wrote nothing");
  } finally {
    client.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a derivation that lock() overtakes is made again, and the call succeeds", async () => {
  // Count the engine's PBKDF2 runs through WebCrypto.
  const subtle = globalThis.crypto.subtle;
  const deriveBits = subtle.deriveBits;
  let derivations = 0;
  subtle.deriveBits = function (algorithm, key, length) {
    if (algorithm?.name === "PBKDF2") derivations++;
    return deriveBits.call(this, algorithm, key, length);
  };
  try {
    const v = await open({ kdfIterations: 1_000_000 });
    const t = await v.tokenCreate("v", PASSWORD);
    v.lock();
    derivations = 0;
    const read = v.tokenRead(t, PASSWORD);
    // Let the call start its (thread-pool) PBKDF2, then lock while it runs.
    await new Promise((resolve) => setTimeout(resolve, 5));
    assert.equal(derivations, 1, "the derivation is running");
    v.lock();
    assert.equal(await read, "v");
    assert.equal(derivations, 2, "thrown away and made again after the lock");
  } finally {
    subtle.deriveBits = deriveBits;
  }
});
