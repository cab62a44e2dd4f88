// POST /sync: one vault per user, synced by that user's own devices (the package's `vault.sync`).
// The worker is the server replica: it authenticates the request, picks the user's vault and
// hands it the request (`vault.syncHandle`). It holds no vault key: the devices seal every value
// before it leaves them, so the database keeps envelopes, never a value or a key.
//
// The credential: `Authorization: Bearer vss1.<userId>.<mac>`, where mac is the unpadded base64url
// HMAC-SHA256 of userId under SYNC_SIGNING_KEY (64 hex characters). `mint-sync-credential.mjs`
// makes one; it never expires, so rotating SYNC_SIGNING_KEY is how every credential is revoked.
// On D1 each user's vault is the namespace `sync:<userId>` of env.DB; with the SYNC_OBJECT
// binding, it is a Durable Object of its own, `idFromName(userId)`, with its own SQLite storage.
// Browsers on the origins listed in SYNC_ALLOWED_ORIGINS (comma-separated) may call it (CORS).
// SYNC_MIN_KDF_ITERATIONS (optional) is the vaults' minKdfIterations: an empty vault here takes
// a device's vault only if its PBKDF2 iterations reach it (default 100,000), so devices whose
// apps open vaults with fewer need it lowered to theirs.
import { DurableObject } from "cloudflare:workers";
import { Vault, d1, durableObject } from "vaultstore-wasm";

/** `vss1.<userId>.<mac>`: ids of 1 to 64 letters, digits, `_` and `-`; a 32-byte mac. */
const CREDENTIAL = /^Bearer vss1\.([A-Za-z0-9_-]{1,64})\.([A-Za-z0-9_-]{43})$/;

/** D1 vaults kept open per isolate; past that, the least recently used one is closed. */
const OPEN_VAULTS = 64;

/** A configuration failure: a 500 whose message goes to the worker's log only. */
class SyncError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

function error(status, code, message, headers = {}) {
  return Response.json({ error: { code, message } }, { status, headers: { "cache-control": "no-store", ...headers } });
}

/** The bytes of unpadded base64url `text`, or null unless it is their one canonical spelling. */
function base64url(text) {
  const binary = atob(text.replace(/-/g, "+").replace(/_/g, "/"));
  // atob ignores the unused low bits of the last character: 4 spellings would pass for one mac.
  if (btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "") !== text) return null;
  return Uint8Array.from(binary, (c) => c.charCodeAt(0));
}

/**
 * The user a request's credential names, or null when it carries none, a malformed one, or one
 * SYNC_SIGNING_KEY did not sign. The mac is checked by `crypto.subtle.verify`, in constant time.
 */
async function user(request, env) {
  const text = env.SYNC_SIGNING_KEY?.trim() ?? "";
  if (!/^[0-9a-f]{64}$/i.test(text)) {
    throw new SyncError("CONFIG", "SYNC_SIGNING_KEY is not 64 hex characters: run `openssl rand -hex 32 | npx wrangler secret put SYNC_SIGNING_KEY`");
  }
  const given = (request.headers.get("Authorization") ?? "").match(CREDENTIAL);
  if (!given) return null;
  const raw = Uint8Array.from(text.match(/../g), (byte) => parseInt(byte, 16));
  const key = await crypto.subtle.importKey("raw", raw, { name: "HMAC", hash: "SHA-256" }, false, ["verify"]);
  let mac;
  try {
    mac = base64url(given[2]);
  } catch {
    return null;
  }
  const valid = mac?.length === 32 && (await crypto.subtle.verify("HMAC", key, mac, new TextEncoder().encode(given[1])));
  return valid ? given[1] : null;
}

/** The CORS headers for the request's origin: none unless SYNC_ALLOWED_ORIGINS lists it. */
function cors(request, env) {
  const allowed = (env.SYNC_ALLOWED_ORIGINS ?? "").split(",").map((origin) => origin.trim()).filter(Boolean);
  if (!allowed.length) return {};
  const origin = request.headers.get("Origin");
  if (origin === null || !allowed.includes(origin)) return { vary: "Origin" };
  return { "access-control-allow-origin": origin, vary: "Origin" };
}

