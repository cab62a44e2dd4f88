// The SQL backend through the package, on libSQL (`@libsql/client`, a local file): the adapter
// itself, the same answers as the memory backend, persistence, namespaces, two clients racing
// on one file, and errors that name the problem without repeating a value.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { createClient } from "@libsql/client";
import { RecordQuery, Vault, d1, durableObject, libsql } from "vaultstore-wasm";
import { OTHER, PASSWORD, rejects } from "./helpers.mjs";

const dir = mkdtempSync(join(tmpdir(), "vaultstore-libsql-"));
after(() => rmSync(dir, { recursive: true, force: true }));
let files = 0;

/** A client on a new database file (or `file` again). */
function client(file = join(dir, `db-${++files}.sqlite`)) {
  return Object.assign(createClient({ url: `file:${file}` }), { file });
}

function openSql(c, options = {}) {
  return Vault.open({ backend: "sql", sql: libsql(c), kdfIterations: 1000, ...options });
}

/** Every row of the vaultstore tables, as the database holds them. */
async function dump(c) {
  const rows = async (sql) => (await c.execute(sql)).rows.map((r) => JSON.stringify(Array.from(r)));
  return {
    records: await rows("SELECT * FROM vaultstore_records ORDER BY ns, id"),
    meta: await rows("SELECT * FROM vaultstore_meta ORDER BY ns, object_type, object_id, key"),
  };
}

test("the libsql adapter runs statements and all-or-nothing batches", async () => {
  const c = client();
  const sql = libsql(c);
  await sql.batch([{ sql: "CREATE TABLE t (a TEXT UNIQUE, b INTEGER)", params: [] }]);
  await sql.batch([{ sql: "INSERT INTO t VALUES (?1, ?2)", params: ["x", 1] }]);
  await assert.rejects(
    sql.batch([
      { sql: "INSERT INTO t VALUES (?1, ?2)", params: ["y", 2] },
      { sql: "INSERT INTO t VALUES (?1, ?2)", params: ["x", 3] },
    ]),
    /UNIQUE constraint failed/,
  );
  assert.deepEqual(await sql.all("SELECT a, b FROM t ORDER BY a", []), [["x", 1]], "the failed batch left nothing");
  assert.deepEqual(await sql.all("SELECT ?1, ?2, ?3", ["é😀", null, 2 ** 53 - 1]), [["é😀", null, 2 ** 53 - 1]]);
  // libSQL returns text cut at U+0000: the adapter refuses to store such strings, raw or in JSON.
  for (const param of ["a\u0000b", JSON.stringify(["a\u0000b"])]) {
    await assert.rejects(sql.batch([{ sql: "INSERT INTO t VALUES (?1, 0)", params: [param] }]), { name: "UnsupportedValueError" });
  }
  await sql.batch([{ sql: "INSERT INTO t VALUES (?1, 0)", params: [JSON.stringify(["a\\u0000b"])] }]);
  c.close();
});

/** The same operations, on any vault; returns what a user can observe. */
async function scenario(vault) {
  const now = Date.now();
  const seen = {};
  // Custom tokens, so that both vaults hold the same ones; strings whose UTF-16 and UTF-8 orders
  // differ, and text that looks like SQL.
  const tokens = ["tk_one", "tk_two", "tk_three", "tk_four"];
  for (const [token, value, expiresAt] of [
    ...tokens.map((t) => [t, t.slice(3), null]),
    ["tk_\uff5e", "fullwidth tilde", null],
    ["tk_\u{1f600}", "emoji", null],
    ["tk_' OR '1'='1", "quote", now - 60_000],
    ["tk_\\u0000", "backslash", now + 60_000],
  ]) {
    await vault.tokenCreateCustom(token, value, PASSWORD, { expiresAt });
  }
  await vault.tokenSoftDelete(tokens[1]);
  await vault.tokenRenew(tokens[2], now - 1);
  await vault.tokenUpdate(tokens[3], "four, updated", PASSWORD);
  seen.read = await vault.tokensRead([tokens[0], tokens[3], "tk_\uff5e", "tk_\u{1f600}", "tk_\\u0000"], PASSWORD);
  seen.missing = await vault.tokenRead(tokens[1], PASSWORD).catch((e) => [e.code, e.reason]);
  seen.expired = await vault.tokenRead(tokens[2], PASSWORD).catch((e) => [e.code, e.reason]);
  seen.taken = await vault.tokenCreateCustom("tk_\uff5e", "again", PASSWORD).catch((e) => e.code);
  seen.exists = [await vault.tokenExists(tokens[1]), await vault.tokenExists(tokens[2])];
  const list = async (q) => (await vault.recordList(q)).map((r) => r.token);
  const queries = {
    byTokenAsc: { orderBy: "token", sortOrder: "asc" },
    byTokenDesc: { orderBy: "token" },
    byTokenPage: { orderBy: "token", sortOrder: "asc", limit: 2, offset: 1 },
    deletedToo: { orderBy: "token", sortOrder: "asc", softDeletedInclude: true },
    deletedOnly: { orderBy: "token", softDeletedOnly: true },
    expiredOnly: { orderBy: "token", sortOrder: "asc", expiredOnly: true },
    named: { orderBy: "token", tokenIn: [tokens[0], tokens[1], "tk_\u{1f600}", "nope"], softDeletedInclude: true },
    byExpiry: { orderBy: "expires_at", sortOrder: "asc", tokenIn: ["tk_' OR '1'='1", "tk_\\u0000", "tk_\uff5e"] },
  };
  for (const [name, q] of Object.entries(queries)) {
    seen[name] = await list(q);
    seen[`${name}Count`] = await vault.recordCount({ ...q, limit: undefined, offset: undefined });
  }
  seen.recordQuery = await list(new RecordQuery().setOrderBy("token").setSortOrder("asc").setLimit(3));
  seen.purged = [await vault.tokensExpiredSoftDelete(), await vault.tokensExpiredDelete()];
  seen.after = await list({ orderBy: "token", sortOrder: "asc", softDeletedInclude: true });
  seen.moved = await vault.bulkRekey(PASSWORD, OTHER);
  seen.reread = await vault.tokenRead(tokens[0], OTHER);
  seen.settings = [await vault.getVaultVersion(), await vault.isVaultMigrated()];
  return seen;
}

