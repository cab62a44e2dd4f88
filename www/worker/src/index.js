// A tokenization API on Cloudflare Workers with vaultstore-wasm. Values go in, opaque tokens come
// out. Three credentials, each its own secret: TOKENIZE_TOKEN only tokenizes (it may be given to
// a browser), DETOKENIZE_TOKEN reads, writes custom tokens, renews and deletes (a back end's),
// ADMIN_TOKEN only rotates the key (the operator's). The vault lives in D1 (binding DB), or in a
// Durable Object's SQLite storage when the VAULT_OBJECT binding exists.
//
//   POST   /tokenize            {"card": "4111 1111 1111 1111", ...}  -> {"card": "tk_…", ...}      TOKENIZE_TOKEN
//   POST   /detokenize          {"tokens": ["tk_…", ...]}             -> {"values": {"tk_…": "4111…"}} DETOKENIZE_TOKEN
//   PUT    /tokens/:token       {"value": "…", "expiresAt": ms|null}  -> 201 {"token": "…"}         DETOKENIZE_TOKEN
//   POST   /tokens/:token/renew {"expiresAt": ms|null}                 -> 204                        DETOKENIZE_TOKEN
//   DELETE /tokens/:token                                              -> 204                        DETOKENIZE_TOKEN
//   POST   /admin/rotate        {"maxRecords": n}                      -> {"moved": n}               ADMIN_TOKEN
//   POST   /sync                a device's sync request (vault.sync)   -> its answer                 the user's own
//
// /sync (src/sync.js) is another service in the same worker: a vault per user, synced by that
// user's devices, which seal every value themselves; the worker holds no key for those vaults.
//
// Key rotation: while VAULT_KEY_NEXT is set, writes seal with it and reads accept it or
// VAULT_KEY; /admin/rotate moves what VAULT_KEY still seals to VAULT_KEY_NEXT (README.md).
// `?expiresIn=<seconds>` on /tokenize sets an expiry. Errors are {"error": {"code", "message"}}
// with 400 (bad input), 401 (no or unknown credential; a token no vault key opens), 403 (a
// credential not made for this route), 404 (unknown, deleted or expired token), 409 (token
// taken; a rotation stopped, nothing changed; no VAULT_KEY_NEXT to rotate to), 500 (storage or
// configuration: a generic message, the detail goes to the worker's logs).
import { DurableObject } from "cloudflare:workers";
import { Vault, VaultError, d1, durableObject } from "vaultstore-wasm";
import { SyncObject, sync } from "./sync.js";

export { SyncObject };

const STATUS = {
  INVALID_ARGUMENT: 400,
  PASSWORD_POLICY: 400,
  UNAUTHORIZED: 401,
  INVALID_PASSWORD: 401,
  IDENTITY_NOT_FOUND: 401,
  FORBIDDEN: 403,
  RECORD_NOT_FOUND: 404,
  NOT_FOUND: 404,
  TOKEN_EXISTS: 409,
  ABORTED: 409,
  NO_NEXT_KEY: 409,
};

/** Which credential each route takes; no credential opens another's routes. */
const ROUTES = {
  "POST /tokenize": "TOKENIZE_TOKEN",
  "POST /detokenize": "DETOKENIZE_TOKEN",
  "PUT /tokens/:token": "DETOKENIZE_TOKEN",
  "POST /tokens/:token/renew": "DETOKENIZE_TOKEN",
  "DELETE /tokens/:token": "DETOKENIZE_TOKEN",
  "POST /admin/rotate": "ADMIN_TOKEN",
};
const CREDENTIALS = ["TOKENIZE_TOKEN", "DETOKENIZE_TOKEN", "ADMIN_TOKEN"];

class HttpError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

function json(body, status = 200) {
  return Response.json(body, { status });
}

