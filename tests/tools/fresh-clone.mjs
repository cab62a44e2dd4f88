#!/usr/bin/env node
// The README's commands on a fresh clone (issue 13): `git clone` this repository's HEAD into a
// temporary folder outside it (no node_modules, no dist/), then there, in turn:
//
//   npm start                  must install what it needs, build, and print the demo's URL; the
//                              page is loaded in headless Chromium, a vault is created and an
//                              entry added and read back through the demo's UI; once its background
//                              build is done, its sync server (POST /sync) must carry a value from
//                              one Node replica to another; then it is stopped
//   npm run bench -- --quick   with dist/ removed: it must run `npm run build` itself (dist/BUILD
//                              naming the clone's commit, clean), then the benchmark smoke run
//
// The clone shares the cargo target directory (CARGO_TARGET_DIR), so only this crate is compiled
// again. It lives outside this repository: cargo merges every .cargo/config.toml from the working
// directory up, so a clone inside it would get the rustflags twice and rebuild every dependency. Both checkouts write the same un-hashed library files there, so this repository's own
// are moved aside first and put back afterwards: its next build must not pick up the clone's.
// The clone's wasm is byte-identical to this checkout's, so its builds take wasm-opt's output
// from the shared cache (js/tools/wasm-opt-cache.mjs) that npm test's own build just filled with
// the same binaryen: wasm-opt itself ran there.
//
// A clone has only what is committed: with uncommitted changes, this tests HEAD, not them (it says
// so). Run alone: `node tests/tools/fresh-clone.mjs` (after `npm ci`; Chromium at /usr/bin).
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { output, root, run, targetDir } from "../../js/tools/toolchain.mjs";
import { launchChromium, watchPage } from "../browser/chromium.mjs";

const started = Date.now();
const seconds = (since) => `${((Date.now() - since) / 1000).toFixed(0)} s`;
const work = mkdtempSync(join(tmpdir(), "vaultstore-fresh-clone-"));
const clone = join(work, "repo");

const head = output("git", ["rev-parse", "HEAD"]).trim();
assert.match(head, /^[0-9a-f]{40}$/, "the repository must be a git checkout to be cloned");
const dirty = output("git", ["status", "--porcelain"]).trim();
if (dirty) {
  console.warn(
    `\n⚠ WARNING: the working tree has uncommitted changes. A clone has only commits: this step tests HEAD (${head.slice(0, 7)}), ` +
      `not your changes. Commit them to have them tested here.\n${dirty.split("\n").slice(0, 10).map((l) => `   ${l}`).join("\n")}\n`,
  );
}

run("git", ["clone", "--no-hardlinks", "--quiet", root, clone]);
run("git", ["-C", clone, "checkout", "--quiet", "--detach", head]);
assert.ok(!existsSync(join(clone, "node_modules")) && !existsSync(join(clone, "dist")), "a fresh clone has no node_modules and no dist/");

// The user's environment, minus what would make a failure pass (npm test's own build rules).
const env = { ...process.env, CARGO_TARGET_DIR: targetDir, PORT: "0" };
delete env.VAULTSTORE_SIZE_BUDGET;
delete env.VAULTSTORE_SIZE_RAISE;
delete env.CONSUMER_DIR;
delete env.BENCH_QUICK;

// This checkout's outputs, which the clone's builds would overwrite: with a cdylib in the crate,
// cargo names the library's files without a hash (deps/vaultstore_wasm.wasm,
// deps/libvaultstore_wasm.rlib, and their copies one level up).
const shared = ["release", "release-speed"]
  .flatMap((profile) => ["", "deps"].map((sub) => join(targetDir, "wasm32-unknown-unknown", profile, sub)))
  .filter(existsSync)
  .flatMap((dir) => readdirSync(dir).filter((f) => /^(lib)?vaultstore_wasm\.(wasm|rlib|d)$/.test(f)).map((f) => join(dir, f)));
const aside = join(targetDir, "fresh-clone-aside");
rmSync(aside, { recursive: true, force: true });
mkdirSync(aside, { recursive: true });
const moved = shared.map((file, i) => {
  const to = join(aside, String(i));
  renameSync(file, to);
  return { file, to };
});

/**
 * `npm start` in the clone, until it prints the demo's URL: `{ url, stop, printed }`, where
 * `printed(pattern, ms)` resolves once its output matches `pattern`.
 */
async function npmStart() {
  // Its own process group, so that stopping it stops the build it forked too.
  const child = spawn("npm", ["start"], { cwd: clone, env, detached: true, stdio: ["ignore", "pipe", "pipe"] });
  let log = "";
  const exited = new Promise((resolve) => child.on("exit", (code, signal) => resolve(code ?? signal)));
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`npm start printed no URL in 20 minutes:\n${log.slice(-4000)}`)), 20 * 60_000);
    const read = (chunk) => {
      process.stdout.write(chunk);
      log += chunk;
      const match = /vaultstore-wasm demo: (http:\/\/127\.0\.0\.1:\d+)\//.exec(log);
      if (match) {
        clearTimeout(timer);
        resolve(match[1]);
      }
    };
    child.stdout.setEncoding("utf8").on("data", read);
    child.stderr.setEncoding("utf8").on("data", read);
    exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`npm start exited (${code}) before printing a URL:\n${log.slice(-4000)}`));
    });
  });
  const printed = (pattern, ms) =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`npm start did not print ${pattern} in ${ms / 60_000} minutes:\n${log.slice(-4000)}`)), ms);
      const check = () => {
        if (!pattern.test(log)) return;
        clearTimeout(timer);
        child.stdout.off("data", check);
        child.stderr.off("data", check);
        resolve();
      };
      child.stdout.on("data", check);
      child.stderr.on("data", check);
      check();
    });
  const stop = async () => {
    try {
      process.kill(-child.pid, "SIGTERM");
    } catch {
      // already gone
    }
    await exited;
  };
  return { url, stop, printed };
}

