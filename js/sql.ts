// The SQL backend's executors (API.md "The SQL backend"): how the engine reaches a SQLite-dialect
// database the host holds. Each adapter is a few lines over the engine's own API and is tested
// against that engine (D1 and Durable Objects in workerd, libSQL on a local file).
import { VaultError } from "./errors.js";

/** A value bound to, or read from, a statement. Integers are JavaScript numbers (below 2^53). */
export type SqlValue = string | number | null | Uint8Array;

/** One statement of an atomic batch. */
export interface SqlStatement {
  /** SQLite-dialect text with `?1, ?2, …` placeholders; never holds a caller's value. */
  sql: string;
  /** The values bound to the placeholders, in order. */
  params: SqlValue[];
}

/**
 * What `Vault.open({ backend: "sql", sql })` runs its SQLite-dialect statements through. The
 * adapters {@link d1}, {@link durableObject} and {@link libsql} return one; to use another SQLite
 * (better-sqlite3, node:sqlite, bun:sqlite, wa-sqlite), write the two methods yourself:
 *
 * - `all(sql, params)` runs one statement with `params` bound to `?1, ?2, …` and resolves to its
 *   rows, each an array of column values in select order.
 * - `batch(statements)` runs every statement in order in **one transaction**: all of them, or,
 *   if any throws, none (roll back and reject with the engine's error, whose message must keep
 *   SQLite's wording, e.g. `"UNIQUE constraint failed: …"` or `"CHECK constraint failed: …"`).
 *
 * Both may return promises or plain values. The engine never puts a caller's string into SQL
 * text: every value is a bound parameter.
 */
export interface SqlExecutor {
  /** Run one statement with `params` bound; its rows, each an array of column values. */
  all(sql: string, params: SqlValue[]): Promise<SqlValue[][]> | SqlValue[][];
  /** Run every statement in one transaction: all of them, or none and reject. */
  batch(statements: SqlStatement[]): Promise<void> | void;
}

/** The parts of a Cloudflare D1 binding (`D1Database`) that {@link d1} uses. */
export interface D1DatabaseLike {
  /** `D1Database.prepare`: a statement to bind and run. */
  prepare(sql: string): D1PreparedStatementLike;
  /** `D1Database.batch`: the statements in one transaction. */
  batch(statements: D1PreparedStatementLike[]): Promise<unknown>;
}

/** The parts of a D1 prepared statement (`D1PreparedStatement`) that {@link d1} uses. */
export interface D1PreparedStatementLike {
  /** Bind the statement's parameters, in order. */
  bind(...values: unknown[]): D1PreparedStatementLike;
  /** Run it; its rows as arrays of column values. */
  raw(): Promise<unknown[][]>;
}

/** The parts of a Durable Object's `ctx.storage` (SQLite-backed) that {@link durableObject} uses. */
export interface DurableObjectStorageLike {
  /** `ctx.storage.sql`: `exec` runs one statement; `raw()` iterates its rows as arrays. */
  sql: {
    /** Run one statement with its bindings. */
    exec(sql: string, ...bindings: unknown[]): {
      /** The rows, as arrays of column values. */
      raw(): Iterable<unknown[]>;
    };
  };
  /** Run `closure` in one transaction, rolled back if it throws. */
  transactionSync<T>(closure: () => T): T;
}

/** The parts of an `@libsql/client` `Client` that {@link libsql} uses. */
export interface LibsqlClientLike {
  /** Run one statement; its rows. */
  execute(statement: { sql: string; args: SqlValue[] }): Promise<{
    /** Each row's column values, by index. */
    rows: ArrayLike<unknown>[];
  }>;
  /** Run the statements in one write transaction. */
  batch(statements: { sql: string; args: SqlValue[] }[], mode: "write"): Promise<unknown>;
}

