import assert from "node:assert/strict";
import { test } from "node:test";
import { isToken, isTokenValidLength } from "vaultstore-wasm";
import { OTHER, PASSWORD, open, rejects } from "./helpers.mjs";

test("tokenCreate and tokenRead round-trip, with the documented token shape", async () => {
  const v = await open();
  const token = await v.tokenCreate("4111 1111 1111 1111", PASSWORD);
  assert.match(token, /^tk_[0-9abcdefghjkmnpqrstvwxyz]{29}$/);
  assert.equal(await v.tokenRead(token, PASSWORD), "4111 1111 1111 1111");
  for (const length of [15, 40]) {
    assert.equal((await v.tokenCreate("x", PASSWORD, { length })).length, length);
  }
  for (const value of ["", "😀 ünïcødé\n\u0000", "x".repeat(200_000)]) {
    assert.equal(await v.tokenRead(await v.tokenCreate(value, PASSWORD), PASSWORD), value);
  }
  for (const length of [14, 41, 1.5, "20"]) {
    await rejects(v.tokenCreate("x", PASSWORD, { length }), "INVALID_ARGUMENT");
  }
});

test("a raw 32-byte key works; any other length is INVALID_ARGUMENT", async () => {
  const v = await open();
  const key = crypto.getRandomValues(new Uint8Array(32));
  const token = await v.tokenCreate("raw", key);
  assert.equal(await v.tokenRead(token, key.slice()), "raw");
  await rejects(v.tokenRead(token, new Uint8Array(32)), "INVALID_PASSWORD");
  await rejects(v.tokenRead(token, new Uint8Array(31)), "INVALID_ARGUMENT");
  await rejects(v.tokenCreate("x", new Uint8Array(33)), "INVALID_ARGUMENT");
});

test("tokenRead: missing, soft-deleted and expired tokens say why", async () => {
  const v = await open();
  let e = await rejects(v.tokenRead("tk_missing", PASSWORD), "RECORD_NOT_FOUND");
  assert.equal(e.reason, "missing");
  assert.deepEqual(e.tokens, ["tk_missing"]);
  const t = await v.tokenCreate("v", PASSWORD);
  await v.tokenSoftDelete(t);
  e = await rejects(v.tokenRead(t, PASSWORD), "RECORD_NOT_FOUND");
  assert.equal(e.reason, "soft_deleted");
  const past = await v.tokenCreate("old", PASSWORD, { expiresAt: new Date(Date.now() - 1000) });
  e = await rejects(v.tokenRead(past, PASSWORD), "RECORD_NOT_FOUND");
  assert.equal(e.reason, "expired");
  const soon = await v.tokenCreate("soon", PASSWORD, { expiresAt: Date.now() + 60_000 });
  assert.equal(await v.tokenRead(soon, PASSWORD), "soon");
  await rejects(v.tokenRead(soon, OTHER), "INVALID_PASSWORD");
  await rejects(v.tokenRead("", PASSWORD), "INVALID_ARGUMENT");
  await rejects(v.tokenRead(42, PASSWORD), "INVALID_ARGUMENT");
});

test("tokensCreate is one all-or-nothing write; tokensRead reports every failing token", async () => {
  const v = await open();
  const tokens = await v.tokensCreate(["a", "b", "c"], PASSWORD, { length: 20 });
  assert.equal(tokens.length, 3);
  assert.ok(tokens.every((t) => t.length === 20));
  assert.deepEqual(await v.tokensCreate([], PASSWORD), []);
  const read = await v.tokensRead([tokens[2], tokens[0], tokens[2]], PASSWORD);
  assert.deepEqual(read, { [tokens[2]]: "c", [tokens[0]]: "a" });
  assert.deepEqual(Object.keys(read), [tokens[2], tokens[0]], "duplicates once, in first-seen order");

  const gone = await v.tokenCreate("gone", PASSWORD);
  await v.tokenSoftDelete(gone);
  let e = await rejects(v.tokensRead([tokens[0], "tk_nope", gone], PASSWORD), "RECORD_NOT_FOUND");
  assert.deepEqual(e.tokens, ["tk_nope", gone]);
  const other = await v.tokenCreate("other", OTHER);
  e = await rejects(v.tokensRead([tokens[0], other], PASSWORD), "INVALID_PASSWORD");
  assert.deepEqual(e.tokens, [other]);
  // Missing tokens are reported before any decryption failure.
  e = await rejects(v.tokensRead([other, "tk_nope"], PASSWORD), "RECORD_NOT_FOUND");
  const expired = await v.tokenCreate("x", PASSWORD, { expiresAt: 1 });
  assert.deepEqual(await v.tokensRead([tokens[1], expired], PASSWORD), { [tokens[1]]: "b" }, "expired left out");
  await rejects(v.tokensCreate(["a", 5], PASSWORD), "INVALID_ARGUMENT");
  await rejects(v.tokensCreate("abc", PASSWORD), "INVALID_ARGUMENT");
  assert.equal(await v.recordCount({ softDeletedInclude: true }), 6, "3 + gone + other + expired: refused batches wrote nothing");
});

