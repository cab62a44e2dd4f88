// What a password manager's storage layer must promise beyond correct results (issue 7): hostile
// input never traps the engine, no error or event repeats a secret, and after lock() no key or
// password is left anywhere in WebAssembly memory.
import assert from "node:assert/strict";
import nodeCrypto from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { Vault, VaultError, libsql } from "vaultstore-wasm";
import { PASSWORD, open, rejects } from "./helpers.mjs";

const { subtle } = globalThis.crypto;
const utf8 = new TextEncoder();

/** The engine instance the package runs on (the same module, so the same instance). */
async function wasmMemory() {
  const glue = await import("./node_modules/vaultstore-wasm/dist/wasm/vaultstore_full.js");
  const bytes = readFileSync(new URL("./node_modules/vaultstore-wasm/dist/wasm/vaultstore_full_bg.wasm", import.meta.url));
  return glue.initSync({ module: bytes }).memory;
}

function indexOf(haystack, needle) {
  const first = needle[0];
  for (let i = haystack.indexOf(first); i !== -1 && i <= haystack.length - needle.length; i = haystack.indexOf(first, i + 1)) {
    let j = 1;
    while (j < needle.length && haystack[i + j] === needle[j]) j++;
    if (j === needle.length) return i;
  }
  return -1;
}

test("hostile arguments are INVALID_ARGUMENT and the engine keeps working", async () => {
  const v = await open();
  const token = await v.tokenCreate("still here", PASSWORD);
  const throwing = new Proxy({}, { ownKeys() { throw new Error("trap"); } });
  const getterThrows = { get kdfIterations() { throw new Error("getter"); } };
  const { proxy: revoked, revoke } = Proxy.revocable({}, {});
  revoke();
  const arrayProxy = new Proxy(["a", "b"], { get(t, k) { if (k === "1") throw new Error("item"); return Reflect.get(t, k); } });
  const sparse = [];
  sparse.length = 2 ** 32 - 1;
  const cases = [
    ["a 2.5 GB raw key", () => v.tokenRead(token, new Uint8Array(2.5e9))],
    ["a Proxy around a key", () => v.tokenRead(token, new Proxy(new Uint8Array(32), {}))],
    ["a revoked Proxy as a key", () => v.tokenRead(token, revoked)],
    ["options whose keys trap", () => v.tokenCreate("x", PASSWORD, throwing)],
    ["options with a throwing getter", () => Vault.open({ backend: "memory", ...{}, get kdfIterations() { throw new Error("g"); } })],
    ["a revoked Proxy as options", () => v.tokenCreate("x", PASSWORD, revoked)],
    ["a revoked Proxy as a query", () => v.recordList(revoked)],
    ["an array whose items trap", () => v.tokensCreate(arrayProxy, PASSWORD)],
    ["a revoked Proxy as an array", () => v.tokensRead(revoked, PASSWORD)],
    ["an array of 4 billion holes", () => v.tokensCreate(sparse, PASSWORD)],
    ["200,000 values", () => v.tokensCreate(new Array(200_000).fill("x"), PASSWORD)],
    ["a 20 Mi-character value", () => v.tokenCreate("x".repeat(20 * 2 ** 20), PASSWORD)],
    ["a 1 Mi-character password", () => v.tokenRead(token, "p".repeat(2 ** 20))],
    ["a 1 Mi-character token", () => v.tokenRead("t".repeat(2 ** 20), PASSWORD)],
    ["a signal that traps", () => v.bulkRekey(PASSWORD, "new long password", { signal: new Proxy(new AbortController().signal, { get() { throw new Error("s"); } }) })],
    ["a Date that is a Proxy", () => v.tokenRenew(token, new Proxy(new Date(), {}))],
    ["a keyToToken map whose keys trap", () => v.tokensReadToResolvedMap(throwing, PASSWORD)],
  ];
  void getterThrows;
  for (const [what, call] of cases) {
    const e = await call().catch((error) => error);
    assert.ok(e instanceof VaultError, `${what}: ${e}`);
    assert.ok(["INVALID_ARGUMENT", "ABORTED"].includes(e.code), `${what}: ${e.code} ${e.message}`);
  }
  assert.equal(await v.tokenRead(token, PASSWORD), "still here", "the same Vault keeps working");
  assert.equal(await (await open()).tokenCreate("v", PASSWORD).then(() => "ok"), "ok", "so do new ones");
});