/** `INVALID_ARGUMENT` unless `target` has the methods at `paths` (the value itself is never shown). */
function expect(target: unknown, what: string, paths: string[][], hint: string): void {
  for (const path of paths) {
    let at: unknown = target;
    for (const key of path) at = typeof at === "object" && at !== null ? (at as Record<string, unknown>)[key] : undefined;
    if (typeof at !== "function") {
      throw new VaultError("INVALID_ARGUMENT", `${what} needs ${hint}: it has no ${path.join(".")}() method`);
    }
  }
}

/** D1 and Durable Objects bind bytes as `ArrayBuffer`s, and D1 returns them as number arrays. */
function bindable(value: SqlValue): string | number | null | ArrayBuffer {
  return value instanceof Uint8Array ? value.slice().buffer : value;
}

function bytesBack(row: unknown[]): SqlValue[] {
  return row.map((v) => (Array.isArray(v) ? Uint8Array.from(v as number[]) : v instanceof ArrayBuffer ? new Uint8Array(v) : (v as SqlValue)));
}

/**
 * A Cloudflare D1 database: `Vault.open({ backend: "sql", sql: d1(env.DB) })`. A D1 `batch()`
 * is one transaction; every check of a vault write runs inside it.
 */
export function d1(db: D1DatabaseLike): SqlExecutor {
  expect(db, "d1()", [["prepare"], ["batch"]], "a D1 binding such as env.DB");
  const statement = (sql: string, params: SqlValue[]) => db.prepare(sql).bind(...params.map(bindable));
  return {
    async all(sql, params) {
      return (await statement(sql, params).raw()).map(bytesBack);
    },
    async batch(statements) {
      await db.batch(statements.map((s) => statement(s.sql, s.params)));
    },
  };
}

/**
 * A Durable Object's SQLite storage: `Vault.open({ backend: "sql", sql: durableObject(ctx.storage) })`.
 * Statements run synchronously through `ctx.storage.sql.exec`; a batch is one `transactionSync`.
 */
export function durableObject(storage: DurableObjectStorageLike): SqlExecutor {
  expect(storage, "durableObject()", [["sql", "exec"], ["transactionSync"]],
    "the ctx.storage of a SQLite-backed Durable Object (its class listed in new_sqlite_classes)");
  const run = (sql: string, params: SqlValue[]) => Array.from(storage.sql.exec(sql, ...params.map(bindable)).raw(), bytesBack);
  return {
    async all(sql, params) {
      return run(sql, params);
    },
    async batch(statements) {
      storage.transactionSync(() => {
        for (const s of statements) run(s.sql, s.params);
      });
    },
  };
}

/** A raw U+0000, or one escaped in JSON text (`\u0000` not preceded by an escaping backslash). */
const NUL = /\u0000|(?:^|[^\\])(?:\\\\)*\\u0000/;

/**
 * An `@libsql/client` client (Turso, a libSQL server, or a local `file:` database):
 * `Vault.open({ backend: "sql", sql: libsql(client) })`. A batch is `client.batch(…, "write")`,
 * one transaction.
 *
 * libSQL stores U+0000 but returns text cut at it, so a write holding a string with U+0000 (a
 * custom token, a setting) is refused with `STORAGE` rather than stored and read back damaged.
 */
export function libsql(client: LibsqlClientLike): SqlExecutor {
  expect(client, "libsql()", [["execute"], ["batch"]], "an @libsql/client Client");
  return {
    async all(sql, params) {
      const result = await client.execute({ sql, args: params });
      return result.rows.map((row) => bytesBack(Array.from(row)));
    },
    async batch(statements) {
      if (statements.some((s) => s.params.some((p) => typeof p === "string" && NUL.test(p)))) {
        throw Object.assign(
          new Error("libSQL returns text only up to its first U+0000 character, so strings holding U+0000 cannot be stored through it"),
          { name: "UnsupportedValueError" },
        );
      }
      await client.batch(
        statements.map((s) => ({ sql: s.sql, args: s.params })),
        "write",
      );
    },
  };
}
