import type { ErrorCode } from "./errors.js";
import type { SqlExecutor } from "./sql.js";

/** A password (PBKDF2) or a raw 256-bit key (exactly 32 bytes; HKDF). */
export type Secret = string | Uint8Array;

/** Milliseconds since the epoch, a `Date`, or `null` for "never". */
export type Time = Date | number | null;

/**
 * Where a vault lives: `"indexeddb"` (browsers), `"memory"` (anywhere; persist with snapshots) or
 * `"sql"` (a SQLite-dialect database: D1, a Durable Object, libSQL; see `VaultOptions.sql`).
 */
export type Backend = "indexeddb" | "memory" | "sql";

/** What a password that encrypts must look like (never checked on reads). */
export interface PasswordPolicy {
  /** Minimum length in characters. Default 12. */
  minLength?: number;
  /** At least one lowercase letter. Default false. */
  requireLowercase?: boolean;
  /** At least one uppercase letter. Default false. */
  requireUppercase?: boolean;
  /** At least one digit. Default false. */
  requireNumbers?: boolean;
  /** Any character that is not a letter, a digit or whitespace. */
  requireSymbols?: boolean;
  /** Let the empty password through; nothing else changes. Default false. */
  allowEmpty?: boolean;
}

/** Options of {@link Vault.open}; unknown keys are `INVALID_ARGUMENT`. */
export interface VaultOptions {
  /** Default: `"indexeddb"` where `globalThis.indexedDB` exists, else `"memory"`. */
  backend?: Backend;
  /**
   * Where a `backend: "sql"` vault lives: `d1(env.DB)`, `durableObject(ctx.storage)`,
   * `libsql(client)` or an executor of your own. Required with `"sql"`, refused otherwise.
   */
  sql?: SqlExecutor;
  /**
   * IndexedDB database name, or the namespace inside an SQL database (several vaults can share
   * one). Default `"vaultstore"`. Memory vaults never share state.
   */
  name?: string;
  /** Group passwords into identities (instant password changes). Default false. */
  passwordIdentity?: boolean;
  /** PBKDF2 iterations for a new vault: 1,000 ..= 10,000,000, default 600,000. */
  kdfIterations?: number;
  /** Rules for passwords that encrypt; default: at least 12 characters. */
  passwordPolicy?: PasswordPolicy;
  /** How long derived keys stay in memory; 0 = never cache. Default 900,000 (15 min). */
  keyCacheTtlMs?: number;
  /**
   * Refuse (`INVALID_ARGUMENT`) an existing or imported vault whose stored PBKDF2 iteration count
   * is lower: the stored count is not authenticated, so write access to the storage alone could
   * weaken it. The same floor applies to a vault a sync brings in: a replica does not join a
   * server's vault below it, and an empty server does not take a replica's. Default: the
   * smaller of 100,000 and `kdfIterations`.
   */
  minKdfIterations?: number;
  /** Called after every operation with its name, duration, record count and outcome; never a secret. */
  onEvent?: (event: VaultEvent) => void;
  /**
   * Start from `exportSnapshot()` output. On IndexedDB and SQL, only into a database with no
   * records and no identities, where no record was ever deleted either (a deletion leaves a
   * tombstone for sync); else `INVALID_ARGUMENT`: use a new database name.
   */
  snapshot?: Uint8Array | string;
}

/** Options of {@link Vault.tokenCreate}, {@link Vault.tokensCreate} and {@link Vault.tokenUpsert}. */
export interface CreateOptions {
  /** Total token length including `"tk_"`: 15..=40, default 32. */
  length?: number;
  /** When the token stops resolving (reads say `expired`); `null` or absent: never. */
  expiresAt?: Time;
}

/** Options of {@link Vault.tokenCreateCustom}. */
export interface CustomCreateOptions {
  /** When the token stops resolving; `null` or absent: never. */
  expiresAt?: Time;
}

/** Options of {@link Vault.bulkRekey}. */
export interface RekeyOptions {
  /** Re-encrypt every record under a fresh data key (identities on). */
  rotate?: boolean;
  /** Called as records are processed: `done` of `total`. */
  onProgress?: (done: number, total: number) => void;
  /** Aborting before the commit rejects with `ABORTED` and changes nothing. */
  signal?: AbortSignal;
}