test("no error message, cause or event repeats a value, a password or its length", async () => {
  const events = [];
  const v = await open({ passwordIdentity: true, onEvent: (e) => events.push(e) });
  const card = "4111111111111111";
  const secretPassword = "Pa55word-SECRET-zq";
  const short = "zq-short";
  const value = "the secret VALUE zq-17";
  const token = await v.tokenCreate(value, secretPassword);
  const errors = [];
  const outcomes = [];
  const collect = async (p) => {
    try {
      await p;
      outcomes.push("resolved");
    } catch (e) {
      errors.push(e);
      outcomes.push(e?.code);
    }
  };
  await collect(v.tokenCreate(Number(card), secretPassword));
  await collect(v.tokenCreate(card, short));
  await collect(v.tokenUpdate(token, card, short));
  await collect(v.tokenUpdate(token, card, "not-the-password-zq"));
  await collect(v.tokenRead(token, "not-the-password-zq"));
  await collect(v.tokensRead([token], "not-the-password-zq"));
  await collect(v.tokenRead(token, Number(card)));
  await collect(v.tokenRead(token, utf8.encode(card)));
  await collect(v.tokenCreate(value, secretPassword, { length: Number(card) }));
  // Out of Date's range, and printed in full ("4111111111111111000", where * 1e6 would print
  // an exponent), so a message that repeats the number would show the card number.
  await collect(v.tokenCreate(value, secretPassword, { expiresAt: Number(card) * 1000 }));
  await collect(v.tokenRenew(token, Number(card) * 1000));
  await collect(v.recordList({ orderBy: card }));
  await collect(v.recordList({ sortOrder: card, limit: -Number(card) }));
  await collect(v.setVaultSetting("k", Number(card)));
  await collect(v.bulkRekey(secretPassword, short));
  await collect(v.bulkRekey("not-the-password-zq", "a long enough new one"));
  await collect(Vault.open({ backend: "memory", kdfIterations: Number(card) }));
  await collect(Vault.open({ backend: "memory", minKdfIterations: Number(card) }));
  await collect(Vault.open({ backend: card }));
  await collect(Vault.open({ backend: "memory", snapshot: `{"format":"vaultstore-snapshot","version":1,"records":[{"id":"a","token":"tk_a","value":${card}}],"meta":[]}` }));
  await collect(Vault.open({ backend: "memory", snapshot: `{"format":"vaultstore-snapshot","version":1,"records":[{"id":"a","token":"tk_a","value":"${card}","createdAt":0,"updatedAt":0,"expiresAt":null,"softDeletedAt":null}],"meta":[]}` }));
  await collect(Vault.open({ backend: "memory", snapshot: `{"format":"${card}"}` }));
  // Each call's outcome, in order: a call that resolved would show no message to check.
  const [arg, policy, password] = ["INVALID_ARGUMENT", "PASSWORD_POLICY", "INVALID_PASSWORD"];
  assert.deepEqual(outcomes, [
    arg, policy, policy, password, password, password, // value type; short passwords; wrong password
    arg, arg, arg, arg, arg, arg, arg, arg, // number/bytes secrets, length, expiry, renewal, query x2, setting
    policy, "IDENTITY_NOT_FOUND", // rekey to a short password; from an unknown one
    arg, arg, arg, arg, arg, arg, // open: iterations, minimum, backend, snapshots x3
  ]);
  const secrets = [card, secretPassword, short, value, "not-the-password-zq", `${short.length} characters`, `${card.length} bytes`];
  for (const e of errors) {
    assert.ok(e instanceof VaultError, String(e));
    const shown = [e.message, String(e), e.stack ?? "", JSON.stringify(e), e.cause?.message ?? ""].join("\n");
    for (const s of secrets) {
      assert.ok(!shown.includes(s), `${e.code} "${e.message}" repeats ${JSON.stringify(s)}`);
    }
  }
  assert.ok(events.length >= 15);
  const seen = JSON.stringify(events);
  for (const s of [...secrets, token]) {
    assert.ok(!seen.includes(s), `an event repeats ${JSON.stringify(s)}`);
  }
});

