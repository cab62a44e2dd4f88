// The example worker (www/worker/) as users run it: the packed package installed next to it,
// `wrangler deploy --dry-run` bundling it from its wrangler.jsonc, and the bundle run in
// Miniflare (workerd) with D1, then with a Durable Object, both persisted to temporary folders:
// tokens survive a restart, two isolates racing for one custom token give one 201 and one 409,
// an aborted key rotation leaves every row byte-identical. Last, WebCrypto PBKDF2 capped at
// 100,000 iterations as in production: a 600,000-iteration vault still opens (Rust PBKDF2) and
// its keys match Node's. The README's copy of the example is checked against its files. Run
// after tests/js/run-packed.mjs, which packs the tarball.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { cpSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, afterEach, before, describe, test } from "node:test";
import { fileURLToPath, pathToFileURL } from "node:url";
import { createClient } from "@libsql/client";
import { Miniflare } from "miniflare";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const bin = (name) => join(root, "node_modules", ".bin", name);
const app = join(root, ".test-tmp", "worker-example");
const scratch = mkdtempSync(join(tmpdir(), "vaultstore-worker-"));
after(() => rmSync(scratch, { recursive: true, force: true }));

const API_TOKEN = "test-api-token-0123456789";
const VAULT_KEY = "8f".repeat(32);
// The next key as base64, the other format the worker accepts.
const VAULT_KEY_NEXT = Buffer.alloc(32, 7).toString("base64");
const auth = { Authorization: `Bearer ${API_TOKEN}`, "Content-Type": "application/json" };

/** Every Miniflare started, so a failing test still stops its workerd processes. */
const running = new Set();
function start(options) {
  const mf = new Miniflare(options);
  running.add(mf);
  const dispose = mf.dispose.bind(mf);
  mf.dispose = () => {
    running.delete(mf);
    return dispose();
  };
  return mf;
}
afterEach(async () => {
  await Promise.allSettled([...running].map((mf) => mf.dispose()));
});

/** Install the example as a user would: its files, the packed tarball, then wrangler's dry run. */
before(() => {
  const packed = join(root, ".test-tmp", "packed");
  const tarball = existsSync(packed) && readdirSync(packed).find((f) => f.endsWith(".tgz"));
  if (!tarball) throw new Error("run tests/js/run-packed.mjs first: it packs the tarball");
  rmSync(app, { recursive: true, force: true });
  cpSync(join(root, "www", "worker"), app, { recursive: true, filter: (src) => !src.includes("node_modules") });
  execFileSync("npm", ["install", "--no-audit", "--no-fund", "--ignore-scripts", "--omit=dev", join(packed, tarball)], {
    cwd: app,
    stdio: "inherit",
  });
});

function dryRun(config, outdir) {
  execFileSync(bin("wrangler"), ["deploy", "--dry-run", "--config", config, "--outdir", outdir], {
    cwd: app,
    stdio: "inherit",
    env: { ...process.env, WRANGLER_SEND_METRICS: "false", CI: "1", WRANGLER_LOG_PATH: join(scratch, "wrangler-logs") },
  });
  const files = readdirSync(join(app, outdir));
  assert.ok(files.includes("index.js"), `${outdir} has the bundle: ${files}`);
  assert.ok(files.some((f) => f.endsWith(".wasm")), `${outdir} has the engine as a wasm module: ${files}`);
  return join(app, outdir);
}

/** Miniflare options running the bundle in `dir` (entry `main`) with either storage. */
function worker(dir, storage, persist, { main = "index.js", bindings = {}, name } = {}) {
  const options = {
    name,
    modules: true,
    scriptPath: join(dir, main),
    // As wrangler uploads it: every .js of the bundle an ES module, .wasm a compiled module.
    modulesRules: [
      { type: "ESModule", include: ["**/*.js"] },
      { type: "CompiledWasm", include: ["**/*.wasm"] },
    ],
    compatibilityDate: "2026-04-01",
    bindings: { API_TOKEN, VAULT_KEY, VAULT_KEY_NEXT, ...bindings },
  };
  if (storage === "d1") return { ...options, d1Databases: { DB: "vault" } };
  return { ...options, durableObjects: { VAULT_OBJECT: { className: "VaultObject", useSQLite: true, scriptName: "a" } } };
}

