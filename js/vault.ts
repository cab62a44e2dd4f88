import { VaultError } from "./errors.js";
import { RecordQuery } from "./query.js";
import { call, defaultBackend, runtime } from "./runtime.js";
import type { EngineModule, EngineVault } from "./runtime.js";
import type {
  CreateOptions,
  CustomCreateOptions,
  QueryInit,
  RekeyOptions,
  Secret,
  SyncOptions,
  SyncRemote,
  SyncReport,
  Time,
  VaultEvent,
  VaultOptions,
  VaultRecord,
} from "./types.js";

/**
 * The caller's `onEvent`, with a promise it returns settled quietly: a listener never breaks an
 * operation (API.md "Events"; the engine catches one that throws), and an async listener that
 * rejects would otherwise be an unhandled rejection, which ends a Node process.
 */
function quietListener(listener: (event: VaultEvent) => unknown): (event: VaultEvent) => void {
  return (event) => {
    const out = listener(event) as PromiseLike<unknown> | undefined;
    if (typeof out?.then === "function") out.then(undefined, () => {});
  };
}

/**
 * A plain copy of the caller's options object, read once, so that a getter or Proxy trap that
 * throws is an `INVALID_ARGUMENT` here rather than an exception from inside the engine. Anything
 * that is not a plain object is passed on for the engine to reject with its type.
 */
function plainOptions(options: unknown): unknown {
  try {
    if (typeof options !== "object" || options === null || Array.isArray(options)) return options;
    return { ...options };
  } catch {
    throw new VaultError("INVALID_ARGUMENT", "options could not be read: a getter or Proxy trap threw");
  }
}

/**
 * What the engine reads a query from: a `RecordQuery`'s fields, or what the caller passed, which
 * the engine reads once and checks itself (a getter or Proxy trap that throws is its
 * `INVALID_ARGUMENT`, and reaches onEvent like any refusal).
 */
function plainQuery(query: RecordQuery | QueryInit | undefined): QueryInit | undefined {
  let ours = false;
  try {
    ours = query instanceof RecordQuery;
  } catch {
    // A revoked Proxy: the engine's own checks refuse it.
  }
  return ours ? (query as RecordQuery).toJSON() : (query as QueryInit | undefined);
}

/** Where an in-process remote (a function) is told the request goes; it never leaves the process. */
const IN_PROCESS_URL = "https://sync.invalid/";

/**
 * Read a body, stopping once it holds more than `limit` bytes (SYNC.md: the cap is checked on
 * the bytes read, whatever `Content-Length` said). `undefined` when it went over; throws when
 * the body cannot be read (already read, or its stream failed).
 */
async function readCapped(body: ReadableStream<Uint8Array> | null, limit: number): Promise<Uint8Array | undefined> {
  if (body === null) return new Uint8Array(0);
  const reader = body.getReader();
  const chunks: Uint8Array[] = [];
  let length = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    length += value.byteLength;
    if (length > limit) {
      await reader.cancel().catch(() => undefined);
      return undefined;
    }
    chunks.push(value);
  }
  const bytes = new Uint8Array(length);
  let at = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, at);
    at += chunk.byteLength;
  }
  return bytes;
}

/**
 * The `Record<string, string>` of the engine's `(key, value)` pairs, sent as
 * `[text, lengths, text, lengths, …]`: each text holds keys and values one after the other, its
 * lengths (UTF-16 units) say where each ends. Built here in one loop rather than by the engine
 * with two calls into JavaScript per pair. Keys are defined, not assigned, so a key like
 * `"__proto__"` is an ordinary own property instead of replacing the object's prototype.
 */
function stringMap(parts: (string | Uint32Array)[]): Record<string, string> {
  const map: Record<string, string> = {};
  for (let p = 0; p + 1 < parts.length; p += 2) {
    const text = parts[p] as string;
    const lengths = parts[p + 1] as Uint32Array;
    let at = 0;
    for (let i = 0; i + 1 < lengths.length; i += 2) {
      const key = text.slice(at, (at += lengths[i]));
      const value = text.slice(at, (at += lengths[i + 1]));
      Object.defineProperty(map, key, { value, writable: true, enumerable: true, configurable: true });
    }
  }
  return map;
}

/** A response of `syncHandle`: JSON, never cached; `Allow` on a 405, `Retry-After` on a 503. */
function syncResponse([status, body]: [number, string]): Response {
  const headers: Record<string, string> = { "content-type": "application/json", "cache-control": "no-store" };
  if (status === 405) headers.allow = "POST";
  if (status === 503) headers["retry-after"] = "1";
  return new Response(body, { status, headers });
}