test("no message quotes a string the caller passed, in any argument or order; error.tokens carries tokens", async () => {
  // Every string argument carries a distinctive marker; a message may name the argument, its
  // type and its limit, never its content (API.md "Errors").
  const M = "zqMARK3R";
  const mark = (what) => `${M}-${what}`;
  const password = mark("password-Aa1!");
  const v = await open({ passwordIdentity: true });
  const token = await v.tokenCreate(mark("value"), password);
  const custom = mark("custom-token");
  await v.tokenCreateCustom(custom, mark("value"), password);
  const weak = `${M}x`; // shorter than the default policy's 12 characters
  const pending = [];
  // [what, call, code, the tokens error.tokens must hold (undefined: no tokens property)]
  const cases = [
    ["tokenRead(password, token): swapped", () => v.tokenRead(password, token), "RECORD_NOT_FOUND", [password]],
    ["tokenRead(token, wrong password)", () => v.tokenRead(token, mark("wrong password")), "INVALID_PASSWORD", [token]],
    ["tokenRead(unknown token, password)", () => v.tokenRead(mark("token"), password), "RECORD_NOT_FOUND", [mark("token")]],
    ["tokenRead(token, token): a token as the password", () => v.tokenRead(token, token), "INVALID_PASSWORD", [token]],
    ["tokensRead(unknown tokens)", () => v.tokensRead([mark("a"), token, mark("b")], password), "RECORD_NOT_FOUND", [mark("a"), mark("b")]],
    ["tokensRead([password], token): swapped", () => v.tokensRead([password], token), "RECORD_NOT_FOUND", [password]],
    ["tokensRead(tokens, wrong password)", () => v.tokensRead([token], mark("wrong password")), "INVALID_PASSWORD", [token]],
    ["tokensRead(a string for the array)", () => v.tokensRead(mark("not an array"), password), "INVALID_ARGUMENT"],
    ["tokensReadToResolvedMap(unknown token)", () => v.tokensReadToResolvedMap({ [mark("key")]: mark("token") }, password), "RECORD_NOT_FOUND", [mark("token")]],
    ["tokensReadToResolvedMap(a key mapped to a number)", () => v.tokensReadToResolvedMap({ [mark("key")]: 5 }, password), "INVALID_ARGUMENT"],
    ["tokenCreate(value, weak password)", () => v.tokenCreate(mark("value"), weak), "PASSWORD_POLICY"],
    ["tokenCreate with an unknown option", () => v.tokenCreate(mark("value"), password, { [mark("option")]: 1 }), "INVALID_ARGUMENT"],
    ["tokenCreate with a string length", () => v.tokenCreate(mark("value"), password, { length: mark("length") }), "INVALID_ARGUMENT"],
    ["tokenCreate with a string expiry", () => v.tokenCreate(mark("value"), password, { expiresAt: mark("expiry") }), "INVALID_ARGUMENT"],
    ["tokensCreate with a number among the values", () => v.tokensCreate([mark("value"), 5], password), "INVALID_ARGUMENT"],
    ["tokenCreateCustom(taken token)", () => v.tokenCreateCustom(custom, mark("value"), password), "TOKEN_EXISTS", [custom]],
    ["tokenCreateCustom(token, value, weak password)", () => v.tokenCreateCustom(mark("new-token"), mark("value"), weak), "PASSWORD_POLICY"],
    ["tokenUpdate(unknown token)", () => v.tokenUpdate(mark("token"), mark("value"), password), "RECORD_NOT_FOUND", [mark("token")]],
    ["tokenUpdate(password, value, token): swapped", () => v.tokenUpdate(password, mark("value"), token), "RECORD_NOT_FOUND", [password]],
    ["tokenUpdate(token, value, wrong password)", () => v.tokenUpdate(token, mark("value"), mark("wrong password")), "INVALID_PASSWORD", [token]],
    ["tokenUpsert(unknown token)", () => v.tokenUpsert(mark("token"), mark("value"), password), "RECORD_NOT_FOUND", [mark("token")]],
    ["tokenRenew(unknown token)", () => v.tokenRenew(mark("token"), null), "RECORD_NOT_FOUND", [mark("token")]],
    ["tokenRenew(token, a string time)", () => v.tokenRenew(token, mark("time")), "INVALID_ARGUMENT"],
    ["tokenSoftDelete(password): a password as the token", () => v.tokenSoftDelete(password), "RECORD_NOT_FOUND", [password]],
    ["tokenRestore(unknown token)", () => v.tokenRestore(mark("token")), "RECORD_NOT_FOUND", [mark("token")]],
    ["recordList with an unknown option", () => v.recordList({ [mark("field")]: 1 }), "INVALID_ARGUMENT"],
    ["recordList with an unknown orderBy", () => v.recordList({ orderBy: mark("order") }), "INVALID_ARGUMENT"],
    ["recordList with an unknown sortOrder", () => v.recordList({ sortOrder: mark("sort") }), "INVALID_ARGUMENT"],
    ["recordCount with a string limit", () => v.recordCount({ limit: mark("limit") }), "INVALID_ARGUMENT"],
    ["bulkRekey(unknown old password)", () => v.bulkRekey(mark("old password"), mark("new password")), "IDENTITY_NOT_FOUND"],
    ["bulkRekey(old, weak new password)", () => v.bulkRekey(password, weak), "PASSWORD_POLICY"],
    ["bulkRekey with an unknown option", () => v.bulkRekey(password, mark("new password"), { [mark("option")]: true }), "INVALID_ARGUMENT"],
    ["secretAdd(unknown existing secret)", () => v.secretAdd(mark("unknown password"), mark("added password")), "IDENTITY_NOT_FOUND"],
    ["secretAdd(password, password): itself", () => v.secretAdd(password, password), "INVALID_ARGUMENT"],
    ["secretAdd(password, weak password)", () => v.secretAdd(password, weak), "PASSWORD_POLICY"],
    ["secretAdd(password, a number)", () => v.secretAdd(password, 5), "INVALID_ARGUMENT"],
    ["secretRemove(unknown secret)", () => v.secretRemove(mark("unknown password")), "IDENTITY_NOT_FOUND"],
    ["secretRemove(the last secret of an identity with records)", () => v.secretRemove(password), "INVALID_ARGUMENT"],
    ["setVaultSetting(kdf, value)", () => v.setVaultSetting("kdf", mark("value")), "INVALID_ARGUMENT"],
    ["setVaultSetting(key, number)", () => v.setVaultSetting(mark("key"), 5), "INVALID_ARGUMENT"],
    ["Vault.open with an unknown backend", () => Vault.open({ backend: mark("backend") }), "INVALID_ARGUMENT"],
    ["Vault.open with an unknown option", () => Vault.open({ backend: "memory", [mark("option")]: 1 }), "INVALID_ARGUMENT"],
    ["Vault.open with a string kdfIterations", () => Vault.open({ backend: "memory", kdfIterations: mark("n") }), "INVALID_ARGUMENT"],
    ["Vault.open with a snapshot that is not one", () => Vault.open({ backend: "memory", snapshot: mark("snapshot") }), "INVALID_ARGUMENT"],
  ];
  for (const [what, call, code, tokens] of cases) {
    const e = await call().then(
      (value) => assert.fail(`${what} resolved with ${JSON.stringify(value)}`),
      (error) => error,
    );
    assert.ok(e instanceof VaultError, `${what}: ${e}`);
    assert.equal(e.code, code, `${what}: ${e.message}`);
    const shown = [e.message, String(e), e.stack ?? "", e.cause?.message ?? ""].join("\n");
    assert.ok(!shown.includes(M), `${what}: the message quotes the caller's text: ${e.message}`);
    assert.deepEqual(e.tokens, tokens, `${what}: error.tokens`);
    pending.push(e);
  }
  assert.equal(pending.length, cases.length, "every call rejected");
});