/**
 * The demo's sync server at `url` answers once npm start's build is done: a value sealed by one
 * Node replica (the clone's own build) reaches another through it.
 */
async function useSyncServer({ url, printed }) {
  await printed(/✔ sync server ready: /, 20 * 60_000);
  const { Vault } = await import(pathToFileURL(join(clone, "dist", "node.js")).href);
  const remote = { url: `${url}/sync`, headers: { "x-vault-name": `fresh-${Date.now()}` } };
  const password = "fresh clone password 1";
  // 100,000 iterations: the demo's server, like any opened with the default floor, refuses to
  // take a cheaper vault (SYNC_CONFLICT).
  const first = await Vault.open({ backend: "memory", kdfIterations: 100_000 });
  const token = await first.tokenCreate("SECRET-fresh-clone-sync", password);
  assert.ok((await first.sync(remote)).pushed > 0, "the sync server accepted the first replica's changes");
  const second = await Vault.open({ backend: "memory", kdfIterations: 100_000 });
  assert.ok((await second.sync(remote)).pulled > 0, "the second replica pulled them");
  assert.equal(await second.tokenRead(token, password), "SECRET-fresh-clone-sync", "the value went through the demo's sync server");
  await first.close();
  await second.close();
}

/** Create a vault, add an entry and read its secret back, in the demo at `url`. */
async function useDemo(url) {
  const browser = await launchChromium();
  try {
    const page = await browser.newPage();
    const problems = watchPage(page);
    const button = (name) => page.getByRole("button", { name, exact: true });
    const status = (pattern) => page.waitForFunction((p) => new RegExp(p).test(document.getElementById("status").textContent), pattern.source);
    const password = "fresh clone password 1";
    const [name, secret] = ["Fresh clone", `SECRET-${Date.now()}`];
    await page.goto(`${url}/`);
    await page.waitForFunction(() => document.getElementById("unlock-hint").textContent !== "Opening…");
    await page.getByLabel("Vault name", { exact: true }).fill(`fresh-${Date.now()}`);
    await page.getByLabel("Vault name", { exact: true }).press("Tab");
    await page.waitForFunction(() => document.getElementById("unlock-title").textContent === "Create a vault");
    await page.getByLabel("Password", { exact: true }).fill(password);
    await page.getByLabel("Repeat the password").fill(password);
    await button("Create vault").click();
    await status(/created/);
    await button("Add entry").click();
    await page.waitForSelector("#entry-dialog[open]");
    await page.getByLabel("Name", { exact: true }).fill(name);
    await page.getByLabel("Secret", { exact: true }).fill(secret);
    await button("Save").click();
    await status(new RegExp(`“${name}” added`));
    await button(`Reveal the secret of ${name}`).click();
    await page.waitForSelector("#rows .secret");
    assert.equal(await page.textContent("#rows .secret"), secret, "the demo reads back the secret it stored");
    assert.deepEqual(problems, [], "the demo logs no error and fails no request");
  } finally {
    await browser.close();
  }
}

try {
  let step = Date.now();
  console.log(`\n▶ npm start in a fresh clone of ${head.slice(0, 7)} (${clone})`);
  const start = await npmStart();
  try {
    assert.ok(existsSync(join(clone, "node_modules", ".bin", "tsc")), "npm start installed the npm dev dependencies");
    await useDemo(start.url);
    await useSyncServer(start);
  } finally {
    await start.stop();
  }
  console.log(`✔ npm start on a fresh clone: demo served and used, its sync server synced two replicas (${seconds(step)})`);

  // `npm run bench` on a tree without a finished build runs `npm run build` itself: one build
  // tests both commands (the stopped `npm start` may have left half a dist/; none is left).
  rmSync(join(clone, "dist"), { recursive: true, force: true });
  step = Date.now();
  run("npm", ["run", "bench", "--", "--quick"], { cwd: clone, env });
  const build = JSON.parse(readFileSync(join(clone, "dist", "BUILD"), "utf8"));
  assert.equal(build.commit, head, "dist/BUILD names the commit it was built from");
  assert.equal(build.dirty, false, "a fresh clone builds clean");
  assert.match(readFileSync(join(clone, ".test-tmp", "bench", "latest.md"), "utf8"), new RegExp(`package commit \\| ${head.slice(0, 7)} `));
  console.log(`✔ npm run build, then npm run bench -- --quick on it, in the clone (${seconds(step)})`);
} finally {
  for (const { file, to } of moved) {
    rmSync(file, { force: true });
    renameSync(to, file);
  }
  rmSync(aside, { recursive: true, force: true });
  rmSync(work, { recursive: true, force: true });
}
console.log(`\n✔ the README's commands work on a fresh clone of ${head.slice(0, 7)}${dirty ? " (HEAD only: the tree had uncommitted changes)" : ""} (${seconds(started)})`);
