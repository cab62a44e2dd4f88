// The benchmark report: medians and ratios against the goals of issue 8, as markdown, and the same
// figures as an SVG bar chart drawn here (no chart library, no network).
import { formatBytes } from "../../js/tools/sizes.mjs";
import { bootstrap, median, medianInterval, medianRatio, verdict } from "./protocol.mjs";

const count = (n) => n.toLocaleString("en-US");
const ms = (v) => (v >= 10_000 ? `${(v / 1000).toFixed(1)} s` : v >= 1000 ? `${(v / 1000).toFixed(2)} s` : v >= 10 ? `${v.toFixed(0)} ms` : `${v.toFixed(2)} ms`);
const us = (v) => `${v.toFixed(1)} µs`;
const opsPerSecond = (operations, millis) => `${count(Math.round((operations * 1000) / millis))} ops/s`;

/**
 * The goal a line is held to: `package ÷ baseline ≤ ratio`, or `package value ≤ limit`. `met` is
 * "met", "not met" or "undecided" from the line's 95% bootstrap interval (protocol.mjs verdict):
 * met only when the whole interval is on the goal's side.
 */
const ratioGoal = (ratio) => ({
  text: `≤ ${ratio.toFixed(1)}×`,
  met: (line) => verdict(line.ratioInterval, ratio),
  bar: (line) => ({ x: line.ratio, goal: ratio, value: `${line.ratio.toFixed(2)}×` }),
});
/** `package value ≤ limit`; the chart draws value ÷ limit, or the value itself when it is a ratio. */
const limitGoal = (limit, text, { isRatio = false } = {}) => ({
  text,
  onValue: true,
  met: (line) => verdict(line.valueInterval, limit),
  bar: (line) => ({ x: isRatio ? line.package : line.package / limit, goal: isRatio ? limit : 1, value: line.show(line.package) }),
});

/**
 * Every line of the report: `{ runtime, operation, baseline (what a user writes), package and
 * baseline medians, show (formats a value), ratio, ratioInterval and valueInterval (95% bootstrap
 * intervals of the ratio and of the package's median, `{ low, high }`), goal }`.
 */