test("onEvent reports every operation with its outcome, and a throwing listener changes nothing", async () => {
  const events = [];
  const began = performance.now();
  const v = await open({ onEvent: (e) => events.push(e) });
  const tokens = await v.tokensCreate(["a", "b", "c"], PASSWORD);
  await v.tokensRead(tokens, PASSWORD);
  await v.tokenRead(tokens[0], "wrong password!!").catch(() => {});
  await v.tokenRead(5, PASSWORD).catch(() => {});
  await v.recordList({ limit: 2 });
  // A delete counts the record it deleted: none for a token that is not there.
  await v.tokenDelete(tokens[2]);
  await v.tokenDelete(tokens[2]);
  await v.recordDeleteByToken(tokens[1]);
  await v.recordDeleteByToken(tokens[1]);
  v.lock();
  await v.close();
  assert.deepEqual(
    events.map(({ op, records, code }) => ({ op, records, code })),
    [
      { op: "open", records: 0, code: "OK" },
      { op: "tokensCreate", records: 3, code: "OK" },
      { op: "tokensRead", records: 3, code: "OK" },
      { op: "tokenRead", records: 0, code: "INVALID_PASSWORD" },
      { op: "tokenRead", records: 0, code: "INVALID_ARGUMENT" },
      { op: "recordList", records: 2, code: "OK" },
      { op: "tokenDelete", records: 1, code: "OK" },
      { op: "tokenDelete", records: 0, code: "OK" },
      { op: "recordDeleteByToken", records: 1, code: "OK" },
      { op: "recordDeleteByToken", records: 0, code: "OK" },
      { op: "lock", records: 0, code: "OK" },
      { op: "close", records: 0, code: "OK" },
    ],
  );
  // Each duration is its call's: no longer than the whole sequence took (a duration measured
  // from an unread clock would be the process's age).
  const whole = performance.now() - began;
  for (const e of events) {
    assert.deepEqual(Object.keys(e).sort(), ["code", "durationMs", "op", "records"]);
    assert.ok(Number.isFinite(e.durationMs) && e.durationMs >= 0 && e.durationMs <= whole, `${e.op}: ${e.durationMs} ms of ${whole}`);
  }
  const loud = await open({
    onEvent: () => {
      throw new Error("a broken listener");
    },
  });
  const t = await loud.tokenCreate("kept", PASSWORD);
  assert.equal(await loud.tokenRead(t, PASSWORD), "kept");
  await rejects(loud.tokenRead(t, "wrong password!!"), "INVALID_PASSWORD");
  await rejects(open({ onEvent: "not a function" }), "INVALID_ARGUMENT");
  // An async listener that rejects: without the package catching its promise, Node would see an
  // unhandled rejection and end the process.
  const unhandled = [];
  const record = (reason) => unhandled.push(reason);
  process.on("unhandledRejection", record);
  try {
    const failing = await open({ onEvent: async () => { throw new Error("an async broken listener"); } });
    const kept = await failing.tokenCreate("kept too", PASSWORD);
    assert.equal(await failing.tokenRead(kept, PASSWORD), "kept too");
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.deepEqual(unhandled, [], "the listener's rejection is not left unhandled");
  } finally {
    process.off("unhandledRejection", record);
  }
});

