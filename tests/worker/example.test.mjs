// The example worker (www/worker/) as users run it: the packed package installed next to it,
// `wrangler deploy --dry-run` bundling it from its wrangler.jsonc, and the bundle run in
// Miniflare (workerd) with D1, then with a Durable Object, both persisted to temporary folders:
// tokens survive a restart, two isolates racing for one custom token give one 201 and one 409,
// an aborted key rotation leaves every row byte-identical, and the README's key rotation steps,
// run with an isolate of the previous version writing during the rollout and another writing
// throughout the rotation, lose no write. Each credential opens only its own routes; a failing
// database's text reaches the worker's log, never the client. Last, WebCrypto PBKDF2 capped at
// 100,000 iterations as in production: a 600,000-iteration vault still opens (Rust PBKDF2) and
// its keys match Node's. Its /sync route, on D1 and on a Durable Object per user: two devices of
// a user (memory vaults in Node) sync through it with the user's credential (minted by the
// example's script), another user's devices see nothing of theirs, forged credentials get 401
// and open nothing, a dump of the server's tables holds no value, password, key or credential,
// and a user whose D1 vault the isolate closed (65 users) syncs on. The README's copy of the example is checked against its files. Run
// after tests/js/run-packed.mjs, which packs the tarball.
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { cpSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { createHmac } from "node:crypto";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, afterEach, before, describe, test } from "node:test";
import { fileURLToPath, pathToFileURL } from "node:url";
import { createClient } from "@libsql/client";
import { Miniflare } from "miniflare";
import { dryRun as dryRunExample, installExample } from "./example-app.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const bin = (name) => join(root, "node_modules", ".bin", name);
const app = join(root, ".test-tmp", "worker-example");
const scratch = mkdtempSync(join(tmpdir(), "vaultstore-worker-"));
after(() => rmSync(scratch, { recursive: true, force: true }));

// The three credentials, each its own secret.
const CREDENTIALS = {
  TOKENIZE_TOKEN: "test-tokenize-0123456789",
  DETOKENIZE_TOKEN: "test-detokenize-0123456789",
  ADMIN_TOKEN: "test-admin-0123456789",
};
const VAULT_KEY = "8f".repeat(32);
// The next key as base64, the other format the worker accepts.
const VAULT_KEY_NEXT = Buffer.alloc(32, 7).toString("base64");
// Signs the /sync credentials (www/worker/src/sync.js).
const SYNC_SIGNING_KEY = "3a9c".repeat(16);
const auth = (credential) => ({ Authorization: `Bearer ${CREDENTIALS[credential]}`, "Content-Type": "application/json" });
/** The credential a route takes (the worker's ROUTES). */
const credentialOf = (method, path) =>
  path.startsWith("/tokenize") ? "TOKENIZE_TOKEN" : path.startsWith("/admin/") ? "ADMIN_TOKEN" : "DETOKENIZE_TOKEN";

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
before(() => installExample(app));

function dryRun(config, outdir) {
  dryRunExample(app, config, outdir, join(scratch, "wrangler-logs"));
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
    bindings: { ...CREDENTIALS, VAULT_KEY, SYNC_SIGNING_KEY, ...bindings },
  };
  if (storage === "d1") return { ...options, d1Databases: { DB: "vault" } };
  return {
    ...options,
    durableObjects: {
      VAULT_OBJECT: { className: "VaultObject", useSQLite: true, scriptName: "a" },
      SYNC_OBJECT: { className: "SyncObject", useSQLite: true, scriptName: "a" },
    },
  };
}

function persistence(storage, dir) {
  return storage === "d1" ? { d1Persist: dir } : { durableObjectsPersist: dir };
}

