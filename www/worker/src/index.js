// A tokenization API on Cloudflare Workers with vaultstore-wasm. Values go in, opaque tokens come
// out; only holders of API_TOKEN can turn tokens back into values. The vault lives in D1 (binding
// DB), or in a Durable Object's SQLite storage when the VAULT_OBJECT binding exists.
//
//   POST   /tokenize            {"card": "4111 1111 1111 1111", ...}  -> {"card": "tk_…", ...}
//   POST   /detokenize          {"tokens": ["tk_…", ...]}             -> {"values": {"tk_…": "4111…"}}
//   PUT    /tokens/:token       {"value": "…", "expiresAt": ms|null}  -> 201 {"token": "…"}
//   POST   /tokens/:token/renew {"expiresAt": ms|null}                 -> 204
//   DELETE /tokens/:token                                              -> 204
//   POST   /admin/rotate        {"maxRecords": n}                      -> {"moved": n}  (VAULT_KEY -> VAULT_KEY_NEXT)
//
// `?expiresIn=<seconds>` on /tokenize sets an expiry. Errors are {"error": {"code", "message"}}
// with 400 (bad input), 401 (no or wrong API token; a token the vault key does not open),
// 404 (unknown, deleted or expired token), 409 (token taken; a rotation stopped, nothing changed).
import { DurableObject } from "cloudflare:workers";
import { Vault, VaultError, d1, durableObject } from "vaultstore-wasm";

const STATUS = {
  INVALID_ARGUMENT: 400,
  PASSWORD_POLICY: 400,
  UNAUTHORIZED: 401,
  INVALID_PASSWORD: 401,
  IDENTITY_NOT_FOUND: 401,
  RECORD_NOT_FOUND: 404,
  NOT_FOUND: 404,
  TOKEN_EXISTS: 409,
  ABORTED: 409,
};

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
  if (error instanceof VaultError || error instanceof HttpError) {
    const body = { code: error.code, message: error.message };
    if (error.tokens) body.tokens = error.tokens;
    return json({ error: body }, STATUS[error.code] ?? 500);
  }
  console.error(error);
  return json({ error: { code: "INTERNAL", message: "internal error" } }, 500);
}

/**
 * The vault's secret. Recommended: VAULT_KEY, 32 random bytes as 64 hex characters or base64
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

/** Constant-time check of the caller's bearer token against API_TOKEN. */
function authorized(request, env) {
  const expected = new TextEncoder().encode(env.API_TOKEN ?? "");
  const given = new TextEncoder().encode((request.headers.get("Authorization") ?? "").replace(/^Bearer /, ""));
  if (expected.length === 0 || given.length !== expected.length) return false;
  let difference = 0;
  for (let i = 0; i < expected.length; i++) difference |= expected[i] ^ given[i];
  return difference === 0;
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
    if (!authorized(request, env)) throw new HttpError("UNAUTHORIZED", "send Authorization: Bearer <API_TOKEN>");
    const url = new URL(request.url);
    const tokenPath = url.pathname.match(/^\/tokens\/([^/]+)(\/renew)?$/);
    const token = tokenPath && decodeURIComponent(tokenPath[1]);
    const route = `${request.method} ${tokenPath ? `/tokens/:token${tokenPath[2] ?? ""}` : url.pathname}`;
    switch (route) {
      case "POST /tokenize": {
        const fields = await body(request);
        if (typeof fields !== "object" || fields === null || Array.isArray(fields)) {
          throw new HttpError("INVALID_ARGUMENT", "the body must be a JSON object of strings");
        }
        const seconds = url.searchParams.get("expiresIn");
        const expiresAt = seconds === null ? null : Date.now() + Number(seconds) * 1000;
        const tokens = await (await vault()).tokensCreate(Object.values(fields), secret(env), { expiresAt });
        return json(Object.fromEntries(Object.keys(fields).map((key, i) => [key, tokens[i]])));
      }
      case "POST /detokenize": {
        const { tokens } = await body(request);
        return json({ values: await (await vault()).tokensRead(tokens, secret(env)) });
      }
      case "PUT /tokens/:token": {
        const { value, expiresAt = null } = await body(request);
        await (await vault()).tokenCreateCustom(token, value, secret(env), { expiresAt });
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
        // All or nothing: a rotation that would re-seal more than maxRecords values (Workers
        // limit CPU time per request) stops before it writes anything.
        const { maxRecords = 10_000 } = await body(request);
        const stop = new AbortController();
        request.signal?.addEventListener?.("abort", () => stop.abort());
        const moved = await (await vault()).bulkRekey(secret(env), secret(env, "VAULT_KEY_NEXT"), {
          signal: stop.signal,
          onProgress: (done) => done > maxRecords && stop.abort(),
        });
        return json({ moved, next: "set VAULT_KEY to the value of VAULT_KEY_NEXT now" });
      }
      default:
        throw new HttpError("NOT_FOUND", `no route ${request.method} ${url.pathname}`);
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
    if (env.VAULT_OBJECT) return env.VAULT_OBJECT.get(env.VAULT_OBJECT.idFromName("vault")).fetch(request);
    d1Vault ??= Vault.open({ backend: "sql", sql: d1(env.DB) }).catch((error) => {
      d1Vault = undefined;
      throw error;
    });
    return handle(request, env, () => d1Vault);
  },
};
