// The demo's sync server: `POST /sync`, answered by a Node `Vault` on the SQL backend over a
// libSQL file (`.demo-sync/demo.db` for `npm start`), with `vault.syncHandle(request)`. It is the
// "server replica" of the README's "Sync": it holds envelopes, identity rows, settings and times,
// never a value, a key or a password.
//
// LOCAL DEMO ONLY: there is NO AUTHENTICATION. Anyone who can reach it can read and write every
// vault it holds (sealed, but a password can be guessed offline from what it stores). It is served
// on 127.0.0.1 only, on the demo's own origin (so no CORS). A real server authenticates the
// request first and picks the signed-in user's vault (see www/worker/src/sync.js).
//
// One server vault per demo vault name: the page sends its vault's name in `X-Vault-Name`, and the
// name is the SQL namespace (`demo:<name>`), so every vault of the demo has its own.
//
// The package's Node engine (the GlueSQL/SQL build) may still be building when the page is first
// served (`npm start` serves as soon as the browser's part is ready): until `start` has loaded it,
// the route answers 503 with a JSON error and `Retry-After`, which the demo's Sync panel shows.
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import { Readable } from "node:stream";

export const SYNC_PATH = "/sync";
const NAME_HEADER = "x-vault-name";

function json(res, status, code, message, headers = {}) {
  res.writeHead(status, { "content-type": "application/json", "cache-control": "no-store", ...headers });
  res.end(JSON.stringify({ error: { code, message } }));
}

/**
 * A sync server over the libSQL database `file`. `handle(req, res)` answers `/sync` (and returns
 * true) or returns false for any other path; `start(load)` loads the package (`load()` resolves to
 * its Node entry) and opens the database, after which requests are answered; `fail(message)` says
 * the engine will never come (a failed build); `close()` closes every vault and the database.
 */
export function syncServer(file) {
  let state = { ready: false, failed: undefined };
  let pkg;
  let client;
  const vaults = new Map(); // vault name -> Promise<Vault>
  let queue = Promise.resolve(); // one request at a time: a local demo, and one libSQL connection

  const vaultFor = (name) => {
    if (!vaults.has(name)) {
      const opening = pkg.Vault.open({ backend: "sql", sql: pkg.libsql(client), name: `demo:${name}` });
      opening.catch(() => vaults.delete(name)); // the next request tries again
      vaults.set(name, opening);
    }
    return vaults.get(name);
  };

  async function answer(req, res) {
    let name;
    try {
      name = decodeURIComponent(req.headers[NAME_HEADER] ?? ""); // the page encodes it (a header is Latin-1)
    } catch {
      name = "";
    }
    if (name.trim() === "" || name.length > 200) {
      json(res, 400, "INVALID_ARGUMENT", "this demo's sync server keeps one vault per vault name: send it, URI-encoded, in the X-Vault-Name header (1 to 200 characters)");
      return;
    }
    const headers = new Headers();
    for (const [key, value] of Object.entries(req.headers)) {
      if (value !== undefined) headers.set(key, Array.isArray(value) ? value.join(", ") : value);
    }
    const hasBody = req.method !== "GET" && req.method !== "HEAD";
    const request = new Request(`http://127.0.0.1${req.url}`, {
      method: req.method,
      headers,
      ...(hasBody ? { body: Readable.toWeb(req), duplex: "half" } : {}),
    });
    const vault = await vaultFor(name);
    const response = await vault.syncHandle(request);
    res.writeHead(response.status, Object.fromEntries(response.headers));
    res.end(Buffer.from(await response.arrayBuffer()));
  }

  return {
    handle(req, res) {
      if (new URL(req.url, "http://127.0.0.1").pathname !== SYNC_PATH) return false;
      if (state.failed) {
        json(res, 500, "STORAGE", `the demo's sync server could not start: ${state.failed}`);
      } else if (!state.ready) {
        json(res, 503, "STORAGE", "the demo's sync server is starting: the package's Node engine is still being built; retry in a few seconds", {
          "retry-after": "5",
        });
      } else {
        const turn = queue.then(() => answer(req, res));
        queue = turn.catch(() => undefined);
        turn.catch((error) => {
          if (!res.headersSent) json(res, 500, "STORAGE", `the demo's sync server failed: ${error?.message ?? error}`);
          else res.destroy();
        });
      }
      return true;
    },
    async start(load) {
      try {
        const { createClient } = await import("@libsql/client");
        pkg = await load();
        mkdirSync(dirname(file), { recursive: true });
        client = createClient({ url: `file:${file}` });
        state = { ready: true, failed: undefined };
      } catch (error) {
        state = { ready: false, failed: error?.message ?? String(error) };
        throw error;
      }
    },
    fail(message) {
      state = { ready: false, failed: message };
    },
    async close() {
      await queue;
      for (const opening of vaults.values()) await opening.then((vault) => vault.close()).catch(() => undefined);
      vaults.clear();
      client?.close();
    },
  };
}
