#!/usr/bin/env node
// Where the time of one Chromium benchmark row goes: runs the row once in headless Chromium under
// the V8 sampling profiler (only its timed part, as the benchmark times it) and prints the
// functions with the most self time, grouped as wasm,
// JavaScript (by file) and the browser's own work (IndexedDB, garbage collection, idle). Writes the
// whole profile to .test-tmp/profile/<row>-<side>.cpuprofile (open it in Chrome DevTools'
// Performance panel).
//
//   node tests/benches/profile.mjs <row> [--side package|baseline] [--records N] [--top N]
//
// Rows are those of browser.mjs (batchCreate1k, batchRead, sequentialCreate, rekeyRotate, …).
// Profiles the repository's dist/ (`npm run build`); for wasm function names instead of
// `wasm-function[123]`, build with `node js/tools/build.mjs --names`.
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { serve } from "../../js/tools/serve.mjs";
import { root } from "../../js/tools/toolchain.mjs";
import { summarize } from "./cpuprofile.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const option = (name, fallback) => (args.includes(name) ? args[args.indexOf(name) + 1] : fallback);
const row = args[0];
if (!row || row.startsWith("--")) {
  console.error("usage: node tests/benches/profile.mjs <row> [--side package|baseline] [--records N] [--top N]");
  process.exit(2);
}
const side = option("--side", "package");
const records = Number(option("--records", "1000"));
const top = Number(option("--top", "40"));
const config = { records1k: records, records10k: records, records100k: records, chunk: records, reads: records, kdfSmall: 1000, kdfDefault: 600_000, rounds: 1 };

const server = await serve([
  here,
  { mount: "/node_modules/vaultstore-wasm", dir: root },
  { mount: "/dexie", dir: join(root, "node_modules", "dexie", "dist") },
]);
const profileDir = join(root, ".test-tmp", "profile");
const browser = await chromium.launchPersistentContext(join(profileDir, "chromium"), {
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--headless=new", "--disable-gpu", "--disable-dev-shm-usage"],
});
try {
  const page = await browser.newPage();
  page.on("pageerror", (error) => console.error("page error:", error));
  await page.goto(`${server.url}/page.html`);
  await page.waitForFunction(() => document.getElementById("status").textContent === "ready");
  // One unprofiled run first: the engine compiles and caches its wasm, as in a long-lived page.
  await page.evaluate(([r, s, c]) => window.bench(r, s, c), [row, side, config]);
  const cdp = await browser.newCDPSession(page);
  await cdp.send("Profiler.enable");
  await cdp.send("Profiler.setSamplingInterval", { interval: 100 });
  // Only the timed part of the row: protocol.mjs's time() brackets it with console.profile.
  const timed = new Promise((resolve) => cdp.on("Profiler.consoleProfileFinished", (event) => resolve(event.profile)));
  await page.evaluate(() => (globalThis.PROFILE_TIMED = true));
  const sample = await page.evaluate(([r, s, c]) => window.bench(r, s, c), [row, side, config]);
  const profile = await timed;
  mkdirSync(profileDir, { recursive: true });
  const file = join(profileDir, `${row}-${side}.cpuprofile`);
  writeFileSync(file, JSON.stringify(profile));
  summarize(profile, { title: `${row}, ${side}, ${records} records: ${JSON.stringify(sample)}`, top });
  console.log(`\nprofile: ${file}`);
} finally {
  await browser.close();
  await server.close();
}
