#!/usr/bin/env node
// `npm run bench`: the package against the code a JavaScript developer would write instead
// (issue 8), in Node (memory backend) and headless Chromium (IndexedDB), sync against the example
// worker in Miniflare (issue 14, sync.mjs), plus the download sizes.
// Writes tests/benches/results/latest.md and latest.svg.
//
//   npm run bench                      full run: 1,000 / 10,000 / 100,000 records, 7 rounds (~4 min,
//                                      and ~5 min more for sync, most of it building the 100,000-record vault)
//   npm run bench -- --quick           smoke run (BENCH_QUICK=1 too): tiny counts, 2 rounds, report
//                                      in .test-tmp/bench/; fails if a benchmark throws or disagrees
//                                      with its baseline, never on timings
//   --rounds N   --out DIR   --only node|chromium|sync
//   --sync-records N   the vault of the one-change sync row (default 100,000; 200 with --quick)
//   --rows a,b   only these rows (e.g. batchRead,sequentialCreate): medians printed, no report
//
// The package measured is dist/ packed and installed into an empty folder, or the folder named by
// CONSUMER_DIR where `npm test` already installed it. On a fresh clone (no node_modules, no dist/)
// it installs the npm dev dependencies and builds first. A report names the commit it measures,
// so a full run refuses a dist/ built from another source state (dist/BUILD: commit, uncommitted
// changes) than the tree's: rebuild with `npm run build`. A --quick or --rows run only warns.
//
// Only Node built-ins and this repository's own modules are imported at module load; npm
// packages (playwright-core) after ensureNodeModules().
import { execFileSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { availableParallelism, loadavg } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { serve } from "../../js/tools/serve.mjs";
import { measureSizes } from "../../js/tools/sizes.mjs";
import { ensureChromium, ensureNodeModules, output, root, run, sourceState } from "../../js/tools/toolchain.mjs";
import { installPacked } from "../js/pack.mjs";
import { markdown, svg, tables } from "./report.mjs";
import { alternate, seedOf } from "./protocol.mjs";
import { SERVER, syncRows } from "./sync.mjs";
import { buildMismatch } from "./provenance.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const option = (name) => (args.includes(name) ? args[args.indexOf(name) + 1] : undefined);
const quick = args.includes("--quick") || process.env.BENCH_QUICK === "1";

const config = quick
  ? { records1k: 50, records10k: 50, records100k: 200, chunk: 50, reads: 50, kdfSmall: 1000, kdfDefault: 1000, rounds: 2, syncRecords: 200, syncReplicas: 8, syncCycles: 2 }
  : { records1k: 1000, records10k: 10_000, records100k: 100_000, chunk: 5000, reads: 1000, kdfSmall: 1000, kdfDefault: 600_000, rounds: 7, syncRecords: 100_000, syncReplicas: 8, syncCycles: 4 };
if (option("--rounds")) config.rounds = Number(option("--rounds"));
if (option("--sync-records")) config.syncRecords = Number(option("--sync-records"));
// Seeds the order of the sides in every round (protocol.mjs alternate).
config.seed = Number(option("--seed") ?? 1);
const only = option("--only");
const runs = (part) => !only || only === part;
const rowFilter = option("--rows")?.split(",");
const wanted = (row) => !rowFilter || rowFilter.includes(row);
const work = join(root, ".test-tmp", "bench");
const outDir = option("--out") ?? (quick ? work : join(here, "results"));

ensureNodeModules();
if (only !== "node" && !process.env.CHROMIUM) ensureChromium();
const { chromium } = await import("playwright-core");
if (!existsSync(join(root, "dist", "BUILD"))) {
  console.log("dist/ is not built (or its build did not finish): `npm run build` first");
  run("npm", ["run", "build"]);
}
const source = sourceState();
const mismatch = buildMismatch(readFileSync(join(root, "dist", "BUILD"), "utf8"), source);
if (mismatch) {
  if (!quick && !rowFilter) {
    console.error(`refusing to benchmark: ${mismatch}. The report would name a commit it did not measure; run \`npm run build\` first.`);
    process.exit(1);
  }
  console.warn(`warning: ${mismatch} (${quick ? "a --quick run goes on: it checks answers, not timings" : "a --rows run goes on: it writes no report, and its figures are dist/'s"})`);
}
const started = Date.now();
// Shared machines: the load around the run says how much to trust its figures.
const loadBefore = loadavg()[0];
const consumer = process.env.CONSUMER_DIR ?? installPacked(work);
const packageDir = join(consumer, "node_modules", "vaultstore-wasm");
// The Node benchmarks run next to the installed package, so "vaultstore-wasm" resolves as a user's does.
const benchDir = join(consumer, "bench");
mkdirSync(benchDir, { recursive: true });
for (const file of ["node.mjs", "baselines.mjs", "baselines-node.mjs", "protocol.mjs"]) cpSync(join(here, file), join(benchDir, file));

const results = {};
const progress = (row, samples) => {
  if (!Object.values(samples).every(Array.isArray)) return console.log(`  ${row}: ${JSON.stringify(samples)}`);
  const summary = Object.entries(samples).map(([side, list]) => `${side} ${list.map((s) => Object.values(s).map((v) => v.toFixed(1)).join("/")).join(" ")}`);
  console.log(`  ${row}: ${summary.join(" | ")}`);
};

if (runs("node")) {
  console.log(`\n▶ Node, memory backend (${config.rounds} rounds per row, one process per row; readLatency: one per round)`);
  const nodeRow = (row, rowConfig) => {
    const stdout = execFileSync(process.execPath, ["--expose-gc", join(benchDir, "node.mjs"), row, JSON.stringify(rowConfig)], {
      cwd: consumer,
      encoding: "utf8",
      stdio: ["ignore", "pipe", "inherit"],
    });
    return JSON.parse(stdout.trim().split("\n").pop());
  };
  // The 100,000-record build is what a user's first build costs only in a fresh engine: a wasm
  // memory never shrinks, so in one process every round after the first reuses the memory the
  // first one grew (6.1 s against 1.9 s for the same build, 4 December 2026). Each round is a
  // process of its own, the package's side first (node.mjs).
  const freshPerRound = new Set(["readLatency"]);
  for (const row of ["sequentialCreate", "batchCreate", "sequentialRead", "batchRead", "readLatency", "rekeyRotate", "rekeyScan", "unlock", "fallback"].filter(wanted)) {
    if (freshPerRound.has(row)) {
      const merged = {};
      for (let round = 0; round < config.rounds; round++) {
        for (const [side, samples] of Object.entries(nodeRow(row, { ...config, rounds: 1, packageFirst: true }))) {
          (merged[side] ??= []).push(...samples);
        }
      }
      results[`node.${row}`] = merged;
    } else {
      results[`node.${row}`] = nodeRow(row, config);
    }
    progress(`node.${row}`, results[`node.${row}`]);
  }
}

let chromiumVersion = "not run";
let syncServer;
if (runs("chromium") || runs("sync")) {
  const server = await serve([here, consumer, { mount: "/dexie", dir: join(root, "node_modules", "dexie", "dist") }]);
  const executablePath = process.env.CHROMIUM ?? "/usr/bin/chromium";
  chromiumVersion = output(executablePath, ["--version"]).trim() || "unknown";
  // A persistent profile keeps IndexedDB on disk, as in a user's browser (a fresh Playwright
  // context would be off the record, with IndexedDB in memory). A new one for every run.
  const profile = join(work, "chromium-profile");
  rmSync(profile, { recursive: true, force: true });
  const context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    args: [
      "--no-sandbox", "--headless=new", "--disable-gpu", "--disable-dev-shm-usage",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      "--no-first-run", "--disable-quic",
    ],
  });
  try {
    if (runs("chromium")) console.log(`\n▶ Chromium, IndexedDB (${config.rounds} rounds per row, one page per row)`);
    for (const row of (runs("chromium") ? ["batchCreate1k", "batchCreate10k", "batchCreateVsBulkAdd", "batchRead", "sequentialCreate", "sequentialCreateIdentities", "rekeyRotate", "listing"] : []).filter(wanted)) {
      const page = await context.newPage();
      page.on("pageerror", (error) => console.error("page error:", error));
      await page.goto(`${server.url}/page.html`);
      await page.waitForFunction(() => document.getElementById("status").textContent === "ready");
      const sides = await page.evaluate((row) => window.benchRows[row], row);
      results[`idb.${row}`] = await alternate(
        config.rounds,
        Object.fromEntries(sides.map((side) => [side, () => page.evaluate(([r, s, c]) => window.bench(r, s, c), [row, side, config])])),
        seedOf(row) ^ config.seed,
      );
      progress(`idb.${row}`, results[`idb.${row}`]);
      await page.close();
    }
    const syncWanted = ["firstSync", "oneChange", "load"].filter(wanted);
    if (runs("sync") && syncWanted.length) {
      console.log(`\n▶ Sync: Chromium and Node replicas ↔ ${SERVER} (${syncWanted.join(", ")}; one-change vault ${config.syncRecords.toLocaleString("en-US")} records)`);
      syncServer = await syncRows({
        root, consumer, packageDir, context, pageUrl: server.url, config,
        wanted: (row) => syncWanted.includes(row),
        record: (row, samples) => {
          results[row] = samples;
          progress(row, samples);
        },
      });
    }
  } finally {
    await context.close();
    await server.close();
  }
}