/** Options of {@link Vault.sync}. */
export interface SyncOptions {
  /**
   * Aborting stops the sync at the next exchange with the server (an exchange in flight is
   * cancelled when the remote passes the signal on, as `fetch` does): it rejects with `ABORTED`.
   * Every page applied before stays applied, and the next `sync` goes on from there.
   */
  signal?: AbortSignal;
  /**
   * Called after each page pulled or pushed with the rows moved so far (`done`) and an estimate
   * of the total, which may grow as the sync finds more to do; last with `done === total`, when
   * the sync completes. A listener that throws is ignored.
   */
  onProgress?: (done: number, total: number) => void;
}

/** What {@link Vault.sync} did. */
export interface SyncReport {
  /** Changes applied here from the server. */
  pulled: number;
  /** Changes of this replica the server accepted. */
  pushed: number;
  /** Changes of this replica that a later change from elsewhere superseded. */
  conflicts: number;
  /** Tokens kept on this replica only (refused or displaced by the server, see the README's "Sync"), listed by every sync while they are; still readable here. */
  stranded: string[];
}

/** A sync server reached over HTTP, as {@link SyncRemote} takes it. */
export interface SyncServer {
  /** The server's sync URL: absolute, or relative to the page in a browser. */
  url: string | URL;
  /** Sent with every request, e.g. `{ authorization: "Bearer …" }` (or a `Headers`); `content-type` is always JSON. */
  headers?: Record<string, string> | Headers | [string, string][];
  /** The `fetch` to send requests with; default `globalThis.fetch`. */
  fetch?: typeof fetch;
}

/**
 * Where {@link Vault.sync} finds its server: its URL (requests go through `globalThis.fetch`),
 * `{ url, headers, fetch }` (your headers, e.g. `authorization`, on every request; your `fetch`),
 * or a function that answers a `Request` (in process, e.g. `(request) => server.syncHandle(request)`).
 */
export type SyncRemote =
  | string
  | URL
  | SyncServer
  | ((request: Request) => Promise<Response>);

/** What `onEvent` receives after each operation. It never holds a value, a secret, a key or a token. */
export interface VaultEvent {
  /** The method's name, e.g. `"tokenRead"`, `"bulkRekey"`, `"open"`. */
  op: string;
  /** Milliseconds from the call to its result (`performance.now()` where there is one). */
  durationMs: number;
  /**
   * Records the operation read or wrote. For `sync`, the changes pulled and pushed; for
   * `syncHandle`, the rows a pull request was sent or a push request stored.
   */
  records: number;
  /** `"OK"`, or the `VaultError` code it rejected with. */
  code: "OK" | ErrorCode;
}

/** Record metadata; `value` is the encrypted envelope, never plaintext. */
export interface VaultRecord {
  /** The record's own id (random, stable). */
  id: string;
  /** The token the value is read with. */
  token: string;
  /** The `vs1:` envelope: the value, encrypted. */
  value: string;
  /** When the record was created. */
  createdAt: Date;
  /** When its value or expiry last changed. */
  updatedAt: Date;
  /** When it expires; `null`: never. */
  expiresAt: Date | null;
  /** When it was soft-deleted; `null`: it is live. */
  softDeletedAt: Date | null;
}

/** A column a query can sort by. */
export type OrderBy = "created_at" | "updated_at" | "expires_at" | "token" | "id";
/** A query's direction; default `"desc"`. */
export type SortOrder = "asc" | "desc";

/**
 * A query as a plain object: the fields of {@link RecordQuery}'s setters, all optional. A field
 * that is `undefined` or `null` is unset (its default applies).
 */
export type QueryInit = Partial<{
  /** Only the record with this id. */
  id: string;
  /** Only records whose id is listed (an empty list matches nothing). */
  idIn: string[];
  /** Only the record with this token. */
  token: string;
  /** Only records whose token is listed (an empty list matches nothing). */
  tokenIn: string[];
  /** At most this many records; 0 (the default) means no limit. */
  limit: number;
  /** Skip this many matching records first. */
  offset: number;
  /** Sort column; default `created_at`, ties broken on `id`. */
  orderBy: OrderBy;
  /** Default `"desc"`. */
  sortOrder: SortOrder;
  /** Also list soft-deleted records. */
  softDeletedInclude: boolean;
  /** List only soft-deleted records. */
  softDeletedOnly: boolean;
  /** List only expired records (not yet purged). */
  expiredOnly: boolean;
  /** A count query: no limit or offset allowed. */
  countOnly: boolean;
}>;
