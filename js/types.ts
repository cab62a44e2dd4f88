import type { ErrorCode } from "./errors.js";
import type { SqlExecutor } from "./sql.js";

/** A password (PBKDF2) or a raw 256-bit key (exactly 32 bytes; HKDF). */
export type Secret = string | Uint8Array;

/** Milliseconds since the epoch, a `Date`, or `null` for "never". */
export type Time = Date | number | null;

export type Backend = "indexeddb" | "memory" | "sql";

export interface PasswordPolicy {
  /** Minimum length in characters. Default 12. */
  minLength?: number;
  requireLowercase?: boolean;
  requireUppercase?: boolean;
  requireNumbers?: boolean;
  /** Any character that is not a letter, a digit or whitespace. */
  requireSymbols?: boolean;
  /** Let the empty password through; nothing else changes. Default false. */
  allowEmpty?: boolean;
}

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
  passwordPolicy?: PasswordPolicy;
  /** How long derived keys stay in memory; 0 = never cache. Default 900,000 (15 min). */
  keyCacheTtlMs?: number;
  /**
   * Refuse (`INVALID_ARGUMENT`) an existing or imported vault whose stored PBKDF2 iteration count
   * is lower: the stored count is not authenticated, so write access to the storage alone could
   * weaken it. Default: the smaller of 100,000 and `kdfIterations`.
   */
  minKdfIterations?: number;
  /** Called after every operation with its name, duration, record count and outcome; never a secret. */
  onEvent?: (event: VaultEvent) => void;
  /** Start from `exportSnapshot()` output. */
  snapshot?: Uint8Array | string;
}

export interface CreateOptions {
  /** Total token length including `"tk_"`: 15..=40, default 32. */
  length?: number;
  expiresAt?: Time;
}

export interface CustomCreateOptions {
  expiresAt?: Time;
}

export interface RekeyOptions {
  /** Re-encrypt every record under a fresh data key (identities on). */
  rotate?: boolean;
  /** Called as records are processed: `done` of `total`. */
  onProgress?: (done: number, total: number) => void;
  /** Aborting before the commit rejects with `ABORTED` and changes nothing. */
  signal?: AbortSignal;
}

/** What `onEvent` receives after each operation. It never holds a value, a secret, a key or a token. */
export interface VaultEvent {
  /** The method's name, e.g. `"tokenRead"`, `"bulkRekey"`, `"open"`. */
  op: string;
  durationMs: number;
  /** Records the operation read or wrote. */
  records: number;
  /** `"OK"`, or the `VaultError` code it rejected with. */
  code: "OK" | ErrorCode;
}

/** Record metadata; `value` is the encrypted envelope, never plaintext. */
export interface VaultRecord {
  id: string;
  token: string;
  value: string;
  createdAt: Date;
  updatedAt: Date;
  expiresAt: Date | null;
  softDeletedAt: Date | null;
}

export type OrderBy = "created_at" | "updated_at" | "expires_at" | "token" | "id";
export type SortOrder = "asc" | "desc";

export type QueryInit = Partial<{
  id: string;
  idIn: string[];
  token: string;
  tokenIn: string[];
  limit: number;
  offset: number;
  orderBy: OrderBy;
  sortOrder: SortOrder;
  softDeletedInclude: boolean;
  softDeletedOnly: boolean;
  expiredOnly: boolean;
  countOnly: boolean;
}>;
