/** Every code a `VaultError` can carry (API.md "Errors"). */
export type ErrorCode =
  | "RECORD_NOT_FOUND"
  | "INVALID_PASSWORD"
  | "DECRYPTION_FAILED"
  | "PASSWORD_POLICY"
  | "INVALID_ARGUMENT"
  | "TOKEN_EXISTS"
  | "IDENTITY_NOT_FOUND"
  | "IDENTITY_DISABLED"
  | "QUOTA_EXCEEDED"
  | "STORAGE"
  | "ABORTED"
  | "CLOSED"
  | "UNSUPPORTED"
  | "SYNC_CONFLICT";

/** Why a token did not resolve to a value (`RECORD_NOT_FOUND`). */
export type NotFoundReason = "missing" | "soft_deleted" | "expired";

/** The details a {@link VaultError} can carry besides its code and message. */
export interface VaultErrorOptions {
  /** For `RECORD_NOT_FOUND`: why. */
  reason?: NotFoundReason;
  /** The tokens the error is about (`RECORD_NOT_FOUND`, `INVALID_PASSWORD`, `DECRYPTION_FAILED`, `TOKEN_EXISTS`), as data: messages never quote them. */
  tokens?: string[];
  /**
   * The underlying failure. For `STORAGE`: what the backend threw, as it was thrown (the SQL
   * executor's error, IndexedDB's `DOMException`), or, for a failure the package found itself
   * (a newer schema, a blocked upgrade, a row it did not write), an `Error` named for it.
   */
  cause?: unknown;
}

/**
 * The one error type of the package: every rejection is a `VaultError`, with a stable `code`.
 *
 * @example
 * ```ts
 * try {
 *   await vault.tokenRead(token, password);
 * } catch (error) {
 *   if (error instanceof VaultError && error.code === "RECORD_NOT_FOUND") console.log(error.reason); // "expired", …
 *   else throw error;
 * }
 * ```
 */
export class VaultError extends Error {
  /** Always `"VaultError"`. */
  override readonly name = "VaultError" as const;
  /** A stable code; see {@link ErrorCode}. */
  readonly code: ErrorCode;
  /** For `RECORD_NOT_FOUND`: why. */
  readonly reason?: NotFoundReason;
  /** The tokens the error is about (`RECORD_NOT_FOUND`, `INVALID_PASSWORD`, `DECRYPTION_FAILED`, `TOKEN_EXISTS`), as data: messages never quote them. */
  readonly tokens?: string[];

  /** Errors come from the vault; constructing one yourself is for tests and adapters. */
  constructor(code: ErrorCode, message: string, options: VaultErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    if (options.reason !== undefined) this.reason = options.reason;
    if (options.tokens !== undefined) this.tokens = options.tokens;
  }
}

/** Type guard, also for errors from another copy of the package. */
export function isVaultError(value: unknown): value is VaultError {
  return (
    value instanceof VaultError ||
    (value instanceof Error && value.name === "VaultError" && typeof (value as { code?: unknown }).code === "string")
  );
}

interface RawVaultError extends Error {
  code: ErrorCode;
  reason?: NotFoundReason;
  tokens?: string[];
}

/** Give an error thrown by the wasm engine the `VaultError` prototype (keeping its stack). */
export function adoptError(error: unknown): VaultError | undefined {
  if (error instanceof VaultError) return error;
  if (error instanceof Error && error.name === "VaultError" && typeof (error as RawVaultError).code === "string") {
    Object.setPrototypeOf(error, VaultError.prototype);
    return error as VaultError;
  }
  return undefined;
}