type Exchange = (body: string) => Promise<{ status: number; body: Uint8Array | null; tooLarge?: boolean }>;

function syncUrl(url: unknown): URL {
  if (url instanceof URL) return url;
  if (typeof url === "string") {
    try {
      // Relative to the page in a browser, like `fetch`; elsewhere it must be absolute.
      return new URL(url, (globalThis as { location?: { href?: string } }).location?.href);
    } catch {
      // The URL is not repeated: it may carry a secret in its query.
      throw new VaultError("INVALID_ARGUMENT", "the sync remote is not a valid URL (an absolute one outside a browser page)");
    }
  }
  throw new VaultError("INVALID_ARGUMENT", "the sync remote must be a URL, { url, headers, fetch } or a function of a Request");
}

/**
 * One request/response exchange with the server a `SyncRemote` names: a `POST` of the JSON body,
 * the status and the body's bytes back (read up to `limit`).
 */
function syncExchange(remote: SyncRemote, signal: AbortSignal | undefined, limit: number): Exchange {
  let send: (url: URL, init: RequestInit) => Promise<Response>;
  let url: URL;
  let extra: HeadersInit = {};
  if (typeof remote === "function") {
    url = new URL(IN_PROCESS_URL);
    send = (to, init) => remote(new Request(to, init));
  } else if (typeof remote === "object" && remote !== null && !(remote instanceof URL)) {
    let given: { url?: unknown; headers?: unknown; fetch?: unknown };
    try {
      given = { url: remote.url, headers: remote.headers, fetch: remote.fetch };
      if (given.headers !== undefined && given.headers !== null) {
        if (typeof given.headers !== "object") throw new TypeError();
        // A record, a Headers object or pairs, copied once (a later change by the caller is not seen).
        const pairs: [string, string][] = [];
        new Headers(given.headers as HeadersInit).forEach((value, name) => pairs.push([name, value]));
        extra = pairs;
      }
    } catch {
      throw new VaultError("INVALID_ARGUMENT", "the sync remote could not be read: its headers must be an object of strings");
    }
    url = syncUrl(given.url);
    const own = given.fetch;
    if (own !== undefined && own !== null && typeof own !== "function") {
      throw new VaultError("INVALID_ARGUMENT", "the sync remote's fetch must be a function");
    }
    const fetcher = (own ?? globalThis.fetch) as typeof fetch;
    send = (to, init) => fetcher(to, init);
  } else {
    url = syncUrl(remote);
    send = (to, init) => globalThis.fetch(to, init);
  }
  return async (body) => {
    const headers = new Headers(extra);
    headers.set("content-type", "application/json");
    const response = await send(url, { method: "POST", headers, body, signal });
    // A Response, or one of another realm or polyfill: what is read is its status and body.
    if (typeof response !== "object" || response === null || typeof response.status !== "number") {
      throw new TypeError("the sync remote did not answer with a Response");
    }
    const bytes = await readCapped(response.body ?? null, limit);
    return bytes === undefined ? { status: response.status, body: null, tooLarge: true } : { status: response.status, body: bytes };
  };
}

/**
 * An encrypted token vault. Open one with {@link Vault.open}; every method returns a promise that
 * rejects with a {@link VaultError}.
 *
 * @example
 * ```ts
 * const vault = await Vault.open({ name: "my-app" }); // IndexedDB in a browser, memory in Node
 * const token = await vault.tokenCreate("4111 1111 1111 1111", password);
 * const card = await vault.tokenRead(token, password);
 * ```
 */
export class Vault {
  readonly #engine: EngineModule;
  readonly #inner: EngineVault;

  private constructor(engine: EngineModule, inner: EngineVault) {
    this.#engine = engine;
    this.#inner = inner;
  }

  #call<T>(run: (inner: EngineVault) => Promise<T>): Promise<T> {
    return call(this.#engine, () => run(this.#inner));
  }

