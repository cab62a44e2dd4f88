// The WebAuthn ceremonies behind passkey.ts, loaded on a passkey's first use in a browser. It
// imports nothing at run time (passkey.ts hands it the error factory), so the browser bundle can
// leave it out and still throw the one VaultError class.
import type { PasskeyFail, PasskeyRegisterOptions, PasskeyRegistration, PasskeySecretOptions } from "./passkey.js";

/**
 * The PRF salt of every vaultstore passkey: the UTF-8 bytes of "vaultstore/v1/passkey-prf". It is
 * part of the stored format (README "Passkeys"): changing it changes every passkey's secret, so
 * every vault a passkey was added to would stop opening with it. Never change it.
 */
const SALT_TEXT = "vaultstore/v1/passkey-prf";

const NO_PRF =
  "this browser or this authenticator does not support the WebAuthn PRF extension, so the passkey cannot give a vault secret; the password keeps working";
const BAD_ORIGIN =
  "the browser refused passkeys on this page: they need a page served from localhost or over https with a domain name (not an IP address), and an rpId that is the page's domain or a suffix of it";
const CANCELLED = "the passkey request was cancelled (by the user, a timeout or the signal), or no matching passkey was offered; nothing was changed";

function salt(): Uint8Array<ArrayBuffer> {
  return new Uint8Array(new TextEncoder().encode(SALT_TEXT));
}