function failure(error) {
  const known = error instanceof VaultError || error instanceof HttpError;
  const status = (known && STATUS[error.code]) || 500;
  if (status >= 500) {
    // Storage and configuration failures: their text (a database's message, a setup hint) is
    // for the operator, in the worker's logs; the client gets the code only.
    console.error(error, error?.cause ?? "");
    const code = known ? error.code : "INTERNAL";
    return json({ error: { code, message: "the tokenization service failed; its operator can find the details in the worker's logs" } }, status);
  }
  const body = { code: error.code, message: error.message };
  if (error.tokens) body.tokens = error.tokens;
  return json({ error: body }, status);
}

/**
 * A vault secret. Recommended: VAULT_KEY, 32 random bytes as 64 hex characters or base64
 * (HKDF, microseconds per request). VAULT_PASSWORD works too, but costs a 600,000-iteration
 * PBKDF2 (about a second of CPU) the first time each isolate uses it.
 */
function secret(env, name = "VAULT_KEY") {
  const text = env[name]?.trim();
  if (!text) {
    if (name === "VAULT_KEY" && env.VAULT_PASSWORD) return env.VAULT_PASSWORD;
    throw new HttpError("CONFIG", `${name} is not set: run \`openssl rand -hex 32 | npx wrangler secret put ${name}\``);
  }
  let bytes;
  if (/^[0-9a-f]{64}$/i.test(text)) {
    bytes = Uint8Array.from(text.match(/../g), (byte) => parseInt(byte, 16));
  } else {
    try {
      bytes = Uint8Array.from(atob(text.replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0));
    } catch {
      bytes = undefined;
    }
  }
  if (bytes?.length !== 32) throw new HttpError("CONFIG", `${name} must be 32 bytes, as 64 hex characters or base64`);
  return bytes;
}

/**
 * The keys in use. Without VAULT_KEY_NEXT: VAULT_KEY for everything. With it (a rotation under
 * way): new values are sealed with the next key, and reads try the next key, then VAULT_KEY.
 */
function keys(env) {
  const current = secret(env);
  if (!env.VAULT_KEY_NEXT?.trim()) return { write: current, read: [current] };
  const next = secret(env, "VAULT_KEY_NEXT");
  return { write: next, read: [next, current] };
}

/**
 * The values of `tokens`, each opened with whichever read key seals it, in as few batch reads as
 * that takes. A token tried with VAULT_KEY after the next key failed may have been moved to the
 * next key by a rotation meanwhile (rotations only move that way): it gets one more try with it.
 */
async function detokenize(vault, tokens, read) {
  const values = {};
  const todo = [[tokens, 0]];
  while (todo.length) {
    const [batch, attempt] = todo.shift();
    try {
      Object.assign(values, await vault.tokensRead(batch, read[attempt % read.length]));
    } catch (error) {
      const last = read.length === 1 || attempt === read.length;
      if (last || !(error instanceof VaultError) || error.code !== "INVALID_PASSWORD" || !error.tokens?.length) throw error;
      const wrong = new Set(error.tokens);
      const rest = batch.filter((token) => !wrong.has(token));
      if (rest.length) todo.push([rest, attempt]);
      todo.push([[...wrong], attempt + 1]);
    }
  }
  return values;
}

/**
 * The credential the caller's bearer token is (a name of CREDENTIALS), or null. Both sides are
 * hashed first, so every comparison runs over 32 bytes whatever the lengths, and every
 * credential is compared, so the time taken says nothing about which one came close.
 */
async function credential(request, env) {
  const digest = async (text) => new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)));
  const given = await digest((request.headers.get("Authorization") ?? "").replace(/^Bearer /, ""));
  const matches = [];
  for (const name of CREDENTIALS) {
    const expected = await digest(env[name] ?? "");
    let difference = env[name] ? 0 : 1; // an unset credential matches nothing
    for (let i = 0; i < expected.length; i++) difference |= expected[i] ^ given[i];
    if (difference === 0) matches.push(name);
  }
  if (matches.length > 1) throw new HttpError("CONFIG", `${matches.join(" and ")} have the same value: give each its own secret`);
  return matches[0] ?? null;
}

async function body(request) {
  try {
    return await request.json();
  } catch {
    throw new HttpError("INVALID_ARGUMENT", "the body must be JSON");
  }
}