export function lines(config, results) {
  const samples = (row, side, metric = "ms") => results[row][side].map((sample) => sample[metric]);
  const med = (row, side, metric = "ms") => median(samples(row, side, metric));
  const interval = ({ low, high }) => ({ low, high });
  // A row or side that was not run (a partial results object) gives no line.
  const compare = (row, extra = {}, against = "baseline") => {
    if (!results[row]?.[against]) return null;
    const pkg = samples(row, "package");
    const base = samples(row, against);
    const { ratio, low, high } = medianRatio(pkg, base);
    return { package: median(pkg), baseline: median(base), ratio, ratioInterval: { low, high }, valueInterval: interval(medianInterval(pkg)), show: ms, ...extra };
  };
  const beyondPbkdf2 = (row) => {
    if (!results[row]) return null;
    const [pkgs, bases, kdfs] = ["package", "baseline", "pbkdf2"].map((side) => samples(row, side));
    const pick = (list, indices) => median(indices.map((i) => list[i]));
    const all = pkgs.map((_, i) => i);
    const beyond = (indices) => pick(pkgs, indices) - pick(kdfs, indices);
    const ratioOf = (indices) => beyond(indices) / (pick(bases, indices) - pick(kdfs, indices));
    const pbkdf2 = pick(kdfs, all);
    const pkg = beyond(all);
    const base = pick(bases, all) - pbkdf2;
    const [rLow, rHigh] = bootstrap(all.length, ratioOf);
    const [vLow, vHigh] = bootstrap(all.length, beyond);
    return {
      package: pkg, baseline: base, ratio: pkg / base, ratioInterval: { low: rLow, high: rHigh }, valueInterval: { low: vLow, high: vHigh },
      show: ms, note: `one PBKDF2 of ${count(config.kdfDefault)} iterations: ${ms(pbkdf2)}`,
    };
  };
  const throughput = (operations) => (v) => `${ms(v)} (${opsPerSecond(operations, v)})`;
  const { records1k: n1k, records10k: n10k, records100k: n100k } = config;
  const out = [];
  const add = (runtime, operation, baseline, values, goal) => values && out.push({ runtime, operation, baselineWhat: baseline, goal, ...values });

  if (results["idb.batchCreate1k"]) {
    const r = "chromium";
    add(r, `tokensCreate(${count(n1k)}), 100-byte values`, "HKDF+AES-GCM seals (Promise.all) + Dexie bulkAdd", compare("idb.batchCreate1k"), ratioGoal(1.0));
    add(r, `tokensCreate(${count(n10k)})`, "the same, " + count(n10k), compare("idb.batchCreate10k"));
    add(r, `tokensCreate(${count(n1k)}) vs the physical limit`, "one Dexie bulkAdd of the same rows, already sealed", compare("idb.batchCreateVsBulkAdd"), ratioGoal(1.5));
    add(r, `tokensRead(${count(n1k)})`, "Dexie bulkGet + Promise.all opens", compare("idb.batchRead"), ratioGoal(1.0));
    add(r, `${count(n1k)} × await tokenCreate`, `${count(n1k)} × (seal, Dexie add)`, compare("idb.sequentialCreate"), ratioGoal(1.0));
    add(r, `${count(n1k)} × await tokenCreate, identities on`, `${count(n1k)} × (seal, Dexie add)`, compare("idb.sequentialCreateIdentities"));
    add(r, `bulkRekey rotate, ${count(n10k)} records (identities)`, "PBKDF2 + toArray + open/re-seal + bulkPut", compare("idb.rekeyRotate"));
    add(r, `bulkRekey rotate, ${count(n10k)}, minus the new password's PBKDF2`, "the same, minus one PBKDF2", beyondPbkdf2("idb.rekeyRotate"), limitGoal(1000, "< 1 s"));
  }
  if (results["idb.listing"]) {
    // Issue 16: a deep page costs about what the first one does.
    const r = "chromium";
    const n = 2 * n10k;
    const [first, deep, on, trash, deepLive, counted, back, last, bigTrash] = ["firstMs", "deepMs", "pagingOnMs", "trashMs", "deepLiveMs", "countMs", "pagingBackMs", "lastMs", "bigTrashMs"].map((metric) => samples("idb.listing", "package", metric));
    const figure = (list) => ({ package: median(list), baseline: null, ratio: null, valueInterval: interval(medianInterval(list)), show: ms });
    add(r, `recordList({ limit: 20 }), ${count(n)}-record vault`, "—", figure(first));
    add(r, `recordList({ limit: 20, offset: ${count(n >> 1)} })`, "—", figure(deep));
    const growth = medianRatio(deep, first);
    add(r, `offset ${count(n >> 1)} page ÷ first page`, "—", { package: growth.ratio, baseline: null, ratio: null, valueInterval: interval(growth), show: (v) => `${v.toFixed(2)}×` }, limitGoal(2, "≤ 2×", { isRatio: true }));
    // Rows without the figure are results from before it was measured.
    if (on.every((v) => v !== undefined)) {
      add(r, `the 25 pages after it, each read after the one before (mean per page)`, "—", figure(on));
      const onGrowth = medianRatio(on, first);
      add(r, `a page read after the one before, at offset ${count(n >> 1)} on, ÷ first page`, "—", { package: onGrowth.ratio, baseline: null, ratio: null, valueInterval: interval(onGrowth), show: (v) => `${v.toFixed(2)}×` });
    }
    if (back.every((v) => v !== undefined)) add(r, `then back through 24 of them, each the page before the last read (mean per page)`, "—", figure(back));
    if (counted.every((v) => v !== undefined)) add(r, `recordCount(), ${count(n)}-record vault (median of 9 calls: the first counts, the rest read the connection's tally)`, "—", figure(counted));
    if (last.every((v) => v !== undefined)) add(r, `then the last page, recordList({ limit: 20, offset: ${count(n - 20)} })`, "—", figure(last));
    if (trash.every((v) => v !== undefined)) {
      add(r, `with 20 of them soft-deleted: recordList({ softDeletedOnly: true, limit: 20 })`, "—", figure(trash));
      add(r, `with 20 of them soft-deleted: recordList({ limit: 20, offset: ${count(n >> 1)} })`, "—", figure(deepLive));
    }
    if (bigTrash.every((v) => v !== undefined)) add(r, `with 620 soft-deleted, after a recordCount(): recordList({ softDeletedOnly: true, limit: 20, offset: 100 })`, "—", figure(bigTrash));
  }
  if (results["node.sequentialCreate"]) {
    const r = "node";
    add(r, `${count(n10k)} × await tokenCreate`, "plain AES-GCM seal + Map.set, awaited one by one", compare("node.sequentialCreate", { show: throughput(n10k) }), ratioGoal(1.0));
    add(r, `tokensCreate(${count(n10k)})`, "the same, Promise.all", compare("node.batchCreate", { show: throughput(n10k) }), ratioGoal(1.0));
    add(r, `tokensRead(${count(n1k)}) × 10`, "Map.get + Promise.all plain opens", compare("node.batchRead", { show: throughput(10 * n1k) }), ratioGoal(1.0));
    add(r, `${count(n1k)} × await tokenRead, × 10`, "Map.get + plain open, awaited one by one", compare("node.sequentialRead", { show: throughput(10 * n1k) }));
    if (results["node.readLatency"]) {
      const latency = (side, metric) => samples("node.readLatency", side, metric);
      const p50 = (metric) => {
        const { ratio, low, high } = medianRatio(latency("package", metric), latency("baseline", metric));
        return { package: med("node.readLatency", "package", metric), baseline: med("node.readLatency", "baseline", metric), ratio, ratioInterval: { low, high }, valueInterval: interval(medianInterval(latency("package", metric))), show: us };
      };
      add(r, `tokenRead p50, ${count(n100k)}-record vault`, "Map.get + HKDF+AES-GCM open", p50("p50Big"), limitGoal(20, "≤ 20 µs"));
      add(r, `tokenRead p50, ${count(n1k)}-record vault`, "the same", p50("p50Small"));
      const growth = medianRatio(latency("package", "p50Big"), latency("package", "p50Small"));
      const baseGrowth = med("node.readLatency", "baseline", "p50Big") / med("node.readLatency", "baseline", "p50Small");
      add(r, `p50 at ${count(n100k)} ÷ p50 at ${count(n1k)}`, "the same", { package: growth.ratio, baseline: baseGrowth, ratio: null, valueInterval: interval(growth), show: (v) => `${v.toFixed(2)}×` }, limitGoal(1.5, "≤ 1.5×", { isRatio: true }));
      // Issue 16: a page and a count cost the page, not the vault.
      const figure = (metric) => {
        const list = samples("node.readLatency", "package", metric);
        return list.every((v) => v !== undefined) && { package: median(list), baseline: null, ratio: null, valueInterval: interval(medianInterval(list)), show: ms };
      };
      add(r, `recordList({ limit: 20 }), ${count(n100k)}-record vault`, "—", figure("listFirstMs"), limitGoal(1, "< 1 ms"));
      add(r, `recordList({ limit: 20, offset: ${count(n100k >> 1)} })`, "—", figure("listDeepMs"), limitGoal(1, "< 1 ms"));
      add(r, `recordCount(), ${count(n100k)}-record vault`, "—", figure("countMs"), limitGoal(1, "< 1 ms"));
      const build = samples("node.readLatency", "package", "buildMs");
      add(r, `build a ${count(n100k)}-record vault (tokensCreate × ${count(config.chunk)})`, "—", { package: median(build), baseline: null, ratio: null, valueInterval: interval(medianInterval(build)), show: ms }, limitGoal(5000, "< 5 s"));
      // Issue 16: the memory that vault takes (no goal: printed). Rows without the figures are
      // results from before they were measured.
      const mib = (v) => `${v.toFixed(1)} MiB`;
      const wasm = figure("wasmMiB");
      if (wasm) add(r, `wasm memory with the ${count(n100k)}-record vault open (its peak: it never shrinks)`, "—", { ...wasm, show: mib });
      if (figure("heapMiB") && latency("baseline", "heapMiB").every((v) => v !== undefined)) {
        add(r, `JS heap the ${count(n100k)}-record build adds (live, after a full collection)`, "the Map of the sealed records and their tokens", { ...p50("heapMiB"), show: mib });
      }
    }
    add(r, `bulkRekey rotate, ${count(n10k)} records (identities)`, "PBKDF2 + open/re-seal into the Map", compare("node.rekeyRotate"), ratioGoal(1.0));
    add(r, `bulkRekey rotate, ${count(n10k)}, minus the new password's PBKDF2`, "the same, minus one PBKDF2", beyondPbkdf2("node.rekeyRotate"));
    add(r, `bulkRekey, identities off (key-check scan), ${count(n10k)}`, "PBKDF2 + open/re-seal into the Map", compare("node.rekeyScan"), ratioGoal(1.0));
    add(r, `bulkRekey key-check scan, ${count(n10k)}, minus the new password's PBKDF2`, "the same, minus one PBKDF2", beyondPbkdf2("node.rekeyScan"));
    add(r, `unlock: first tokenCreate of a new vault (PBKDF2 ${count(config.kdfDefault)})`, "subtle.deriveBits + 1 seal", compare("node.unlock"), ratioGoal(1.1));
    add(r, `Rust PBKDF2 fallback (${count(config.kdfDefault)}), WebCrypto refused`, "subtle.deriveBits", compare("node.fallback"), ratioGoal(2.0));
  }
  if (results["node.sequentialCreate"]?.nodeHkdf) {
    // What a Node developer writes: node:crypto, synchronous (baselines-node.mjs). No goal: these
    // rows say what the package costs against it.
    const r = "nodeCrypto";
    const operations = [
      ["node.sequentialCreate", `${count(n10k)} × await tokenCreate`, n10k, "a loop of seals + Map.set"],
      ["node.batchCreate", `tokensCreate(${count(n10k)})`, n10k, "seals mapped over the values, then Map.set"],
      ["node.sequentialRead", `${count(n1k)} × await tokenRead, × 10`, 10 * n1k, "a loop of Map.get + open"],
      ["node.batchRead", `tokensRead(${count(n1k)}) × 10`, 10 * n1k, "Map.get + open mapped over the tokens"],
    ];
    for (const [row, operation, n, what] of operations) {
      add(r, operation, `node:crypto + HKDF: ${what} (hkdfSync + createCipheriv per record)`, compare(row, { show: throughput(n) }, "nodeHkdf"));
      add(r, `${operation}, against one key`, `node:crypto, one key, no HKDF: ${what}`, compare(row, { show: throughput(n) }, "nodePlain"));
    }
  }
  if (results["sync.firstSync"] || results["sync.oneChange"] || results["sync.load"]) {
    const r = "sync";
    // What the replica's sync sent: its pull and push requests (a first sync pushes its rows too).
    const wire = results["sync.firstSync"]?.package[0]?.pushes === undefined ? {} : {
      note: `${count(med("sync.firstSync", "package", "pulls"))} pull and ${count(med("sync.firstSync", "package", "pushes"))} push requests, ${formatBytes(med("sync.firstSync", "package", "bytesUp"))} sent`,
    };
    add(r, `first sync of ${count(n10k)} records into an empty IndexedDB replica (Chromium)`, "fetch the same sealed rows as JSON + one Dexie bulkAdd", compare("sync.firstSync", wire), ratioGoal(1.5));
    const change = results["sync.oneChange"];
    if (change) {
      // Counts, not timings: the same sync in a vault 100× larger must not cost more.
      const FIGURES = ["requests", "rows", "d1Read", "d1Written"];
      const show = (side) => (v) => FIGURES.map((f) => count(v[side][f])).join(" / ");
      for (const [side, what] of [["push", "the changing replica's sync (pull, push, pull)"], ["pull", "another replica's sync that pulls it"]]) {
        const growth = Math.max(...FIGURES.map((f) => (change.big[side][f] === 0 && change.small[side][f] === 0 ? 1 : change.big[side][f] / Math.max(1, change.small[side][f]))));
        const value = { package: change.big, baseline: change.small, ratio: growth, ratioInterval: { low: growth, high: growth }, show: show(side) };
        add(r, `one changed record in a ${count(change.big.records)}-record vault, ${what}: requests / rows over the wire / D1 rows read / written`, `the same in a ${count(change.small.records)}-record vault`, value, growthGoal(1.5, change.big.records / change.small.records));
      }
    }
    if (results["sync.load"]) {
      const loadLine = (metric, show) => {
        const list = samples("sync.load", "package", metric);
        return { package: median(list), baseline: null, ratio: null, valueInterval: interval(medianInterval(list)), show, withInterval: true };
      };
      const who = `${config.syncReplicas} Node replicas syncing one vault (${count(n1k)} records) at once, ${config.syncCycles} × (tokenUpdate + sync) each`;
      add(r, `${who}: requests/s`, "—", loadLine("perSecond", (v) => `${v.toFixed(0)} req/s`));
      add(r, `the same: p50 request latency`, "—", loadLine("p50", ms));
      add(r, `the same: p95 request latency`, "—", loadLine("p95", ms));
    }
  }
  for (const line of out) line.met = line.goal ? line.goal.met(line) : undefined;
  return out;
}