test("a string that is not well-formed UTF-16 is refused, not silently changed", async () => {
  const v = await open();
  const lone = "a\ud800b";
  await rejects(v.tokenCreate(lone, PASSWORD), "INVALID_ARGUMENT");
  await rejects(v.tokenCreateCustom("tok\udc00en", "value", PASSWORD), "INVALID_ARGUMENT");
  // Two passwords that differ only there would otherwise derive the same key.
  await rejects(v.tokenCreate("value", "a long pass\ud800word"), "INVALID_ARGUMENT");
  await rejects(v.setVaultSetting("key", lone), "INVALID_ARGUMENT");
  await rejects(v.tokensReadToResolvedMap({ ["k\ud800"]: "tk_whatever_long" }, PASSWORD), "INVALID_ARGUMENT");
  const e = await v.tokenCreate(lone, PASSWORD).catch((error) => error);
  assert.match(e.message, /surrogate/);
  assert.ok(!e.message.includes(lone));
  // U+FFFD itself, and characters outside the BMP (a surrogate pair), are text like any other.
  for (const value of ["a\ufffdb", "\ud83d\ude00 ok", "\ufffd"]) {
    const token = await v.tokenCreate(value, PASSWORD);
    assert.equal(await v.tokenRead(token, PASSWORD), value);
  }
  await v.tokenCreateCustom("custom \ufffd \ud83d\ude00", "v", PASSWORD);
  assert.equal(await v.tokenRead("custom \ufffd \ud83d\ude00", PASSWORD), "v");
  assert.equal(await v.recordCount(), 4);
});

test("a wrong option names the limit the vault enforces", async () => {
  const v = await open();
  for (const length of [-1, 1.5, Number.NaN, Infinity]) {
    const e = await v.tokenCreate("x", PASSWORD, { length }).catch((error) => error);
    assert.equal(e.code, "INVALID_ARGUMENT");
    assert.match(e.message, /options\.length must be an integer from 15 to 40/);
  }
  for (const kdfIterations of [-5, 999.5, 2 ** 60]) {
    const e = await Vault.open({ backend: "memory", kdfIterations }).catch((error) => error);
    assert.equal(e.code, "INVALID_ARGUMENT");
    assert.match(e.message, /options\.kdfIterations must be an integer from 1000 to 10000000/);
  }
});

