// What a password manager's storage layer must promise beyond correct results (issue 7): hostile
// input never traps the engine, no error or event repeats a secret, and after lock() no key or
// password is left anywhere in WebAssembly memory.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { Vault, VaultError } from "vaultstore-wasm";
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
  const collect = async (p) => {
    try {
      await p;
    } catch (e) {
      errors.push(e);
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
  await collect(v.tokenCreate(value, secretPassword, { expiresAt: Number(card) * 1e6 }));
  await collect(v.tokenRenew(token, Number(card) * 1e6));
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
  assert.ok(errors.length >= 20, `every call failed: ${errors.length}`);
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

test("onEvent reports every operation with its outcome, and a throwing listener changes nothing", async () => {
  const events = [];
  const v = await open({ onEvent: (e) => events.push(e) });
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

  const tokens = await v.tokensCreate(["a", "b", "c"], PASSWORD);
  await v.tokensRead(tokens, PASSWORD);
  await v.tokenRead(tokens[0], "wrong password!!").catch(() => {});
  await v.tokenRead(5, PASSWORD).catch(() => {});
  await v.recordList({ limit: 2 });
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
      { op: "lock", records: 0, code: "OK" },
      { op: "close", records: 0, code: "OK" },
    ],
  );
  for (const e of events) {
    assert.deepEqual(Object.keys(e).sort(), ["code", "durationMs", "op", "records"]);
    assert.ok(Number.isFinite(e.durationMs) && e.durationMs >= 0);
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
});

test("after lock() no master key, data key, raw key or password is left in wasm memory", async () => {
  const password = "memory scan: Correct Horse 9174";
  const raw = crypto.getRandomValues(new Uint8Array(32));
  const v = await open({ passwordIdentity: true });
  const tokens = await v.tokensCreate(["one", "two"], password);
  await v.tokensRead(tokens, password);
  await v.tokenUpdate(tokens[0], "uno", password);
  const rawToken = await v.tokenCreate("raw", raw);
  assert.equal(await v.tokenRead(rawToken, raw), "raw");
  await v.bulkRekey(password, password, { rotate: true });
  assert.equal(await v.tokenRead(tokens[1], password), "two");

  // The keys, computed here with WebCrypto from FORMAT.md, outside wasm memory.
  const snapshot = JSON.parse(new TextDecoder().decode(await v.exportSnapshot()));
  const meta = (type, key) => snapshot.meta.filter((m) => m.objectType === type && m.key === key);
  const kdf = JSON.parse(meta("vault", "kdf")[0].value);
  const salt = new Uint8Array(Buffer.from(kdf.salt, "base64url"));
  const pbkdf2 = await subtle.importKey("raw", utf8.encode(password), "PBKDF2", false, ["deriveBits"]);
  const mk = new Uint8Array(await subtle.deriveBits({ name: "PBKDF2", hash: "SHA-256", salt, iterations: kdf.iterations }, pbkdf2, 256));
  const hkdf = async (ikm, info) => {
    const k = await subtle.importKey("raw", ikm, "HKDF", false, ["deriveBits"]);
    return new Uint8Array(await subtle.deriveBits({ name: "HKDF", hash: "SHA-256", salt, info: utf8.encode(info) }, k, 256));
  };
  const rawMk = await hkdf(raw, "vaultstore/v1/raw");
  const kek = await hkdf(mk, "vaultstore/v1/kek");
  const deks = [];
  for (const row of meta("password_identity", "dek")) {
    const wrapped = new Uint8Array(Buffer.from(row.value.slice(5), "base64url"));
    const k = await subtle.importKey("raw", kek, "AES-GCM", false, ["decrypt"]);
    const aad = utf8.encode(`vaultstore/v1/dek:${row.objectId}`);
    try {
      deks.push(new Uint8Array(await subtle.decrypt({ name: "AES-GCM", iv: wrapped.slice(0, 12), additionalData: aad }, k, wrapped.slice(12))));
    } catch {
      /* the raw key's identity */
    }
  }
  assert.equal(deks.length, 1, "the password's identity after rotation");

  const memory = await wasmMemory();
  const before = new Uint8Array(memory.buffer);
  assert.notEqual(indexOf(before, mk), -1, "the scan finds the cached master key before lock()");

  v.lock();
  const after = new Uint8Array(memory.buffer);
  for (const [what, needle] of [
    ["the master key", mk],
    ["the raw key's master key", rawMk],
    ["the data key", deks[0]],
    ["the raw key", raw],
    ["the password", utf8.encode(password)],
  ]) {
    assert.equal(indexOf(after, needle), -1, `${what} is still in wasm memory after lock()`);
  }
  // Locked, not closed: the next call derives again.
  assert.equal(await v.tokenRead(tokens[1], password), "two");
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