/** A JSON request to a Miniflare instance or one of its workers, with the route's credential. */
async function call(target, method, path, body, credential = credentialOf(method, path)) {
  const send = target instanceof Miniflare ? target.dispatchFetch.bind(target) : target.fetch.bind(target);
  const headers = credential === null ? { "Content-Type": "application/json" } : auth(credential);
  const response = await send(`http://worker${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
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
      let mf = restart({ VAULT_KEY_NEXT });
      const stopped = await call(mf, "POST", "/admin/rotate", { maxRecords: 150 });
      assert.deepEqual([stopped.status, stopped.body.error.code], [409, "ABORTED"]);
      await mf.dispose();
      assert.deepEqual(await rows(persist), before);

      mf = restart({ VAULT_KEY_NEXT });
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

    test("a key rotation under steady writes from two isolates loses no write (README's operator steps)", async () => {
      // Its own folder: the vault starts empty, so every value in it is one this test wrote.
      const folder = join(scratch, `${storage}-rotation`);
      const OLD_ONLY = {}; // the deployment before step 1: VAULT_KEY alone
      const BOTH = { VAULT_KEY_NEXT }; // after step 1 (`wrangler secret put VAULT_KEY_NEXT`)
      const FINAL = { VAULT_KEY: VAULT_KEY_NEXT }; // after steps 4 and 5
      // One Miniflare per deployment state, with up to two isolates ("a" hosts the Durable Object,
      // so on a Durable Object every request runs with a's configuration, as there is one object).
      const deployment = (...configs) =>
        start({ workers: configs.map((bindings, i) => worker(dir(), storage, folder, { name: "ab"[i], bindings })), ...persistence(storage, folder) });
      const written = new Map(); // token -> value, every write that any isolate answered 200 to
      let sealedWithOld = 0;
      const tokenize = async (target, value, { old = false, count = 1 } = {}) => {
        const fields = Object.fromEntries(Array.from({ length: count }, (_, i) => [`f${i}`, `${value} #${i}`]));
        const response = await call(target, "POST", "/tokenize", fields);
        assert.equal(response.status, 200, JSON.stringify(response.body));
        for (const [field, value] of Object.entries(fields)) written.set(response.body[field], value);
        if (old) sealedWithOld += count;
      };
      const readBack = async (target) => {
        const tokens = [...written.keys()];
        const read = await call(target, "POST", "/detokenize", { tokens });
        assert.equal(read.status, 200, JSON.stringify(read.body));
        assert.deepEqual(new Map(Object.entries(read.body.values)), written, "every token written so far opens to its own value");
      };

      // Before: values sealed with VAULT_KEY.
      let mf = deployment(OLD_ONLY);
      for (let i = 0; i < 10; i++) await tokenize(mf, `before ${i}`, { old: true, count: 50 });
      await mf.dispose();

      // Step 1 rolling out: an isolate of the old version still writes with VAULT_KEY while one
      // of the new version writes with VAULT_KEY_NEXT; the new one reads both kinds.
      mf = deployment(BOTH, OLD_ONLY);
      const [fresh, stale] = [await mf.getWorker("a"), await mf.getWorker("b")];
      for (let i = 0; i < 20; i++) {
        await Promise.all([
          tokenize(fresh, `rollout next ${i}`),
          // A Durable Object has one instance, restarted by the deployment: no old isolate.
          tokenize(storage === "d1" ? stale : fresh, `rollout ${storage === "d1" ? "old" : "next"} ${i}`, { old: storage === "d1" }),
        ]);
      }
      await readBack(fresh);
      await mf.dispose();

      // Steps 2-3: every isolate has both keys. One writes (and reads everything back) without a
      // pause while the operator rotates until a rotation moves 0, and goes on after that.
      mf = deployment(BOTH, BOTH);
      const [admin, writer] = [await mf.getWorker("a"), await mf.getWorker("b")];
      let rotating = true;
      let writesDuringRotation = 0;
      const writing = (async () => {
        for (let i = 0; rotating || i < writesDuringRotation + 10; i++) {
          await tokenize(writer, `during ${i}`);
          if (rotating) writesDuringRotation++;
          if (i % 10 === 9) await readBack(writer);
        }
      })();
      const rotations = [];
      try {
        for (let attempt = 0; attempt < 40; attempt++) {
          const rotated = await call(admin, "POST", "/admin/rotate", {});
          // 500 STORAGE: writes kept changing the vault while it ran; nothing changed; again.
          if (rotated.status === 500 && rotated.body.error.code === "STORAGE") {
            rotations.push("gave up");
            continue;
          }
          assert.equal(rotated.status, 200, JSON.stringify(rotated.body));
          rotations.push(rotated.body.moved);
          if (rotated.body.moved === 0) break;
        }
      } finally {
        rotating = false;
        await writing;
      }
      const moved = rotations.filter((n) => typeof n === "number");
      console.log(`# ${storage}: rotations answered ${JSON.stringify(rotations)} while ${writesDuringRotation} writes landed`);
      assert.equal(moved.at(-1), 0, "the operator's rotations ended with one that moved nothing");
      assert.ok(writesDuringRotation >= 1, "writes landed while the rotations ran");
      assert.equal(
        moved.reduce((a, b) => a + b, 0),
        sealedWithOld,
        "the rotations moved exactly the values sealed with VAULT_KEY; every other write was sealed with VAULT_KEY_NEXT",
      );
      await readBack(writer);
      await mf.dispose();

      // Steps 4-5: VAULT_KEY is the new key, VAULT_KEY_NEXT gone. Every token any isolate ever
      // wrote opens with the new key alone; the old key alone opens none.
      mf = deployment(FINAL);
      await readBack(mf);
      await mf.dispose();
      mf = deployment(OLD_ONLY);
      const old = await call(mf, "POST", "/detokenize", { tokens: [...written.keys()] });
      assert.deepEqual([old.status, old.body.error.code, old.body.error.tokens?.length], [401, "INVALID_PASSWORD", written.size]);
      await mf.dispose();
    });
  });
}