  /**
   * Open (or create) a vault: IndexedDB database `name` where `indexedDB` exists, else memory.
   *
   * @example
   * ```ts
   * const vault = await Vault.open({ name: "my-app", passwordIdentity: true });
   * const copy = await Vault.open({ backend: "memory", snapshot: await vault.exportSnapshot() });
   * ```
   */
  static async open(options?: VaultOptions): Promise<Vault> {
    const rt = runtime();
    const given = plainOptions(options);
    const isObject = typeof given === "object" && given !== null;
    const chosen = isObject ? (given as VaultOptions).backend : undefined;
    const backend = chosen === undefined ? defaultBackend() : chosen;
    if (backend !== "memory" && backend !== "indexeddb" && backend !== "sql") {
      // The value is not repeated: whatever a caller puts in the wrong place may be a secret.
      throw new VaultError("INVALID_ARGUMENT", 'backend must be "indexeddb", "memory" or "sql"');
    }
    if (backend === "indexeddb" && typeof (globalThis as { indexedDB?: unknown }).indexedDB === "undefined") {
      throw new VaultError("UNSUPPORTED", 'IndexedDB is not available in this runtime: use backend "memory" or "sql"');
    }
    const snapshot = isObject ? (given as VaultOptions).snapshot : undefined;
    const engine = await rt.engineFor(backend, snapshot !== undefined && snapshot !== null);
    const listener = isObject ? (given as VaultOptions).onEvent : undefined;
    const onEvent = typeof listener === "function" ? quietListener(listener) : listener;
    const engineOptions =
      given === undefined || given === null ? { backend } : isObject ? { ...given, backend, onEvent } : given;
    const inner = await call(engine, () => engine.Vault.open(engineOptions as VaultOptions));
    return new Vault(engine, inner);
  }

  /** Wipe every cached key from memory now. */
  lock(): void {
    this.#inner.lock();
  }

  /**
   * Derive `secret`'s key once, cache it (as any other call would) and check it against the vault,
   * for an app's unlock screen. Resolves `true` when a stored record or identity opens with it
   * (soft-deleted and expired records count), `false` when the vault holds nothing yet to check
   * against (the secret you use next becomes the vault's), and rejects with `INVALID_PASSWORD`
   * otherwise. Cheap: one key derivation, then one identity lookup and, where records sealed
   * without an identity may exist, one key check per record until the first that opens (no trial
   * decryption of the others).
   *
   * @example
   * ```ts
   * try {
   *   const known = await vault.unlock(password);
   *   showEntries(known ? "unlocked" : "new vault: this password is now its password");
   * } catch (error) {
   *   if (error instanceof VaultError && error.code === "INVALID_PASSWORD") showError("Wrong password");
   *   else throw error;
   * }
   * ```
   */
  unlock(secret: Secret): Promise<boolean> {
    return this.#call((v) => v.unlock(secret));
  }

  /**
   * Close the vault: its keys are wiped and its storage connection closed now. Afterwards every
   * call rejects with `CLOSED`; `lock()` and `close()` do nothing. A call still running either
   * completed its write before the close (and resolves) or rejects with `CLOSED` having changed
   * nothing; which one depends on how far it got (on IndexedDB most calls wait for a
   * transaction, so calls started just before `close()` usually reject). Await your calls
   * before closing to have them all finish.
   */
  close(): Promise<void> {
    return this.#call((v) => v.close());
  }

  /** The whole vault as snapshot bytes; values stay encrypted. */
  exportSnapshot(): Promise<Uint8Array> {
    return this.#call((v) => v.exportSnapshot());
  }

  // ---- tokens ----

  /**
   * Seal `value` under `password` and return its new random token (`"tk_…"`, 32 characters unless
   * `length` says otherwise).
   *
   * @example
   * ```ts
   * const token = await vault.tokenCreate("4111 1111 1111 1111", password, { expiresAt: Date.now() + 86_400_000 });
   * ```
   */
  tokenCreate(value: string, password: Secret, options?: CreateOptions): Promise<string> {
    return this.#call((v) => v.tokenCreate(value, password, options));
  }

  /** One write, all or nothing. */
  tokensCreate(values: string[], password: Secret, options?: CreateOptions): Promise<string[]> {
    return this.#call((v) => v.tokensCreate(values, password, options));
  }

  /** Seal `value` under a token you choose; `TOKEN_EXISTS` if it is taken (soft-deleted included). */
  tokenCreateCustom(token: string, value: string, password: Secret, options?: CustomCreateOptions): Promise<void> {
    return this.#call((v) => v.tokenCreateCustom(token, value, password, options));
  }

  /** The value of `token`; `RECORD_NOT_FOUND` (with `reason`) when missing, soft-deleted or expired. */
  tokenRead(token: string, password: Secret): Promise<string> {
    return this.#call((v) => v.tokenRead(token, password));
  }

