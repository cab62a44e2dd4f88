// Install what a fresh machine lacks, skipping whatever is already there (a second run costs
// seconds). Used by `npm run build`, `npm test` and `npm start`.
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

export function run(cmd, args, opts = {}) {
  const started = Date.now();
  console.log(`\n▶ ${cmd} ${args.join(" ")}`);
  execFileSync(cmd, args, { stdio: "inherit", cwd: root, ...opts });
  console.log(`✔ ${cmd} ${args[0] ?? ""} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
}

export function output(cmd, args, opts = {}) {
  try {
    return execFileSync(cmd, args, { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"], cwd: root, ...opts });
  } catch {
    return "";
  }
}

/** The wasm-bindgen version pinned in Cargo.lock: the CLI must match it exactly. */
export function lockedWasmBindgenVersion() {
  const lock = readFileSync(join(root, "Cargo.lock"), "utf8");
  const match = lock.match(/name = "wasm-bindgen"\nversion = "([^"]+)"/);
  if (!match) throw new Error("wasm-bindgen is not in Cargo.lock");
  return match[1];
}

export function ensureWasmTarget() {
  if (!output("rustup", ["target", "list", "--installed"]).includes("wasm32-unknown-unknown")) {
    run("rustup", ["target", "add", "wasm32-unknown-unknown"]);
  }
}

export function ensureWasmBindgen() {
  const wanted = lockedWasmBindgenVersion();
  const have = output("wasm-bindgen", ["--version"]).trim();
  if (have !== `wasm-bindgen ${wanted}`) {
    // `--locked` fails against this registry (see TOOLCHAIN.md); the exact version is enough.
    run("cargo", ["install", "wasm-bindgen-cli", "--version", wanted]);
  }
}

export function ensureNodeModules() {
  const lock = join(root, "package-lock.json");
  const stamp = join(root, "node_modules", ".package-lock.json");
  // A checkout that gained a dev dependency since the last install installs again.
  const { devDependencies = {} } = JSON.parse(readFileSync(join(root, "package.json"), "utf8"));
  const missing = Object.keys(devDependencies).some((name) => !existsSync(join(root, "node_modules", name, "package.json")));
  if (missing || !existsSync(stamp) || readFileSync(stamp, "utf8").length === 0 || !existsSync(join(root, "node_modules", ".bin", "tsc"))) {
    run("npm", existsSync(lock) ? ["ci", "--no-audit", "--no-fund"] : ["install", "--no-audit", "--no-fund"]);
  }
}

/** Debian's chromium and chromedriver, for the browser tests. */
export function ensureChromium() {
  if (existsSync("/usr/bin/chromium") && existsSync("/usr/bin/chromedriver")) return;
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  const sudo = process.getuid && process.getuid() === 0 ? [] : ["sudo"];
  const apt = (args) => (sudo.length ? run("sudo", ["apt-get", ...args], { env }) : run("apt-get", args, { env }));
  apt(["update"]);
  apt(["install", "-y", "chromium", "chromium-driver"]);
}
