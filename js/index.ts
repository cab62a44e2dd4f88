// What every entry point exports (API.md).
import { callSync, runtime } from "./runtime.js";

export { Vault } from "./vault.js";
export { RecordQuery } from "./query.js";
export { VaultError, isVaultError } from "./errors.js";
export { d1, durableObject, libsql } from "./sql.js";
export type {
  D1DatabaseLike,
  D1PreparedStatementLike,
  DurableObjectStorageLike,
  LibsqlClientLike,
  SqlExecutor,
  SqlStatement,
  SqlValue,
} from "./sql.js";
export type { ErrorCode, NotFoundReason, VaultErrorOptions } from "./errors.js";
export type {
  Backend,
  CreateOptions,
  CustomCreateOptions,
  OrderBy,
  PasswordPolicy,
  QueryInit,
  RekeyOptions,
  Secret,
  SortOrder,
  Time,
  VaultEvent,
  VaultOptions,
  VaultRecord,
} from "./types.js";

/** Starts with `"tk_"`. Non-strings are `false`. */
export function isToken(value: unknown): value is string {
  const engine = runtime().primary;
  return callSync(engine, () => engine.isToken(value));
}

/** `isToken(value)` and a total length (JavaScript `length`) of 15..=40. */
export function isTokenValidLength(value: unknown): value is string {
  const engine = runtime().primary;
  return callSync(engine, () => engine.isTokenValidLength(value));
}
