// Two devices in Chromium syncing through the example worker (issue 14, "Tests"): each device is
// a browser context of its own (its own IndexedDB) with a page of page.html that loads the packed
// package and calls `vault.sync` over real HTTP, cross-origin (CORS preflight included), to the
// worker of www/worker as users deploy it: the packed tarball installed next to it, bundled by
// `wrangler deploy --dry-run`, run in Miniflare on 127.0.0.1, on D1 and then on a Durable Object
// per user, persisted to a temporary folder. On each: created on one device, read on the other;
// a sync while offline fails with STORAGE and loses nothing; offline edits on both resolve by the
// conflict rule (the loser counted in `report.conflicts`, a hard delete winning); a password
// change on one, then the other unlocks only with the new one; a rotation on one while the other
// writes offline (the write `stranded`, moved by `bulkRekey`, then delivered); the server's
// database deleted, then repaired by the devices (a third, fresh device reads everything); two
// tabs of one device syncing at once lose and duplicate nothing. CONSUMER_DIR is the folder the
// packed tarball was installed in (tests/js/run-packed.mjs).
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { Miniflare } from "miniflare";
import { dryRun, installExample } from "../worker/example-app.mjs";
import { packagePages } from "./pages.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, "..", "..");
const consumer = process.env.CONSUMER_DIR;
assert.ok(consumer, "CONSUMER_DIR must name the folder with the installed package");

const app = join(root, ".test-tmp", "worker-sync-browser");
const scratch = mkdtempSync(join(tmpdir(), "vaultstore-browser-sync-"));
after(() => rmSync(scratch, { recursive: true, force: true }));

const SYNC_SIGNING_KEY = "5be1".repeat(16);
// The worker's other routes need their secrets to start; /sync uses none of them.
const SECRETS = {
  TOKENIZE_TOKEN: "test-tokenize-0123456789",
  DETOKENIZE_TOKEN: "test-detokenize-0123456789",
  ADMIN_TOKEN: "test-admin-0123456789",
  VAULT_KEY: "8f".repeat(32),
};
const PASSWORD = "correct horse battery staple";
const NEW_PASSWORD = "a brand new passphrase, longer";
// Cheap PBKDF2 (these tests are not about KDF cost); identities on, so a password change is a re-wrap.
// Each device is a browser context of its own, so this one name is a separate database on each.
const VAULT = { name: "synced", kdfIterations: 1000, passwordIdentity: true };

/** A user's credential: `vss1.<id>.<HMAC-SHA256 of id, base64url>`, as mint-sync-credential.mjs makes it. */
const credential = (userId) => `vss1.${userId}.${createHmac("sha256", Buffer.from(SYNC_SIGNING_KEY, "hex")).update(userId).digest("base64url")}`;

const pages = packagePages([here, consumer]);

/** Install the example as a user would: its files, the packed tarball, then wrangler's dry run. */
const bundles = {};
before(() => {
  installExample(app);
  for (const [storage, config, outdir] of [["d1", "wrangler.jsonc", "dist"], ["durable-object", "wrangler.durable-object.jsonc", "dist-do"]]) {
    bundles[storage] = dryRun(app, config, outdir, join(scratch, "wrangler-logs"));
  }
});

/**
 * The worker on `storage`, persisted under `folder`, listening on 127.0.0.1 (`port`, or any free
 * one), allowing the test pages' origin. Resolves to `{ mf, url }`, url being its /sync URL.
 */
async function startWorker(storage, folder, port = 0) {
  const options = {
    name: "a",
    modules: true,
    scriptPath: join(bundles[storage], "index.js"),
    modulesRules: [
      { type: "ESModule", include: ["**/*.js"] },
      { type: "CompiledWasm", include: ["**/*.wasm"] },
    ],
    compatibilityDate: "2026-04-01",
    host: "127.0.0.1",
    port,
    // The devices open their vaults with 1,000 iterations (VAULT below), so the server's floor is theirs.
    bindings: { ...SECRETS, SYNC_SIGNING_KEY, SYNC_ALLOWED_ORIGINS: pages.server.url, SYNC_MIN_KDF_ITERATIONS: String(VAULT.kdfIterations) },
  };
  const storageOptions =
    storage === "d1"
      ? { d1Databases: { DB: "vault" }, d1Persist: folder }
      : {
          durableObjects: {
            VAULT_OBJECT: { className: "VaultObject", useSQLite: true },
            SYNC_OBJECT: { className: "SyncObject", useSQLite: true },
          },
          durableObjectsPersist: folder,
        };
  const mf = new Miniflare({ ...options, ...storageOptions });
  const ready = await mf.ready;
  return { mf, url: new URL("/sync", ready).href };
}