test("a libSQL vault answers exactly as a memory vault does", async () => {
  const c = client();
  const sql = await scenario(await openSql(c));
  const memory = await scenario(await Vault.open({ backend: "memory", kdfIterations: 1000 }));
  assert.deepEqual(sql, memory);
  // UTF-16 order: U+1F600 (a surrogate pair, 0xD83D…) sorts before U+FF5E.
  assert.ok(sql.byTokenAsc.indexOf("tk_\u{1f600}") < sql.byTokenAsc.indexOf("tk_\uff5e"));
  c.close();
});

test("libSQL: a string holding U+0000 is refused with STORAGE, not stored cut short", async () => {
  const c = client();
  const v = await openSql(c);
  const error = await rejects(v.tokenCreateCustom("tk_\u0000nul", "value", PASSWORD), "STORAGE");
  assert.equal(error.cause?.name, "UnsupportedValueError");
  await rejects(v.setVaultSetting("note", "a\u0000b"), "STORAGE");
  assert.equal(await v.recordCount(), 0);
  c.close();
});

test("tokens survive a new client, and identities and settings with them", async () => {
  const first = client();
  const v = await openSql(first, { passwordIdentity: true });
  const tokens = await v.tokensCreate(Array.from({ length: 50 }, (_, i) => `value ${i}`), PASSWORD);
  await v.setVaultSetting("owner", "team a");
  await v.close();
  first.close();
  const again = client(first.file);
  const w = await openSql(again, { passwordIdentity: true });
  const read = await w.tokensRead(tokens, PASSWORD);
  assert.equal(Object.keys(read).length, 50);
  assert.equal(read[tokens[49]], "value 49");
  assert.equal(await w.getVaultSetting("owner"), "team a");
  assert.equal(await w.bulkRekey(PASSWORD, OTHER), 50, "a re-wrap moves every record of the identity");
  assert.equal(await w.tokenRead(tokens[0], OTHER), "value 0");
  again.close();
});

test("names are namespaces: vaults sharing a database see nothing of each other", async () => {
  const c = client();
  const a = await openSql(c, { name: "tenant-a" });
  const b = await openSql(c, { name: "tenant-b" });
  await a.tokenCreateCustom("tk_shared_name", "a's value", PASSWORD);
  await b.tokenCreateCustom("tk_shared_name", "b's value", OTHER);
  assert.equal(await a.tokenRead("tk_shared_name", PASSWORD), "a's value");
  assert.equal(await b.tokenRead("tk_shared_name", OTHER), "b's value");
  assert.equal(await a.recordCount(), 1);
  await b.tokenDelete("tk_shared_name");
  assert.equal(await a.tokenExists("tk_shared_name"), true);
  c.close();
});

test("two clients on one file: a custom token is taken once, and nothing is lost", async () => {
  const file = client().file;
  const [x, y] = [client(file), client(file)];
  const [vx, vy] = await Promise.all([openSql(x), openSql(y)]);
  const outcomes = await Promise.allSettled([
    vx.tokenCreateCustom("tk_contested", "from x", PASSWORD),
    vy.tokenCreateCustom("tk_contested", "from y", PASSWORD),
  ]);
  assert.equal(outcomes.filter((o) => o.status === "fulfilled").length, 1);
  const lost = outcomes.find((o) => o.status === "rejected");
  assert.equal(lost.reason.code, "TOKEN_EXISTS");
  const made = await Promise.all([
    ...Array.from({ length: 20 }, (_, i) => vx.tokenCreate(`x${i}`, PASSWORD)),
    ...Array.from({ length: 20 }, (_, i) => vy.tokenCreate(`y${i}`, PASSWORD)),
  ]);
  assert.equal(Object.keys(await vy.tokensRead(made, PASSWORD)).length, 40);
  assert.equal(await vx.recordCount(), 41);
  x.close();
  y.close();
});

