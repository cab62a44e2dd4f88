import { callSync, runtime } from "./runtime.js";
import type { EngineModule } from "./runtime.js";
import type * as Engine from "./wasm/vaultstore_full.js";
import type { OrderBy, QueryInit, SortOrder } from "./types.js";

type EngineQuery = Engine.RecordQuery;

/**
 * A record query. Setters return `this`; nothing is checked until `validate()` or the call that
 * takes the query, which throw `VaultError` `INVALID_ARGUMENT`.
 */
export class RecordQuery {
  readonly #engine: EngineModule;
  readonly #inner: EngineQuery;

  constructor(init?: QueryInit) {
    this.#engine = runtime().primary;
    this.#inner = callSync(this.#engine, () => new this.#engine.RecordQuery(init));
  }

  setId(id: string): this { this.#inner.setId(id); return this; }
  setIdIn(ids: string[]): this { this.#inner.setIdIn(ids); return this; }
  setToken(token: string): this { this.#inner.setToken(token); return this; }
  setTokenIn(tokens: string[]): this { this.#inner.setTokenIn(tokens); return this; }
  /** 0 means no limit. */
  setLimit(n: number): this { this.#inner.setLimit(n); return this; }
  setOffset(n: number): this { this.#inner.setOffset(n); return this; }
  setOrderBy(column: OrderBy): this { this.#inner.setOrderBy(column); return this; }
  setSortOrder(order: SortOrder): this { this.#inner.setSortOrder(order); return this; }
  setSoftDeletedInclude(include: boolean): this { this.#inner.setSoftDeletedInclude(include); return this; }
  setSoftDeletedOnly(only: boolean): this { this.#inner.setSoftDeletedOnly(only); return this; }
  setExpiredOnly(only: boolean): this { this.#inner.setExpiredOnly(only); return this; }
  setCountOnly(only: boolean): this { this.#inner.setCountOnly(only); return this; }

  /** Throws `VaultError` (`INVALID_ARGUMENT`) naming what is wrong. */
  validate(): void {
    callSync(this.#engine, () => this.#inner.validate());
  }

  /** The query as a plain object. */
  toJSON(): QueryInit {
    return this.#inner.toJSON() as QueryInit;
  }
}