/** What a page's call gave: `{ value }`, or `{ error: { code, message, vaultError, cause } }`. */
async function inPage(page, method, args) {
  return page.evaluate(
    async ({ method, args }) => {
      try {
        const value = await window.vault[method](...args);
        return { value: value === undefined ? null : JSON.parse(JSON.stringify(value)) };
      } catch (e) {
        const error = { code: e?.code, message: String(e?.message ?? e), vaultError: e instanceof window.vaultstore.VaultError };
        return { error: { ...error, cause: e?.cause === undefined ? null : String(e.cause?.name ?? e.cause) } };
      }
    },
    { method, args },
  );
}

/** A device: a tab (page) of `context` with the vault open on IndexedDB. */
async function tab(context) {
  const { page } = await pages.open(context);
  await page.evaluate(async (options) => {
    window.vault = await window.vaultstore.Vault.open(options);
  }, VAULT);
  const call = async (method, ...args) => {
    const result = await inPage(page, method, args);
    if (result.error) throw new Error(`${method}: ${result.error.code} ${result.error.message}`);
    return result.value;
  };
  return { page, context, call, fails: (method, ...args) => inPage(page, method, args) };
}

/** A new device: a browser context of its own, so an IndexedDB of its own. */
async function device() {
  return tab(await pages.browser.newContext());
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

for (const storage of ["d1", "durable-object"]) {
  describe(`two devices in Chromium syncing through the example worker on ${storage === "d1" ? "D1" : "a Durable Object"}`, () => {
    const folder = join(scratch, storage);
    let server;
    const contexts = [];
    const open = async () => {
      const d = await device();
      contexts.push(d.context);
      return d;
    };
    before(async () => {
      server = await startWorker(storage, folder);
    });
    after(async () => {
      await Promise.allSettled(contexts.map((c) => c.close()));
      await server?.mf.dispose();
    });
    /** The remote of `user`'s vault on the server: its URL and credential, as an app passes them. */
    const remote = (user) => ({ url: server.url, headers: { Authorization: `Bearer ${credential(user)}` } });
    const sync = (d, user) => d.call("sync", remote(user));

    test("created on one device, read on the other; a sync while offline rejects with STORAGE and loses nothing", async () => {
      const user = "created";
      const [laptop, phone] = [await open(), await open()];
      const tokens = await laptop.call("tokensCreate", ["4111 1111 1111 1111", "the laptop's diary line"], PASSWORD);
      const pushed = await sync(laptop, user);
      assert.ok(pushed.pushed >= 2, JSON.stringify(pushed));
      assert.deepEqual(pushed.stranded, []);
      const pulled = await sync(phone, user);
      assert.ok(pulled.pulled >= 2, JSON.stringify(pulled));
      assert.deepEqual(await phone.call("tokensRead", tokens, PASSWORD), { [tokens[0]]: "4111 1111 1111 1111", [tokens[1]]: "the laptop's diary line" });

      // The phone goes offline, edits, and tries to sync: STORAGE, the edit still there.
      await phone.context.setOffline(true);
      await phone.call("tokenUpdate", tokens[0], "5500 0000 0000 0004", PASSWORD);
      const offline = await phone.fails("sync", remote(user));
      assert.equal(offline.error?.code, "STORAGE", JSON.stringify(offline));
      assert.ok(offline.error.vaultError, "a VaultError");
      assert.equal(offline.error.cause, "TypeError", "its cause is what fetch threw");
      assert.ok(offline.error.message.length > 20, `it says what failed: ${offline.error.message}`);
      assert.equal(await phone.call("tokenRead", tokens[0], PASSWORD), "5500 0000 0000 0004", "the offline edit is kept");
      assert.equal(await phone.call("recordCount"), 2);
      // Back online, the edit reaches the laptop.
      await phone.context.setOffline(false);
      const back = await sync(phone, user);
      assert.ok(back.pushed >= 1, JSON.stringify(back));
      await sync(laptop, user);
      assert.equal(await laptop.call("tokenRead", tokens[0], PASSWORD), "5500 0000 0000 0004");
      const idle = await sync(laptop, user);
      assert.equal(idle.pulled + idle.pushed, 0, `nothing new, nothing moves: ${JSON.stringify(idle)}`);
    });

    test("offline edits on both devices: the later value wins on both, the loser is counted, a delete wins over an edit", async () => {
      const user = "offline-edits";
      const [a, b] = [await open(), await open()];
      const [edited, deleted] = await a.call("tokensCreate", ["v1", "to be deleted"], PASSWORD);
      await sync(a, user);
      await sync(b, user);
      assert.equal(await b.call("tokenRead", edited, PASSWORD), "v1");

      await Promise.all([a.context.setOffline(true), b.context.setOffline(true)]);
      await a.call("tokenUpdate", edited, "from a", PASSWORD);
      await a.call("tokenDelete", deleted);
      // B's edit is the later one (revisions are hybrid logical clocks on wall time).
      await sleep(20);
      await b.call("tokenUpdate", edited, "from b", PASSWORD);
      await b.call("tokenUpdate", deleted, "a stale edit of a deleted token", PASSWORD);
      await sleep(20);
      const expiresAt = 4_000_000_000_000;
      await a.call("tokenRenew", edited, expiresAt);
      for (const d of [a, b]) assert.equal((await d.fails("sync", remote(user))).error?.code, "STORAGE", "offline");
      assert.equal(await a.call("tokenRead", edited, PASSWORD), "from a");
      assert.equal(await b.call("tokenRead", edited, PASSWORD), "from b");

      await Promise.all([a.context.setOffline(false), b.context.setOffline(false)]);
      const first = await sync(b, user);
      assert.equal(first.conflicts, 0, JSON.stringify(first));
      const second = await sync(a, user);
      assert.equal(second.conflicts, 1, `A's value lost to B's later one: ${JSON.stringify(second)}`);
      await sync(b, user);
      for (const [who, d] of [["A", a], ["B", b]]) {
        assert.equal(await d.call("tokenRead", edited, PASSWORD), "from b", who);
        assert.equal(new Date((await d.call("recordFindByToken", edited)).expiresAt).getTime(), expiresAt, `${who}: A's later renewal kept`);
        const gone = await d.fails("tokenRead", deleted, PASSWORD);
        assert.equal(gone.error?.code, "RECORD_NOT_FOUND", `${who}: the deleted token stays deleted: ${JSON.stringify(gone)}`);
        assert.equal(await d.call("recordCount"), 1, who);
      }
    });

    test("a password change on one device: the other then unlocks only with the new password", async () => {
      const user = "password";
      const [a, b] = [await open(), await open()];
      const tokens = await a.call("tokensCreate", ["one", "two"], PASSWORD);
      await sync(a, user);
      await sync(b, user);
      assert.equal(await b.call("tokenRead", tokens[0], PASSWORD), "one");

      assert.equal(await a.call("bulkRekey", PASSWORD, NEW_PASSWORD), 2);
      await sync(a, user);
      const report = await sync(b, user);
      assert.ok(report.pulled >= 1, JSON.stringify(report));
      // The app restarts on B: a new page, the vault opened again from IndexedDB.
      await b.page.reload();
      await b.page.waitForFunction(() => document.getElementById("status").textContent === "ready");
      await b.page.evaluate(async (options) => {
        window.vault = await window.vaultstore.Vault.open(options);
      }, VAULT);
      const old = await b.fails("unlock", PASSWORD);
      assert.equal(old.error?.code, "INVALID_PASSWORD", JSON.stringify(old));
      assert.equal((await b.fails("tokenRead", tokens[1], PASSWORD)).error?.code, "INVALID_PASSWORD");
      assert.equal(await b.call("unlock", NEW_PASSWORD), true);
      assert.deepEqual(await b.call("tokensRead", tokens, NEW_PASSWORD), { [tokens[0]]: "one", [tokens[1]]: "two" });
    });

    test("two devices that first used the password apart: a password change on one moves both identities it made", async () => {
      const user = "apart";
      const [a, b] = [await open(), await open()];
      await sync(a, user);
      await sync(b, user);
      // Each device uses the password first, before the other's write arrives: two identities.
      const fromA = await a.call("tokenCreate", "from a", PASSWORD);
      const fromB = await b.call("tokenCreate", "from b", PASSWORD);
      for (const d of [a, b, a]) await sync(d, user);

      assert.equal(await a.call("bulkRekey", PASSWORD, NEW_PASSWORD), 2);
      for (const d of [a, b]) await sync(d, user);
      for (const [who, d] of [["A", a], ["B", b]]) {
        await d.call("lock");
        assert.deepEqual(await d.call("tokensRead", [fromA, fromB], NEW_PASSWORD), { [fromA]: "from a", [fromB]: "from b" }, who);
        const old = await d.fails("unlock", PASSWORD);
        assert.equal(old.error?.code, "INVALID_PASSWORD", `${who}: the old password opens nothing: ${JSON.stringify(old)}`);
      }
    });

    test("a rotation on one device while the other writes offline: that write is stranded, moved by bulkRekey, then delivered", async () => {
      const user = "rotation";
      const [a, b] = [await open(), await open()];
      const first = await a.call("tokenCreate", "first", PASSWORD);
      await sync(a, user);
      await sync(b, user);

      await b.context.setOffline(true);
      await a.call("bulkRekey", PASSWORD, NEW_PASSWORD, { rotate: true });
      await sync(a, user);
      // B has not synced: it writes under the rotated-away password.
      const offline = await b.call("tokenCreate", "written offline", PASSWORD);
      assert.equal((await b.fails("sync", remote(user))).error?.code, "STORAGE");
      await b.context.setOffline(false);
      const stranded = await sync(b, user);
      assert.deepEqual(stranded.stranded, [offline], JSON.stringify(stranded));
      assert.equal(await b.call("tokenRead", offline, PASSWORD), "written offline", "still readable on B with the old password");
      assert.equal(await b.call("tokenRead", first, NEW_PASSWORD), "first", "the rotation reached B");
      // Until it is moved, every sync lists it again, and A never sees it.
      assert.deepEqual((await sync(b, user)).stranded, [offline]);
      await sync(a, user);
      assert.equal(await a.call("recordFindByToken", offline), null);

      await b.call("bulkRekey", PASSWORD, NEW_PASSWORD);
      const moved = await sync(b, user);
      assert.deepEqual(moved.stranded, [], JSON.stringify(moved));
      await sync(a, user);
      assert.equal(await a.call("tokenRead", offline, NEW_PASSWORD), "written offline");
      assert.equal((await a.fails("tokenRead", first, PASSWORD)).error?.code, "INVALID_PASSWORD");
      for (const d of [a, b]) assert.equal(await d.call("recordCount"), 2);
    });

    test("the server's database deleted: the devices repair it, and a fresh device reads everything", async () => {
      const user = "wiped";
      const [a, b] = [await open(), await open()];
      const fromA = await a.call("tokensCreate", ["a one", "a two"], PASSWORD);
      await sync(a, user);
      await sync(b, user); // B joins before it writes: a device that writes first is another vault
      const fromB = await b.call("tokenCreate", "from b", PASSWORD);
      await sync(b, user);
      await sync(a, user);

      // The database is deleted: the worker stops, its persisted files go, it starts again empty
      // on the same address.
      const port = Number(new URL(server.url).port);
      await server.mf.dispose();
      rmSync(folder, { recursive: true, force: true });
      server = await startWorker(storage, folder, port);

      // The first device back finds the server empty and pushes back everything it holds.
      const repaired = await sync(a, user);
      assert.ok(repaired.pushed >= 3, `A pushed back its 3 records: ${JSON.stringify(repaired)}`);
      await sync(b, user);
      await sync(a, user);
      const fresh = await open();
      const pulled = await sync(fresh, user);
      assert.ok(pulled.pulled >= 3, JSON.stringify(pulled));
      const all = [...fromA, fromB];
      assert.deepEqual(await fresh.call("tokensRead", all, PASSWORD), { [fromA[0]]: "a one", [fromA[1]]: "a two", [fromB]: "from b" });
      assert.equal(await fresh.call("recordCount"), 3);
    });

    // A tab that opened the empty IndexedDB vault before another tab joined the server's vault
    // once kept the KDF salt it read at open: its reads of synced records were INVALID_PASSWORD,
    // and its write was sealed under its stale salt, which no device could read afterwards.
    test(
      "a tab opened before its device joined the server's vault reads and writes the joined vault",
      async () => {
        const user = "tab-before-join";
        const other = await open();
        const fromOther = await other.call("tokenCreate", "from the other device", PASSWORD);
        await sync(other, user);
        // Both tabs open the empty IndexedDB vault; then the first one joins the server's vault.
        const first = await open();
        const second = await tab(first.context);
        await sync(first, user);
        const fromSecond = await second.call("tokenCreate", "written in the second tab", PASSWORD);
        assert.equal(await second.call("tokenRead", fromOther, PASSWORD), "from the other device");
        for (const d of [second, first]) assert.deepEqual((await sync(d, user)).stranded, []);
        await sync(other, user);
        for (const d of [other, first, second]) assert.equal(await d.call("tokenRead", fromSecond, PASSWORD), "written in the second tab");
      },
    );

    test("two tabs of one device syncing at once lose and duplicate nothing", async () => {
      const user = "tabs";
      const other = await open();
      const fromOther = await other.call("tokensCreate", Array.from({ length: 5 }, (_, i) => `other ${i}`), PASSWORD);
      await sync(other, user);
      // One browser profile: two tabs on one IndexedDB vault, after it joined the server's vault.
      const first = await open();
      await sync(first, user);
      const second = await tab(first.context);
      const fromFirst = await first.call("tokensCreate", Array.from({ length: 20 }, (_, i) => `first tab ${i}`), PASSWORD);
      const fromSecond = await second.call("tokensCreate", Array.from({ length: 20 }, (_, i) => `second tab ${i}`), PASSWORD);
      await other.call("tokenUpdate", fromOther[0], "other 0, changed", PASSWORD);
      await sync(other, user);

      const reports = await Promise.all([sync(first, user), sync(second, user)]);
      for (const r of reports) assert.deepEqual([r.conflicts, r.stranded], [0, []], JSON.stringify(reports));
      const expected = {
        ...Object.fromEntries(fromOther.map((t, i) => [t, i === 0 ? "other 0, changed" : `other ${i}`])),
        ...Object.fromEntries(fromFirst.map((t, i) => [t, `first tab ${i}`])),
        ...Object.fromEntries(fromSecond.map((t, i) => [t, `second tab ${i}`])),
      };
      const all = Object.keys(expected);
      assert.equal(all.length, 45);
      for (const [who, d] of [["the first tab", first], ["the second tab", second]]) {
        assert.equal(await d.call("recordCount"), 45, who);
        assert.deepEqual(await d.call("tokensRead", all, PASSWORD), expected, who);
      }
      await sync(other, user);
      const fresh = await open();
      await sync(fresh, user);
      for (const [who, d] of [["the other device", other], ["a fresh device", fresh]]) {
        assert.equal(await d.call("recordCount"), 45, `${who}: every record once`);
        assert.deepEqual(await d.call("tokensRead", all, PASSWORD), expected, who);
      }
    });
  });
}

test("no page threw an uncaught exception", () => {
  assert.deepEqual(pages.uncaught, []);
});