/** Counts that must not grow with the vault: the largest growth of any figure ≤ `limit`. */
const growthGoal = (limit, factor) => ({
  text: `O(1): no figure grows > ${limit}× with ${count(Math.round(factor))}× the records`,
  met: (line) => verdict(line.ratioInterval, limit),
  bar: (line) => ({ x: line.ratio, goal: limit, value: `${line.ratio.toFixed(2)}× growth` }),
});

const RUNTIMES = {
  chromium: "Chromium, IndexedDB (`backend: \"indexeddb\"` vs WebCrypto + Dexie)",
  node: "Node, memory (`backend: \"memory\"` vs WebCrypto + Map)",
  nodeCrypto: "Node, memory (`backend: \"memory\"` vs node:crypto + Map)",
  sync: "Sync: replicas ↔ the example worker's POST /sync on D1, in Miniflare (`vault.sync` vs fetch + Dexie)",
};

const VERDICTS = { met: "✅ yes", "not met": "❌ no", undecided: "❔ undecided (the interval spans the goal)" };

function table(rows, quick) {
  const met = (line) => (line.goal === undefined ? "" : quick ? "(quick run)" : VERDICTS[line.met]);
  const body = rows.map((line) => {
    const base = line.baseline === null ? "—" : line.show(line.baseline);
    const span = (i, format) => ` [${format(i.low)}–${format(i.high)}]`;
    const ratio = line.ratio === null ? "—" : `${line.ratio.toFixed(2)}×${span(line.ratioInterval, (v) => v.toFixed(2))}`;
    // A goal on the value itself shows the value's interval, which decides it.
    const pkg = line.goal?.onValue || line.withInterval ? `${line.show(line.package)}${span(line.valueInterval, line.show)}` : line.show(line.package);
    const note = line.note ? ` (${line.note})` : "";
    return `| ${line.operation}${note} | ${pkg} | ${base} | ${line.baselineWhat} | ${ratio} | ${line.goal?.text ?? "—"} | ${met(line)} |`;
  });
  return ["| operation | package | baseline | what the baseline does | ratio [95% interval] | goal | met |", "|---|--:|--:|---|--:|:-:|:-:|", ...body].join("\n");
}