function persistence(storage, dir) {
  return storage === "d1" ? { d1Persist: dir } : { durableObjectsPersist: dir };
}

/** A JSON request to a Miniflare instance or one of its workers. */
async function call(target, method, path, body) {
  const send = target instanceof Miniflare ? target.dispatchFetch.bind(target) : target.fetch.bind(target);
  const response = await send(`http://worker${path}`, { method, headers: auth, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : null };
}

/**
 * Every row of the vault tables in the SQLite files Miniflare persisted under `dir` (D1's and
 * the Durable Object's alike), read with libSQL once Miniflare has let go of them.
 */
async function rows(dir) {
  const files = [];
  const walk = (d) => {
    for (const entry of readdirSync(d, { withFileTypes: true })) {
      if (entry.isDirectory()) walk(join(d, entry.name));
      else if (entry.name.endsWith(".sqlite")) files.push(join(d, entry.name));
    }
  };
  walk(dir);
  const dump = [];
  for (const file of files.sort()) {
    const db = createClient({ url: `file:${file}` });
    try {
      for (const table of ["vaultstore_records", "vaultstore_meta"]) {
        dump.push(JSON.stringify((await db.execute(`SELECT * FROM ${table} ORDER BY 1, 2, 3, 4`)).rows.map((r) => Array.from(r))));
      }
    } catch {
      // Miniflare's own files hold no vault tables.
    } finally {
      db.close();
    }
  }
  assert.ok(dump.length >= 2, `vault tables found under ${dir}`);
  return dump;
}

let bundle;
let bundleDo;

test("the README shows the example as it is in www/worker", () => {
  const readme = readFileSync(join(root, "README.md"), "utf8");
  const block = (marker) => `${readme.split(`<!-- ${marker} -->\n`)[1].replace(/^```\w*\n/, "").split("\n```\n")[0]}\n`;
  assert.equal(block("worker-config"), readFileSync(join(root, "www", "worker", "wrangler.jsonc"), "utf8"));
  assert.equal(block("worker-code"), readFileSync(join(root, "www", "worker", "src", "index.js"), "utf8"));
});

test("the adapters take a D1 binding and Durable Object storage as @cloudflare/workers-types types them", () => {
  cpSync(join(root, "tests", "worker", "workers-types.ts"), join(app, "workers-types.ts"));
  execFileSync(
    bin("tsc"),
    ["--noEmit", "--strict", "--target", "ES2022", "--module", "ES2022", "--moduleResolution", "Bundler", "--customConditions", "workerd",
      "--lib", "ES2022", "--types", "@cloudflare/workers-types", "workers-types.ts"],
    { cwd: app, stdio: "inherit" },
  );
});

test("wrangler deploy --dry-run bundles the example from its wrangler.jsonc alone", () => {
  bundle = dryRun("wrangler.jsonc", "dist");
  bundleDo = dryRun("wrangler.durable-object.jsonc", "dist-do");
});

for (const storage of ["d1", "durable-object"]) {
  describe(`the example worker on ${storage === "d1" ? "D1" : "a Durable Object"}`, () => {
    const persist = join(scratch, storage);
    const dir = () => (storage === "d1" ? bundle : bundleDo);
    let tokens;
    const fields = Object.fromEntries(Array.from({ length: 200 }, (_, i) => [`field${i}`, `value ${i} ${"x".repeat(i % 7)}`]));

    test("200 values tokenized, then read back by a new Miniflare on the same folder", async () => {
      const first = start({ ...worker(dir(), storage, persist, { name: "a" }), ...persistence(storage, persist) });
      const created = await call(first, "POST", "/tokenize", fields);
      assert.equal(created.status, 200, JSON.stringify(created.body));
      tokens = Object.values(created.body);
      assert.equal(new Set(tokens).size, 200);
      assert.equal((await call(first, "POST", "/tokenize", { card: 4111 })).status, 400);
      await first.dispose();

      const second = start({ ...worker(dir(), storage, persist, { name: "a" }), ...persistence(storage, persist) });
      const read = await call(second, "POST", "/detokenize", { tokens });
      assert.equal(read.status, 200, JSON.stringify(read.body));
      assert.deepEqual(Object.values(read.body.values).sort(), Object.values(fields).sort());
      assert.equal(read.body.values[tokens[7]], fields.field7);
      // The error statuses of the API.
      const unauthorized = await second.dispatchFetch("http://worker/detokenize", { method: "POST", body: "{}" });
      assert.equal(unauthorized.status, 401);
      assert.equal((await unauthorized.json()).error.code, "UNAUTHORIZED");
      const missing = await call(second, "POST", "/detokenize", { tokens: ["tk_notthere0000000"] });
      assert.deepEqual([missing.status, missing.body.error.code, missing.body.error.tokens], [404, "RECORD_NOT_FOUND", ["tk_notthere0000000"]]);
      assert.equal((await call(second, "POST", `/tokens/${tokens[0]}/renew`, { expiresAt: Date.now() - 1000 })).status, 204);
      const expired = await call(second, "POST", "/detokenize", { tokens: [tokens[0]] });
      assert.equal(expired.status, 200, "expired tokens are left out of a batch read");
      assert.deepEqual(expired.body.values, {});
      assert.equal((await call(second, "DELETE", `/tokens/${tokens[1]}`)).status, 204);
      assert.equal((await call(second, "POST", "/detokenize", { tokens: [tokens[1]] })).status, 404);
      await second.dispose();
    });

    test("two isolates writing one custom token at once: one 201, one 409 TOKEN_EXISTS", async () => {
      const mf = start({
        workers: [worker(dir(), storage, persist, { name: "a" }), worker(dir(), storage, persist, { name: "b" })],
        ...persistence(storage, persist),
      });
      const [a, b] = [await mf.getWorker("a"), await mf.getWorker("b")];
      for (let round = 0; round < 5; round++) {
        const token = `tk_contested_${round}`;
        const results = await Promise.all([
          call(a, "PUT", `/tokens/${token}`, { value: "from a" }),
          call(b, "PUT", `/tokens/${token}`, { value: "from b" }),
        ]);
        assert.deepEqual(results.map((r) => r.status).sort(), [201, 409], JSON.stringify(results));
        assert.equal(results.find((r) => r.status === 409).body.error.code, "TOKEN_EXISTS");
        const winner = results.find((r) => r.status === 201) === results[0] ? "from a" : "from b";
        assert.equal((await call(b, "POST", "/detokenize", { tokens: [token] })).body.values[token], winner);
      }
      await mf.dispose();
    });

    test("a rotation stopped before it commits leaves every row byte-identical; a finished one moves every value", async () => {
      const restart = (bindings) => start({ ...worker(dir(), storage, persist, { name: "a", bindings }), ...persistence(storage, persist) });
      const before = await rows(persist);
      let mf = restart();
      const stopped = await call(mf, "POST", "/admin/rotate", { maxRecords: 150 });
      assert.deepEqual([stopped.status, stopped.body.error.code], [409, "ABORTED"]);
      await mf.dispose();
      assert.deepEqual(await rows(persist), before);

      mf = restart();
      const done = await call(mf, "POST", "/admin/rotate", {});
      assert.equal(done.status, 200, JSON.stringify(done.body));
      assert.ok(done.body.moved >= 198, `moved ${done.body.moved}`);
      await mf.dispose();
      assert.notDeepEqual(await rows(persist), before);
      // With the next key as VAULT_KEY every value opens; the old key opens none.
      mf = restart({ VAULT_KEY: VAULT_KEY_NEXT });
      const read = await call(mf, "POST", "/detokenize", { tokens: tokens.slice(2) });
      assert.equal(Object.keys(read.body.values).length, 198);
      await mf.dispose();
      mf = restart();
      const old = await call(mf, "POST", "/detokenize", { tokens: [tokens[2]] });
      assert.deepEqual([old.status, old.body.error.code], [401, "INVALID_PASSWORD"]);
      await mf.dispose();
    });
  });
}

test("WebCrypto capped at 100,000 PBKDF2 iterations, as deployed: a 600,000-iteration vault opens with Rust PBKDF2 and its keys match Node's", async () => {
  // Production refuses `deriveBits` above 100,000 iterations; local workerd does not. This entry
  // imports a module that makes it refuse, then the unchanged bundle.
  writeFileSync(
    join(bundle, "capped-pbkdf2.js"),
    `const original = SubtleCrypto.prototype.deriveBits;
globalThis.__refused = 0;
SubtleCrypto.prototype.deriveBits = function (algorithm, key, length) {
  if (algorithm?.name === "PBKDF2" && algorithm.iterations > 100000) {
    globalThis.__refused++;
    return Promise.reject(new DOMException(\`Pbkdf2 failed: iteration counts above 100000 are not supported (requested \${algorithm.iterations}).\`, "NotSupportedError"));
  }
  return original.call(this, algorithm, key, length);
};`,
  );
  writeFileSync(
    join(bundle, "capped.js"),
    `import "./capped-pbkdf2.js";
import worker from "./index.js";
export * from "./index.js";
export default {
  async fetch(request, env, ctx) {
    const response = await worker.fetch(request, env, ctx);
    const reply = new Response(response.body, response);
    reply.headers.set("x-pbkdf2-refused", String(globalThis.__refused));
    return reply;
  },
};`,
  );
  const password = "correct horse battery staple, deployed";
  const persist = join(scratch, "capped");
  const mf = start({
    ...worker(bundle, "d1", persist, { main: "capped.js", bindings: { VAULT_KEY: "", VAULT_PASSWORD: password } }),
    d1Persist: persist,
  });
  const timed = async (body) => {
    const started = performance.now();
    const response = await mf.dispatchFetch("http://worker/tokenize", { method: "POST", headers: auth, body: JSON.stringify(body) });
    return { ms: performance.now() - started, response, body: await response.json() };
  };
  const first = await timed({ card: "4111 1111 1111 1111" });
  assert.equal(first.response.status, 200, JSON.stringify(first.body));
  assert.equal(first.response.headers.get("x-pbkdf2-refused"), "1", "WebCrypto refused, so the Rust fallback derived the key");
  const second = await timed({ card: "5500 0000 0000 0004" });
  assert.equal(second.response.headers.get("x-pbkdf2-refused"), "1", "the key stays cached in the isolate");
  console.log(
    `# PBKDF2-HMAC-SHA256, 600,000 iterations, in workerd with WebCrypto capped: first request ${first.ms.toFixed(0)} ms (Rust fallback derives the key), next request ${second.ms.toFixed(0)} ms (cached)`,
  );
  // Node reads the same D1 database and derives the key with WebCrypto: the values open.
  const { Vault, d1 } = await import(pathToFileURL(join(app, "node_modules", "vaultstore-wasm", "dist", "node.js")));
  const vault = await Vault.open({ backend: "sql", sql: d1(await mf.getD1Database("DB")) });
  assert.deepEqual(await vault.tokensRead([first.body.card, second.body.card], password), {
    [first.body.card]: "4111 1111 1111 1111",
    [second.body.card]: "5500 0000 0000 0004",
  });
  await vault.close();
  await mf.dispose();
});