/** SHA-256's compression function (FIPS 180-4), on a state of eight 32-bit words. */
function compress(state, block) {
  const K = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01,
    0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc,
    0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147,
    0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08,
    0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208,
    0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
  ];
  const rotr = (x, n) => (x >>> n) | (x << (32 - n));
  const w = new Uint32Array(64);
  for (let i = 0; i < 16; i++) w[i] = (block[4 * i] << 24) | (block[4 * i + 1] << 16) | (block[4 * i + 2] << 8) | block[4 * i + 3];
  for (let i = 16; i < 64; i++) {
    const s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >>> 3);
    const s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >>> 10);
    w[i] = w[i - 16] + s0 + w[i - 7] + s1;
  }
  let [a, b, c, d, e, f, g, h] = state;
  for (let i = 0; i < 64; i++) {
    const t1 = (h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i]) >>> 0;
    const t2 = ((rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))) >>> 0;
    [h, g, f, e, d, c, b, a] = [g, f, e, (d + t1) >>> 0, c, b, a, (t1 + t2) >>> 0];
  }
  return Uint32Array.from(state, (x, i) => x + [a, b, c, d, e, f, g, h][i]);
}

/**
 * The HMAC-SHA256 midstates of `key` (at most 64 bytes): SHA-256's state after absorbing
 * key ^ ipad and key ^ opad, as the engine holds them in wasm memory (eight little-endian u32).
 */
function hmacMidstates(key) {
  const iv = Uint32Array.of(0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19);
  return [0x36, 0x5c].map((pad) => {
    const block = new Uint8Array(64).map((_, i) => (key[i] ?? 0) ^ pad);
    return new Uint8Array(compress(iv, block).buffer);
  });
}

// The midstates of a key are what PBKDF2 iterates on: with them an attacker skips the password.
// The compression above is checked against node:crypto: an HMAC finished from the midstates
// must equal node:crypto's HMAC.
test("the test's SHA-256 compression is SHA-256", () => {
  const iv = Uint32Array.of(0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19);
  const block = new Uint8Array(64);
  block[0] = 0x80; // the padded empty message
  const digest = Buffer.from(new Uint8Array(compress(iv, block).map((x) => ((x & 0xff) << 24) | ((x >>> 8 & 0xff) << 16) | ((x >>> 16 & 0xff) << 8) | (x >>> 24)).buffer));
  assert.equal(digest.toString("hex"), nodeCrypto.createHash("sha256").update("").digest("hex"));
});

/**
 * After lock(), no secret is anywhere in wasm memory, scanned right after lock() with nothing in
 * between; and each one IS found before lock() (a positive control: a scan that cannot see a
 * secret proves nothing). Transient secrets (the password, a raw key, a key-encryption key, a
 * data key, PBKDF2's HMAC midstates) live only while an operation runs, so the positive control
 * copies the whole wasm memory each time the engine calls its SQL executor mid-operation; the
 * cached master keys are also found in the live memory right before lock(). Every key is
 * computed here with node:crypto from FORMAT.md, never read out of the engine.
 */
