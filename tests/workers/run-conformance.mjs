#!/usr/bin/env node
// The storage conformance suite on real D1 and Durable Object SQLite, through the package: the
// gateway worker (bundled from the packed, installed package as wrangler would bundle it) runs
// in Miniflare on a loopback port, and the suite (tests/storage_sql_workers.rs, wasm in Node)
// sends every statement through it. Run after tests/js/run-packed.mjs, which installs the tarball.
import { execFileSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { Miniflare } from "miniflare";
import { root, run } from "../../js/tools/toolchain.mjs";

const consumer = join(root, ".test-tmp", "packed", "consumer");
if (!existsSync(join(consumer, "node_modules", "vaultstore-wasm"))) {
  throw new Error("run tests/js/run-packed.mjs first: it installs the packed package");
}
const dir = join(consumer, "workers-gateway");
mkdirSync(dir, { recursive: true });
cpSync(join(root, "tests", "workers", "gateway.mjs"), join(dir, "gateway.mjs"));
execFileSync(join(root, "node_modules", ".bin", "esbuild"), [
  join(dir, "gateway.mjs"), "--bundle", "--format=esm", "--conditions=workerd,worker,browser",
  "--loader:.wasm=copy", "--external:cloudflare:workers", `--outdir=${join(dir, "out")}`, "--log-level=warning",
]);

const mf = new Miniflare({
  host: "127.0.0.1",
  port: 0,
  modules: true,
  scriptPath: join(dir, "out", "gateway.js"),
  modulesRules: [{ type: "CompiledWasm", include: ["**/*.wasm"] }],
  compatibilityDate: "2026-04-01",
  d1Databases: { DB: "conformance" },
  durableObjects: { SQL_OBJECT: { className: "SqlObject", useSQLite: true } },
});
try {
  const url = await mf.ready;
  run(
    "cargo",
    [
      "test", "--locked", "--target", "wasm32-unknown-unknown", "--no-default-features", "--features", "idb,gluesql,sql,snapshot-import",
      "--test", "storage_sql_workers",
    ],
    { env: { ...process.env, SQL_GATEWAY: url.href.replace(/\/$/, "") } },
  );
  // The cases really went through D1 (each leaves its namespace's vault settings or records).
  const db = await mf.getD1Database("DB");
  const [[namespaces]] = await db.prepare("SELECT count(DISTINCT ns) FROM vaultstore_schema, vaultstore_records").raw();
  if (namespaces < 10) throw new Error(`the suite left ${namespaces} namespaces in D1: did it run?`);
  console.log(`D1 holds the records of ${namespaces} conformance namespaces`);
  await costs(db);
} finally {
  await mf.dispose();
}

/**
 * What each operation costs on D1's own query planner, from the `rows_read` and `rows_written`
 * D1 reports (what it bills): operations on one token read a handful of rows whatever the vault
 * holds, and a listing page reads the page. Printed for the README's table; bounded here.
 */
async function costs(db) {
  const { Vault, d1 } = await import(pathToFileURL(join(consumer, "node_modules", "vaultstore-wasm", "dist", "node.js")));
  let read = 0;
  let written = 0;
  const tally = (meta) => {
    read += meta.rows_read;
    written += meta.rows_written;
  };
  const adapter = d1({ prepare: (sql) => db.prepare(sql), batch: async (s) => (await db.batch(s)).map((r) => (tally(r.meta), r)) });
  const sql = {
    async all(text, params) {
      const result = await db.prepare(text).bind(...params).all();
      tally(result.meta);
      return result.results.map((row) => Object.values(row));
    },
    batch: adapter.batch,
  };
  const key = new Uint8Array(32).fill(9);
  const vault = await Vault.open({ backend: "sql", sql, name: "costs" });
  await vault.tokensCreate(Array.from({ length: 2000 }, (_, i) => `value ${i}`), key);
  const token = await vault.tokenCreate("4111 1111 1111 1111", key);
  const rows = [];
  const measure = async (op, limit, run) => {
    read = written = 0;
    await run();
    rows.push(`${op.padEnd(28)} ${String(read).padStart(6)} ${String(written).padStart(8)}`);
    if (read > limit) throw new Error(`${op} read ${read} rows on D1 (at most ${limit} expected): an index is not used`);
  };
  await measure("tokenCreate", 20, () => vault.tokenCreate("5500 0000 0000 0004", key));
  await measure("tokenRead", 10, () => vault.tokenRead(token, key));
  await measure("tokenRenew", 20, () => vault.tokenRenew(token, Date.now() + 60_000));
  await measure("tokenUpdate", 30, () => vault.tokenUpdate(token, "updated", key));
  await measure("recordList (page of 20)", 30, () => vault.recordList({ limit: 20 }));
  await measure("tokensExpiredDelete (none)", 10, () => vault.tokensExpiredDelete());
  await measure("tokenDelete", 40, () => vault.tokenDelete(token));
  console.log(`D1, 2,002 records, raw key\n${"operation".padEnd(28)} ${"read".padStart(6)} ${"written".padStart(8)}\n${rows.join("\n")}`);
}