  /**
   * One storage round trip. Expired tokens are left out of the result. With `passwordIdentity`
   * the secret's identity rows come in the same round trip once its key is cached (after
   * `unlock()` or an earlier call); a call that must derive the key first reads them after the
   * records, so that a missing token never costs a derivation.
   */
  tokensRead(tokens: string[], password: Secret): Promise<Record<string, string>> {
    return this.#call((v) => v.tokensRead(tokens, password)).then(stringMap);
  }

  /**
   * Read the tokens of an object's values; the result has the same keys with the values in clear.
   *
   * @example
   * ```ts
   * const { card, email } = await vault.tokensReadToResolvedMap({ card: cardToken, email: emailToken }, password);
   * ```
   */
  tokensReadToResolvedMap(keyToToken: Record<string, string>, password: Secret): Promise<Record<string, string>> {
    return this.#call((v) => v.tokensReadToResolvedMap(keyToToken, password)).then(stringMap);
  }

  /** Keeps `expiresAt`. The password must be the one the value is stored with. */
  tokenUpdate(token: string, value: string, password: Secret): Promise<void> {
    return this.#call((v) => v.tokenUpdate(token, value, password));
  }

  /**
   * Creates when `existingToken` is empty or absent; otherwise updates it (its token and expiry
   * stay) and returns it. `options` are checked either way.
   */
  tokenUpsert(existingToken: string | null | undefined, value: string, password: Secret, options?: CreateOptions): Promise<string> {
    return this.#call((v) => v.tokenUpsert(existingToken, value, password, options));
  }

  /** False for soft-deleted tokens; true for expired ones not yet purged. */
  tokenExists(token: string): Promise<boolean> {
    return this.#call((v) => v.tokenExists(token));
  }

  /** Set a token's expiry: a `Date` or milliseconds, or `null` for never (required: `undefined` is `INVALID_ARGUMENT`). */
  tokenRenew(token: string, expiresAt: Time): Promise<void> {
    return this.#call((v) => v.tokenRenew(token, expiresAt));
  }

  /** Hide `token` from reads and listings until {@link Vault.tokenRestore}. */
  tokenSoftDelete(token: string): Promise<void> {
    return this.#call((v) => v.tokenSoftDelete(token));
  }

  /** Undoes a soft delete; a live token is left as it is. */
  tokenRestore(token: string): Promise<void> {
    return this.#call((v) => v.tokenRestore(token));
  }

  /** Permanent; deleting a missing token succeeds. */
  tokenDelete(token: string): Promise<void> {
    return this.#call((v) => v.tokenDelete(token));
  }

  /** Soft-delete every expired record; returns how many. */
  tokensExpiredSoftDelete(): Promise<number> {
    return this.#call((v) => v.tokensExpiredSoftDelete());
  }

  /** Purges every expired record, soft-deleted or not. */
  tokensExpiredDelete(): Promise<number> {
    return this.#call((v) => v.tokensExpiredDelete());
  }

  // ---- records ----

  /**
   * Records' metadata (never a value in clear), filtered, sorted and paged by `query`.
   *
   * @example
   * ```ts
   * const newest = await vault.recordList({ orderBy: "created_at", limit: 20 });
   * const trash = await vault.recordList(new RecordQuery().setSoftDeletedOnly(true));
   * ```
   */
  recordList(query?: RecordQuery | QueryInit): Promise<VaultRecord[]> {
    return this.#call((v) => v.recordList(plainQuery(query)));
  }

  /** Ignores limit, offset and order. */
  recordCount(query?: RecordQuery | QueryInit): Promise<number> {
    return this.#call((v) => v.recordCount(plainQuery(query)));
  }

  /** `null` when missing or soft-deleted. */
  recordFindById(id: string): Promise<VaultRecord | null> {
    return this.#call((v) => v.recordFindById(id));
  }

  /** `null` when missing or soft-deleted. */
  recordFindByToken(token: string): Promise<VaultRecord | null> {
    return this.#call((v) => v.recordFindByToken(token));
  }

  /** Delete the record with this id, permanently; a missing one is no error. */
  recordDeleteById(id: string): Promise<void> {
    return this.#call((v) => v.recordDeleteById(id));
  }

  /** Delete the record with this token, permanently; a missing one is no error. */
  recordDeleteByToken(token: string): Promise<void> {
    return this.#call((v) => v.recordDeleteByToken(token));
  }

  /** Soft-delete the record with this id (`RECORD_NOT_FOUND` if there is none). */
  recordSoftDeleteById(id: string): Promise<void> {
    return this.#call((v) => v.recordSoftDeleteById(id));
  }

