// Two rules live in TypeScript as well as in the engine, so that they work before a browser has
// loaded any engine: RecordQuery validation (js/query-check.ts mirrors src/wasm/query.rs and
// src/query.rs) and the token shape (js/index.ts, src/token.rs). Here both sides answer the same
// table, and must agree on the verdict, the code and the message.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { pathToFileURL } from "node:url";
import { test } from "node:test";
import { RecordQuery, isToken, isTokenValidLength } from "vaultstore-wasm";
import { open } from "./helpers.mjs";

// Internal modules of the installed package, by path (they are not exports).
const dist = dirname(createRequire(import.meta.url).resolve("vaultstore-wasm"));
const { checkQuery } = await import(pathToFileURL(join(dist, "query-check.js")).href);
const engine = await import(pathToFileURL(join(dist, "wasm", "vaultstore_full.js")).href);
engine.initSync({ module: readFileSync(join(dist, "wasm", "vaultstore_full_bg.wasm")) });

const GOOD = [
  undefined, null, {}, { limit: 0 }, { limit: 10, offset: 5 }, { limit: -0 }, { limit: 9007199254740991 },
  { orderBy: "token", sortOrder: "asc" }, { orderBy: "expires_at" }, { sortOrder: "desc" },
  { id: "x" }, { idIn: [] }, { idIn: ["a", "b"] }, { token: "tk_x" }, { tokenIn: ["a"] },
  { id: null, token: null, idIn: null, tokenIn: null, limit: null, offset: null, orderBy: null, sortOrder: null },
  { softDeletedInclude: null, softDeletedOnly: null, expiredOnly: null, countOnly: null },
  { softDeletedInclude: true }, { softDeletedOnly: true, expiredOnly: true }, { softDeletedInclude: false },
  { countOnly: true }, { countOnly: true, limit: 0, offset: 0 }, { countOnly: false, limit: 3, offset: 1 },
];

const BAD = [
  5, "created_at", true, [], ["limit"], () => ({}),
  { limit: -1 }, { offset: -5 }, { limit: 1.5 }, { limit: "5" }, { limit: Number.NaN }, { limit: Infinity },
  { offset: -Infinity }, { limit: 1e21 }, { limit: 2 ** 53 }, { offset: 1e-7 }, { limit: 123.456 }, { limit: true },
  { countOnly: true, limit: 3 }, { countOnly: true, offset: 1 }, { id: "" }, { token: "" }, { id: "", token: "" },
  { id: 5 }, { token: false }, { id: new Date(0) }, { token: {} }, { id: [] }, { idIn: "a" }, { idIn: ["a", 3] },
  { tokenIn: [null] }, { tokenIn: [undefined] }, { tokenIn: { 0: "a" } }, { idIn: new Map() },
  { orderBy: "name" }, { orderBy: "Token" }, { orderBy: "" }, { orderBy: ["token"] }, { sortOrder: "ASC" },
  { sortOrder: 'up"down' }, { sortOrder: "a\\b\n" }, { softDeletedInclude: "yes" }, { softDeletedOnly: 0 },
  { expiredOnly: 1 }, { countOnly: {} }, { limt: 5 }, { unknownField: true, limit: -1 }, { limit: -1, orderBy: "x" },
  { limit: "x", offset: -1 }, { offset: -1, countOnly: true, limit: 1 },
];

/** What a check did: "ok", or the error's code and message. */
function outcome(check) {
  try {
    check();
    return "ok";
  } catch (error) {
    return `${error.code}: ${error.message}`;
  }
}

async function outcomeAsync(promise) {
  try {
    await promise;
    return "ok";
  } catch (error) {
    return `${error.code}: ${error.message}`;
  }
}

function engineValidate(query) {
  const q = new engine.RecordQuery(query);
  try {
    q.validate();
  } finally {
    q.free();
  }
}

const show = (value) => (typeof value === "function" ? "a function" : JSON.stringify(value) ?? String(value));

test("the TypeScript query check and the engine agree on every query of the table", async () => {
  const vault = await open();
  for (const [expected, table] of [["good", GOOD], ["bad", BAD]]) {
    for (const query of table) {
      const mirror = outcome(() => checkQuery(query));
      const counted = await outcomeAsync(vault.recordCount(query));
      assert.equal(mirror, counted, `recordCount(${show(query)})`);
      assert.equal(mirror === "ok", expected === "good", `${show(query)} is ${expected}: ${mirror}`);
      if (expected === "bad") assert.match(mirror, /^INVALID_ARGUMENT: invalid argument: /);
      if (query !== null && (typeof query === "object" || typeof query === "function")) {
        // Through RecordQuery (which copies an object's own properties): its validate() (the
        // engine, in Node), the engine's own RecordQuery, and the mirror on its toJSON().
        const built = new RecordQuery(query);
        const viaMirror = outcome(() => checkQuery(built.toJSON()));
        if (Object.getPrototypeOf(query) === Object.prototype) assert.equal(viaMirror, mirror, `mirror on RecordQuery(${show(query)})`);
        assert.equal(outcome(() => built.validate()), viaMirror, `RecordQuery(${show(query)}).validate()`);
        assert.equal(outcome(() => engineValidate(built.toJSON())), viaMirror, `engine RecordQuery(${show(query)})`);
      }
    }
  }
});

test("setters build what the engine reads; RecordQuery needs no engine", () => {
  const q = new RecordQuery({ limit: 2 }).setOrderBy("token").setSortOrder("asc").setOffset(4).setSoftDeletedInclude(true);
  assert.deepEqual(q.toJSON(), { limit: 2, offset: 4, orderBy: "token", sortOrder: "asc", softDeletedInclude: true });
  assert.match(outcome(() => new RecordQuery(5)), /^INVALID_ARGUMENT: .*plain object, got number$/);
  assert.equal(outcome(() => new RecordQuery().setLimit(-1).validate()), outcome(() => checkQuery({ limit: -1 })));
});

test("isToken and isTokenValidLength agree with the engine", () => {
  const values = [
    "tk_", "tk_abcdefghjkmn", "tk_abcdefghjkm", "tk_" + "a".repeat(37), "tk_" + "a".repeat(38), "TK_abcdefghjkmnpq",
    "xtk_abcdefghjkmnpq", "", "tk_😀😀😀😀😀😀", "tk_😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀", "tk_\u00e9".padEnd(20, "x"),
    undefined, null, 42, {}, ["tk_abcdefghjkmnpq"], Symbol("tk_"), new String("tk_abcdefghjkmnpq"),
  ];
  for (const value of values) {
    assert.equal(isToken(value), engine.isToken(value), `isToken(${String(value)})`);
    assert.equal(isTokenValidLength(value), engine.isTokenValidLength(value), `isTokenValidLength(${String(value)})`);
  }
});
