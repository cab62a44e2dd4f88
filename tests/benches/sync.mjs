// The sync half of `npm run bench` (issue 14), run by bench.mjs. The server is the example worker
// (www/worker, its POST /sync on D1) bundled by `wrangler deploy --dry-run` behind a counting
// wrapper (sync-worker.js) and run in Miniflare; its URL is real HTTP on 127.0.0.1.
//
//   firstSync  the server's vault (records10k records) synced into a new, empty IndexedDB vault in
//              Chromium, against fetching the same sealed rows as JSON + one Dexie bulkAdd
//              (sync-page.mjs). Rounds alternate as every row does.
//   oneChange  one record changed on one Node replica of a syncRecords-record vault (100,000 in a
//              full run; --sync-records N), pushed, then pulled by another replica: requests,
//              rows over the wire and D1 rows read / written, against the same at records1k
//              records. Counts, not timings: O(1) means they do not grow with the vault.
//   load       8 Node replicas of one vault (records1k records) syncing at once, each updating
//              its own record then syncing, syncCycles times per round: requests/s and latency.
//
// Every row checks its answer: the replica holds exactly the rows the Dexie side wrote and opens
// them to the values created; the change arrives; every replica ends with every other's last write.
// SYNC_BENCH_DEBUG=1 prints every request a Node replica makes (op, rows, status, bytes, time), and
// the last Chromium first sync's requests as [op, sent, answered (ms from its start), bytes]: the
// gaps between pulls are the pages' applies.
// SYNC_BENCH_PROFILE=package (or baseline) profiles one more first sync (cpuprofile.mjs).
import { createHmac } from "node:crypto";
import { cpSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { dryRun } from "../worker/example-app.mjs";
import { alternate, expectEqual, median, PASSWORD, seedOf, values } from "./protocol.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const SIGNING_KEY = "5b".repeat(32);
const credential = (user) => `vss1.${user}.${createHmac("sha256", Buffer.from(SIGNING_KEY, "hex")).update(user).digest("base64url")}`;
export const SERVER = "the example worker (www/worker, POST /sync on D1) in Miniflare, bundled by wrangler deploy --dry-run";

/** The example worker and the counting wrapper, bundled as wrangler deploys them. */
function bundle(consumer, root) {
  const dir = join(consumer, "sync-worker");
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  // Inside the consumer folder: "vaultstore-wasm" resolves to the installed tarball.
  cpSync(join(root, "www", "worker", "src"), join(dir, "src"), { recursive: true });
  cpSync(join(here, "sync-worker.js"), join(dir, "bench-entry.js"));
  writeFileSync(
    join(dir, "wrangler.jsonc"),
    JSON.stringify({
      name: "vaultstore-sync-bench",
      main: "bench-entry.js",
      compatibility_date: "2026-04-01",
      d1_databases: [{ binding: "DB", database_name: "vaultstore", database_id: "00000000-0000-0000-0000-000000000000" }],
    }),
  );
  return dryRun(dir, "wrangler.jsonc", "out", join(dir, "wrangler-logs"), ["ignore", "ignore", "inherit"]);
}

/**
 * `fetch`, again once when a kept-alive connection turns out closed: workerd closes idle ones
 * while this process is busy (seeding a large vault), and undici, unlike a browser, does not
 * retry a POST on a reused connection. A sync request may be replayed (FORMAT.md, "Sync").
 */
async function request(url, init) {
  try {
    return await fetch(url, init);
  } catch (cause) {
    if (cause?.cause?.code !== "UND_ERR_SOCKET") throw cause;
    return fetch(url, init);
  }
}

/** Wire figures of the syncs made through `fetch`: requests, rows each way, bytes, latencies. */
function meter() {
  const m = { requests: 0, rowsUp: 0, rowsDown: 0, bytesUp: 0, bytesDown: 0, latencies: [] };
  m.fetch = async (url, init) => {
    const started = performance.now();
    const response = await request(url, init);
    const text = await response.text();
    m.latencies.push(performance.now() - started);
    m.requests++;
    m.bytesUp += Buffer.byteLength(init.body ?? "");
    m.bytesDown += Buffer.byteLength(text);
    const sent = JSON.parse(init.body ?? "{}");
    if (process.env.SYNC_BENCH_DEBUG) console.error(`    ${sent.op} ${sent.rows?.length ?? ""} → ${response.status} ${text.length} bytes, ${(performance.now() - started).toFixed(0)} ms`);
    m.rowsUp += (sent.rows?.length ?? 0) + (sent.fetch?.length ?? 0);
    if (response.ok) {
      const got = JSON.parse(text);
      m.rowsDown += (got.rows?.length ?? 0) + (got.superseded?.length ?? 0) + (got.refused?.length ?? 0);
    }
    return new Response(text, { status: response.status, statusText: response.statusText, headers: response.headers });
  };
  return m;
}

/**
 * SYNC_BENCH_PROFILE=package|baseline: one more run of that side of the first sync under the V8
 * sampling profiler (its timed part only), summarized, and written to .test-tmp/profile/.
 */
async function profiled(context, page, side) {
  const { summarize } = await import("./cpuprofile.mjs");
  const cdp = await context.newCDPSession(page);
  await cdp.send("Profiler.enable");
  await cdp.send("Profiler.setSamplingInterval", { interval: 100 });
  const timed = new Promise((resolve) => cdp.on("Profiler.consoleProfileFinished", (event) => resolve(event.profile)));
  await page.evaluate(() => (globalThis.PROFILE_TIMED = true));
  const sample = await page.evaluate((s) => window.syncBench[s](), side);
  const profile = await timed;
  await page.evaluate(() => (globalThis.PROFILE_TIMED = false));
  const dir = join(here, "..", "..", ".test-tmp", "profile");
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, `firstSync-${side}.cpuprofile`), JSON.stringify(profile));
  summarize(profile, { title: `firstSync, ${side}: ${JSON.stringify(sample)}` });
}

