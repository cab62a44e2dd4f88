// The benchmark's server (tests/benches/sync.mjs): the example worker (www/worker/src/index.js),
// unchanged, behind a wrapper that counts what its D1 binding does and adds two routes of its own.
// Bundled next to the example by `wrangler deploy --dry-run`, run in Miniflare on D1.
//
//   GET  /__bench/d1         { statements, batches, rowsRead, rowsWritten } since the last call (then reset)
//   POST /__bench/d1?reads=1 reset; from now on also count the rows each query reads (see below)
//   GET  /__bench/rows?user= the user's records as JSON objects (the baseline's endpoint)
//
// D1 reports `meta.rows_read` / `rows_written` on `all()`, `run()` and every result of `batch()`,
// not on `raw()`, which the package's d1() adapter uses for its queries. While reads are counted,
// each query also runs once more through `all()` for its meta: that doubles the reads' cost, so
// only the request-counting row turns it on, never a timed one.
import worker, { SyncObject, VaultObject } from "./src/index.js";

export { SyncObject, VaultObject };

let stats = { statements: 0, batches: 0, rowsRead: 0, rowsWritten: 0 };
let countReads = false;

function add(meta) {
  stats.rowsRead += meta?.rows_read ?? 0;
  stats.rowsWritten += meta?.rows_written ?? 0;
}

function statement(inner) {
  return {
    inner,
    bind: (...args) => statement(inner.bind(...args)),
    async raw(options) {
      stats.statements++;
      const rows = await inner.raw(options);
      if (countReads) add((await inner.all()).meta);
      return rows;
    },
    async all() {
      stats.statements++;
      const result = await inner.all();
      add(result.meta);
      return result;
    },
    async run() {
      stats.statements++;
      const result = await inner.run();
      add(result.meta);
      return result;
    },
  };
}

let counted;
function countedDb(db) {
  counted ??= {
    prepare: (sql) => statement(db.prepare(sql)),
    async batch(statements) {
      stats.batches++;
      stats.statements += statements.length;
      const results = await db.batch(statements.map((s) => s.inner));
      for (const result of results) add(result.meta);
      return results;
    },
  };
  return counted;
}

const json = (body) => Response.json(body, { headers: { "access-control-allow-origin": "*", "cache-control": "no-store" } });

export default {
  async fetch(request, env, ctx) {
    const url = new URL(request.url);
    if (url.pathname === "/__bench/d1") {
      const out = stats;
      stats = { statements: 0, batches: 0, rowsRead: 0, rowsWritten: 0 };
      if (request.method === "POST") countReads = url.searchParams.get("reads") === "1";
      return json(out);
    }
    if (url.pathname === "/__bench/rows") {
      // What an app without the package serves: the user's sealed rows, as JSON, in one response.
      const { results } = await env.DB.prepare(
        "SELECT id, token, value, created_at AS createdAt, updated_at AS updatedAt, expires_at AS expiresAt, soft_deleted_at AS softDeletedAt FROM vaultstore_records WHERE ns = ?",
      )
        .bind(`sync:${url.searchParams.get("user")}`)
        .all();
      return json(results);
    }
    return worker.fetch(request, { ...env, DB: countedDb(env.DB) }, ctx);
  },
};
