// The two download-size budgets of issue 8, measured on a built package (dist/ of this repository,
// or an installed copy): used at the end of `npm run build` and by the benchmark report.
//
//   browser  what a page that only uses IndexedDB downloads: dist/browser.js, every module it
//            imports statically, and the IndexedDB engine those modules fetch. The GlueSQL engine
//            (vaultstore_full*) is only reached by a dynamic import() on the first memory open.
//   edge     what `wrangler deploy --dry-run --outdir` uploads for a minimal worker importing the
//            package (the GlueSQL engine and the bundled worker).
//
// Sizes are gzip at level 9 (gzip -9), file by file, summed: each file is a separate download or
// upload module. kB and MB are 1,000 and 1,000,000 bytes.
//
// Only Node built-ins are imported at module load (the build runs before `npm ci` on a fresh
// clone); es-module-lexer is imported when a size is measured.
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { gzipSync } from "node:zlib";

export const BUDGETS = { browser: 150_000, edge: 1_000_000 };

/**
 * Where a budget is not met yet, the build enforces a ceiling instead: the last measured size
 * plus CEILING_MARGIN, kept in this committed file (`{ "browser": 179200 }`). A build that
 * measures less lowers it (rewrites the file, which the next commit shows); nothing raises it
 * but an explicit VAULTSTORE_SIZE_RAISE=1, which says so. The browser download is over its
 * 150 kB budget; what bounds it and what closing it would take is in the README ("Download size").
 */
export const CEILINGS_FILE = join(dirname(new URL(import.meta.url).pathname), "size-ceilings.json");
export const CEILING_MARGIN = 1_000;

export function readCeilings(file = CEILINGS_FILE) {
  return existsSync(file) ? JSON.parse(readFileSync(file, "utf8")) : {};
}

export function writeCeilings(ceilings, file = CEILINGS_FILE) {
  writeFileSync(file, `${JSON.stringify(ceilings, null, 2)}\n`);
}

/**
 * How a build treats the size limits, from its environment and arguments: `{ warnOnly, raise }`.
 * VAULTSTORE_SIZE_BUDGET=warn makes "over the limit" a warning (`npm start`, for the demo);
 * VAULTSTORE_SIZE_RAISE=1 raises a ceiling to the measured size. `--enforce-sizes` (what
 * `npm test` passes) ignores both: a variable left in a shell must not pass the tests.
 */
export function sizePolicy(env, argv) {
  if (argv.includes("--enforce-sizes")) return { warnOnly: false, raise: false };
  return { warnOnly: env.VAULTSTORE_SIZE_BUDGET === "warn", raise: env.VAULTSTORE_SIZE_RAISE === "1" };
}

/**
 * The ratchet, without I/O. `ceilings` as in the file, `measured` `{ name: gzip bytes }`; `raise`
 * allows a ceiling to go up. Returns `{ ceilings, changes, over }`: the ceilings to store,
 * what changed (lines to print), and the names over their limit (the ceiling, or the budget when
 * it has none), which fail the build. A ceiling whose budget is met is dropped: the budget is the
 * limit from then on.
 */
export function ratchet(ceilings, measured, { budgets = BUDGETS, margin = CEILING_MARGIN, raise = false } = {}) {
  const next = { ...ceilings };
  const changes = [];
  const over = [];
  for (const [name, size] of Object.entries(measured)) {
    const budget = budgets[name];
    const ceiling = ceilings[name];
    if (size <= budget) {
      if (ceiling !== undefined) {
        delete next[name];
        changes.push(`${name}: within its budget (${formatBytes(size)} ≤ ${formatBytes(budget)}); its ceiling is removed, the budget is the limit`);
      }
      continue;
    }
    if (ceiling === undefined || size > ceiling) {
      if (raise) {
        next[name] = size + margin;
        changes.push(`${name}: ceiling RAISED ${ceiling === undefined ? "from none" : `from ${formatBytes(ceiling)}`} to ${formatBytes(size + margin)} (VAULTSTORE_SIZE_RAISE=1)`);
      } else {
        over.push(name);
      }
      continue;
    }
    if (size + margin < ceiling) {
      next[name] = size + margin;
      changes.push(`${name}: ceiling lowered from ${formatBytes(ceiling)} to ${formatBytes(size + margin)} (measured ${formatBytes(size)})`);
    }
  }
  return { ceilings: next, changes, over };
}

const gzipBytes = (file) => gzipSync(readFileSync(file), { level: 9 }).length;

