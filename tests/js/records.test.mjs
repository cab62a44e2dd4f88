import assert from "node:assert/strict";
import { test } from "node:test";
import { RecordQuery } from "vaultstore-wasm";
import { PASSWORD, open, rejects, throws } from "./helpers.mjs";

async function sample() {
  const v = await open();
  const tokens = [];
  for (let i = 0; i < 5; i++) {
    tokens.push(await v.tokenCreate(`v${i}`, PASSWORD, { expiresAt: i % 2 ? Date.now() + 1000 * (10 - i) : null }));
    await new Promise((r) => setTimeout(r, 3));
  }
  return { v, tokens };
}

test("recordList: default order, RecordQuery and plain objects, paging", async () => {
  const { v, tokens } = await sample();
  const list = await v.recordList();
  assert.deepEqual(list.map((r) => r.token), [...tokens].reverse(), "created_at descending");
  const r = list[0];
  assert.deepEqual(Object.keys(r).sort(), ["createdAt", "expiresAt", "id", "softDeletedAt", "token", "updatedAt", "value"]);
  assert.ok(r.createdAt instanceof Date && r.updatedAt instanceof Date);
  assert.ok(r.value.startsWith("vs1:"), "values stay encrypted");
  assert.equal(r.softDeletedAt, null);

  const q = new RecordQuery().setLimit(2).setOffset(1).setSortOrder("asc");
  assert.equal(q.setOrderBy("created_at"), q, "setters return this");
  assert.deepEqual((await v.recordList(q)).map((x) => x.token), tokens.slice(1, 3));
  assert.deepEqual((await v.recordList({ limit: 2, offset: 1, sortOrder: "asc" })).map((x) => x.token), tokens.slice(1, 3));
  const byExpiry = await v.recordList({ orderBy: "expires_at", sortOrder: "asc" });
  assert.deepEqual(byExpiry.map((x) => x.expiresAt === null), [false, false, true, true, true], "no expiry sorts last");
  assert.equal((await v.recordList({ limit: 0 })).length, 5, "limit 0 means no limit");
  assert.deepEqual(await v.recordList({ tokenIn: [] }), []);
  assert.deepEqual(await v.recordList({ idIn: [] }), []);
  assert.deepEqual((await v.recordList({ tokenIn: [tokens[0], tokens[3], "tk_x"], orderBy: "token" })).length, 2);
  assert.deepEqual((await v.recordList(new RecordQuery({ token: tokens[4] }))).map((x) => x.token), [tokens[4]]);
  assert.deepEqual((await v.recordList({ id: list[1].id })).map((x) => x.token), [list[1].token]);

  await v.tokenSoftDelete(tokens[0]);
  assert.equal((await v.recordList()).length, 4);
  assert.equal((await v.recordList({ softDeletedInclude: true })).length, 5);
  // `null` leaves a flag unset, as it leaves every other field of a query.
  assert.equal((await v.recordList({ softDeletedInclude: null, softDeletedOnly: null, expiredOnly: null })).length, 4);
  const only = await v.recordList(new RecordQuery().setSoftDeletedOnly(true));
  assert.deepEqual(only.map((x) => x.token), [tokens[0]]);
  assert.ok(only[0].softDeletedAt instanceof Date);
});

test("recordCount ignores paging; countOnly belongs to recordCount", async () => {
  const { v } = await sample();
  assert.equal(await v.recordCount(), 5);
  assert.equal(await v.recordCount({ limit: 1, offset: 3, orderBy: "token" }), 5);
  assert.equal(await v.recordCount(new RecordQuery().setCountOnly(true)), 5);
  await rejects(v.recordList({ countOnly: true }), "INVALID_ARGUMENT");
  throws(() => new RecordQuery().setCountOnly(true).setLimit(3).validate(), "INVALID_ARGUMENT");
  await rejects(v.recordCount({ countOnly: true, offset: 2 }), "INVALID_ARGUMENT");
});

test("bad queries are INVALID_ARGUMENT, at validate() or at the call", async () => {
  const { v } = await sample();
  for (const bad of [
    { limit: -1 },
    { offset: -1 },
    { limit: 1.5 },
    { orderBy: "value" },
    { sortOrder: "up" },
    { limit: "10" },
    { tokenIn: "tk_x" },
    { unknownField: true },
    { idIn: [1, 2] },
    { softDeletedOnly: "yes" },
  ]) {
    throws(() => new RecordQuery(bad).validate(), "INVALID_ARGUMENT");
    await rejects(v.recordList(bad), "INVALID_ARGUMENT");
    await rejects(v.recordCount(bad), "INVALID_ARGUMENT");
  }
  await rejects(v.recordList("created_at"), "INVALID_ARGUMENT");
  const e = await rejects(v.recordList({ tokenIn: "tk_x" }), "INVALID_ARGUMENT");
  assert.match(e.message, /query\.tokenIn must be an array of strings, got string/);
  new RecordQuery().setLimit(10).setOrderBy("id").setSortOrder("desc").validate();
});

test("find, delete and soft delete by id and token", async () => {
  const { v, tokens } = await sample();
  const r = await v.recordFindByToken(tokens[2]);
  assert.equal(r.token, tokens[2]);
  assert.deepEqual(await v.recordFindById(r.id), r);
  assert.equal(await v.recordFindById("nope"), null);
  assert.equal(await v.recordFindByToken("tk_nope"), null);
  await v.recordSoftDeleteById(r.id);
  assert.equal(await v.recordFindById(r.id), null, "soft-deleted records are not found");
  await v.tokenRestore(tokens[2]);
  await v.recordSoftDeleteByToken(tokens[2]);
  assert.equal(await v.recordFindByToken(tokens[2]), null);
  let e = await rejects(v.recordSoftDeleteById("nope"), "RECORD_NOT_FOUND");
  assert.equal(e.reason, "missing");
  await rejects(v.recordSoftDeleteByToken("tk_nope"), "RECORD_NOT_FOUND");
  await v.recordDeleteById(r.id);
  await v.recordDeleteById(r.id);
  await v.recordDeleteByToken(tokens[3]);
  await v.recordDeleteByToken("tk_nope");
  assert.equal(await v.recordCount({ softDeletedInclude: true }), 3);
});