  /** Soft-delete the record with this token (`RECORD_NOT_FOUND` if there is none). */
  recordSoftDeleteByToken(token: string): Promise<void> {
    return this.#call((v) => v.recordSoftDeleteByToken(token));
  }

  // ---- identities ----

  /**
   * Move every record of `oldPassword` to `newPassword`, atomically. Returns how many records now
   * open with `newPassword`. With identities on and no `rotate`, only `oldPassword`'s slot is
   * replaced: other secrets of its identity keep working, and when `newPassword` already is one of
   * them (`secretAdd`), `oldPassword`'s slot is removed and no record is rewritten. When sync
   * left `oldPassword` several identities (two devices that first used it while apart), every
   * one is covered, each keeping its other secrets: the old password opens nothing afterwards.
   *
   * @example
   * ```ts
   * const controller = new AbortController();
   * const moved = await vault.bulkRekey(oldPassword, newPassword, {
   *   onProgress: (done, total) => console.log(`${done} of ${total}`),
   *   signal: controller.signal, // controller.abort() before the commit: ABORTED, nothing changed
   * });
   * ```
   */
  bulkRekey(oldPassword: Secret, newPassword: Secret, options?: RekeyOptions): Promise<number> {
    return this.#call((v) => v.bulkRekey(oldPassword, newPassword, options));
  }

  /**
   * Let `added` open everything `existing` opens (identities on): the identity's data key is
   * wrapped a second time, under `added`, like a LUKS key slot. O(1): no record is read or
   * written (when sync left `existing` several identities, each gets a slot for `added`). A
   * password and a passkey (a 32-byte raw key), or two people's passwords, then open
   * the same records; `bulkRekey(old, new)` later replaces only `old`'s slot, and a rotation
   * (`rotate: true`) removes every other slot. Rejects with `IDENTITY_DISABLED` when identities
   * are off, `IDENTITY_NOT_FOUND` when `existing` has no identity, `INVALID_ARGUMENT` when `added`
   * already opens an identity (this one included), and `PASSWORD_POLICY` when `added` is a password
   * the policy refuses.
   *
   * @example
   * ```ts
   * // key: 32 bytes, e.g. a passkey's PRF output; or another password
   * await vault.secretAdd(password, key);
   * await vault.unlock(key); // true: the key opens everything the password opens
   * ```
   */
  secretAdd(existing: Secret, added: Secret): Promise<void> {
    return this.#call((v) => v.secretAdd(existing, added));
  }

  /**
   * Forget one of an identity's secrets (identities on); its cached key is dropped too. The other
   * secrets keep opening every record. The last secret of an identity that still has records is
   * refused with `INVALID_ARGUMENT` (add another secret first, or delete the records), so no
   * record is left without a key; the last secret of an identity without records removes it.
   * Where sync left the secret several slots or identities, every one goes, or none (refused as
   * above). `IDENTITY_NOT_FOUND` when the secret opens no identity.
   */
  secretRemove(secret: Secret): Promise<void> {
    return this.#call((v) => v.secretRemove(secret));
  }

  /** Link every unlinked record that opens with `password` to its identity. */
  migrateRecordLinks(password: Secret): Promise<number> {
    return this.#call((v) => v.migrateRecordLinks(password));
  }

  // ---- settings ----

  /** Your own setting `key`, or `null`. Settings are stored in clear: keep secrets out of them. */
  getVaultSetting(key: string): Promise<string | null> {
    return this.#call((v) => v.getVaultSetting(key));
  }

  /** Store your own setting `key` (in clear, like every setting). */
  setVaultSetting(key: string, value: string): Promise<void> {
    return this.#call((v) => v.setVaultSetting(key, value));
  }

  /** Your vault's schema version: `"1"` for a new vault. */
  getVaultVersion(): Promise<string> {
    return this.#call((v) => v.getVaultVersion());
  }

  /** Record your vault's schema version (for your own migrations). */
  setVaultVersion(version: string): Promise<void> {
    return this.#call((v) => v.setVaultVersion(version));
  }

  /** Whether {@link Vault.markVaultMigrated} was called: `false` for a new vault. */
  isVaultMigrated(): Promise<boolean> {
    return this.#call((v) => v.isVaultMigrated());
  }

  /** Remember that your migration ran. */
  markVaultMigrated(): Promise<void> {
    return this.#call((v) => v.markVaultMigrated());
  }

  // ---- sync (SYNC.md) ----