function toBase64Url(bytes: Uint8Array): string {
  let binary = "";
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function fromBase64Url(text: string, fail: PasskeyFail): Uint8Array<ArrayBuffer> {
  if (text.length === 0 || text.length > 1366 || !/^[A-Za-z0-9_-]+$/.test(text) || text.length % 4 === 1) {
    throw fail("INVALID_ARGUMENT", "credentialId must be the base64url string passkeyRegister returned");
  }
  const binary = atob(text.replace(/-/g, "+").replace(/_/g, "/"));
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

function checkCommon(options: { rpId?: unknown; signal?: unknown }, fail: PasskeyFail): void {
  if (options.rpId !== undefined && (typeof options.rpId !== "string" || options.rpId.length === 0)) {
    throw fail("INVALID_ARGUMENT", "rpId must be a non-empty string (a domain) when given");
  }
  if (options.signal !== undefined && !(options.signal instanceof AbortSignal)) {
    throw fail("INVALID_ARGUMENT", "signal must be an AbortSignal when given");
  }
  if (options.signal?.aborted) throw fail("ABORTED", CANCELLED, options.signal.reason);
}

/** A browser's rejection, as the contract's code. */
function translate(error: unknown, fail: PasskeyFail, signal: AbortSignal | undefined): Error {
  const name = error instanceof Error ? error.name : "";
  if (signal?.aborted || name === "NotAllowedError" || name === "AbortError") return fail("ABORTED", CANCELLED, error);
  if (name === "SecurityError") return fail("UNSUPPORTED", BAD_ORIGIN, error);
  if (name === "NotSupportedError" || name === "ConstraintError") {
    return fail("UNSUPPORTED", "no authenticator here can hold a passkey with user verification; the password keeps working", error);
  }
  if (name === "InvalidStateError") {
    return fail("INVALID_ARGUMENT", "the authenticator refused this request (it may already hold this passkey); nothing was changed", error);
  }
  if (name === "TypeError") return fail("INVALID_ARGUMENT", "the browser refused the passkey options (rpName, userName or rpId)", error);
  return fail("UNSUPPORTED", "the browser could not complete the passkey request; the password keeps working", error);
}

/** The PRF output of a create or get response: a fresh 32-byte array; the browser's copy is zeroed. */
function prfResult(credential: PublicKeyCredential): Uint8Array | undefined {
  const first = credential.getClientExtensionResults().prf?.results?.first;
  if (first === undefined) return undefined;
  const view = first instanceof ArrayBuffer ? new Uint8Array(first) : new Uint8Array(first.buffer, first.byteOffset, first.byteLength);
  try {
    return view.length === 32 ? new Uint8Array(view) : undefined;
  } finally {
    view.fill(0);
  }
}

async function get(
  rpId: string | undefined,
  credentialId: Uint8Array<ArrayBuffer> | undefined,
  signal: AbortSignal | undefined,
  fail: PasskeyFail,
): Promise<Uint8Array> {
  let credential: Credential | null;
  try {
    credential = await navigator.credentials.get({
      publicKey: {
        challenge: crypto.getRandomValues(new Uint8Array(32)),
        ...(rpId === undefined ? {} : { rpId }),
        allowCredentials: credentialId === undefined ? [] : [{ type: "public-key", id: credentialId }],
        userVerification: "required",
        extensions: { prf: { eval: { first: salt() } } },
      },
      ...(signal === undefined ? {} : { signal }),
    });
  } catch (error) {
    throw translate(error, fail, signal);
  }
  if (!(credential instanceof PublicKeyCredential)) throw fail("ABORTED", CANCELLED);
  const secret = prfResult(credential);
  if (secret === undefined) throw fail("UNSUPPORTED", NO_PRF);
  return secret;
}

/**
 * A passkey that cannot give a secret is of no use to the app, which never learns its id: ask the
 * passkey provider to drop it (the WebAuthn Signal API, where the browser has it), so the user's
 * passkey list does not collect dead entries. Best effort: nothing to undo if it is missing.
 */
function forget(rpId: string | undefined, credentialId: string): void {
  const signal = (PublicKeyCredential as { signalUnknownCredential?: (o: { rpId: string; credentialId: string }) => Promise<void> })
    .signalUnknownCredential;
  if (typeof signal !== "function") return;
  try {
    signal.call(PublicKeyCredential, { rpId: rpId ?? location.hostname, credentialId }).catch(() => {});
  } catch {
    // A browser that refuses the call keeps the passkey; the user can delete it in its settings.
  }
}

export async function register(options: PasskeyRegisterOptions, fail: PasskeyFail): Promise<PasskeyRegistration> {
  if (typeof options !== "object" || options === null) throw fail("INVALID_ARGUMENT", "passkeyRegister takes an options object");
  const { rpName, userName, rpId, signal } = options;
  if (typeof rpName !== "string" || rpName.length === 0) throw fail("INVALID_ARGUMENT", "rpName must be a non-empty string");
  if (typeof userName !== "string" || userName.length === 0) throw fail("INVALID_ARGUMENT", "userName must be a non-empty string");
  checkCommon(options, fail);
  let credential: Credential | null;
  try {
    credential = await navigator.credentials.create({
      publicKey: {
        rp: { name: rpName, ...(rpId === undefined ? {} : { id: rpId }) },
        user: { id: crypto.getRandomValues(new Uint8Array(16)), name: userName, displayName: userName },
        challenge: crypto.getRandomValues(new Uint8Array(32)),
        pubKeyCredParams: [
          { type: "public-key", alg: -7 }, // ES256
          { type: "public-key", alg: -257 }, // RS256
        ],
        authenticatorSelection: { residentKey: "required", requireResidentKey: true, userVerification: "required" },
        extensions: { prf: { eval: { first: salt() } } },
      },
      ...(signal === undefined ? {} : { signal }),
    });
  } catch (error) {
    throw translate(error, fail, signal);
  }
  if (!(credential instanceof PublicKeyCredential)) throw fail("ABORTED", CANCELLED);
  const rawId = new Uint8Array(credential.rawId);
  const credentialId = toBase64Url(rawId);
  const prf = credential.getClientExtensionResults().prf;
  // Many authenticators enable PRF at creation but only evaluate it on a get: ask for the new one.
  let secret: Uint8Array | undefined;
  try {
    secret = prfResult(credential) ?? (prf?.enabled === true ? await get(rpId, rawId, signal, fail) : undefined);
  } catch (error) {
    forget(rpId, credentialId);
    throw error;
  }
  if (secret === undefined) {
    forget(rpId, credentialId);
    throw fail("UNSUPPORTED", NO_PRF);
  }
  return { credentialId, secret };
}

export async function secret(options: PasskeySecretOptions, fail: PasskeyFail): Promise<Uint8Array> {
  if (typeof options !== "object" || options === null) throw fail("INVALID_ARGUMENT", "passkeySecret takes an options object");
  const { credentialId, rpId, signal } = options;
  if (credentialId !== undefined && typeof credentialId !== "string") {
    throw fail("INVALID_ARGUMENT", "credentialId must be the base64url string passkeyRegister returned");
  }
  checkCommon(options, fail);
  return get(rpId, credentialId === undefined ? undefined : fromBase64Url(credentialId, fail), signal, fail);
}
