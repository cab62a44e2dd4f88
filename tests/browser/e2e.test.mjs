// End to end in real headless Chromium (Playwright), or Firefox ESR with TEST_BROWSER=firefox
// (pages.mjs): the packaged browser build, loaded by a page served on 127.0.0.1, on IndexedDB.
// CONSUMER_DIR is the folder the packed tarball was installed in.
import assert from "node:assert/strict";
import { test } from "node:test";
import { dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { packagePages } from "./pages.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const consumer = process.env.CONSUMER_DIR;
assert.ok(consumer, "CONSUMER_DIR must name the folder with the installed package");

const pages = packagePages([here, consumer]);
const openPage = pages.open;

const unique = (name) => `${name}-${Date.now()}-${Math.random().toString(36).slice(2)}`;

test("the JS API works on IndexedDB, the default backend in a browser", async () => {
  const { page } = await openPage();
  const result = await page.evaluate(async (name) => {
    const { Vault, VaultError, RecordQuery, isToken } = window.vaultstore;
    const out = {};
    const code = async (p) => {
      try {
        await p;
        return "resolved";
      } catch (e) {
        return e instanceof VaultError ? e.code : `not a VaultError: ${e}`;
      }
    };
    const v = await Vault.open({ name, kdfIterations: 1000, passwordIdentity: true });
    out.databases = (await indexedDB.databases()).map((d) => d.name).includes(name);
    const pw = "correct horse battery";
    const t = await v.tokenCreate("card 4111", pw, { expiresAt: Date.now() + 60_000 });
    out.token = isToken(t) && t.length === 32;
    out.read = await v.tokenRead(t, pw);
    const many = await v.tokensCreate(["a", "b", "c"], pw);
    out.many = many;
    out.batch = await v.tokensRead([...many, many[0]], pw);
    out.batchOrder = Object.keys(out.batch).length;
    await v.tokenCreateCustom("custom-1", "custom value", pw);
    out.tokenExists = await code(v.tokenCreateCustom("custom-1", "again", pw));
    await v.tokenUpdate(t, "card 5500", pw);
    out.updated = await v.tokenRead(t, pw);
    out.upsert = (await v.tokenUpsert(t, "card 6011", pw)) === t;
    out.resolved = await v.tokensReadToResolvedMap({ card: t, first: many[0] }, pw);
    out.wrongPassword = await code(v.tokenRead(t, "not the password"));
    out.missing = await code(v.tokenRead("tk_missing", pw));
    out.badArgument = await code(v.tokenCreate(42, pw));
    await v.tokenSoftDelete(many[1]);
    out.existsAfterSoftDelete = await v.tokenExists(many[1]);
    out.softDeletedReason = await v.tokenRead(many[1], pw).catch((e) => e.reason);
    await v.tokenRestore(many[1]);
    await v.tokenRenew(many[2], new Date(Date.now() - 1000));
    out.expiredReason = await v.tokenRead(many[2], pw).catch((e) => e.reason);
    out.count = await v.recordCount();
    out.listed = (await v.recordList(new RecordQuery().setOrderBy("token").setSortOrder("asc").setLimit(2))).map((r) => r.token);
    out.sortedTokens = [t, ...many, "custom-1"].sort().slice(0, 2);
    out.found = (await v.recordFindByToken(t)).value.startsWith("vs1:");
    out.expiredSoftDeleted = await v.tokensExpiredSoftDelete();
    out.expiredDeleted = await v.tokensExpiredDelete();
    await v.setVaultSetting("theme", "dark");
    out.setting = await v.getVaultSetting("theme");
    out.version = await v.getVaultVersion();
    out.rekeyed = await v.bulkRekey(pw, "a brand new password");
    out.afterRekey = await v.tokenRead(t, "a brand new password");
    out.identityNotFound = await code(v.bulkRekey(pw, "whatever long"));
    const snapshot = await v.exportSnapshot();
    const copy = await Vault.open({ backend: "memory", kdfIterations: 1000, snapshot });
    out.copied = await copy.tokenRead(t, "a brand new password");
    await v.close();
    out.closed = await code(v.tokenRead(t, pw));
    return out;
  }, unique("api"));
  assert.deepEqual(result, {
    databases: true,
    token: true,
    read: "card 4111",
    many: result.many,
    // Each token maps to the value it was created for (a duplicate appears once).
    batch: { [result.many[0]]: "a", [result.many[1]]: "b", [result.many[2]]: "c" },
    batchOrder: 3,
    tokenExists: "TOKEN_EXISTS",
    updated: "card 5500",
    upsert: true,
    resolved: { card: "card 6011", first: "a" },
    wrongPassword: "INVALID_PASSWORD",
    missing: "RECORD_NOT_FOUND",
    badArgument: "INVALID_ARGUMENT",
    existsAfterSoftDelete: false,
    softDeletedReason: "soft_deleted",
    expiredReason: "expired",
    count: 5,
    listed: result.sortedTokens,
    sortedTokens: result.sortedTokens,
    found: true,
    expiredSoftDeleted: 1,
    expiredDeleted: 1,
    setting: "dark",
    version: "1",
    rekeyed: 4,
    afterRekey: "card 6011",
    identityNotFound: "IDENTITY_NOT_FOUND",
    copied: "card 6011",
    closed: "CLOSED",
  });
  assert.equal(new Set(result.many).size, 3, "three distinct tokens");
  await page.close();
});

test("tokens survive a reload", async () => {
  const name = unique("reload");
  const { page } = await openPage();
  const tokens = await page.evaluate(async (name) => {
    const v = await window.vaultstore.Vault.open({ name, kdfIterations: 1000 });
    return v.tokensCreate(["persisted 1", "persisted 2"], "correct horse battery");
  }, name);
  await page.reload();
  await page.waitForFunction(() => document.getElementById("status").textContent === "ready");
  const read = await page.evaluate(
    async ([name, tokens]) => {
      const v = await window.vaultstore.Vault.open({ name, kdfIterations: 1000 });
      return v.tokensRead(tokens, "correct horse battery");
    },
    [name, tokens],
  );
  assert.deepEqual(read, { [tokens[0]]: "persisted 1", [tokens[1]]: "persisted 2" });
  await page.close();
});

test("two tabs write 200 tokens each at once; a third reads all 400", async () => {
  const name = unique("tabs");
  const context = await pages.browser.newContext();
  const [a, b, c] = [await openPage(context), await openPage(context), await openPage(context)];
  const write = (page, tab) =>
    page.evaluate(
      async ([name, tab]) => {
        const v = await window.vaultstore.Vault.open({ name, kdfIterations: 1000, passwordIdentity: true });
        const tokens = await Promise.all(Array.from({ length: 200 }, (_, i) => v.tokenCreate(`${tab}-${i}`, "correct horse battery")));
        return tokens;
      },
      [name, tab],
    );
  const [fromA, fromB] = await Promise.all([write(a.page, "a"), write(b.page, "b")]);
  const all = [...fromA, ...fromB];
  assert.equal(new Set(all).size, 400, "tokens are unique across tabs");
  const read = await c.page.evaluate(
    async ([name, tokens]) => {
      const v = await window.vaultstore.Vault.open({ name, kdfIterations: 1000 });
      const values = await v.tokensRead(tokens, "correct horse battery");
      const snapshot = JSON.parse(new TextDecoder().decode(await v.exportSnapshot()));
      return {
        values,
        count: await v.recordCount(),
        identities: snapshot.meta.filter((m) => m.key === "tag").length,
        salts: snapshot.meta.filter((m) => m.key === "kdf").length,
      };
    },
    [name, all],
  );
  assert.equal(read.count, 400);
  assert.equal(read.identities, 1, "both tabs share one identity for one password");
  assert.equal(read.salts, 1);
  fromA.forEach((t, i) => assert.equal(read.values[t], `a-${i}`));
  fromB.forEach((t, i) => assert.equal(read.values[t], `b-${i}`));
  await context.close();
});

test("nothing stored in IndexedDB is plaintext, a password or a key", async () => {
  const { page } = await openPage();
  const dump = await page.evaluate(async (name) => {
    const { Vault } = window.vaultstore;
    const v = await Vault.open({ name, kdfIterations: 1000, passwordIdentity: true });
    const tokens = await v.tokensCreate(["SECRET-CARD-4111-1111-1111-1111", "SECRET-EMAIL@example.com"], "PASSWORD-correct-horse");
    await v.tokenUpdate(tokens[0], "SECRET-UPDATED", "PASSWORD-correct-horse");
    await v.bulkRekey("PASSWORD-correct-horse", "PASSWORD-after-rekey", { rotate: true });
    await v.close();
    const db = await new Promise((resolve, reject) => {
      const r = indexedDB.open(name);
      r.onsuccess = () => resolve(r.result);
      r.onerror = () => reject(r.error);
    });
    const rows = [];
    for (const store of db.objectStoreNames) {
      rows.push(
        ...(await new Promise((resolve) => {
          const r = db.transaction(store).objectStore(store).getAll();
          r.onsuccess = () => resolve(r.result);
        })),
      );
    }
    db.close();
    return JSON.stringify(rows);
  }, unique("plaintext"));
  assert.match(dump, /vs1:/);
  // Needles long enough that random hex (ids, revisions), base64 and timestamps cannot hold
  // them by chance: "4111" alone did, now and then (a card number leaks as more than that).
  for (const needle of ["SECRET", "PASSWORD", "correct-horse", "4111-1111", "example.com"]) {
    assert.ok(!dump.includes(needle), `${needle} found in IndexedDB`);
  }
});

test("an IndexedDB-only page never downloads the GlueSQL engine; memory loads it on demand", async () => {
  const { page, requests } = await openPage();
  const fetched = (part) => requests.filter((u) => u.includes(part));
  const serverSide = await page.evaluate(async (name) => {
    const events = [];
    const v = await window.vaultstore.Vault.open({ name, kdfIterations: 1000, onEvent: (e) => events.push(`${e.op} ${e.code}`) });
    await v.tokenRead(await v.tokenCreate("x", "correct horse battery"), "correct horse battery");
    // The server side of sync is not in this engine: refused, heard by onEvent, nothing loaded.
    const request = new Request(location.href, { method: "POST", headers: { "content-type": "application/json" }, body: "{}" });
    const refused = await v.syncHandle(request).catch((e) => [e.code, e.message]);
    await v.close();
    const closed = await v.syncHandle(request).catch((e) => e.code);
    return { refused, closed, events: events.filter((e) => e.startsWith("syncHandle")) };
  }, unique("lazy"));
  assert.equal(serverSide.refused[0], "UNSUPPORTED");
  assert.match(serverSide.refused[1], /worker, on Node or from a vault opened with backend "memory" or "sql"/);
  assert.equal(serverSide.closed, "CLOSED", "after close(), CLOSED like every call");
  assert.deepEqual(serverSide.events, ["syncHandle UNSUPPORTED", "syncHandle CLOSED"]);
  assert.equal(fetched("vaultstore_idb_bg.wasm").length, 1);
  assert.deepEqual(fetched("vaultstore_full"), [], "no GlueSQL code for an IndexedDB app");
  const value = await page.evaluate(async () => {
    const { Vault, RecordQuery, VaultError } = window.vaultstore;
    const v = await Vault.open({ backend: "memory", kdfIterations: 1000 });
    const t = await v.tokenCreate("in memory", "correct horse battery");
    const listed = await v.recordList(new RecordQuery().setLimit(1));
    const error = await v.tokenRead(t, "wrong password!").catch((e) => e instanceof VaultError && e.code);
    return [await v.tokenRead(t, "correct horse battery"), listed.length, error];
  });
  assert.deepEqual(value, ["in memory", 1, "INVALID_PASSWORD"]);
  assert.equal(fetched("vaultstore_full_bg.wasm").length, 1, "loaded once, on demand");
  await page.close();
});

test("an aborted rekey on IndexedDB leaves every value and link byte-identical", async () => {
  const { page } = await openPage();
  const result = await page.evaluate(async (name) => {
    const { Vault } = window.vaultstore;
    const v = await Vault.open({ name, kdfIterations: 1000, passwordIdentity: true });
    const tokens = await v.tokensCreate(Array.from({ length: 300 }, (_, i) => `v${i}`), "correct horse battery");
    const before = await v.exportSnapshot();
    const controller = new AbortController();
    const code = await v
      .bulkRekey("correct horse battery", "new password!!", { rotate: true, signal: controller.signal, onProgress: (done) => done === 150 && controller.abort() })
      .catch((e) => e.code);
    const afterBytes = await v.exportSnapshot();
    const same = before.length === afterBytes.length && before.every((b, i) => b === afterBytes[i]);
    return { code, same, read: await v.tokenRead(tokens[299], "correct horse battery") };
  }, unique("abort"));
  assert.deepEqual(result, { code: "ABORTED", same: true, read: "v299" });
  await page.close();
});

test("QUOTA_EXCEEDED when the browser refuses to store more, and the vault keeps working", async () => {
  const { page, close } = await pages.withQuota(2 * 1024 * 1024);
  const result = await page.evaluate(async (name) => {
    const { Vault } = window.vaultstore;
    const v = await Vault.open({ name, kdfIterations: 1000 });
    const small = await v.tokenCreate("small", "correct horse battery");
    const error = await v.tokenCreate("x".repeat(8 * 1024 * 1024), "correct horse battery").catch((e) => e);
    return {
      code: error.code,
      cause: error.cause?.name,
      message: error.message,
      after: await v.tokenRead(small, "correct horse battery"),
      count: await v.recordCount(),
    };
  }, unique("quota"));
  assert.equal(result.code, "QUOTA_EXCEEDED", result.message);
  assert.equal(result.cause, "QuotaExceededError");
  assert.equal(result.after, "small");
  assert.equal(result.count, 1, "the refused write left nothing behind");
  await close();
});

test("another tab upgrading the database makes calls report STORAGE, never hang", async () => {
  const name = unique("versionchange");
  const context = await pages.browser.newContext();
  const [one, two] = [await openPage(context), await openPage(context)];
  const token = await one.page.evaluate(async (name) => {
    window.vault = await window.vaultstore.Vault.open({ name, kdfIterations: 1000 });
    return window.vault.tokenCreate("x", "correct horse battery");
  }, name);
  // The other tab (say, a newer release) upgrades past schema 2: it must not be blocked by this one.
  const upgraded = await two.page.evaluate(
    (name) =>
      new Promise((resolve) => {
        const r = indexedDB.open(name, 3);
        r.onsuccess = () => {
          r.result.close();
          resolve("upgraded");
        };
        r.onblocked = () => resolve("blocked");
      }),
    name,
  );
  assert.equal(upgraded, "upgraded");
  const result = await one.page.evaluate(
    (token) => window.vault.tokenRead(token, "correct horse battery").then(() => "resolved", (e) => [e.code, e.cause?.name, e.message]),
    token,
  );
  assert.equal(result[0], "STORAGE");
  assert.equal(result[1], "VersionChangeError");
  assert.match(result[2], /reload/);
  await context.close();
});

test("no page threw an uncaught exception", () => {
  assert.deepEqual(pages.uncaught, []);
});
