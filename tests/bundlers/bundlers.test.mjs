// The bundler matrix: tests/bundlers/app.js, a tiny app that imports the packed package, built by
// each bundler with its default configuration (no config file, no plugin), served on 127.0.0.1
// and run in headless Chromium: it creates a token in IndexedDB and reads it, and after a reload
// reads it again. The page must not download the GlueSQL engine until it opens a memory vault,
// and must log no error and fail no request. TARBALL names the packed package (run-packed.mjs
// makes it); the bundlers are installed under .test-tmp/bundlers/ at the versions below.
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { copyFileSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { serve } from "../../js/tools/serve.mjs";
import { ensureNpmFolder, root } from "../../js/tools/toolchain.mjs";
import { launchChromium, watchPage } from "../browser/chromium.mjs";

const tarball = process.env.TARBALL;
assert.ok(tarball, "TARBALL must name the packed package (npm pack)");
const work = join(root, ".test-tmp", "bundlers");

const page = (script) =>
  `<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>bundled app</title>${script}</head>` +
  `<body><p id="result">loading</p></body></html>\n`;

/**
 * Each bundler: the packages it needs, where the app's entry goes (the tool's default), how it
 * builds, and how its output is served. esbuild does not follow `new URL(…, import.meta.url)`,
 * so its app copies the .wasm files next to the bundle, as the README says.
 */
const BUNDLERS = [
  {
    name: "Vite 6", dir: "vite6", packages: { vite: "6.4.6" }, entry: "src/main.js",
    files: { "index.html": page('<script type="module" src="/src/main.js"></script>') },
    build: ["vite", "build"], preview: true,
  },
  {
    name: "Vite 8", dir: "vite8", packages: { vite: "8.3.8" }, entry: "src/main.js",
    files: { "index.html": page('<script type="module" src="/src/main.js"></script>') },
    build: ["vite", "build"], preview: true,
  },
  {
    name: "webpack 5", dir: "webpack5", packages: { webpack: "5.112.2", "webpack-cli": "5.1.4" }, entry: "src/index.js",
    build: ["webpack"], out: "dist", html: page('<script defer src="main.js"></script>'),
  },
  {
    name: "esbuild", dir: "esbuild", packages: { esbuild: "0.28.2" }, entry: "src/main.js",
    build: ["esbuild", "src/main.js", "--bundle", "--format=esm", "--outdir=dist"], out: "dist", copyWasm: true,
    html: page('<script type="module" src="main.js"></script>'),
  },
];

function execute(command, args, cwd) {
  return new Promise((resolve, reject) => {
    execFile(command, args, { cwd, maxBuffer: 64 * 1024 * 1024 }, (error, stdout, stderr) => {
      if (error) reject(new Error(`${command} ${args.join(" ")} failed:\n${stdout}${stderr}`));
      else resolve(`${stdout}${stderr}`);
    });
  });
}

function freePort() {
  return new Promise((resolve) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** `vite preview` (or, with `dev`, the dev server) on a free port, resolved once it answers. */
async function vite(dir, { dev = false } = {}) {
  const port = await freePort();
  const args = [...(dev ? [] : ["preview"]), "--host", "127.0.0.1", "--port", String(port), "--strictPort"];
  const child = spawn(join(dir, "node_modules", ".bin", "vite"), args, {
    cwd: dir, stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  child.stdout.on("data", (d) => (output += d));
  child.stderr.on("data", (d) => (output += d));
  const url = `http://127.0.0.1:${port}`;
  for (let attempt = 0; ; attempt++) {
    try {
      await fetch(url);
      break;
    } catch {
      if (attempt > 150 || child.exitCode !== null) throw new Error(`vite ${args[0]} did not start:\n${output}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return { url, close: async () => child.kill() };
}

const sha256 = (bytes) => createHash("sha256").update(bytes).digest("hex");

let browser;
let installed;

before(async () => {
  // All installs at once (npm mostly waits on the network and the cache), then the package.
  installed = Promise.all(
    BUNDLERS.map(async (b) => {
      const dir = join(work, b.dir);
      await ensureNpmFolder(dir, b.packages);
      await execute("npm", ["install", "--no-save", "--no-audit", "--no-fund", tarball], dir);
    }),
  );
  browser = await launchChromium();
  await installed;
});

after(async () => {
  await browser?.close();
});

for (const bundler of BUNDLERS) {
  test(`${bundler.name}: a default build runs in Chromium, on IndexedDB, without the GlueSQL engine`, async () => {
    const dir = join(work, bundler.dir);
    const packageDist = join(dir, "node_modules", "vaultstore-wasm", "dist");
    for (const out of ["dist", "src"]) rmSync(join(dir, out), { recursive: true, force: true });
    mkdirSync(join(dir, "src"), { recursive: true });
    copyFileSync(join(root, "tests", "bundlers", "app.js"), join(dir, bundler.entry));
    for (const [file, text] of Object.entries(bundler.files ?? {})) writeFileSync(join(dir, file), text);

    const started = Date.now();
    await execute(join(dir, "node_modules", ".bin", bundler.build[0]), bundler.build.slice(1), dir);
    console.log(`${bundler.name}: built in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    if (bundler.html) writeFileSync(join(dir, bundler.out, "index.html"), bundler.html);
    if (bundler.copyWasm) {
      for (const f of readdirSync(join(packageDist, "wasm")).filter((f) => f.endsWith(".wasm"))) {
        copyFileSync(join(packageDist, "wasm", f), join(dir, bundler.out, f));
      }
    }

    const engines = {
      [sha256(readFileSync(join(packageDist, "wasm", "vaultstore_idb_bg.wasm")))]: "idb",
      [sha256(readFileSync(join(packageDist, "wasm", "vaultstore_full_bg.wasm")))]: "full",
    };
    const server = bundler.preview ? await vite(dir) : await serve([join(dir, bundler.out)]);
    const context = await browser.newContext();
    try {
      const tab = await context.newPage();
      const problems = watchPage(tab);
      const urls = [];
      const wasm = [];
      tab.on("response", (response) => {
        urls.push(response.url());
        if (response.headers()["content-type"]?.startsWith("application/wasm") || response.url().endsWith(".wasm")) {
          wasm.push(response.body().then((body) => engines[sha256(body)] ?? `unknown ${response.url()}`));
        }
      });
      const result = async () => {
        await tab.waitForFunction(() => document.getElementById("result").textContent !== "loading", null, { timeout: 30_000 });
        const text = await tab.textContent("#result");
        assert.ok(text.startsWith("{"), `the app reports: ${text}`);
        return JSON.parse(text);
      };

      await tab.goto(`${server.url}/`);
      const first = await result();
      assert.deepEqual(first.sync, { isToken: true, query: { limit: 1 }, invalid: "INVALID_ARGUMENT" }, "synchronous helpers before any await");
      assert.equal(first.created, true);
      assert.equal(first.value, "sealed in a bundled app");

      await tab.reload();
      const second = await result();
      assert.equal(second.created, false, "the token came back from IndexedDB");
      assert.equal(second.token, first.token);
      assert.equal(second.value, "sealed in a bundled app");
      assert.equal(second.count, 1);

      assert.deepEqual((await Promise.all(wasm)).sort(), ["idb", "idb"], "one IndexedDB engine per load, no GlueSQL");
      assert.deepEqual(urls.filter((u) => u.includes("vaultstore_full")), [], "no request for the GlueSQL engine");

      assert.equal(await tab.evaluate(() => window.openMemoryVault()), "in memory");
      assert.deepEqual((await Promise.all(wasm)).filter((e) => e === "full"), ["full"], "the GlueSQL engine, once, on demand");
      assert.deepEqual(problems, []);
    } finally {
      await context.close();
      await server.close();
    }
  });
}

// Not a build, but where users first meet the package. Vite 8's dev server needs nothing; Vite 6's
// pre-bundles dependencies into a folder without the .wasm files, so the README's one line of
// config (`optimizeDeps.exclude`) is what makes it work: this checks that line.
for (const [bundler, config] of [[BUNDLERS[1], undefined], [BUNDLERS[0], 'export default { optimizeDeps: { exclude: ["vaultstore-wasm"] } };\n']]) {
  test(`${bundler.name}: the dev server serves the app${config ? " with the README's optimizeDeps line" : ""}`, async () => {
    const dir = join(work, bundler.dir);
    if (config) writeFileSync(join(dir, "vite.config.js"), config);
    rmSync(join(dir, "node_modules", ".vite"), { recursive: true, force: true }); // dependencies pre-bundled from an older tarball
    const server = await vite(dir, { dev: true });
    const context = await browser.newContext();
    try {
      const tab = await context.newPage();
      const problems = watchPage(tab);
      await tab.goto(`${server.url}/`);
      await tab.waitForFunction(() => document.getElementById("result").textContent !== "loading", null, { timeout: 30_000 });
      const outcome = JSON.parse(await tab.textContent("#result").then((t) => (t.startsWith("{") ? t : JSON.stringify({ failed: t }))));
      assert.equal(outcome.value, "sealed in a bundled app", JSON.stringify(outcome));
      assert.equal(await tab.evaluate(() => window.openMemoryVault()), "in memory");
      assert.deepEqual(problems, []);
    } finally {
      await context.close();
      await server.close();
      rmSync(join(dir, "vite.config.js"), { force: true });
    }
  });
}