/** The tables of whatever rows `results` holds, for a partial run (`--rows`), which writes no report. */
export function tables(config, results, quick) {
  const all = lines(config, results);
  return Object.entries(RUNTIMES)
    .map(([runtime, title]) => [title, all.filter((line) => line.runtime === runtime)])
    .filter(([, rows]) => rows.length > 0)
    .map(([title, rows]) => `## ${title}\n\n${table(rows, quick)}\n`)
    .join("\n");
}

/** The markdown report. */
export function markdown({ machine, config, results, sizes, quick, svgName }) {
  const all = lines(config, results);
  const parts = [
    "# vaultstore-wasm: the package against what a developer writes instead (issue 8)",
    "",
    quick
      ? "**Quick smoke run** (`npm run bench -- --quick`): tiny counts, 1,000 PBKDF2 iterations, 2 rounds. The figures only show that every benchmark runs and agrees with its baseline; the goals apply to a full run."
      : `Produced by \`npm run bench\` on the machine below. Each figure is the median of ${config.rounds} rounds; in each round the package and its baselines take turns in an order shuffled per round (seeded, so a run can be repeated), each on a new vault or database, deleted afterwards. Each ratio has a 95% bootstrap interval (rounds resampled with replacement, ${"2,000"} resamples, the ratio of medians recomputed); a goal is met only when the whole interval is on its side, not met when the whole interval is on the other, and undecided otherwise.`,
    "",
    "| machine | |",
    "|---|---|",
    `| CPU | ${machine.cpu} |`,
    `| cores | ${machine.cores} |`,
    `| load | ${machine.load} |`,
    `| Node | ${machine.node} |`,
    `| Chromium | ${machine.chromium} |`,
    ...(machine.syncServer ? [`| sync server | ${machine.syncServer} |`] : []),
    `| date | ${machine.date} |`,
    `| package commit | ${machine.commit} |`,
    "",
    "**ratio** = package median ÷ baseline median: below 1 the package is faster (for ops/s rows it is the inverse of the throughput ratio). " +
      "The package is the packed tarball installed in an empty folder (`npm pack`), loaded as users load it. " +
      `Keys are derived before the clock starts on both sides (the package caches them; each baseline derives once), except in the unlock, fallback and rekey rows, which run PBKDF2 at ${count(config.kdfDefault)} iterations as a user would; everything else uses ${count(config.kdfSmall)}. ` +
      "Baselines are in `tests/benches/baselines.mjs`, `node.mjs` and `browser.mjs`: \"plain\" is one AES-256-GCM key and a random nonce per value; \"HKDF+AES-GCM\" is, per record, a random 16-byte salt, a 12-byte nonce and an HKDF-SHA256-derived AES-256-GCM key, as the package seals. Both bind the token as associated data and store the package's metadata fields. " +
      "The node:crypto rows (`baselines-node.mjs`) are what a Node developer writes: synchronous `createCipheriv(\"aes-256-gcm\")` into a `Map`, with a per-record `hkdfSync` key (the package's work) or with one key and no HKDF; they frame values as WebCrypto does (nonce beside, 16-byte tag after the ciphertext), decrypt for real on reads, and every run first checks that node:crypto opens what WebCrypto sealed and the other way round.",
    "",
  ];
  if (all.some((line) => line.runtime === "sync")) {
    parts.push(
      `The sync rows (\`tests/benches/sync.mjs\`) run against ${machine.syncServer ?? "the example worker"}, reached over HTTP on 127.0.0.1 by the Chromium page (cross-origin, as a deployed app) and by the Node replicas (\`backend: "memory"\`). The first sync's baseline fetches the same sealed rows from the same worker as one JSON array and writes them with one Dexie \`bulkAdd\`: the physical limit, with no merge, revision or checkpoint. The one-change rows are counts (requests, rows in request and response bodies, and the D1 rows the worker's binding reports in \`meta.rows_read\` / \`rows_written\`), once at ${count(results["sync.oneChange"]?.big.records ?? config.syncRecords)} records and once at ${count(config.records1k)}. The load rows share two cores between workerd and the Node process that runs the ${config.syncReplicas} replicas.`,
      "",
    );
  }
  for (const [runtime, title] of Object.entries(RUNTIMES)) {
    const rows = all.filter((line) => line.runtime === runtime);
    if (rows.length > 0) parts.push(`## ${title}`, "", table(rows, quick), "");
  }
  if (sizes) {
    parts.push("## Download sizes (gzip -9, file by file)", "", "| what | gzip | budget | met | files |", "|---|--:|--:|:-:|---|");
    for (const size of sizes) {
      const files = size.files.map((f) => `\`${f.file.replace(/^[0-9a-f]{40}-/, "")}\` ${formatBytes(f.gzip)}`).join(", ");
      parts.push(`| ${size.what} | ${formatBytes(size.gzip)} | ${formatBytes(size.budget)} | ${size.ok ? "✅ yes" : "❌ no"} | ${files} |`);
    }
    parts.push("", "The browser figure is `dist/browser.js`, every module it imports statically and the IndexedDB engine (`vaultstore_idb*`); the GlueSQL engine (`vaultstore_full*`) is left out because a page that only uses IndexedDB never loads it. The edge figure is what `wrangler deploy --dry-run --outdir` writes for a minimal worker that imports the package (its source map excluded).", "");
  }
  parts.push("## Chart", "", `![ratio per operation, with each goal marked](${svgName})`, "");
  parts.push(
    "<details><summary>Raw samples (milliseconds; p50s in microseconds)</summary>",
    "",
    "```json",
    JSON.stringify({ config, results }, (key, value) => (typeof value === "number" ? Math.round(value * 1000) / 1000 : value)),
    "```",
    "",
    "</details>",
    "",
  );
  return parts.join("\n");
}

