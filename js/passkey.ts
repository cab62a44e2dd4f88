// Passkeys (API.md "Passkeys"): the same two functions on every entry. Where the runtime has no
// WebAuthn (Node, workers, an old browser) they reject UNSUPPORTED without loading anything; in a
// browser the ceremony itself (webauthn.ts) is imported on the first call, so a page that never
// uses a passkey does not download it.
import { VaultError, type ErrorCode } from "./errors.js";

/** What {@link passkeyRegister} takes. */
export interface PasskeyRegisterOptions {
  /** The app's name, which the browser shows while the passkey is created. */
  rpName: string;
  /** The account the passkey is for, shown by the browser and the authenticator (e.g. an email address). */
  userName: string;
  /** The domain the passkey belongs to; the page's own host by default (a suffix of it is allowed). */
  rpId?: string;
  /** Cancels the request: it then rejects with `ABORTED`. */
  signal?: AbortSignal;
}

/** What {@link passkeySecret} takes; every field is optional. */
export interface PasskeySecretOptions {
  /** Ask for this passkey only (the `credentialId` {@link passkeyRegister} returned); otherwise the browser lets the user pick one. */
  credentialId?: string;
  /** The domain the passkey belongs to; the page's own host by default. */
  rpId?: string;
  /** Cancels the request: it then rejects with `ABORTED`. */
  signal?: AbortSignal;
}

/** A new passkey: its id, and the 32-byte secret it gives. */
export interface PasskeyRegistration {
  /** The credential's id (base64url, no padding). Public data: keep it to ask for this passkey later. */
  credentialId: string;
  /** The passkey's 32-byte secret, a raw-key {@link Secret}; a fresh array the caller owns. */
  secret: Uint8Array;
}

/** Builds the error the ceremony rejects with (webauthn.ts imports nothing, so it gets this). */
export type PasskeyFail = (code: ErrorCode, message: string, cause?: unknown) => Error;

const fail: PasskeyFail = (code, message, cause) => new VaultError(code, message, cause === undefined ? {} : { cause });

/** The browser's WebAuthn, or a rejection saying it is missing. */
function webAuthn(): Promise<typeof import("./webauthn.js")> {
  const scope = globalThis as { navigator?: { credentials?: unknown }; PublicKeyCredential?: unknown };
  if (typeof scope.PublicKeyCredential !== "function" || typeof scope.navigator?.credentials !== "object") {
    return Promise.reject(
      fail(
        "UNSUPPORTED",
        "passkeys need a browser with WebAuthn (and its PRF extension); this runtime has none. Unlock with the password instead.",
      ),
    );
  }
  return import("./webauthn.js");
}

/**
 * Create a passkey (a discoverable WebAuthn credential with user verification and the PRF
 * extension) and return its id and its 32-byte secret: the PRF output for this package's fixed
 * salt, the UTF-8 bytes of `"vaultstore/v1/passkey-prf"`. The secret is a raw-key `Secret`: add it
 * to a vault with `vault.secretAdd(password, secret)`, open the vault later with
 * `vault.unlock(await passkeySecret())`. Nothing about the passkey is stored by the package.
 *
 * Rejects `UNSUPPORTED` where the runtime has no WebAuthn (Node, workers), where the browser or the
 * authenticator lacks PRF, or on a page whose origin cannot hold passkeys (an IP address: use
 * `localhost` or https with a domain); `ABORTED` when the user cancels or `signal` fires;
 * `INVALID_ARGUMENT` for a missing `rpName` or `userName`.
 *
 * @example
 * ```ts
 * const { credentialId, secret } = await passkeyRegister({ rpName: "Secrets", userName: "ada@example.com" });
 * await vault.secretAdd(password, secret);
 * localStorage.setItem("passkey", credentialId); // public data
 * ```
 */
export async function passkeyRegister(options: PasskeyRegisterOptions): Promise<PasskeyRegistration> {
  return (await webAuthn()).register(options, fail);
}

/**
 * The 32-byte secret of a passkey made by {@link passkeyRegister}: the same bytes on every call
 * with the same passkey, other bytes for another passkey. Without `credentialId` the browser lets
 * the user pick any passkey of the site. Returns a fresh array the caller owns.
 *
 * Rejects like {@link passkeyRegister}: `UNSUPPORTED` without WebAuthn or PRF, `ABORTED` when the
 * user cancels or `signal` fires (also when the authenticator no longer holds the passkey),
 * `INVALID_ARGUMENT` for a `credentialId` that is not base64url.
 *
 * @example
 * ```ts
 * const secret = await passkeySecret({ credentialId: localStorage.getItem("passkey") ?? undefined });
 * await vault.unlock(secret); // true: the vault is open
 * ```
 */
export async function passkeySecret(options: PasskeySecretOptions = {}): Promise<Uint8Array> {
  return (await webAuthn()).secret(options, fail);
}