test("tokensReadToResolvedMap maps caller keys to values", async () => {
  const v = await open();
  const [card, email] = await v.tokensCreate(["4111", "a@example.com"], PASSWORD);
  const expired = await v.tokenCreate("x", PASSWORD, { expiresAt: new Date(0) });
  const map = await v.tokensReadToResolvedMap({ card, email, old: expired, again: card }, PASSWORD);
  assert.deepEqual(map, { card: "4111", email: "a@example.com", again: "4111" });
  await rejects(v.tokensReadToResolvedMap({ k: "tk_missing" }, PASSWORD), "RECORD_NOT_FOUND");
  await rejects(v.tokensReadToResolvedMap(["not", "an", "object"], PASSWORD), "INVALID_ARGUMENT");
});

test("batch reads return every key and value exactly, whatever characters they hold", async () => {
  const v = await open();
  // Empty, accented, astral (a surrogate pair in UTF-16) and long values, side by side: the
  // results come back as texts cut by UTF-16 lengths, so a length counted in bytes would shift
  // every later pair. Three values of 600,000 characters pass the 1 Mi characters after which
  // the engine starts a new text, twice, between short ones.
  const long = (c) => c.repeat(600_000);
  const values = ["", "ü", "😀 smile", "a", "ключ".repeat(1000), "x", long("b"), "y", long("ж"), long("c"), "z"];
  const tokens = await v.tokensCreate(values, PASSWORD);
  const custom = "tk_día_🔑";
  await v.tokenCreateCustom(custom, "value of a non-ASCII token", PASSWORD);
  const read = await v.tokensRead([...tokens, custom], PASSWORD);
  assert.deepEqual(read, { ...Object.fromEntries(tokens.map((t, i) => [t, values[i]])), [custom]: "value of a non-ASCII token" });
  const keys = ["", "__proto__", "ключ", "🔑", "constructor", "0", "long b", "y", "ж", "c", "z"];
  const map = await v.tokensReadToResolvedMap(Object.fromEntries(keys.map((k, i) => [k, tokens[i]])), PASSWORD);
  assert.deepEqual(Object.keys(map).sort(), [...keys].sort());
  keys.forEach((k, i) => assert.equal(Object.getOwnPropertyDescriptor(map, k)?.value, values[i], `key ${JSON.stringify(k)}`));
  assert.equal(Object.getPrototypeOf(map), Object.prototype, "a __proto__ key is an own property, not the prototype");
});

test("tokenCreateCustom refuses taken tokens, soft-deleted ones included", async () => {
  const v = await open();
  await v.tokenCreateCustom("order-42", "v", PASSWORD, { expiresAt: null });
  assert.equal(await v.tokenRead("order-42", PASSWORD), "v");
  const e = await rejects(v.tokenCreateCustom("order-42", "w", PASSWORD), "TOKEN_EXISTS");
  // API.md "Errors": the token is data in error.tokens, never quoted in the message.
  assert.doesNotMatch(e.message, /order-42/);
  assert.deepEqual(e.tokens, ["order-42"]);
  await v.tokenSoftDelete("order-42");
  await rejects(v.tokenCreateCustom("order-42", "w", PASSWORD), "TOKEN_EXISTS");
  await rejects(v.tokenCreateCustom("", "w", PASSWORD), "INVALID_ARGUMENT");
  await rejects(v.tokenCreateCustom("é".repeat(128), "w", PASSWORD), "INVALID_ARGUMENT");
  await v.tokenCreateCustom("é".repeat(127), "w", PASSWORD);
});

