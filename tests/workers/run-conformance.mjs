#!/usr/bin/env node
// The storage conformance suite on real D1 and Durable Object SQLite, through the package: the
// gateway worker (bundled from the packed, installed package as wrangler would bundle it) runs
// in Miniflare on a loopback port, and the suite (tests/storage_sql_workers.rs, wasm in Node)
// sends every statement through it. Run after tests/js/run-packed.mjs, which installs the tarball.
import { execFileSync, spawnSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { Miniflare } from "miniflare";
import { root } from "../../js/tools/toolchain.mjs";

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
  const gateway = url.href.replace(/\/$/, "");
  const args = [
    "test", "--locked", "--target", "wasm32-unknown-unknown", "--no-default-features", "--features", "idb,gluesql,sql,snapshot-import",
    "--test", "storage_sql_workers",
  ];
  const started = Date.now();
  console.log(`\n▶ cargo ${args.join(" ")}`);
  const test = spawnSync("cargo", args, {
    cwd: root,
    env: { ...process.env, SQL_GATEWAY: gateway },
    encoding: "utf8",
    stdio: ["ignore", "pipe", "inherit"],
    maxBuffer: 64 << 20,
  });
  process.stdout.write(test.stdout ?? "");
  if (test.status !== 0) throw new Error(`the conformance suite on D1 and Durable Objects failed (exit ${test.status ?? test.signal})`);
  checkEveryCaseRan(test.stdout ?? "");
  console.log(`✔ cargo test (${((Date.now() - started) / 1000).toFixed(1)} s)`);
  // Each Durable Object case really had its own SQLite database, with the tables in it.
  for (const name of cases()) {
    const response = await fetch(`${gateway}/do/${name}/all`, {
      method: "POST",
      body: JSON.stringify({ sql: "SELECT count(*) FROM vaultstore_schema", params: [] }),
    });
    const body = await response.json();
    if (!response.ok || body.rows?.[0]?.[0] !== 1) {
      throw new Error(`the Durable Object of ${name} has no vaultstore tables: did its case run? ${JSON.stringify(body)}`);
    }
  }
  // The cases really went through D1 (each leaves its namespace's vault settings or records).
  const db = await mf.getD1Database("DB");
  const [[namespaces]] = await db.prepare("SELECT count(DISTINCT ns) FROM vaultstore_schema, vaultstore_records").raw();
  if (namespaces < 10) throw new Error(`the suite left ${namespaces} namespaces in D1: did it run?`);
  console.log(`D1 holds the records of ${namespaces} conformance namespaces`);
  await costs(db);
} finally {
  await mf.dispose();
}