/** The vaults' minKdfIterations, when the deployment sets one (a bad value fails Vault.open). */
function floor(env) {
  const given = env.SYNC_MIN_KDF_ITERATIONS;
  return given === undefined || given === "" ? {} : { minKdfIterations: Number(given) };
}

// On D1: a vault per user, opened on the user's first request to this isolate, and closed once
// it falls out of the cache and no request is using it.
const d1Vaults = new Map(); // userId -> { vault: Promise<Vault>, busy, evicted }

function release(entry) {
  if (entry.evicted && entry.busy === 0) entry.vault.then((vault) => vault.close()).catch(() => {});
}

async function syncOnD1(request, env, userId) {
  let entry = d1Vaults.get(userId);
  if (entry) {
    d1Vaults.delete(userId);
  } else {
    entry = { busy: 0, evicted: false };
    entry.vault = Vault.open({ backend: "sql", sql: d1(env.DB), name: `sync:${userId}`, ...floor(env) }).catch((cause) => {
      if (d1Vaults.get(userId) === entry) d1Vaults.delete(userId);
      throw cause;
    });
  }
  d1Vaults.set(userId, entry);
  if (d1Vaults.size > OPEN_VAULTS) {
    const [oldest, old] = d1Vaults.entries().next().value;
    d1Vaults.delete(oldest);
    old.evicted = true;
    release(old);
  }
  entry.busy++;
  try {
    return await (await entry.vault).syncHandle(request);
  } finally {
    entry.busy--;
    release(entry);
  }
}

/** A user's vault in a Durable Object of its own: opened once per object instance. */
export class SyncObject extends DurableObject {
  async fetch(request) {
    try {
      this.vault ??= Vault.open({ backend: "sql", sql: durableObject(this.ctx.storage), ...floor(this.env) }).catch((cause) => {
        this.vault = undefined;
        throw cause;
      });
      return await (await this.vault).syncHandle(request);
    } catch (cause) {
      console.error(cause, cause?.cause ?? "");
      return error(500, cause?.code ?? "INTERNAL", "the sync service failed; its operator can find the details in the worker's logs");
    }
  }
}

/** POST /sync (and its CORS preflight), for the user the credential names. */
export async function sync(request, env) {
  const headers = cors(request, env);
  if (request.method === "OPTIONS") {
    if (!headers["access-control-allow-origin"]) return error(403, "FORBIDDEN", "this origin may not sync here: list it in SYNC_ALLOWED_ORIGINS", headers);
    return new Response(null, {
      status: 204,
      headers: {
        ...headers,
        "access-control-allow-methods": "POST",
        "access-control-allow-headers": "authorization, content-type",
        "access-control-max-age": "86400",
      },
    });
  }
  if (request.method !== "POST") return error(405, "INVALID_ARGUMENT", "sync requests must use POST", { ...headers, allow: "POST, OPTIONS" });
  let response;
  try {
    const userId = await user(request, env);
    if (userId === null) {
      return error(401, "UNAUTHORIZED", "send Authorization: Bearer vss1.<user id>.<mac>, as mint-sync-credential.mjs makes it", headers);
    }
    response = env.SYNC_OBJECT
      ? await env.SYNC_OBJECT.get(env.SYNC_OBJECT.idFromName(userId)).fetch(request)
      : await syncOnD1(request, env, userId);
  } catch (cause) {
    // Storage and configuration failures: the detail is for the operator, in the worker's logs.
    console.error(cause, cause?.cause ?? "");
    const code = cause instanceof SyncError || typeof cause?.code === "string" ? cause.code : "INTERNAL";
    return error(500, code, "the sync service failed; its operator can find the details in the worker's logs", headers);
  }
  // A Durable Object's response has immutable headers: copy it to add the CORS ones.
  const answer = new Response(response.body, response);
  for (const [name, value] of Object.entries(headers)) answer.headers.set(name, value);
  return answer;
}