/**
 * Relative specifiers a module loads up front: static imports/re-exports and
 * `new URL("…", import.meta.url)`. es-module-lexer reads minified output and skips comments and
 * strings, which regular expressions over the source did not.
 */
function staticDependencies(parseModule, source) {
  const [imports] = parseModule(source);
  const found = [];
  for (const entry of imports) {
    if (entry.d === -1 && entry.n?.startsWith(".")) found.push(entry.n);
    if (entry.d === -2) {
      const url = /new\s+URL\(\s*["']([^"']+)["']\s*,\s*$/.exec(source.slice(Math.max(0, entry.s - 300), entry.s));
      if (url) found.push(url[1]);
    }
  }
  return found;
}

/**
 * The files a browser downloads for IndexedDB use, starting at `<packageDir>/dist/browser.js`,
 * with their gzip sizes. Dynamic `import()`s are not followed: that is how the GlueSQL engine
 * stays out.
 */
export async function browserDownload(packageDir) {
  const { init, parse } = await import("es-module-lexer");
  await init;
  const entry = join(packageDir, "dist", "browser.js");
  const seen = new Set();
  const queue = [entry];
  while (queue.length > 0) {
    const file = queue.shift();
    if (seen.has(file)) continue;
    seen.add(file);
    if (!file.endsWith(".js")) continue;
    for (const specifier of staticDependencies(parse, readFileSync(file, "utf8"))) {
      queue.push(join(dirname(file), specifier));
    }
  }
  const files = [...seen].map((file) => ({ file: relative(packageDir, file), gzip: gzipBytes(file) }));
  return { files, gzip: files.reduce((sum, f) => sum + f.gzip, 0) };
}

const WORKER = `import { Vault } from "vaultstore-wasm";

export default {
  async fetch() {
    const vault = await Vault.open({ backend: "memory" });
    return new Response(await vault.tokenCreate("value", crypto.getRandomValues(new Uint8Array(32))));
  },
};
`;

/**
 * What wrangler uploads for a minimal worker that imports the package at `packageDir`, built in
 * `workDir` (emptied first) with `wrangler` (the binary). A dry run takes about a second, so the
 * build runs the real thing rather than imitating its bundling.
 */
export function edgeUpload(packageDir, workDir, wrangler) {
  rmSync(workDir, { recursive: true, force: true });
  mkdirSync(join(workDir, "node_modules"), { recursive: true });
  symlinkSync(packageDir, join(workDir, "node_modules", "vaultstore-wasm"), "dir");
  writeFileSync(join(workDir, "worker.mjs"), WORKER);
  writeFileSync(
    join(workDir, "wrangler.jsonc"),
    JSON.stringify({ name: "vaultstore-size", main: "worker.mjs", compatibility_date: "2026-04-01" }, null, 2),
  );
  execFileSync(wrangler, ["deploy", "--dry-run", "--outdir", "out"], {
    cwd: workDir,
    env: { ...process.env, WRANGLER_SEND_METRICS: "false" },
    stdio: ["ignore", "ignore", "inherit"],
  });
  const out = join(workDir, "out");
  // The upload is the modules; wrangler also writes a source map and a README that it does not upload.
  const files = readdirSync(out)
    .filter((f) => !f.endsWith(".map") && f !== "README.md")
    .map((f) => ({ file: f, gzip: gzipBytes(join(out, f)) }));
  return { files, gzip: files.reduce((sum, f) => sum + f.gzip, 0) };
}

/**
 * Both sizes with their budgets: `[{ name, what, gzip, budget, limit, ok, withinLimit }]`; `ok`
 * is within the budget, `withinLimit` within what the build enforces (the ceiling of
 * `ceilings`, else the budget).
 */
export async function measureSizes(packageDir, workDir, wrangler, ceilings = readCeilings()) {
  const browser = await browserDownload(packageDir);
  const edge = edgeUpload(packageDir, workDir, wrangler);
  const size = (name, what, measured) => {
    const budget = BUDGETS[name];
    const limit = Math.max(budget, ceilings[name] ?? budget);
    return { name, what, gzip: measured.gzip, budget, limit, ok: measured.gzip <= budget, withinLimit: measured.gzip <= limit, files: measured.files };
  };
  return [
    size("browser", "browser download for IndexedDB use", browser),
    size("edge", "edge bundle (wrangler deploy --dry-run)", edge),
  ];
}

export const formatBytes = (bytes) => (bytes >= 1_000_000 ? `${(bytes / 1_000_000).toFixed(2)} MB` : `${(bytes / 1_000).toFixed(1)} kB`);