test("an aborted rekey leaves every row byte-identical", async () => {
  const c = client();
  const v = await openSql(c, { passwordIdentity: true });
  await v.tokensCreate(Array.from({ length: 40 }, (_, i) => `v${i}`), PASSWORD);
  const before = await dump(c);
  const controller = new AbortController();
  const aborted = v.bulkRekey(PASSWORD, OTHER, {
    rotate: true,
    onProgress: (done) => done >= 20 && controller.abort(),
    signal: controller.signal,
  });
  await rejects(aborted, "ABORTED");
  assert.deepEqual(await dump(c), before);
  c.close();
});

test("snapshots move between backends: memory to SQL and back, the same rows", async () => {
  const m = await Vault.open({ backend: "memory", kdfIterations: 1000, passwordIdentity: true });
  const token = await m.tokenCreate("travels", PASSWORD);
  const snapshot = await m.exportSnapshot();
  const c = client();
  const s = await openSql(c, { snapshot, passwordIdentity: true });
  assert.equal(await s.tokenRead(token, PASSWORD), "travels");
  assert.deepEqual(JSON.parse(new TextDecoder().decode(await s.exportSnapshot())), JSON.parse(new TextDecoder().decode(snapshot)));
  // A database that holds records takes no snapshot.
  await rejects(openSql(c, { snapshot, passwordIdentity: true }), "INVALID_ARGUMENT");
  c.close();
});

test("options.sql is required with backend sql, refused otherwise, and must be an executor", async () => {
  const secret = "s3cr3t-value-that-must-not-leak";
  const cases = [
    [{ backend: "sql" }, /options\.sql is required/],
    [{ backend: "memory", sql: libsql(client()) }, /only applies to backend "sql"/],
    [{ sql: libsql(client()) }, /only applies to backend "sql"/],
    [{ backend: "sql", sql: secret }, /must be an SQL executor/],
    [{ backend: "sql", sql: { all() {} } }, /batch must be a function/],
    [{ backend: "sqlite" }, /backend must be/],
  ];
  for (const [options, message] of cases) {
    const error = await rejects(Vault.open(options), "INVALID_ARGUMENT");
    assert.match(error.message, message);
    assert.ok(!error.message.includes(secret));
  }
});

test("each adapter says what it needs when handed something else", () => {
  const kv = { get() {}, put() {} };
  for (const [make, message] of [
    [() => d1(kv), /d1\(\) needs a D1 binding such as env\.DB: it has no prepare\(\) method/],
    [() => durableObject(kv), /SQLite-backed Durable Object.*no sql\.exec\(\)/],
    [() => durableObject({ sql: { exec() {} } }), /no transactionSync\(\)/],
    [() => libsql(undefined), /libsql\(\) needs an @libsql\/client Client/],
  ]) {
    assert.throws(make, (e) => e.code === "INVALID_ARGUMENT" && message.test(e.message));
  }
});

test("an executor that fails is STORAGE, with what it threw kept as the cause", async () => {
  const failing = {
    all: async () => {
      throw Object.assign(new Error("disk I/O error"), { name: "LibsqlError" });
    },
    batch: async () => {
      throw new Error("database is locked");
    },
  };
  const error = await rejects(Vault.open({ backend: "sql", sql: failing }), "STORAGE");
  assert.match(error.message, /database is locked/);
  // Reads fail the same way once open; a vault that opened keeps working after a failure.
  const c = client();
  let broken = false;
  const real = libsql(c);
  const thrown = Object.assign(new Error("connection reset"), { code: "ECONNRESET" });
  const flaky = { all: (s, p) => (broken ? Promise.reject(thrown) : real.all(s, p)), batch: (s) => real.batch(s) };
  const v = await Vault.open({ backend: "sql", sql: flaky, kdfIterations: 1000 });
  const token = await v.tokenCreate("still fine", PASSWORD);
  broken = true;
  const failure = await rejects(v.tokenRead(token, PASSWORD), "STORAGE");
  // API.md: `cause` keeps the original, the very object the executor threw.
  assert.equal(failure.cause, thrown);
  assert.equal(failure.cause.code, "ECONNRESET");
  assert.match(failure.message, /the SQL database refused to read records: connection reset/);
  broken = false;
  assert.equal(await v.tokenRead(token, PASSWORD), "still fine");
  c.close();
});