for (const path of ["WebCrypto PBKDF2", "the Rust PBKDF2 fallback"]) {
  test(`after lock() no key, password or midstate is left in wasm memory (${path}), and the scan sees each before`, async () => {
    const fallback = path.includes("Rust");
    const subtle = globalThis.crypto.subtle;
    const deriveBits = subtle.deriveBits;
    let refused = 0;
    if (fallback) {
      // As deployed Cloudflare Workers do: WebCrypto refuses PBKDF2 above 100,000 iterations.
      subtle.deriveBits = function (algorithm, key, length) {
        if (algorithm?.name === "PBKDF2" && algorithm.iterations > 100_000) {
          refused++;
          return Promise.reject(new DOMException("iteration counts above 100000 are not supported", "NotSupportedError"));
        }
        return deriveBits.call(this, algorithm, key, length);
      };
    }
    const memory = await wasmMemory();
    const snapshots = [];
    const { createClient } = await import("@libsql/client");
    const dir = mkdtempSync(join(tmpdir(), "vaultstore-scan-"));
    const client = createClient({ url: `file:${join(dir, "db.sqlite")}` });
    const inner = libsql(client);
    // Copy wasm memory at every statement, synchronously, while the engine is mid-operation.
    const sql = {
      all(statement, params) {
        snapshots.push(new Uint8Array(memory.buffer).slice());
        return inner.all(statement, params);
      },
      batch(statements) {
        snapshots.push(new Uint8Array(memory.buffer).slice());
        return inner.batch(statements);
      },
    };
    try {
      const password = `memory scan ${fallback ? "fallback" : "webcrypto"}: Correct Horse 9174`;
      const raw = globalThis.crypto.getRandomValues(new Uint8Array(32));
      const iterations = fallback ? 150_000 : 1_000;
      const v = await Vault.open({ backend: "sql", sql, kdfIterations: iterations, passwordIdentity: true });
      const tokens = await v.tokensCreate(["one", "two"], password);
      assert.deepEqual(await v.tokensRead(tokens, password), { [tokens[0]]: "one", [tokens[1]]: "two" });
      await v.tokenUpdate(tokens[0], "uno", password);
      const rawToken = await v.tokenCreate("raw", raw);
      assert.equal(await v.tokenRead(rawToken, raw), "raw");
      assert.equal(refused, fallback ? 1 : 0, "the fallback derived the password's key once");

      // The keys, from FORMAT.md, outside wasm memory.
      const kdf = JSON.parse(await v.getVaultSetting("kdf"));
      assert.equal(kdf.iterations, iterations);
      const salt = Buffer.from(kdf.salt, "base64url");
      const hkdf = (ikm, info) => new Uint8Array(nodeCrypto.hkdfSync("sha256", ikm, salt, info, 32));
      const mk = new Uint8Array(nodeCrypto.pbkdf2Sync(utf8.encode(password), salt, iterations, 32, "sha256"));
      const rawMk = hkdf(raw, "vaultstore/v1/raw");
      const keks = [hkdf(mk, "vaultstore/v1/kek"), hkdf(rawMk, "vaultstore/v1/kek")];
      const deks = [];
      for (const row of await inner.all("SELECT object_id, value FROM vaultstore_meta WHERE key = 'dek' ORDER BY object_id", [])) {
        const [id, value] = row;
        const wrapped = Buffer.from(value.slice("vs1k:".length), "base64url");
        for (const kek of keks) {
          const decipher = nodeCrypto.createDecipheriv("aes-256-gcm", kek, wrapped.subarray(0, 12));
          decipher.setAAD(utf8.encode(`vaultstore/v1/dek:${id}`));
          decipher.setAuthTag(wrapped.subarray(wrapped.length - 16));
          try {
            deks.push(new Uint8Array(Buffer.concat([decipher.update(wrapped.subarray(12, wrapped.length - 16)), decipher.final()])));
          } catch {
            /* the other secret's identity */
          }
        }
      }
      assert.equal(deks.length, 2, "one identity per secret");
      // Held by the engine while an operation runs: the scan must see each in a copy taken then.
      const held = [
        ["the password", utf8.encode(password)],
        ["the raw key", raw],
        ["the password's master key", mk],
        ["the raw key's master key", rawMk],
        ["the password's data key", deks[0]],
        ["the raw key's data key", deks[1]],
      ];
      // Made and wiped inside one synchronous call (unwrapping or wrapping a data key; the
      // fallback's PBKDF2 loop), so there is no moment at which JavaScript can copy the memory
      // holding them. Their positive control is planted: each is passed as a raw key to a call
      // that is copied mid-flight, which proves the scan finds exactly these bytes anywhere in
      // wasm memory; and after lock() they must be gone like the rest.
      const transient = [
        ["the password's key-encryption key", keks[0]],
        ["the raw key's key-encryption key", keks[1]],
      ];
      if (fallback) {
        // WebCrypto's PBKDF2 runs outside wasm memory; the fallback's runs inside it.
        const [ipad, opad] = hmacMidstates(utf8.encode(password));
        transient.push(["the password's HMAC inner midstate", ipad], ["the password's HMAC outer midstate", opad]);
      }
      const seenDuring = (from, [, needle]) => snapshots.slice(from).some((s) => indexOf(s, needle) !== -1);
      const unseen = held.filter((secret) => !seenDuring(0, secret)).map(([what]) => what);
      assert.deepEqual(unseen, [], "positive control: the scan finds each secret in wasm memory while an operation uses it");
      for (const secret of transient) {
        const from = snapshots.length;
        await rejects(v.tokenRead(rawToken, secret[1]), "INVALID_PASSWORD");
        assert.ok(seenDuring(from, secret), `planted positive control: the scan finds ${secret[0]} passed as a key`);
      }
      // Each cached data key keeps its key check's HMAC keyed (crypto::KeyedMac): midstates as
      // secret as the key, kept as long as it is.
      const keyedMacs = deks.flatMap((dek, i) =>
        hmacMidstates(dek).map((midstate, j) => [`data key ${i + 1}'s key-check HMAC ${j ? "outer" : "inner"} midstate`, midstate]),
      );
      const before = new Uint8Array(memory.buffer);
      for (const [what, needle] of [held[2], held[3], ...keyedMacs]) {
        assert.notEqual(indexOf(before, needle), -1, `positive control: ${what} is cached, so the scan finds it right before lock()`);
      }

      // Nothing runs between lock() and the scan.
      v.lock();
      const after = new Uint8Array(memory.buffer);
      for (const [what, needle] of [...held, ...transient, ...keyedMacs]) {
        assert.equal(indexOf(after, needle), -1, `${what} is still in wasm memory after lock()`);
      }
      // Locked, not closed: the next call derives again.
      assert.equal(await v.tokenRead(tokens[1], password), "two");
      await v.close();
    } finally {
      subtle.deriveBits = deriveBits;
      client.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

test("no plaintext is left in wasm memory after values are sealed and read, one by one or in batches", async () => {
  const memory = await wasmMemory();
  const v = await open();
  // Distinct values, each searched for on its own (as UTF-8, the engine's encoding).
  const plaintexts = ["single", "batch one", "batch two", "mapped"].map((what) => `plaintext scan, ${what}: ${nodeCrypto.randomUUID()}`);
  const [single, one, two, mapped] = plaintexts;
  const t = await v.tokenCreate(single, PASSWORD);
  const batch = await v.tokensCreate([one, two], PASSWORD);
  const m = await v.tokenCreate(mapped, PASSWORD);
  assert.equal(await v.tokenRead(t, PASSWORD), single);
  assert.deepEqual(await v.tokensRead(batch, PASSWORD), { [batch[0]]: one, [batch[1]]: two });
  // Two keys for one token: the engine hands back a copy for each.
  assert.deepEqual(await v.tokensReadToResolvedMap({ a: m, b: m, c: batch[0] }, PASSWORD), { a: mapped, b: mapped, c: one });
  const now = new Uint8Array(memory.buffer);
  for (const plaintext of plaintexts) {
    assert.equal(indexOf(now, utf8.encode(plaintext)), -1, `"${plaintext}" is still in wasm memory`);
  }
});

test("an expired key is wiped by a timer, without waiting for the next call", async () => {
  const password = "ttl scan: Battery Staple 5521";
  const v = await open({ keyCacheTtlMs: 50 });
  const t = await v.tokenCreate("v", password);
  const snapshot = JSON.parse(new TextDecoder().decode(await v.exportSnapshot()));
  const kdf = JSON.parse(snapshot.meta.find((m) => m.key === "kdf").value);
  const base = await subtle.importKey("raw", utf8.encode(password), "PBKDF2", false, ["deriveBits"]);
  const salt = new Uint8Array(Buffer.from(kdf.salt, "base64url"));
  const mk = new Uint8Array(await subtle.deriveBits({ name: "PBKDF2", hash: "SHA-256", salt, iterations: kdf.iterations }, base, 256));
  const memory = await wasmMemory();
  assert.notEqual(indexOf(new Uint8Array(memory.buffer), mk), -1, "cached right after use");
  await new Promise((resolve) => setTimeout(resolve, 300));
  assert.equal(indexOf(new Uint8Array(memory.buffer), mk), -1, "gone once its time is up");
  assert.equal(await v.tokenRead(t, password), "v");
});

test("backend \"indexeddb\" where the runtime has no IndexedDB is UNSUPPORTED, with what to use instead", async () => {
  assert.equal(typeof globalThis.indexedDB, "undefined", "this file runs without a polyfill");
  const e = await Vault.open({ backend: "indexeddb", kdfIterations: 1000 }).catch((error) => error);
  assert.ok(e instanceof VaultError);
  assert.equal(e.code, "UNSUPPORTED");
  assert.match(e.message, /backend "memory" or "sql"/);
});
