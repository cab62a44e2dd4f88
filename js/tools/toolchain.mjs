// Install what a fresh machine lacks, skipping whatever is already there (a second run costs
// seconds). Used by `npm run build`, `npm test` and `npm start`.
import { execFile, execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createHash } from "node:crypto";
import { homedir } from "node:os";
import { basename, dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

// Everything under js/tools/ imports only Node built-ins at module load: these scripts are what
// installs the npm packages (`npm start` on a fresh clone runs before any `npm ci`). An npm
// package is imported with `await import(...)` after ensureNodeModules() (tests/tools/imports.test.mjs).

export const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

/** Cargo's target directory: CARGO_TARGET_DIR (relative to the repository, as cargo reads it here) or target/. */
export const targetDir = process.env.CARGO_TARGET_DIR ? resolve(root, process.env.CARGO_TARGET_DIR) : join(root, "target");

/**
 * What the package is built from, as git sees it: `{ commit, dirty, changes }`. `changes` is a
 * hash of the uncommitted changes to what dist/ is made of (empty when clean), so two builds of one
 * dirty tree compare equal only when the edits are the same. Outside a git checkout (a tarball),
 * `commit` is "unknown".
 */
export function sourceState(dir = root) {
  const paths = ["--", ".", ":(exclude)js/tools/size-ceilings.json", ":(exclude)tests", ":(exclude)www", ":(exclude)README.md"];
  const commit = output("git", ["rev-parse", "HEAD"], { cwd: dir }).trim() || "unknown";
  const status = output("git", ["status", "--porcelain", "--untracked-files=all", ...paths], { cwd: dir });
  if (commit === "unknown" || status.trim() === "") return { commit, dirty: false, changes: "" };
  const hash = createHash("sha256").update(output("git", ["diff", "--binary", "HEAD", ...paths], { cwd: dir, maxBuffer: 1 << 30 }));
  for (const line of status.split("\n")) {
    // Untracked files are not in `git diff`: their names and contents count too.
    if (!line.startsWith("??")) continue;
    const file = line.slice(3);
    hash.update(`\0${file}\0`);
    try {
      hash.update(readFileSync(join(dir, file)));
    } catch {
      // gone meanwhile
    }
  }
  return { commit, dirty: true, changes: hash.digest("hex").slice(0, 16) };
}

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

/** clippy and rustfmt: `npm test` lints with both (rustup's default profile has them; minimal doesn't). */
export function ensureRustComponents() {
  const installed = output("rustup", ["component", "list", "--installed"]);
  const missing = ["clippy", "rustfmt"].filter((c) => !installed.includes(`${c}-`));
  if (missing.length) run("rustup", ["component", "add", ...missing]);
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
  // A dev dependency added since the last install (a pull) counts as missing too.
  const { devDependencies = {} } = JSON.parse(readFileSync(join(root, "package.json"), "utf8"));
  const missing = Object.keys(devDependencies).some((name) => !existsSync(join(root, "node_modules", name, "package.json")));
  if (missing || !existsSync(stamp) || readFileSync(stamp, "utf8").length === 0 || !existsSync(join(root, "node_modules", ".bin", "tsc"))) {
    run("npm", existsSync(lock) ? ["ci", "--no-audit", "--no-fund"] : ["install", "--no-audit", "--no-fund"]);
  }
}

/** Debian packages, installed with apt-get (through sudo unless root). */
function aptInstall(packages) {
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  const sudo = process.getuid && process.getuid() === 0 ? [] : ["sudo"];
  const apt = (args) => (sudo.length ? run("sudo", ["apt-get", ...args], { env }) : run("apt-get", args, { env }));
  apt(["update"]);
  apt(["install", "-y", ...packages]);
}

/** Debian's chromium and chromedriver, for the browser tests. */
export function ensureChromium() {
  if (existsSync("/usr/bin/chromium") && existsSync("/usr/bin/chromedriver")) return;
  aptInstall(["chromium", "chromium-driver"]);
}

/** The geckodriver `npm test` installs when it has none (crates.io has it; Debian does not). */
export const GECKODRIVER_VERSION = "0.37.1";

/**
 * Debian's Firefox ESR and geckodriver, for the IndexedDB suites in a second engine: Firefox's
 * IndexedDB is not Chromium's (a write that fails after `commit()` is one difference that lost
 * data). Returns the geckodriver to run; GECKODRIVER names another one.
 */
export function ensureFirefox() {
  if (!existsSync("/usr/bin/firefox-esr")) aptInstall(["firefox-esr"]);
  if (process.env.GECKODRIVER) return process.env.GECKODRIVER;
  const driver = join(process.env.CARGO_HOME ?? join(homedir(), ".cargo"), "bin", "geckodriver");
  if (!output(driver, ["--version"]).startsWith(`geckodriver ${GECKODRIVER_VERSION}`)) {
    run("cargo", ["install", "geckodriver", "--version", GECKODRIVER_VERSION]);
  }
  return driver;
}

/**
 * npm packages that only a test needs (bundlers, runtimes), at exact versions, installed into
 * `dir` (under .test-tmp/) and kept between runs: a second run installs nothing. Resolves when
 * they are there; the npm output is shown only when the install fails.
 */
export async function ensureNpmFolder(dir, dependencies) {
  const manifest = `${JSON.stringify({ name: basename(dir), private: true, type: "module", devDependencies: dependencies }, null, 2)}\n`;
  const stamp = join(dir, "node_modules", ".installed-by-vaultstore");
  if (existsSync(stamp) && readFileSync(stamp, "utf8") === manifest) return;
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "package.json"), manifest);
  const started = Date.now();
  const what = Object.entries(dependencies).map(([name, version]) => `${name}@${version}`).join(" ");
  await new Promise((resolve, reject) => {
    execFile("npm", ["install", "--no-audit", "--no-fund"], { cwd: dir, maxBuffer: 64 * 1024 * 1024 }, (error, stdout, stderr) => {
      if (error) reject(new Error(`npm install ${what} failed in ${dir}:\n${stdout}${stderr}`));
      else resolve();
    });
  });
  writeFileSync(stamp, manifest);
  console.log(`✔ installed ${what} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
}
