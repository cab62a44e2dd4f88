// What every entry point exports (API.md).
export { Vault } from "./vault.js";
export { RecordQuery } from "./query.js";
export { VaultError, isVaultError } from "./errors.js";
export { passkeyRegister, passkeySecret } from "./passkey.js";
export type { PasskeyRegisterOptions, PasskeyRegistration, PasskeySecretOptions } from "./passkey.js";
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
  SyncOptions,
  SyncRemote,
  SyncReport,
  SyncServer,
  Time,
  VaultEvent,
  VaultOptions,
  VaultRecord,
} from "./types.js";

// Token shape (API.md "Details that tests rely on"), also in src/token.rs; no engine needed, so
// these work before any `await`. tests/js/query-check.test.mjs holds both to the same answers.
const TOKEN_PREFIX = "tk_";
const MIN_TOKEN_LENGTH = 15;
const MAX_TOKEN_LENGTH = 40;

/**
 * Whether `value` looks like a generated token: a string that starts with `"tk_"`. Non-strings are
 * `false`.
 *
 * @example
 * ```ts
 * isToken("tk_7f3k9q2m4x8c1v5b6n0z"); // true
 * isToken(42); // false
 * ```
 */
export function isToken(value: unknown): value is string {
  return typeof value === "string" && value.startsWith(TOKEN_PREFIX);
}

/** `isToken(value)` and a total length (JavaScript `length`, prefix included) of 15..=40. */
export function isTokenValidLength(value: unknown): value is string {
  return isToken(value) && value.length >= MIN_TOKEN_LENGTH && value.length <= MAX_TOKEN_LENGTH;
}