test("tokenUpdate keeps the expiry; tokenUpsert creates or updates", async () => {
  const v = await open();
  const expiresAt = new Date(Date.now() + 3_600_000);
  const t = await v.tokenCreate("one", PASSWORD, { expiresAt });
  await v.tokenUpdate(t, "two", PASSWORD);
  assert.equal(await v.tokenRead(t, PASSWORD), "two");
  assert.equal((await v.recordFindByToken(t)).expiresAt.getTime(), expiresAt.getTime());
  await rejects(v.tokenUpdate(t, "x", OTHER), "INVALID_PASSWORD");
  let e = await rejects(v.tokenUpdate("tk_missing", "x", PASSWORD), "RECORD_NOT_FOUND");
  assert.equal(e.reason, "missing");
  assert.equal(await v.tokenUpsert(t, "three", PASSWORD), t);
  assert.equal(await v.tokenRead(t, PASSWORD), "three");
  for (const empty of [undefined, null, ""]) {
    const created = await v.tokenUpsert(empty, "new", PASSWORD, { length: 16 });
    assert.equal(created.length, 16);
    assert.notEqual(created, t);
  }
  await v.tokenSoftDelete(t);
  e = await rejects(v.tokenUpdate(t, "x", PASSWORD), "RECORD_NOT_FOUND");
  assert.equal(e.reason, "soft_deleted");
  await rejects(v.tokenUpsert(t, "x", PASSWORD), "RECORD_NOT_FOUND");
  await rejects(v.tokenUpsert("tk_missing", "x", PASSWORD), "RECORD_NOT_FOUND");
});

test("exists, renew, soft delete, restore and delete", async () => {
  const v = await open();
  const t = await v.tokenCreate("v", PASSWORD, { expiresAt: 1 });
  assert.equal(await v.tokenExists(t), true, "expired but not purged still exists");
  assert.equal(await v.tokenExists("tk_nope"), false);
  await v.tokenRenew(t, null);
  assert.equal(await v.tokenRead(t, PASSWORD), "v");
  await v.tokenRenew(t, new Date(Date.now() + 1000));
  assert.equal(await v.tokenRead(t, PASSWORD), "v");
  await rejects(v.tokenRenew(t, "tomorrow"), "INVALID_ARGUMENT");
  await rejects(v.tokenRenew(t, new Date(NaN)), "INVALID_ARGUMENT");
  // A forgotten expiry is an error, not "never expires" (that is null).
  const before = (await v.recordFindByToken(t)).expiresAt?.getTime();
  assert.ok(before > Date.now());
  assert.match((await rejects(v.tokenRenew(t), "INVALID_ARGUMENT")).message, /expiresAt must be a Date, a number of milliseconds or null, got undefined/);
  assert.equal((await v.recordFindByToken(t)).expiresAt?.getTime(), before);
  await rejects(v.tokenRenew("tk_nope", null), "RECORD_NOT_FOUND");
  await v.tokenSoftDelete(t);
  assert.equal(await v.tokenExists(t), false);
  await rejects(v.tokenSoftDelete("tk_nope"), "RECORD_NOT_FOUND");
  await v.tokenRestore(t);
  await v.tokenRestore(t); // live: resolves
  await rejects(v.tokenRestore("tk_nope"), "RECORD_NOT_FOUND");
  assert.equal(await v.tokenRead(t, PASSWORD), "v");
  await v.tokenDelete(t);
  await v.tokenDelete(t); // idempotent
  assert.equal(await v.tokenExists(t), false);
});

test("expired purges count what they did", async () => {
  const v = await open();
  await v.tokensCreate(["a", "b", "c"], PASSWORD, { expiresAt: Date.now() - 10 });
  const live = await v.tokenCreate("live", PASSWORD);
  const [soft] = await v.tokensCreate(["d"], PASSWORD, { expiresAt: 5 });
  await v.tokenSoftDelete(soft);
  assert.equal(await v.tokensExpiredSoftDelete(), 3);
  assert.equal(await v.tokensExpiredSoftDelete(), 0);
  assert.equal(await v.tokensExpiredDelete(), 4, "soft-deleted or not");
  assert.equal(await v.recordCount({ softDeletedInclude: true }), 1);
  assert.equal(await v.tokenRead(live, PASSWORD), "live");
});

test("isToken and isTokenValidLength", () => {
  assert.equal(isToken("tk_"), true);
  assert.equal(isToken("TK_x"), false);
  assert.equal(isTokenValidLength("tk_abcdefghjkmn"), true);
  assert.equal(isTokenValidLength("tk_abc"), false);
  assert.equal(isTokenValidLength("tk_" + "a".repeat(38)), false);
  for (const notString of [undefined, null, 42, {}, ["tk_abcdefghjkmnpq"], Symbol("tk_")]) {
    assert.equal(isToken(notString), false);
    assert.equal(isTokenValidLength(notString), false);
  }
});
