// The example worker (www/worker) installed and bundled as a user deploys it, for every test and
// benchmark that runs it: its files copied beside the packed tarball (which
// tests/js/run-packed.mjs makes), then `wrangler deploy --dry-run`.
import { execFileSync } from "node:child_process";
import { cpSync, existsSync, readdirSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

/** Copy www/worker into `app` (emptied first) and install the packed tarball there. */
export function installExample(app) {
  const packed = join(root, ".test-tmp", "packed");
  const tarball = existsSync(packed) && readdirSync(packed).find((f) => f.endsWith(".tgz"));
  if (!tarball) throw new Error("run tests/js/run-packed.mjs first: it packs the tarball");
  rmSync(app, { recursive: true, force: true });
  cpSync(join(root, "www", "worker"), app, { recursive: true, filter: (src) => !src.includes("node_modules") });
  execFileSync("npm", ["install", "--no-audit", "--no-fund", "--ignore-scripts", "--omit=dev", join(packed, tarball)], {
    cwd: app,
    stdio: "inherit",
  });
}

/**
 * `wrangler deploy --dry-run` of the worker in `dir` with its `config`, into `dir/outdir`
 * (returned); wrangler's logs go to `logs`, its output to `stdio`.
 */
export function dryRun(dir, config, outdir, logs, stdio = "inherit") {
  execFileSync(join(root, "node_modules", ".bin", "wrangler"), ["deploy", "--dry-run", "--config", config, "--outdir", outdir], {
    cwd: dir,
    stdio,
    env: { ...process.env, WRANGLER_SEND_METRICS: "false", CI: "1", WRANGLER_LOG_PATH: logs },
  });
  return join(dir, outdir);
}