  /**
   * Sync with a server replica: pull what it has that this vault lacks, push what this vault has
   * that it lacks, page by page (each page applied atomically), until both agree on every change
   * made here before the call. Needs no secret: values travel sealed. Rejects with
   * `SYNC_CONFLICT` when this vault and the server's are different vaults, or when one side's
   * `minKdfIterations` refuses the other's vault (nothing changes on either side), `ABORTED`
   * when `options.signal` aborts, and `STORAGE` when the server cannot be reached (`cause`: what
   * `fetch` threw) or fails. Running `sync` again after a failure goes on where it stopped.
   *
   * @example
   * ```ts
   * const report = await vault.sync("https://example.com/sync", { signal: AbortSignal.timeout(30_000) });
   * await vault.sync({ url: "/sync", headers: { authorization: `Bearer ${session}` } });
   * await replica.sync((request) => server.syncHandle(request)); // in process (tests, a worker)
   * ```
   */
  sync(remote: SyncRemote, options?: SyncOptions): Promise<SyncReport> {
    return this.#call(async (v) => {
      const given = plainOptions(options);
      const signal = typeof given === "object" && given !== null ? (given as SyncOptions).signal : undefined;
      const limit = this.#engine.Vault.syncBodyLimit();
      let exchange;
      try {
        exchange = syncExchange(remote, signal instanceof AbortSignal ? signal : undefined, limit);
      } catch (error) {
        // Refused through the engine all the same: a closed vault rejects with CLOSED whatever
        // the remote (API.md), and the refusal reaches onEvent.
        await v.sync(undefined as never, given as SyncOptions | undefined).catch((refused: unknown) => {
          if ((refused as { code?: unknown }).code === "CLOSED") throw refused;
        });
        throw error;
      }
      return v.sync(exchange, given as SyncOptions | undefined);
    });
  }

  /**
   * The server side of {@link Vault.sync}: answer one sync request, on any backend, with no
   * secret (the server never opens a value). Authenticate the request and pick the vault first:
   * who may sync which vault is your app's decision. Resolves with a JSON `Response`
   * (`cache-control: no-store`) for every request, and rejects only with `CLOSED` after
   * `close()`: `405` (with `Allow: POST`) for another method, `415` for a body that is not
   * `application/json`, `413` for a body over 4 MiB (declared or read), `400` for a malformed
   * one or one that cannot be read (read by the app already, or an upload that broke off),
   * `422` for rows that contradict this vault (nothing of them is stored), `409`
   * (`SYNC_CONFLICT`) for a replica of another vault, or one whose PBKDF2 iterations are below
   * this vault's `minKdfIterations` when it is still empty; an error's body is
   * `{ "error": { "code", "message" } }`. In a browser, an IndexedDB vault rejects with
   * `UNSUPPORTED`: the browser's IndexedDB engine syncs as a replica and leaves the server's side
   * out of its download.
   *
   * @example
   * ```ts
   * // A Cloudflare Worker
   * if (new URL(request.url).pathname === "/sync") {
   *   if (!(await authorized(request))) return new Response(null, { status: 401 });
   *   return vault.syncHandle(request);
   * }
   * ```
   */
  syncHandle(request: Request): Promise<Response> {
    return this.#call(async (v) => {
      // Refused by the engine, which reports it to onEvent like any call: CLOSED after close(),
      // INVALID_ARGUMENT for anything but a Request, and UNSUPPORTED from the browser's
      // IndexedDB engine, which has no server side (and so no syncRefusal).
      if (v.closed || v.syncRefusal === undefined || !(request instanceof Request)) {
        return syncResponse(await v.syncHandle(undefined));
      }
      const method = request.method;
      const contentType = request.headers.get("content-type") ?? undefined;
      const declared = request.headers.get("content-length");
      const refused = v.syncRefusal(method, contentType, declared === null ? undefined : Number(declared));
      if (refused !== undefined) return syncResponse(refused);
      const limit = this.#engine.Vault.syncBodyLimit();
      // A body the app read first (it would read as empty, and be refused as malformed JSON),
      // or an upload that broke off: a 400 that says so, not a server failure.
      let body: Uint8Array | undefined;
      try {
        if (request.bodyUsed) throw new TypeError("the body was read already");
        body = await readCapped(request.body, limit);
      } catch {
        return syncResponse(v.syncRefusal(method, contentType, undefined, true) as [number, string]);
      }
      if (body === undefined) return syncResponse(v.syncRefusal(method, contentType, limit + 1) as [number, string]);
      return syncResponse(await v.syncHandle(body));
    });
  }
}