/** A user's /sync credential, made by the example's own mint-sync-credential.mjs. */
function mint(userId, key = SYNC_SIGNING_KEY) {
  return execFileSync(process.execPath, [join(app, "mint-sync-credential.mjs"), userId], {
    env: { ...process.env, SYNC_SIGNING_KEY: key },
    encoding: "utf8",
  }).trim();
}

/**
 * Every row of every vaultstore_* table in the SQLite files under `dir`, as one string; the
 * namespaces of the vaults in them (D1: one per user), and how many files hold vault tables (a
 * Durable Object per user: a file per user's vault).
 */
async function dumpAll(dir) {
  const files = [];
  const walk = (d) => {
    for (const entry of readdirSync(d, { withFileTypes: true })) {
      if (entry.isDirectory()) walk(join(d, entry.name));
      else if (entry.name.endsWith(".sqlite")) files.push(join(d, entry.name));
    }
  };
  walk(dir);
  let text = "";
  let vaultFiles = 0;
  const namespaces = new Set();
  for (const file of files.sort()) {
    const db = createClient({ url: `file:${file}` });
    try {
      const tables = (await db.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'vaultstore%'")).rows.map((r) => r[0]);
      if (tables.length) vaultFiles++;
      for (const table of tables) {
        const rows = (await db.execute(`SELECT * FROM ${table}`)).rows.map((r) => Array.from(r, (v) => (v instanceof ArrayBuffer ? Buffer.from(v).toString("latin1") : v)));
        text += `${table} ${JSON.stringify(rows)}\n`;
      }
      if (tables.includes("vaultstore_meta")) {
        for (const row of (await db.execute("SELECT DISTINCT ns FROM vaultstore_meta")).rows) namespaces.add(row[0]);
      }
    } finally {
      db.close();
    }
  }
  return { text, vaultFiles, namespaces: [...namespaces].sort() };
}

for (const storage of ["d1", "durable-object"]) {
  test(`/sync on ${storage === "d1" ? "D1" : "Durable Objects"}: each user's devices share a vault through the worker, no one else's, and the server keeps no value or key`, async () => {
    const { Vault } = await import(pathToFileURL(join(app, "node_modules", "vaultstore-wasm", "dist", "node.js")));
    const folder = join(scratch, `${storage}-sync`);
    const ORIGIN = "https://app.example";
    const mf = start({
      ...worker(storage === "d1" ? bundle : bundleDo, storage, folder, { name: "a", bindings: { SYNC_ALLOWED_ORIGINS: `${ORIGIN}, http://localhost:5173` } }),
      ...persistence(storage, folder),
    });
    const alice = mint("alice");
    const bob = mint("bob-2");
    const remote = (credential) => ({
      url: "http://worker/sync",
      headers: { authorization: `Bearer ${credential}` },
      fetch: (url, init) => mf.dispatchFetch(url, init),
    });
    // Alice's two devices with a password, Bob's with a raw key: neither reaches the server.
    const ALICE_PASSWORD = "alice's passphrase, kept on her devices";
    const BOB_KEY = new Uint8Array(32).map((_, i) => (i * 37 + 11) % 256);
    const replica = () => Vault.open({ backend: "memory", kdfIterations: 100_000 });
    const [alicePhone, aliceLaptop, bobPhone, bobLaptop] = await Promise.all([replica(), replica(), replica(), replica()]);
    const values = ["4111 1111 1111 1111 of alice", "alice keeps this diary line private", "5500 0000 0000 0004 after the update", "bob's PIN is 7317-0042"];

    // Alice: created on the phone, read on the laptop; changed on the laptop, read on the phone.
    const aliceTokens = await alicePhone.tokensCreate(values.slice(0, 2), ALICE_PASSWORD);
    const pushed = await alicePhone.sync(remote(alice));
    assert.ok(pushed.pushed >= 2, JSON.stringify(pushed));
    const pulled = await aliceLaptop.sync(remote(alice));
    assert.ok(pulled.pulled >= 2, JSON.stringify(pulled));
    assert.deepEqual(await aliceLaptop.tokensRead(aliceTokens, ALICE_PASSWORD), { [aliceTokens[0]]: values[0], [aliceTokens[1]]: values[1] });
    await aliceLaptop.tokenUpdate(aliceTokens[0], values[2], ALICE_PASSWORD);
    await aliceLaptop.sync(remote(alice));
    await alicePhone.sync(remote(alice));
    assert.equal(await alicePhone.tokenRead(aliceTokens[0], ALICE_PASSWORD), values[2]);

    // Bob: his own vault (another KDF salt; had his server vault been Alice's, joining it with a
    // vault of his own would be refused with SYNC_CONFLICT). His laptop gets his record only.
    const bobToken = await bobPhone.tokenCreate(values[3], BOB_KEY);
    await bobPhone.sync(remote(bob));
    const bobPulled = await bobLaptop.sync(remote(bob));
    assert.ok(bobPulled.pulled >= 1, JSON.stringify(bobPulled));
    assert.equal(await bobLaptop.tokenRead(bobToken, BOB_KEY), values[3]);
    assert.equal(await bobLaptop.recordCount(), 1, "Bob's devices see nothing of Alice's vault");
    for (const token of aliceTokens) assert.equal(await bobLaptop.recordFindByToken(token), null);
    await alicePhone.sync(remote(alice));
    assert.equal(await alicePhone.recordCount(), 2, "nor Alice's of Bob's");
    assert.equal(await alicePhone.recordFindByToken(bobToken), null);

    // Carol's app opens vaults with 1,000 PBKDF2 iterations, below the worker's floor (100,000
    // by default, SYNC_MIN_KDF_ITERATIONS unset): her vault is refused, and her server vault stays
    // empty, free for a device with enough (before, the worker took it, then failed to reopen it).
    const carol = mint("carol");
    const cheap = await Vault.open({ backend: "memory", kdfIterations: 1_000 });
    await cheap.tokenCreate("carol's note", ALICE_PASSWORD);
    await assert.rejects(cheap.sync(remote(carol)), (error) => error.code === "SYNC_CONFLICT" && /minKdfIterations \(100000\)/.test(error.message));
    const carolLaptop = await replica();
    const carolToken = await carolLaptop.tokenCreate("carol's note, kept", ALICE_PASSWORD);
    await carolLaptop.sync(remote(carol));
    const carolPhone = await replica();
    await carolPhone.sync(remote(carol));
    assert.equal(await carolPhone.tokenRead(carolToken, ALICE_PASSWORD), "carol's note, kept");

    // Forged credentials: 401, a JSON error, and no vault opened for anyone (no "mallory" vault
    // below, and Alice's and Bob's unchanged).
    const otherKey = mint("mallory", "77".repeat(32));
    const [, , aliceMac] = alice.split(".");
    const B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    // The last of 43 characters carries 4 bits of the mac and 2 unused ones: flipping an unused
    // bit spells the same 32 bytes another way, which atob accepts and the worker must not.
    const respelled = `${alice.slice(0, -1)}${B64URL[B64URL.indexOf(aliceMac.at(-1)) ^ 1]}`;
    const changed = `${alice.slice(0, -20)}${alice.at(-20) === "A" ? "B" : "A"}${alice.slice(-19)}`;
    const forged = [
      ["no credential", null],
      ["signed with another key", otherKey],
      ["Alice's mac on Bob's id", `vss1.bob-2.${aliceMac}`],
      ["Alice's with a character of its mac changed", changed],
      ["Alice's with its mac's last character spelled another way", respelled],
      ["Alice's as another version", alice.replace(/^vss1/, "vss2")],
      ["a user id over 64 characters", `vss1.${"m".repeat(65)}.${aliceMac}`],
      ["Alice's without the Bearer scheme", alice],
    ];
    const stranger = await replica();
    await stranger.tokenCreate("mallory's attempt", ALICE_PASSWORD);
    for (const [what, credential] of forged) {
      const headers = { "content-type": "application/json", origin: ORIGIN };
      if (credential) headers.authorization = what.includes("without the Bearer") ? credential : `Bearer ${credential}`;
      const response = await mf.dispatchFetch("http://worker/sync", { method: "POST", headers, body: "{}" });
      assert.equal(response.status, 401, what);
      assert.equal(response.headers.get("access-control-allow-origin"), ORIGIN, `${what}: a page on an allowed origin can read the refusal`);
      assert.equal((await response.json()).error.code, "UNAUTHORIZED", what);
      if (credential && !what.includes("without the Bearer")) {
        const error = await stranger.sync(remote(credential)).then(() => null, (e) => e);
        assert.equal(error?.code, "STORAGE", `${what}: the replica's sync fails`);
        assert.match(error.message, /401 UNAUTHORIZED/, what);
      }
    }
    assert.equal(await stranger.recordCount(), 1, "a refused sync changed nothing on the replica");

    // GET /sync: 405 with or without a credential, nothing opened.
    for (const authorization of [undefined, `Bearer ${alice}`]) {
      const response = await mf.dispatchFetch("http://worker/sync", { headers: authorization ? { authorization } : {} });
      assert.equal(response.status, 405);
      assert.match(response.headers.get("allow"), /POST/);
      assert.equal((await response.json()).error.code, "INVALID_ARGUMENT");
    }

    // CORS: the preflight answers the listed origins only; a sync's answer carries the origin.
    const preflight = (origin) =>
      mf.dispatchFetch("http://worker/sync", {
        method: "OPTIONS",
        headers: { origin, "access-control-request-method": "POST", "access-control-request-headers": "authorization, content-type" },
      });
    const allowed = await preflight("http://localhost:5173");
    assert.equal(allowed.status, 204);
    assert.equal(allowed.headers.get("access-control-allow-origin"), "http://localhost:5173");
    assert.match(allowed.headers.get("access-control-allow-headers"), /authorization/);
    assert.match(allowed.headers.get("access-control-allow-methods"), /POST/);
    const refused = await preflight("https://evil.example");
    assert.equal(refused.status, 403);
    assert.equal(refused.headers.get("access-control-allow-origin"), null);
    const fromPage = await aliceLaptop.sync({ ...remote(alice), fetch: (url, init) => mf.dispatchFetch(url, { ...init, headers: { ...Object.fromEntries(new Headers(init.headers)), origin: ORIGIN } }) });
    assert.deepEqual([fromPage.pulled, fromPage.pushed], [0, 0]);
    const seen = await mf.dispatchFetch("http://worker/sync", {
      method: "POST",
      headers: { authorization: `Bearer ${alice}`, "content-type": "application/json", origin: "https://evil.example" },
      body: "{}",
    });
    assert.equal(seen.headers.get("access-control-allow-origin"), null, "an unlisted origin gets no CORS header");
    assert.equal(seen.status, 400, "a malformed sync body reaches syncHandle once authenticated");
    await seen.body?.cancel();
    await mf.dispose();

    // The server's tables after the session: the tokens and envelopes, never a value, the
    // password, Bob's key, the signing key or a credential.
    const { text, vaultFiles, namespaces } = await dumpAll(folder);
    for (const token of [...aliceTokens, bobToken]) assert.ok(text.includes(token), `the dump holds ${token}: it reads the vault tables`);
    assert.match(text, /vs1:/, "the dump holds the envelopes");
    const secrets = {
      ...Object.fromEntries(values.map((v, i) => [`value ${i}`, v])),
      "mallory's value": "mallory's attempt",
      "Carol's refused value": "carol's note",
      "Alice's password": ALICE_PASSWORD,
      "Bob's key (hex)": Buffer.from(BOB_KEY).toString("hex"),
      "Bob's key (base64)": Buffer.from(BOB_KEY).toString("base64"),
      "Bob's key (bytes)": Buffer.from(BOB_KEY).toString("latin1"),
      "the signing key": SYNC_SIGNING_KEY,
      "Alice's credential": alice,
      "Bob's credential": bob,
      "Alice's mac": aliceMac,
    };
    for (const [what, secret] of Object.entries(secrets)) assert.ok(!text.includes(secret), `the server's tables hold ${what}`);
    if (storage === "d1") {
      assert.deepEqual(namespaces, ["sync:alice", "sync:bob-2", "sync:carol"], "one namespace per user, none for a forged credential");
    } else {
      assert.equal(vaultFiles, 3, "one Durable Object per user, none for a forged credential");
    }
  });
}

test("/sync on D1: a user whose vault fell out of the isolate's 64 open ones syncs on, reopened", async () => {
  const { Vault } = await import(pathToFileURL(join(app, "node_modules", "vaultstore-wasm", "dist", "node.js")));
  const mf = start({ ...worker(bundle, "d1", null, { name: "a" }) });
  const credential = (userId) => `vss1.${userId}.${createHmac("sha256", Buffer.from(SYNC_SIGNING_KEY, "hex")).update(userId).digest("base64url")}`;
  const remote = (userId) => ({
    url: "http://worker/sync",
    headers: { authorization: `Bearer ${credential(userId)}` },
    fetch: (url, init) => mf.dispatchFetch(url, init),
  });
  const PASSWORD = "the first user's password";
  const replica = () => Vault.open({ backend: "memory", kdfIterations: 100_000 });
  const first = await replica();
  const token = await first.tokenCreate("written before the eviction", PASSWORD);
  await first.sync(remote("first"));
  // 64 other users, 8 at a time: "first" is now the least recently used, evicted and closed.
  for (let batch = 0; batch < 8; batch++) {
    await Promise.all(Array.from({ length: 8 }, async (_, i) => (await replica()).sync(remote(`user${batch * 8 + i}`))));
  }
  const second = await replica();
  const report = await second.sync(remote("first"));
  assert.ok(report.pulled >= 1, JSON.stringify(report));
  assert.equal(await second.tokenRead(token, PASSWORD), "written before the eviction");
  await first.tokenUpdate(token, "written after it", PASSWORD);
  await first.sync(remote("first"));
  await second.sync(remote("first"));
  assert.equal(await second.tokenRead(token, PASSWORD), "written after it");
  await mf.dispose();
});

test("mint-sync-credential.mjs refuses a missing or malformed key and an id the worker would refuse", () => {
  const cases = [
    [["alice"], undefined],
    [["alice"], "not hex at all"],
    [["alice"], "ab".repeat(16)],
    [["al.ice"], SYNC_SIGNING_KEY],
    [["a".repeat(65)], SYNC_SIGNING_KEY],
    [[], SYNC_SIGNING_KEY],
    [["alice", "bob"], SYNC_SIGNING_KEY],
  ];
  for (const [args, key] of cases) {
    const env = { ...process.env, SYNC_SIGNING_KEY: key };
    if (key === undefined) delete env.SYNC_SIGNING_KEY;
    const result = spawnSync(process.execPath, [join(app, "mint-sync-credential.mjs"), ...args], { env, encoding: "utf8" });
    assert.deepEqual([result.status, result.stdout], [2, ""], `${JSON.stringify(args)} with key ${key}: ${result.stderr}`);
    assert.ok(result.stderr.length > 20, "it says why");
  }
  assert.match(mint("a".repeat(64)), /^vss1\.a{64}\.[A-Za-z0-9_-]{43}$/);
});

test("/sync without a valid SYNC_SIGNING_KEY: 500 CONFIG, a generic message, the hint in the worker's log", async () => {
  let log = "";
  const mf = start({
    ...worker(bundle, "d1", null, { bindings: { SYNC_SIGNING_KEY: "" } }),
    handleRuntimeStdio(stdout, stderr) {
      for (const stream of [stdout, stderr]) stream.on("data", (chunk) => (log += chunk));
    },
  });
  const response = await mf.dispatchFetch("http://worker/sync", {
    method: "POST",
    headers: { authorization: `Bearer ${mint("alice")}`, "content-type": "application/json" },
    body: "{}",
  });
  const body = await response.json();
  assert.deepEqual([response.status, body.error.code], [500, "CONFIG"]);
  assert.doesNotMatch(body.error.message, /SYNC_SIGNING_KEY/);
  await mf.dispose();
  assert.match(log, /SYNC_SIGNING_KEY is not 64 hex characters/);
});

test("each credential opens its own routes only: 401 without one, 403 with another's", async () => {
  const mf = start({ ...worker(bundle, "d1", null, { bindings: { VAULT_KEY_NEXT } }) });
  const created = await call(mf, "POST", "/tokenize", { card: "4111 1111 1111 1111" });
  assert.equal(created.status, 200, JSON.stringify(created.body));
  const token = created.body.card;
  const routes = [
    ["POST", "/tokenize", { card: "5500 0000 0000 0004" }],
    ["POST", "/detokenize", { tokens: [token] }],
    ["PUT", "/tokens/tk_custom_credentials", { value: "custom" }],
    ["POST", `/tokens/${token}/renew`, { expiresAt: null }],
    ["POST", "/admin/rotate", {}],
    ["DELETE", `/tokens/${token}`, undefined],
  ];
  const seen = [];
  for (const [method, path, body] of routes) {
    const own = credentialOf(method, path);
    for (const credential of [null, "wrong", ...Object.keys(CREDENTIALS)]) {
      if (credential === own) continue;
      const headers = { "Content-Type": "application/json" };
      if (credential === "wrong") headers.Authorization = `Bearer ${CREDENTIALS[own]}x`;
      else if (credential) headers.Authorization = `Bearer ${CREDENTIALS[credential]}`;
      const response = await mf.dispatchFetch(`http://worker${path}`, { method, headers, body: body && JSON.stringify(body) });
      const answer = await response.text();
      const want = credential === null || credential === "wrong" ? [401, "UNAUTHORIZED"] : [403, "FORBIDDEN"];
      assert.deepEqual([response.status, answer && JSON.parse(answer).error?.code], want, `${method} ${path} with ${credential ?? "no credential"}: ${answer}`);
    }
    // Refused by every other credential, and still doing its job with its own (the refusals
    // changed nothing: the token is still there to read, renew and delete).
    const answer = await call(mf, method, path, body);
    assert.ok(answer.status < 300, `${method} ${path} with ${own}: ${answer.status} ${JSON.stringify(answer.body)}`);
    seen.push(`${method} ${path.replace(token, ":token")} -> ${answer.status}`);
  }
  assert.deepEqual((await call(mf, "POST", "/detokenize", { tokens: [token] })).status, 404, "the delete went through");
  // Two credentials with one value would make the roles meaningless: refused, not guessed.
  const same = start({ ...worker(bundle, "d1", null, { bindings: { ADMIN_TOKEN: CREDENTIALS.TOKENIZE_TOKEN } }), name: "same" });
  const refused = await call(same, "POST", "/tokenize", { card: "1" });
  assert.deepEqual([refused.status, refused.body.error.code], [500, "CONFIG"]);
  await Promise.all([mf.dispose(), same.dispose()]);
});

test("a failing database: the client gets the code and a generic message, the worker's log the database's text", async () => {
  let log = "";
  const mf = start({
    ...worker(bundle, "d1", null),
    handleRuntimeStdio(stdout, stderr) {
      for (const stream of [stdout, stderr]) stream.on("data", (chunk) => (log += chunk));
    },
  });
  assert.equal((await call(mf, "POST", "/tokenize", { card: "4111 1111 1111 1111" })).status, 200);
  // The database loses its table under the running isolate, which opened the vault already.
  await (await mf.getD1Database("DB")).exec("DROP TABLE vaultstore_records");
  for (const [method, path, body] of [
    ["POST", "/tokenize", { card: "5500 0000 0000 0004" }],
    ["POST", "/detokenize", { tokens: ["tk_0000000000000000"] }],
  ]) {
    const failed = await call(mf, method, path, body);
    assert.equal(failed.status, 500, `${path}: ${JSON.stringify(failed.body)}`);
    assert.equal(failed.body.error.code, "STORAGE");
    assert.doesNotMatch(failed.body.error.message, /vaultstore_records|no such table|SQLITE|D1_/i, "no database text reaches the client");
  }
  await mf.dispose();
  assert.match(log, /no such table: vaultstore_records/, "the database's message is in the worker's log");
});

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
    const response = await mf.dispatchFetch("http://worker/tokenize", { method: "POST", headers: auth("TOKENIZE_TOKEN"), body: JSON.stringify(body) });
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
