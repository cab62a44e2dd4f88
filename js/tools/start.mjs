#!/usr/bin/env node
// `npm start`: build the package if dist/ is missing or older than the sources, then serve the
// demo (www/) with the package (dist/) on 127.0.0.1 and print the URL (and its localhost twin,
// which passkeys need). PORT picks the port
// (default 8080; a busy one falls back to any free port).
//
// The demo needs only the IndexedDB engine: the page is served as soon as that engine and the
// JavaScript are built, and the rest of the package (the GlueSQL engine, for Node, workers and
// memory vaults) goes on building in the background, logged to target/npm-start-build.log.
//
// It also serves the demo's sync server on the same origin, `POST /sync` (js/tools/sync-server.mjs:
// a Node vault on a libSQL file in .demo-sync/, NO AUTHENTICATION, 127.0.0.1 only). It answers
// 503 until the package's Node engine is built (at once when dist/ was already up to date).
//
// On a fresh clone (Rust and Node only) it first installs what the build needs: the npm dev
// dependencies, the wasm32 target and the wasm-bindgen CLI (each skipped when present). Only Node
// built-ins are imported at module load, since nothing is installed yet.
import { fork } from "node:child_process";
import { createWriteStream, existsSync, mkdirSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { serve } from "./serve.mjs";
import { SYNC_PATH, syncServer } from "./sync-server.mjs";
import { ensureNodeModules, ensureWasmBindgen, ensureWasmTarget, root } from "./toolchain.mjs";

const started = Date.now();
const elapsed = () => `${((Date.now() - started) / 1000).toFixed(0)} s`;

/** Newest modification time of the files under `dir` that `keep` accepts. */
function newest(dir, keep = () => true) {
  let latest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) latest = Math.max(latest, newest(path, keep));
    else if (keep(path)) latest = Math.max(latest, statSync(path).mtimeMs);
  }
  return latest;
}

/**
 * Run the build; resolve when the browser's part is in dist/ (or the build is done), and return
 * the build while it goes on.
 */
function buildUntilBrowserReady() {
  const log = join(root, "target", "npm-start-build.log");
  // The demo runs whatever the download sizes: over budget is a warning here, not a failure.
  const env = { ...process.env, VAULTSTORE_SIZE_BUDGET: "warn" };
  const child = fork(join(root, "js", "tools", "build.mjs"), [], { cwd: root, env, stdio: ["ignore", "pipe", "pipe", "ipc"] });
  let sink = process.stdout;
  child.stdout.on("data", (chunk) => sink.write(chunk));
  child.stderr.on("data", (chunk) => sink.write(chunk));
  const finished = new Promise((resolve) => child.on("exit", (code) => resolve(code === 0)));
  const ready = new Promise((resolve) => {
    child.on("message", (message) => {
      if (!message?.browserReady) return;
      mkdirSync(join(root, "target"), { recursive: true });
      sink = createWriteStream(log);
      resolve(true);
    });
    finished.then((ok) => resolve(ok ? true : false));
  });
  return { ready, finished, log, running: () => child.exitCode === null };
}

// What dist/ is built from: the crate and the TypeScript layer (not the build tools themselves).
const stamp = join(root, "dist", "BUILD");
const sources = Math.max(
  newest(join(root, "src")),
  newest(join(root, "js"), (path) => path.endsWith(".ts") || path.endsWith("tsconfig.json")),
  ...["Cargo.toml", "Cargo.lock"].map((f) => statSync(join(root, f)).mtimeMs),
);
let build;
if (!existsSync(stamp) || statSync(stamp).mtimeMs < sources) {
  try {
    ensureNodeModules();
    ensureWasmTarget();
    ensureWasmBindgen();
  } catch (error) {
    console.error(`\nInstalling what the build needs failed (${error.message}); nothing to serve.`);
    process.exit(1);
  }
  build = buildUntilBrowserReady();
  if (!(await build.ready)) {
    console.error("\nThe build failed (see above); nothing to serve.");
    process.exit(1);
  }
}

const syncFile = join(root, ".demo-sync", "demo.db");
const sync = syncServer(syncFile);
const roots = [join(root, "www"), { mount: "/dist", dir: join(root, "dist") }];
const { url } = await serve(roots, Number(process.env.PORT ?? 8080), { handle: sync.handle });
console.log(`\nvaultstore-wasm demo: ${url}/  (ready after ${elapsed()})\n(serving www/ and dist/ on 127.0.0.1; Ctrl+C to stop)`);
console.log(`sync server: ${url}${SYNC_PATH}  (libSQL file ${syncFile}; a local demo: no authentication, 127.0.0.1 only)`);
// Passkeys (WebAuthn) refuse an IP address as the site's id; localhost is allowed over plain http.
console.log(`for passkeys, open it as ${url.replace("127.0.0.1", "localhost")}/ (WebAuthn refuses an IP address)`);

/** Load the package's Node entry (the GlueSQL/SQL engine) into the sync server. */
const startSync = () =>
  sync.start(() => import(pathToFileURL(join(root, "dist", "node.js")).href)).then(
    () => console.log(`✔ sync server ready: ${url}${SYNC_PATH} (${elapsed()})`),
    (error) => console.log(`✖ the sync server could not start (${error.message}); the demo keeps working without sync.`),
  );

if (build?.running()) {
  console.log(`\nThe rest of the package (the GlueSQL engine for Node, workers and memory vaults) is building in the background; log: ${build.log}`);
  console.log(`Until it is built, ${SYNC_PATH} answers 503 (the demo's Sync panel says the server is starting).`);
  build.finished.then((ok) => {
    console.log(ok ? `\n✔ package fully built in dist/ (${elapsed()})` : `\n✖ the background build failed; see ${build.log}. The demo keeps working.`);
    if (ok) startSync();
    else sync.fail(`the package's build failed; see ${build.log}`);
  });
} else {
  await startSync();
}