if (rowFilter) {
  // A partial run (while optimising one path): medians only, no report.
  const median = (list) => [...list].sort((a, b) => a - b)[Math.floor(list.length / 2)];
  for (const [row, sides] of Object.entries(results)) {
    const medians = Object.entries(sides).filter(([, samples]) => Array.isArray(samples)).map(([side, samples]) => `${side} ${median(samples.map((x) => x.ms ?? x.p50Big ?? x.deepMs)).toFixed(1)}`);
    console.log(`${row}: ${medians.join(", ")}`);
  }
  console.log(`\n${tables(config, results, quick)}`);
  process.exit(0);
}

console.log("\n▶ download sizes");
const sizes = await measureSizes(packageDir, join(work, "size-edge"), join(root, "node_modules", ".bin", "wrangler"));

const machine = {
  cpu: (readFileSync("/proc/cpuinfo", "utf8").match(/^model name\s*:\s*(.+)$/m) ?? [])[1] ?? "unknown",
  cores: availableParallelism(),
  load: `${loadBefore.toFixed(2)} at the start, ${loadavg()[0].toFixed(2)} at the end (1-minute load average)`,
  node: process.version,
  chromium: chromiumVersion,
  syncServer,
  date: new Date().toISOString().replace(/\.\d+Z$/, "Z"),
  commit: `${source.commit.slice(0, 7)}${source.dirty ? ` with uncommitted changes (${source.changes})` : ""} (branch ${output("git", ["rev-parse", "--abbrev-ref", "HEAD"]).trim()})`,
};
mkdirSync(outDir, { recursive: true });
const report = { machine, config, results, sizes, quick, svgName: "latest.svg" };
writeFileSync(join(outDir, "latest.md"), markdown(report));
writeFileSync(join(outDir, "latest.svg"), svg(report));
console.log(`\nbenchmark report: ${join(outDir, "latest.md")} (${((Date.now() - started) / 60000).toFixed(1)} min)`);