/**
 * The sync rows wanted (`wanted(name)`), with Chromium's `context` and the static server `pageUrl`
 * for the page. Calls `record(row, samples)` per row; returns the server's description.
 */
export async function syncRows({ root, consumer, packageDir, context, pageUrl, config, wanted, record }) {
  const { Log, LogLevel, Miniflare } = await import("miniflare");
  const { Vault } = await import(pathToFileURL(join(packageDir, "dist", "node.js")));
  const out = bundle(consumer, root);
  const origin = new URL(pageUrl).origin;
  const mf = new Miniflare({
    modules: true,
    scriptPath: join(out, "bench-entry.js"),
    modulesRules: [
      { type: "ESModule", include: ["**/*.js"] },
      { type: "CompiledWasm", include: ["**/*.wasm"] },
    ],
    compatibilityDate: "2026-04-01",
    // The replicas open their vaults with config.kdfSmall iterations: the server's floor is theirs.
    bindings: { SYNC_SIGNING_KEY: SIGNING_KEY, SYNC_ALLOWED_ORIGINS: origin, SYNC_MIN_KDF_ITERATIONS: String(config.kdfSmall) },
    d1Databases: { DB: "vault" },
    // The worker's errors (and workerd's) on stderr: a failing sync names its cause.
    log: new Log(LogLevel.WARN),
    cf: false,
  });
  try {
    const base = (await mf.ready).toString().replace(/\/$/, "");
    const remote = (user, m = meter()) => ({ url: `${base}/sync`, headers: { authorization: `Bearer ${credential(user)}` }, fetch: m.fetch });
    const d1 = async (method, query = "") => (await request(`${base}/__bench/d1${query}`, { method })).json();
    const replica = () => Vault.open({ backend: "memory", kdfIterations: config.kdfSmall });
    /** A Node replica holding `count` new records, synced to `user`'s (empty) server vault. */
    const seeded = async (user, count) => {
      const vault = await replica();
      const input = values(count);
      const tokens = [];
      for (let i = 0; i < count; i += config.chunk) tokens.push(...(await vault.tokensCreate(input.slice(i, i + config.chunk), PASSWORD)));
      const started = performance.now();
      const report = await vault.sync(remote(user));
      if (count >= 10_000) console.log(`    ${user}: ${count.toLocaleString("en-US")} records pushed in ${((performance.now() - started) / 1000).toFixed(1)} s`);
      expectEqual(report.pushed >= count, true, `${user}: seeding pushed ${report.pushed} of ${count}`);
      return { vault, tokens, input };
    };

    if (wanted("firstSync")) {
      const n = config.records10k;
      const { vault, tokens, input } = await seeded("first", n);
      await vault.close();
      const page = await context.newPage();
      page.on("pageerror", (error) => console.error("page error:", error));
      await page.goto(`${pageUrl}/page.html`);
      await page.waitForFunction(() => document.getElementById("status").textContent === "ready");
      const held = await page.evaluate((s) => window.syncBench.setup(s), {
        syncUrl: `${base}/sync`,
        rowsUrl: `${base}/__bench/rows?user=first`,
        authorization: `Bearer ${credential("first")}`,
        plaintexts: Object.fromEntries(tokens.map((t, i) => [t, input[i]])),
        kdfIterations: config.kdfSmall,
      });
      expectEqual(held, n, "records on the server");
      const side = (name) => () => page.evaluate((s) => window.syncBench[s](), name);
      record("sync.firstSync", await alternate(config.rounds, { package: side("package"), baseline: side("baseline") }, seedOf("sync.firstSync") ^ config.seed));
      if (process.env.SYNC_BENCH_DEBUG) console.log(await page.evaluate(() => JSON.stringify(globalThis.lastTimeline)));
      if (process.env.SYNC_BENCH_PROFILE) await profiled(context, page, process.env.SYNC_BENCH_PROFILE);
      await page.close();
    }

    if (wanted("oneChange")) {
      const figures = {};
      for (const [label, n] of [["small", config.records1k], ["big", config.syncRecords]]) {
        const started = performance.now();
        const user = `change-${n}`;
        const { vault: writer, tokens } = await seeded(user, n);
        const reader = await replica();
        expectEqual((await reader.sync(remote(user))).pulled >= n, true, `${user}: the second replica pulled the vault`);
        const setupMs = performance.now() - started;
        await writer.tokenUpdate(tokens[n >> 1], "changed on the first replica", PASSWORD);
        const sides = {};
        await d1("POST", "?reads=1");
        for (const [side, vault] of [["push", writer], ["pull", reader]]) {
          const m = meter();
          await vault.sync(remote(user, m));
          const db = await d1("POST", "?reads=1");
          sides[side] = { requests: m.requests, rows: m.rowsUp + m.rowsDown, bytes: m.bytesUp + m.bytesDown, d1Read: db.rowsRead, d1Written: db.rowsWritten, statements: db.statements };
        }
        await d1("POST");
        expectEqual(await reader.tokenRead(tokens[n >> 1], PASSWORD), "changed on the first replica", "the change on the other replica");
        expectEqual(await reader.recordCount(), n, "the other replica's records");
        figures[label] = { records: n, setupMs, ...sides };
        await Promise.all([writer.close(), reader.close()]);
      }
      record("sync.oneChange", figures);
    }

    if (wanted("load")) {
      const n = config.records1k;
      const REPLICAS = config.syncReplicas;
      const { vault: seeder, tokens } = await seeded("load", n);
      await seeder.close();
      const replicas = [];
      for (let i = 0; i < REPLICAS; i++) {
        const vault = await replica();
        await vault.sync(remote("load"));
        replicas.push(vault);
      }
      const samples = [];
      for (let round = 0; round < config.rounds; round++) {
        const m = meter();
        const started = performance.now();
        await Promise.all(
          replicas.map(async (vault, i) => {
            for (let cycle = 0; cycle < config.syncCycles; cycle++) {
              await vault.tokenUpdate(tokens[i], `replica ${i}, round ${round}, cycle ${cycle}`, PASSWORD);
              await vault.sync(remote("load", m));
            }
          }),
        );
        const ms = performance.now() - started;
        const sorted = [...m.latencies].sort((a, b) => a - b);
        samples.push({ ms, requests: m.requests, perSecond: (m.requests * 1000) / ms, p50: median(sorted), p95: sorted[Math.min(sorted.length - 1, Math.ceil(0.95 * sorted.length) - 1)] });
      }
      // Everyone ends with everyone's last write.
      for (const vault of replicas) await vault.sync(remote("load"));
      const last = `round ${config.rounds - 1}, cycle ${config.syncCycles - 1}`;
      for (const vault of replicas) {
        const read = await vault.tokensRead(tokens.slice(0, REPLICAS), PASSWORD);
        expectEqual(tokens.slice(0, REPLICAS).map((t) => read[t]), replicas.map((_, i) => `replica ${i}, ${last}`), "every replica's last writes");
      }
      await Promise.all(replicas.map((v) => v.close()));
      record("sync.load", { package: samples });
    }
  } finally {
    await mf.dispose();
  }
  return SERVER;
}
