import assert from "node:assert/strict";
import { test } from "node:test";
import { Vault } from "vaultstore-wasm";
import { OTHER, PASSWORD, open, rejects } from "./helpers.mjs";

function rows(snapshotBytes) {
  return JSON.parse(new TextDecoder().decode(snapshotBytes));
}

test("bulkRekey with identities re-wraps one key: every value stays byte-identical", async () => {
  const v = await open({ passwordIdentity: true });
  const tokens = await v.tokensCreate(["a", "b", "c"], PASSWORD);
  await v.tokenSoftDelete(tokens[1]);
  const before = rows(await v.exportSnapshot());
  const progress = [];
  const moved = await v.bulkRekey(PASSWORD, "a brand new password", { onProgress: (done, total) => progress.push([done, total]) });
  assert.equal(moved, 3, "soft-deleted records count");
  assert.deepEqual(progress.at(-1), [3, 3]);
  const after = rows(await v.exportSnapshot());
  assert.deepEqual(after.records, before.records, "no record value changed");
  assert.equal(await v.tokenRead(tokens[0], "a brand new password"), "a");
  await rejects(v.tokenRead(tokens[0], PASSWORD), "INVALID_PASSWORD");
  await rejects(v.bulkRekey(PASSWORD, OTHER), "IDENTITY_NOT_FOUND");
  await rejects(v.bulkRekey("a brand new password", "short"), "PASSWORD_POLICY");
});

test("bulkRekey rotate re-encrypts under a fresh key; onto an existing identity it merges", async () => {
  const v = await open({ passwordIdentity: true });
  const mine = await v.tokensCreate(["m1", "m2"], PASSWORD);
  const theirs = await v.tokenCreate("t1", OTHER);
  const before = rows(await v.exportSnapshot());
  assert.equal(await v.bulkRekey(PASSWORD, "rotated password", { rotate: true }), 2);
  const after = rows(await v.exportSnapshot());
  for (const token of mine) {
    const value = (s) => s.records.find((r) => r.token === token).value;
    assert.notEqual(value(after), value(before));
    assert.ok((await v.tokenRead(token, "rotated password")).startsWith("m"));
  }
  assert.equal(await v.bulkRekey("rotated password", OTHER), 2);
  for (const token of [...mine, theirs]) assert.ok(await v.tokenRead(token, OTHER));
  const identities = new Set(rows(await v.exportSnapshot()).meta.filter((m) => m.objectType === "password_identity").map((m) => m.objectId));
  assert.equal(identities.size, 1, "the emptied identity was removed");
});

test("bulkRekey without identities finds the records by key check; unknown passwords move nothing", async () => {
  const v = await open();
  const mine = await v.tokensCreate(["1", "2"], PASSWORD);
  const theirs = await v.tokenCreate("3", OTHER);
  assert.equal(await v.bulkRekey("nobody's password", "whatever long"), 0);
  assert.equal(await v.bulkRekey(PASSWORD, "the third password"), 2);
  assert.equal(await v.tokenRead(mine[1], "the third password"), "2");
  assert.equal(await v.tokenRead(theirs, OTHER), "3");
  await rejects(v.migrateRecordLinks(PASSWORD), "IDENTITY_DISABLED");
});

test("an AbortSignal stops a rekey before it commits: ABORTED, nothing changed", async () => {
  for (const options of [{ passwordIdentity: true }, { passwordIdentity: false }]) {
    const v = await open(options);
    const tokens = await v.tokensCreate(Array.from({ length: 300 }, (_, i) => `v${i}`), PASSWORD);
    const before = await v.exportSnapshot();
    await rejects(v.bulkRekey(PASSWORD, "new password!!", { signal: AbortSignal.abort() }), "ABORTED");
    const controller = new AbortController();
    const e = await rejects(
      v.bulkRekey(PASSWORD, "new password!!", {
        rotate: true,
        signal: controller.signal,
        onProgress: (done) => done === 100 && controller.abort(),
      }),
      "ABORTED",
    );
    assert.match(e.message, /nothing was changed/);
    // A timer already due when the rekey starts is seen however fast the rest is: the rekey
    // yields to the event loop before it commits. (A timer still pending, as `setTimeout(f, 0)`
    // is for its first millisecond in Node, may fire after a fast rekey commits.)
    const timed = new AbortController();
    setTimeout(() => timed.abort(), 0);
    for (const due = performance.now() + 5; performance.now() < due; );
    await rejects(v.bulkRekey(PASSWORD, "new password!!", { rotate: true, signal: timed.signal }), "ABORTED");
    assert.deepEqual(await v.exportSnapshot(), before, `${JSON.stringify(options)}: byte-identical`);
    assert.equal(await v.tokenRead(tokens[299], PASSWORD), "v299");
    await rejects(v.bulkRekey(PASSWORD, "x!", { signal: "stop" }), "INVALID_ARGUMENT");
    await rejects(v.bulkRekey(PASSWORD, "new password!!", { onProgress: 5 }), "INVALID_ARGUMENT");
  }
});

test("migrateRecordLinks links records made before identities", async () => {
  const legacy = await open();
  const tokens = await legacy.tokensCreate(["a", "b"], PASSWORD);
  const v = await open({ passwordIdentity: true, snapshot: await legacy.exportSnapshot() });
  assert.equal(await v.migrateRecordLinks(PASSWORD), 2);
  assert.equal(await v.migrateRecordLinks(PASSWORD), 0);
  assert.equal(await v.bulkRekey(PASSWORD, "after migration"), 2);
  assert.equal(await v.tokenRead(tokens[0], "after migration"), "a");
});

test("Vault.open passes options through and rejects unknown or mistyped ones", async () => {
  const unknown = await rejects(Vault.open({ backend: "memory", kdfIteration: 1000 }), "INVALID_ARGUMENT");
  // The message lists the options there are, so the typo is easy to see.
  assert.match(unknown.message, /not one of: backend, name, passwordIdentity, kdfIterations, minKdfIterations, /);
  await rejects(Vault.open({ backend: "memory", kdfIterations: 999 }), "INVALID_ARGUMENT");
  await rejects(Vault.open({ backend: "memory", kdfIterations: 10_000_001 }), "INVALID_ARGUMENT");
  await rejects(Vault.open({ backend: "memory", passwordIdentity: "yes" }), "INVALID_ARGUMENT");
  await rejects(Vault.open({ backend: "sqlite" }), "INVALID_ARGUMENT");
  await rejects(Vault.open({ backend: "memory", passwordPolicy: { minLength: -1 } }), "INVALID_ARGUMENT");
  await rejects(Vault.open({ backend: "memory", snapshot: 42 }), "INVALID_ARGUMENT");
  await rejects(Vault.open("memory"), "INVALID_ARGUMENT");
  const strict = await open({ passwordPolicy: { minLength: 8, requireUppercase: true, requireNumbers: true, requireSymbols: true } });
  const e = await rejects(strict.tokenCreate("x", "alllowercase"), "PASSWORD_POLICY");
  assert.match(e.message, /uppercase/);
  await strict.tokenCreate("x", "Str0ng!pw");
  await rejects(strict.tokenCreate("x", ""), "PASSWORD_POLICY");
  const lax = await open({ passwordPolicy: { allowEmpty: true } });
  assert.equal(await lax.tokenRead(await lax.tokenCreate("x", ""), ""), "x");
});