const escapeXml = (text) => text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

/**
 * Horizontal bars on a log scale: package ÷ baseline for ratio goals, measured ÷ limit for
 * absolute goals (sizes included), each with its goal marked; green when met, red when not.
 */
export function svg({ config, results, sizes, quick, machine }) {
  const bars = [];
  for (const [runtime, title] of Object.entries({ chromium: "Chromium, IndexedDB", node: "Node, memory", sync: "Sync (Miniflare, D1)" })) {
    const rows = lines(config, results).filter((line) => line.runtime === runtime && line.goal);
    if (rows.length === 0) continue;
    bars.push({ heading: title });
    for (const line of rows) {
      const { x, goal, value } = line.goal.bar(line);
      bars.push({ label: line.operation, x, goal, met: line.met, text: `${value} (goal ${line.goal.text})` });
    }
  }
  if (sizes) {
    bars.push({ heading: "Download sizes (gzip)" });
    for (const size of sizes) {
      bars.push({ label: size.what, x: size.gzip / size.budget, goal: 1, met: size.ok ? "met" : "not met", text: `${formatBytes(size.gzip)} (budget ${formatBytes(size.budget)})` });
    }
  }

  const xs = bars.filter((b) => b.x !== undefined).flatMap((b) => [b.x, b.goal]);
  const lo = 2 ** Math.floor(Math.log2(Math.min(0.25, ...xs.map((x) => Math.max(x, 1 / 64)))));
  const hi = 2 ** Math.ceil(Math.log2(Math.max(4, ...xs)));
  const width = 1000;
  const left = 420;
  const right = 790;
  const rowHeight = 24;
  const top = 84;
  const pos = (x) => left + ((Math.log2(Math.max(x, lo)) - Math.log2(lo)) / (Math.log2(hi) - Math.log2(lo))) * (right - left);
  const height = top + bars.length * rowHeight + 40;

  const out = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="system-ui, sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" fill="#fff"/>`,
    `<text x="16" y="24" font-size="16" font-weight="bold">vaultstore-wasm vs what a developer writes instead${quick ? " (quick smoke run)" : ""}</text>`,
    `<text x="16" y="42" fill="#555">Bar: package ÷ baseline, or the measured value ÷ its limit for absolute goals (log scale). Black tick: the goal.</text>`,
    `<text x="16" y="58" fill="#555">${quick ? "Grey: a smoke run, goals do not apply" : "Green: goal met; red: not met; amber: undecided (the 95% interval spans the goal)"}. ${escapeXml(machine.date)}, commit ${escapeXml(machine.commit)}.</text>`,
  ];
  for (let x = lo; x <= hi; x *= 2) {
    out.push(`<line x1="${pos(x)}" y1="${top - 8}" x2="${pos(x)}" y2="${height - 34}" stroke="${x === 1 ? "#999" : "#e4e4e4"}"/>`);
    out.push(`<text x="${pos(x)}" y="${height - 20}" text-anchor="middle" fill="#555">${x >= 1 ? x : `1/${1 / x}`}×</text>`);
  }
  bars.forEach((bar, i) => {
    const y = top + i * rowHeight;
    if (bar.heading) {
      out.push(`<text x="16" y="${y + 14}" font-weight="bold">${escapeXml(bar.heading)}</text>`);
      return;
    }
    const color = quick ? "#90a4ae" : { met: "#2e7d32", "not met": "#c62828" }[bar.met] ?? "#f9a825";
    out.push(`<text x="${left - 8}" y="${y + 14}" text-anchor="end">${escapeXml(bar.label)}</text>`);
    out.push(`<rect x="${left}" y="${y + 3}" width="${Math.max(1, pos(bar.x) - left)}" height="14" fill="${color}"/>`);
    out.push(`<line x1="${pos(bar.goal)}" y1="${y}" x2="${pos(bar.goal)}" y2="${y + 20}" stroke="#000" stroke-width="2"/>`);
    out.push(`<text x="${right + 8}" y="${y + 14}">${escapeXml(bar.text)}</text>`);
  });
  out.push("</svg>", "");
  return out.join("\n");
}
