#!/usr/bin/env node
// The storage conformance suite on real D1 and Durable Object SQLite, through the package: the
// gateway worker (bundled from the packed, installed package as wrangler would bundle it) runs
// in Miniflare on a loopback port, and the suite (tests/storage_sql_workers.rs, wasm in Node)
// sends every statement through it. Run after tests/js/run-packed.mjs, which installs the tarball.
import { execFileSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
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
      "test", "--locked", "--target", "wasm32-unknown-unknown", "--no-default-features", "--features", "idb,gluesql,sql",
      "--test", "storage_sql_workers",
    ],
    { env: { ...process.env, SQL_GATEWAY: url.href.replace(/\/$/, "") } },
  );
  // The cases really went through D1 (each leaves its namespace's vault settings or records).
  const db = await mf.getD1Database("DB");
  const [[namespaces]] = await db.prepare("SELECT count(DISTINCT ns) FROM vaultstore_schema, vaultstore_records").raw();
  if (namespaces < 10) throw new Error(`the suite left ${namespaces} namespaces in D1: did it run?`);
  console.log(`D1 holds the records of ${namespaces} conformance namespaces`);
} finally {
  await mf.dispose();
}
