import { VaultError } from "./errors.js";
import { QUERY_FIELDS, checkQuery, typeName } from "./query-check.js";
import { callSync, runtime } from "./runtime.js";
import type { OrderBy, QueryInit, SortOrder } from "./types.js";

/** The most keys an object argument may have (src/wasm/convert.rs `MAX_ITEMS`). */
const MAX_KEYS = 100_000;

/**
 * A record query for {@link Vault.recordList} and {@link Vault.recordCount}. Setters return
 * `this`; nothing is checked until `validate()` or the call that takes the query, which throw
 * `VaultError` `INVALID_ARGUMENT`. Building one needs no engine, so it works before any `await`.
 *
 * @example
 * ```ts
 * const page = await vault.recordList(
 *   new RecordQuery().setOrderBy("updated_at").setSortOrder("desc").setLimit(20).setOffset(40),
 * );
 * ```
 */
export class RecordQuery {
  // The query as given, unchecked (wrong types included, so validation can name them).
  readonly #init: Record<string, unknown> = Object.create(null) as Record<string, unknown>;

  /** A query from a plain object (or none: every live record, newest first). */
  constructor(init?: QueryInit) {
    const given: unknown = init;
    if (given === undefined || given === null) return;
    if (typeof given !== "object" && typeof given !== "function") {
      throw new VaultError("INVALID_ARGUMENT", `invalid argument: a RecordQuery is built from a plain object, got ${typeName(given)}`);
    }
    // Read as the engine reads it (src/wasm/convert.rs `plain_copy`): every own string key once,
    // and a throwing getter or Proxy trap is INVALID_ARGUMENT, not a stray exception.
    let keys: (string | symbol)[];
    try {
      keys = Reflect.ownKeys(given);
    } catch {
      throw new VaultError("INVALID_ARGUMENT", "invalid argument: query could not be read: a Proxy trap threw");
    }
    if (keys.length > MAX_KEYS) throw new VaultError("INVALID_ARGUMENT", `invalid argument: query has more than ${MAX_KEYS} keys`);
    for (const key of keys) {
      if (typeof key !== "string") continue;
      try {
        this.#init[key] = Reflect.get(given, key) as unknown;
      } catch {
        throw new VaultError("INVALID_ARGUMENT", "invalid argument: a property of query could not be read: a getter or Proxy trap threw");
      }
    }
  }

  /** Only the record with this id. */
  setId(id: string): this { this.#init.id = id; return this; }
  /** Only records whose id is in `ids` (an empty list matches nothing). */
  setIdIn(ids: string[]): this { this.#init.idIn = ids; return this; }
  /** Only the record with this token. */
  setToken(token: string): this { this.#init.token = token; return this; }
  /** Only records whose token is in `tokens` (an empty list matches nothing). */
  setTokenIn(tokens: string[]): this { this.#init.tokenIn = tokens; return this; }
  /** At most `n` records; 0 means no limit. */
  setLimit(n: number): this { this.#init.limit = n; return this; }
  /** Skip the first `n` matching records. */
  setOffset(n: number): this { this.#init.offset = n; return this; }
  /** The column to sort by; default `created_at`. Ties break on `id`. */
  setOrderBy(column: OrderBy): this { this.#init.orderBy = column; return this; }
  /** Default `"desc"`. */
  setSortOrder(order: SortOrder): this { this.#init.sortOrder = order; return this; }
  /** Also list soft-deleted records. */
  setSoftDeletedInclude(include: boolean): this { this.#init.softDeletedInclude = include; return this; }
  /** List only soft-deleted records. */
  setSoftDeletedOnly(only: boolean): this { this.#init.softDeletedOnly = only; return this; }
  /** List only expired records (not yet purged). */
  setExpiredOnly(only: boolean): this { this.#init.expiredOnly = only; return this; }
  /** Mark the query as a count (no limit or offset allowed). */
  setCountOnly(only: boolean): this { this.#init.countOnly = only; return this; }

  /** Throws `VaultError` (`INVALID_ARGUMENT`) naming what is wrong. */
  validate(): void {
    const query = this.toJSON();
    const engine = runtime().readyEngine();
    if (engine === undefined) {
      // A browser before its first open: the same rules, mirrored (see query-check.ts).
      checkQuery(query);
      return;
    }
    callSync(engine, () => {
      const checked = new engine.RecordQuery(query);
      try {
        checked.validate();
      } finally {
        checked.free();
      }
    });
  }

  /** The query as a plain `QueryInit` object (what the Vault methods hand to the engine). */
  toJSON(): QueryInit {
    const copy: Record<string, unknown> = {};
    for (const key of QUERY_FIELDS) {
      if (this.#init[key] !== undefined) copy[key] = this.#init[key];
    }
    // Keys that are not query fields stay, so validation can name them.
    for (const key of Object.keys(this.#init)) {
      if (!(QUERY_FIELDS as readonly string[]).includes(key)) {
        Object.defineProperty(copy, key, { value: this.#init[key], enumerable: true, writable: true, configurable: true });
      }
    }
    return copy as QueryInit;
  }
}