/** The conformance cases, as `conformance_cases!` in tests/conformance/mod.rs lists them. */
function cases() {
  const source = readFileSync(join(root, "tests", "conformance", "mod.rs"), "utf8");
  const list = source.match(/macro_rules! conformance_cases \{[\s\S]*?\$callback!\(([\s\S]*?)\);/);
  if (!list) throw new Error("conformance_cases! not found in tests/conformance/mod.rs");
  // One case name a line; the callback's optional argument (`$($arg;)?`) is not a case.
  const names = [...list[1].matchAll(/^\s*([a-z_][a-z0-9_]*),\s*$/gm)].map((m) => m[1]);
  if (names.length < 10) throw new Error(`only ${names.length} conformance cases found`);
  return names;
}

/**
 * A case that never ran must not pass unseen: every case must have passed on D1 and on a
 * Durable Object, by name, in the runner's own report.
 */
function checkEveryCaseRan(output) {
  const passed = { d1: new Set(), durable_object: new Set() };
  for (const [, half, name] of output.matchAll(/^test (?:\S+::)?(d1|durable_object)::(\w+) \.\.\. ok\s*$/gm)) {
    passed[half].add(name);
  }
  for (const [half, seen] of Object.entries(passed)) {
    const missing = cases().filter((c) => !seen.has(c));
    if (missing.length) throw new Error(`${missing.length} conformance cases did not pass on ${half}: ${missing.join(", ")}`);
  }
  console.log(`every one of ${cases().length} conformance cases passed on D1 and on a Durable Object`);
}

/**
 * What each operation costs on D1: the statements it sends (D1 allows 50 per Worker invocation
 * on the free plan, 1,000 on the paid one, and counts every statement of a batch) and the rows
 * D1 reports reading and writing (`meta.rows_read` / `meta.rows_written`, what it bills), on
 * D1's own query planner. Operations on one token read a handful of rows whatever the vault
 * holds, a listing page reads the page, and bulk operations send a few statements whatever
 * their size. Printed for the README's table ("SQL databases"); bounded here.
 */
async function costs(db) {
  const { Vault, d1 } = await import(pathToFileURL(join(consumer, "node_modules", "vaultstore-wasm", "dist", "node.js")));
  let read = 0;
  let written = 0;
  let statements = 0;
  const tally = (meta) => {
    read += meta.rows_read;
    written += meta.rows_written;
  };
  const adapter = d1({
    prepare: (sql) => db.prepare(sql),
    batch: async (s) => {
      statements += s.length;
      return (await db.batch(s)).map((r) => (tally(r.meta), r));
    },
  });
  const sql = {
    async all(text, params) {
      statements += 1;
      const result = await db.prepare(text).bind(...params).all();
      tally(result.meta);
      return result.results.map((row) => Object.values(row));
    },
    batch: adapter.batch,
  };
  const rows = [];
  const measure = async (table, op, limits, run) => {
    read = written = statements = 0;
    await run();
    rows.push({ table, op, statements, read, written });
    if (statements > limits.statements) {
      throw new Error(`${op} sent ${statements} statements to D1 (at most ${limits.statements} expected): D1 allows 50 per invocation on the free plan`);
    }
    if (read > limits.read) throw new Error(`${op} read ${read} rows on D1 (at most ${limits.read} expected): an index is not used`);
  };

  // A raw key, identities off, 2,002 records.
  const key = new Uint8Array(32).fill(9);
  const vault = await Vault.open({ backend: "sql", sql, name: "costs" });
  await vault.tokensCreate(Array.from({ length: 2000 }, (_, i) => `value ${i}`), key);
  const token = await vault.tokenCreate("4111 1111 1111 1111", key);
  const one = "raw key, 2,002 records";
  await measure(one, "tokenCreate", { statements: 3, read: 20 }, () => vault.tokenCreate("5500 0000 0000 0004", key));
  await measure(one, "tokenRead", { statements: 1, read: 10 }, () => vault.tokenRead(token, key));
  await measure(one, "tokenRenew", { statements: 3, read: 20 }, () => vault.tokenRenew(token, Date.now() + 60_000));
  await measure(one, "tokenUpdate", { statements: 4, read: 30 }, () => vault.tokenUpdate(token, "updated", key));
  await measure(one, "recordList (page of 20)", { statements: 1, read: 30 }, () => vault.recordList({ limit: 20 }));
  // A deep page steps over its offset in the order's index (D1 bills each entry as a row read),
  // from the nearer end: the middle page walks half the index, the last page only its own.
  await measure(one, "recordList, page at offset 1,000", { statements: 1, read: 1200 }, () => vault.recordList({ limit: 20, offset: 1000 }));
  await measure(one, "recordList, the last page", { statements: 1, read: 120 }, () => vault.recordList({ limit: 20, offset: 1982 }));
  // The trash view: three soft-deleted records among 2,002, read through the index that holds
  // only them, not by walking the order past the live ones.
  for (const r of await vault.recordList({ limit: 3, offset: 500 })) await vault.tokenSoftDelete(r.token);
  await measure(one, "recordList, trash of 3", { statements: 1, read: 40 }, async () => {
    if ((await vault.recordList({ softDeletedOnly: true, limit: 20 })).length !== 3) throw new Error("the trash view missed a soft-deleted record");
  });
  await measure(one, "tokensExpiredDelete (none)", { statements: 1, read: 10 }, () => vault.tokensExpiredDelete());
  // One statement keeps the versions of identities the deletion empties (for sync).
  await measure(one, "tokenDelete", { statements: 7, read: 40 }, () => vault.tokenDelete(token));

  // Identities on: bulk writes of 400 records, a rotation of them, a purge of 1,000. Schema 2
  // stamps each written row with a seq taken from the tables it writes, so SQLite stages an
  // insert's rows before writing them (one more row read per row written), and a tag write
  // checks the tag and clears its tombstone in statements of their own.
  const many = "identities on, 400 values";
  const ids = await Vault.open({ backend: "sql", sql, name: "costs-identities", passwordIdentity: true });
  const next = new Uint8Array(32).fill(7);
  await ids.tokenCreate("the identity exists", key);
  const values = Array.from({ length: 400 }, (_, i) => `value ${i}`);
  let tokens;
  await measure(many, "tokensCreate(400)", { statements: 6, read: 1_700 }, async () => (tokens = await ids.tokensCreate(values, key)));
  await measure(many, "tokenCreate", { statements: 4, read: 40 }, () => ids.tokenCreate("one more", key));
  await measure(many, "tokensRead(400)", { statements: 1, read: 1_200 }, () => ids.tokensRead(tokens, key));
  await measure(many, "tokenUpdate", { statements: 6, read: 40 }, () => ids.tokenUpdate(tokens[0], "updated", key));
  await measure(many, "bulkRekey, rotate 402", { statements: 16, read: 8_000 }, () => ids.bulkRekey(key, next, { rotate: true }));
  // The re-wrap reads the revisions of the rows it replaces first (a tab may have pulled newer ones).
  await measure(many, "bulkRekey, re-wrap", { statements: 11, read: 2_500 }, () => ids.bulkRekey(next, key));
  await ids.tokensCreate(Array.from({ length: 1000 }, (_, i) => `expiring ${i}`), key, { expiresAt: Date.now() + 1_000 });
  await new Promise((resolve) => setTimeout(resolve, 1_100));
  // Three statements find the identities the purge empties (their tombstones, their versions
  // kept for sync, their removal), each through the expiry and link indexes.
  await measure(many, "tokensExpiredDelete (1,000)", { statements: 8, read: 45_000 }, async () => {
    if ((await ids.tokensExpiredDelete()) !== 1_000) throw new Error("the purge missed expired records");
  });

  const table = [`${"operation".padEnd(30)} ${"statements".padStart(10)} ${"read".padStart(6)} ${"written".padStart(8)}`];
  let heading;
  for (const r of rows) {
    if (r.table !== heading) table.push(`-- D1, ${(heading = r.table)}`);
    table.push(`${r.op.padEnd(30)} ${String(r.statements).padStart(10)} ${String(r.read).padStart(6)} ${String(r.written).padStart(8)}`);
  }
  console.log(table.join("\n"));
}