/** The API, on whichever vault the caller hands it. */
async function handle(request, env, vault) {
  try {
    const caller = await credential(request, env);
    if (!caller) throw new HttpError("UNAUTHORIZED", "send Authorization: Bearer <the credential of this route>");
    const url = new URL(request.url);
    const tokenPath = url.pathname.match(/^\/tokens\/([^/]+)(\/renew)?$/);
    const token = tokenPath && decodeURIComponent(tokenPath[1]);
    const route = `${request.method} ${tokenPath ? `/tokens/:token${tokenPath[2] ?? ""}` : url.pathname}`;
    if (!ROUTES[route]) throw new HttpError("NOT_FOUND", `no route ${request.method} ${url.pathname}`);
    if (ROUTES[route] !== caller) throw new HttpError("FORBIDDEN", `${route} takes ${ROUTES[route]}, not ${caller}`);
    switch (route) {
      case "POST /tokenize": {
        const fields = await body(request);
        if (typeof fields !== "object" || fields === null || Array.isArray(fields)) {
          throw new HttpError("INVALID_ARGUMENT", "the body must be a JSON object of strings");
        }
        const seconds = url.searchParams.get("expiresIn");
        const expiresAt = seconds === null ? null : Date.now() + Number(seconds) * 1000;
        const tokens = await (await vault()).tokensCreate(Object.values(fields), keys(env).write, { expiresAt });
        return json(Object.fromEntries(Object.keys(fields).map((key, i) => [key, tokens[i]])));
      }
      case "POST /detokenize": {
        const { tokens } = await body(request);
        return json({ values: await detokenize(await vault(), tokens, keys(env).read) });
      }
      case "PUT /tokens/:token": {
        const { value, expiresAt = null } = await body(request);
        await (await vault()).tokenCreateCustom(token, value, keys(env).write, { expiresAt });
        return json({ token }, 201);
      }
      case "POST /tokens/:token/renew": {
        const { expiresAt = null } = await body(request);
        await (await vault()).tokenRenew(token, expiresAt);
        return new Response(null, { status: 204 });
      }
      case "DELETE /tokens/:token": {
        await (await vault()).tokenDelete(token);
        return new Response(null, { status: 204 });
      }
      case "POST /admin/rotate": {
        // Moves what VAULT_KEY still seals to VAULT_KEY_NEXT. Repeat until it moves 0 once every
        // isolate runs with VAULT_KEY_NEXT (README.md, "Rotating the key"). All or nothing: a
        // rotation that would re-seal more than maxRecords values (Workers limit CPU time per
        // request) stops before it writes anything.
        if (!env.VAULT_KEY_NEXT?.trim()) throw new HttpError("NO_NEXT_KEY", "VAULT_KEY_NEXT is not set: there is no key to rotate to");
        const { maxRecords = 10_000 } = await body(request);
        const stop = new AbortController();
        request.signal?.addEventListener?.("abort", () => stop.abort());
        const moved = await (await vault()).bulkRekey(secret(env), secret(env, "VAULT_KEY_NEXT"), {
          signal: stop.signal,
          onProgress: (done) => done > maxRecords && stop.abort(),
        });
        return json({ moved });
      }
    }
  } catch (error) {
    return failure(error);
  }
}

/** The vault in a Durable Object's SQLite storage: one object, every request in turn. */
export class VaultObject extends DurableObject {
  fetch(request) {
    this.vault ??= Vault.open({ backend: "sql", sql: durableObject(this.ctx.storage) }).catch((error) => {
      this.vault = undefined;
      throw error;
    });
    return handle(request, this.env, () => this.vault);
  }
}

// One vault per isolate, opened on the first request (never at module scope).
let d1Vault;

export default {
  fetch(request, env) {
    if (new URL(request.url).pathname === "/sync") return sync(request, env);
    if (env.VAULT_OBJECT) return env.VAULT_OBJECT.get(env.VAULT_OBJECT.idFromName("vault")).fetch(request);
    d1Vault ??= Vault.open({ backend: "sql", sql: d1(env.DB) }).catch((error) => {
      d1Vault = undefined;
      throw error;
    });
    return handle(request, env, () => d1Vault);
  },
};
