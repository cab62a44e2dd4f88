// The demo (www/, what `npm start` serves) walked through as a user's whole session, in headless
// Chromium, on the packaged browser build: create a password, add entries (one with the keyboard
// alone), search, page, sort, reveal, copy, edit, trash/restore/purge, expiry and renewal, change
// the password with progress, abort a change, auto-lock, export and import a snapshot, the
// "What IndexedDB holds" panel, and a wrong password refused by a vault whose only entry is in the
// trash; then, on localhost with a virtual authenticator, the passkey path (add a passkey, lock,
// unlock with it, sync, remove it; an authenticator without PRF; a browser reporting no PRF gets no
// passkey buttons); and sync: two browser profiles share a vault through the demo's sync server
// (js/tools/sync-server.mjs, a libSQL file holding no plaintext), a server still starting or down
// is said plainly and loses nothing. Elements are found by role and
// accessible name, as a screen reader finds them. Any
// console error, failed request or HTTP error fails the test. Screenshots go to
// .test-tmp/screenshots/. CONSUMER_DIR is the folder the packed tarball was installed in.
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath, pathToFileURL } from "node:url";
import { serve } from "../../js/tools/serve.mjs";
import { syncServer } from "../../js/tools/sync-server.mjs";
import { launchChromium, watchPage } from "./chromium.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const consumer = process.env.CONSUMER_DIR;
assert.ok(consumer, "CONSUMER_DIR must name the folder with the installed package");
const screenshots = join(root, ".test-tmp", "screenshots");

/**
 * The problems `watchPage` saw, minus a sync request Chromium reports as `net::ERR_ABORTED` after
 * its 200 response was read in full (the sync it belonged to succeeded): now and then, when the
 * package reads a sync response with a stream reader (js/vault.ts readCapped); never seen when
 * the body is read with arrayBuffer(). Reported to the package's owners; a real failure of a sync
 * still fails these tests, by the error it shows.
 */
const withoutAbortedSync = (problems) => problems.filter((p) => !/^request failed: http:\/\/[^ ]+\/sync \(net::ERR_ABORTED\)$/.test(p));

/** The demo's controls as a user reaches them: buttons by accessible name, the status and error lines, the entries' names, adding an entry. */
function ui(page) {
  const button = (name) => page.getByRole("button", { name, exact: true });
  const line = (id) => (pattern) => page.waitForFunction(([id, p]) => new RegExp(p).test(document.getElementById(id).textContent), [id, pattern.source]);
  const status = line("status");
  const addEntry = async (name, secret) => {
    await button("Add entry").click();
    await page.waitForSelector("#entry-dialog[open]");
    await page.getByLabel("Name", { exact: true }).fill(name);
    await page.getByLabel("Secret", { exact: true }).fill(secret);
    await button("Save").click();
    await status(new RegExp(`“${name}” added`));
  };
  const names = () => page.$$eval("#rows tr", (rows) => rows.map((tr) => tr.cells[0].firstChild.textContent));
  return { button, status, error: line("error"), names, addEntry };
}

const PASSWORD = "correct horse battery staple";
const NEW_PASSWORD = "a much longer new passphrase";
const ENTRIES = [
  ["GitHub", "ghp_SECRET_github_7f3k"],
  ["Bank card", "SECRET 4111 1111 1111 1111"],
  ["Email", "SECRET-mail-93"],
  ["Wi-Fi at home", "SECRET-wifi-passphrase"],
  ["AWS root", "SECRET-aws-AKIA2931"],
  ["Passport number", "SECRET-P1234567"],
  ["Gym locker", "SECRET-4-8-15"],
];

test("a user's whole session in the demo", async () => {
  rmSync(screenshots, { recursive: true, force: true });
  mkdirSync(screenshots, { recursive: true });
  const server = await serve([join(root, "www"), { mount: "/dist", dir: join(consumer, "node_modules", "vaultstore-wasm", "dist") }]);
  const browser = await launchChromium();
  const context = await browser.newContext({ viewport: { width: 1100, height: 900 }, acceptDownloads: true });
  await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: server.url });
  const page = await context.newPage();
  const problems = watchPage(page);
  await page.clock.install(); // time flows as usual; the test jumps ahead for expiry and auto-lock
  let shot = 0;
  const screenshot = (name) => page.screenshot({ path: join(screenshots, `${String(++shot).padStart(2, "0")}-${name}.png`), fullPage: true });
  const { button, status, error, names } = ui(page);
  const pageInfo = () => page.textContent("#page-info");
  const disclose = (summary) => page.locator("summary", { hasText: summary }).click();
  const clipboard = () => page.evaluate(() => navigator.clipboard.readText());
  const vaultName = `secrets-${Date.now()}`;

  try {
    // ---- create a password for a new vault ----
    await page.goto(`${server.url}/`);
    await page.waitForFunction(() => document.getElementById("unlock-hint").textContent !== "Opening…");
    // On 127.0.0.1 passkeys cannot work (WebAuthn refuses an IP address): the page says where they do.
    assert.match(await page.textContent("#passkey-note"), /Passkeys need a domain name.*open http:\/\/localhost:\d+/);
    assert.equal(await button("Unlock with a passkey").isVisible(), false);
    await page.getByLabel("Vault name", { exact: true }).fill(vaultName);
    await page.getByLabel("Vault name", { exact: true }).press("Tab");
    await page.waitForFunction(() => document.getElementById("unlock-title").textContent === "Create a vault");
    await page.getByLabel("Password", { exact: true }).fill(PASSWORD);
    await page.getByLabel("Repeat the password").fill("not the same password");
    await screenshot("create-vault");
    await button("Create vault").click();
    await error(/passwords differ/);
    await page.getByLabel("Repeat the password").fill(PASSWORD);
    await button("Create vault").click();
    await status(/created/);
    assert.equal(await page.evaluate(() => document.activeElement.id), "add", "focus moves to the first thing to do");

    // ---- add entries (the last one expires in an hour) ----
    for (const [i, [name, secret]] of ENTRIES.entries()) {
      await button("Add entry").click();
      await page.waitForSelector("#entry-dialog[open]");
      await page.getByLabel("Name", { exact: true }).fill(name);
      await page.getByLabel("Secret", { exact: true }).fill(secret);
      if (i === ENTRIES.length - 1) await page.getByLabel("Expires", { exact: true }).selectOption("1 hour");
      await button("Save").click();
      await status(new RegExp(`“${name}” added`));
    }
    // One more with the keyboard alone.
    await page.keyboard.press("Shift+Tab"); // the focus was returned to "Add entry"; step off and back
    await page.keyboard.press("Tab");
    assert.equal(await page.evaluate(() => document.activeElement.id), "add");
    await page.keyboard.press("Enter");
    await page.keyboard.type("Door code");
    await page.keyboard.press("Tab");
    await page.keyboard.type("SECRET-door-2580");
    await page.keyboard.press("Tab"); // Expires
    await page.keyboard.press("Tab"); // Save
    await page.keyboard.press("Enter");
    await status(/“Door code” added/);
    ENTRIES.push(["Door code", "SECRET-door-2580"]);
    assert.deepEqual(await names(), ENTRIES.map(([n]) => n).reverse(), "newest first");
    assert.match(await page.textContent('#rows tr:has-text("Gym locker")'), /in 1 hour/);
    await screenshot("entries");

    // ---- paging, sorting, searching ----
    await page.getByLabel("Per page").selectOption("5");
    await page.waitForFunction(() => document.getElementById("page-info").textContent.startsWith("Page 1 of 2"));
    assert.equal(await pageInfo(), "Page 1 of 2 · 8 entries");
    await button("Next").click();
    await page.waitForFunction(() => document.getElementById("page-info").textContent.startsWith("Page 2"));
    assert.deepEqual(await names(), ["Email", "Bank card", "GitHub"]);
    await screenshot("page-2");
    await button("Previous").click();
    await page.waitForFunction(() => document.getElementById("page-info").textContent.startsWith("Page 1"));
    await page.getByLabel("Sort").selectOption("Oldest first");
    await page.waitForFunction(() => document.querySelector("#rows tr")?.cells[0].firstChild.textContent === "GitHub");
    await page.getByLabel("Sort").selectOption("Newest first");
    await page.keyboard.press("Escape");
    await page.locator("body").click({ position: { x: 5, y: 5 } });
    await page.keyboard.press("/");
    assert.equal(await page.evaluate(() => document.activeElement.id), "search", "/ focuses the search");
    await page.keyboard.type("BANK");
    await page.waitForFunction(() => document.getElementById("page-info").textContent.endsWith("1 matching"));
    assert.deepEqual(await names(), ["Bank card"]);
    await screenshot("search");
    await page.getByLabel("Search names").fill("");
    await page.waitForFunction(() => document.getElementById("page-info").textContent.endsWith("8 entries"));
    await page.getByLabel("Per page").selectOption("10");
    await page.waitForFunction(() => document.getElementById("page-info").textContent === "Page 1 of 1 · 8 entries");

    // ---- reveal, copy, edit ----
    await button("Reveal the secret of GitHub").click();
    await page.waitForSelector("#rows .secret");
    assert.equal(await page.textContent("#rows .secret"), "ghp_SECRET_github_7f3k");
    assert.equal(await page.evaluate(() => document.activeElement.ariaLabel), "Hide the secret of GitHub", "focus stays on the row");
    await screenshot("reveal");
    await button("Hide the secret of GitHub").click();
    await page.waitForFunction(() => !document.querySelector("#rows .secret"));
    await button("Copy the secret of Bank card").click();
    await status(/Secret of “Bank card” copied/);
    assert.equal(await clipboard(), "SECRET 4111 1111 1111 1111");
    await button("Copy the token of GitHub").click();
    await status(/Token of “GitHub” copied/);
    const githubToken = await page.textContent('#rows tr:has-text("GitHub") td.token code');
    assert.equal(await clipboard(), githubToken);
    assert.match(githubToken, /^tk_[0-9a-hjkmnp-tv-z]{29}$/);

    await button("Edit Email").click();
    await page.waitForSelector("#entry-dialog[open]");
    assert.equal(await page.getByLabel("Name", { exact: true }).inputValue(), "Email");
    assert.equal(await page.getByLabel("Secret", { exact: true }).inputValue(), "SECRET-mail-93");
    await page.getByLabel("Name", { exact: true }).fill("Email (work)");
    await page.getByLabel("Secret", { exact: true }).fill("SECRET-mail-94");
    await screenshot("edit");
    await button("Save").click();
    await status(/“Email \(work\)” saved/);
    await button("Reveal the secret of Email (work)").click();
    await page.waitForSelector("#rows .secret");
    assert.equal(await page.textContent("#rows .secret"), "SECRET-mail-94");
    await button("Hide the secret of Email (work)").click();

    // ---- trash, restore, delete forever ----
    page.on("dialog", (dialog) => dialog.accept());
    await button("Move Passport number to the trash").click();
    await status(/“Passport number” moved to the trash/);
    await button("Move Wi-Fi at home to the trash").click();
    await status(/“Wi-Fi at home” moved to the trash/);
    assert.equal(await page.textContent("#count-trash"), "(2)");
    await page.getByRole("button", { name: /^Trash/ }).first().click();
    await page.waitForFunction(() => document.getElementById("page-info").textContent.endsWith("2 in the trash"));
    assert.deepEqual((await names()).sort(), ["Passport number", "Wi-Fi at home"]);
    await screenshot("trash");
    await button("Restore Wi-Fi at home").click();
    await status(/“Wi-Fi at home” restored/);
    await button("Delete Passport number forever").click();
    await status(/“Passport number” deleted forever/);
    await page.waitForFunction(() => document.getElementById("page-info").textContent.endsWith("0 in the trash"));
    await page.getByRole("button", { name: /^Entries/ }).click();
    await page.waitForFunction(() => document.getElementById("page-info").textContent.endsWith("7 entries"));
    assert.ok((await names()).includes("Wi-Fi at home"));

    // ---- expiry: an hour later the gym locker has expired; renew it ----
    await page.getByLabel("Lock after").selectOption("never");
    await status(/Auto-lock is off/);
    await page.clock.fastForward("01:01:00");
    await page.getByRole("button", { name: /^Entries/ }).click();
    await page.waitForSelector('#rows tr:has-text("Gym locker") .badge');
    assert.match(await page.textContent('#rows tr:has-text("Gym locker")'), /expired .*ago/);
    await button("Reveal the secret of GitHub").click(); // the others still open (keys derived again)
    await page.waitForSelector("#rows .secret");
    await button("Hide the secret of GitHub").click();
    await screenshot("expired");
    await button("Renew Gym locker").click();
    await page.waitForSelector("#renew-dialog[open]");
    await page.getByLabel("New expiry").selectOption("7 days");
    await button("Renew").click();
    await status(/Renewed: it expires in 7 days/);
    assert.match(await page.textContent('#rows tr:has-text("Gym locker")'), /in 7 days/);
    await button("Reveal the secret of Gym locker").click();
    await page.waitForSelector("#rows .secret");
    assert.equal(await page.textContent("#rows .secret"), "SECRET-4-8-15");
    await button("Hide the secret of Gym locker").click();

    // ---- change the password, with progress; then abort a second change ----
    await disclose("Change password");
    await page.getByLabel("Current password").fill(PASSWORD);
    await page.getByLabel("New password", { exact: true }).fill(NEW_PASSWORD);
    await page.getByLabel("Repeat the new password").fill(NEW_PASSWORD);
    await button("Change password").click();
    await status(/Password changed: 7 entries now open with the new password/);
    assert.deepEqual(await page.$eval("#rekey-progress", (p) => [p.value, p.max]), [7, 7]);
    assert.equal(await page.textContent("#rekey-text"), "Done: 7 entries now open with the new password.");
    await screenshot("password-changed");

    // A slow device: key derivation takes 1.5 s, long enough to press Abort.
    await page.evaluate(() => {
      const derive = (window.realDeriveBits = SubtleCrypto.prototype.deriveBits);
      SubtleCrypto.prototype.deriveBits = function (...args) {
        return new Promise((resolve) => setTimeout(resolve, 1500)).then(() => derive.apply(this, args));
      };
    });
    await page.getByLabel("Current password").fill(NEW_PASSWORD);
    await page.getByLabel("New password", { exact: true }).fill("yet another password here");
    await page.getByLabel("Repeat the new password").fill("yet another password here");
    await button("Change password").click();
    await page.waitForFunction(() => !document.getElementById("abort").disabled);
    await button("Abort").click();
    await status(/Password change aborted: nothing was changed/);
    await screenshot("password-change-aborted");
    await page.evaluate(() => (SubtleCrypto.prototype.deriveBits = window.realDeriveBits));
    assert.equal(await page.textContent("#rekey-text"), "Nothing was changed.");
    await button("Reveal the secret of AWS root").click(); // still opens with the current password
    await page.waitForSelector("#rows .secret");
    assert.equal(await page.textContent("#rows .secret"), "SECRET-aws-AKIA2931");

    // ---- auto-lock after a minute without activity ----
    await page.getByLabel("Lock after").selectOption("1 minute");
    await status(/Locks after 1 minute without activity/);
    await page.clock.fastForward("01:30");
    await status(/Locked after 1 minute without activity/);
    assert.equal(await page.isVisible("#vault"), false, "the entries are gone from the page");
    assert.equal(await page.evaluate(() => document.activeElement.id), "password");
    await screenshot("auto-locked");
    await page.getByLabel("Password", { exact: true }).fill(PASSWORD); // the old one
    await button("Unlock").click();
    await error(/Wrong password.*\[INVALID_PASSWORD\]/);
    await page.getByLabel("Password", { exact: true }).fill(NEW_PASSWORD);
    await button("Unlock").click();
    await status(/Unlocked/);
    assert.equal(await page.getByLabel("Lock after").inputValue(), "1", "the auto-lock choice is a vault setting");
    await page.getByLabel("Lock after").selectOption("never");

    // ---- export a snapshot, then import it into a new vault ----
    await disclose("Back up");
    const [download] = await Promise.all([page.waitForEvent("download"), button("Download snapshot").click()]);
    const snapshotFile = join(screenshots, "snapshot.vaultstore.json");
    await download.saveAs(snapshotFile);
    await status(/Snapshot downloaded: 7 entries, still encrypted/);
    const snapshot = readFileSync(snapshotFile, "utf8");
    assert.match(snapshot, /vs1:/);
    for (const [name, secret] of ENTRIES) {
      assert.ok(!snapshot.includes(name) && !snapshot.includes(secret), `${name} is not in the snapshot in clear`);
    }

    await button("Lock now").click();
    await status(/Locked: keys wiped/);
    await disclose("Import a snapshot into a new vault");
    await page.getByLabel("Snapshot file").setInputFiles(snapshotFile);
    await page.getByLabel("New vault name").fill(vaultName); // taken: refused, readably
    await button("Import").click();
    await error(/use a new database name.*\[INVALID_ARGUMENT\]/);
    await page.getByLabel("New vault name").fill(`${vaultName}-copy`);
    await button("Import").click();
    await status(/Imported 7 entries into “.*-copy”/);
    assert.equal(await page.getByLabel("Vault name", { exact: true }).inputValue(), `${vaultName}-copy`);
    await screenshot("imported");
    await page.getByLabel("Password", { exact: true }).fill(NEW_PASSWORD);
    await button("Unlock").click();
    await status(/Unlocked “.*-copy”/);
    assert.deepEqual((await names()).sort(), ENTRIES.map(([n]) => n).filter((n) => n !== "Passport number").map((n) => (n === "Email" ? "Email (work)" : n)).sort());
    await button("Reveal the secret of Bank card").click();
    await page.waitForSelector("#rows .secret");
    assert.equal(await page.textContent("#rows .secret"), "SECRET 4111 1111 1111 1111");

    // ---- what IndexedDB holds: envelopes, never a name, a secret or a password ----
    await disclose("What IndexedDB holds");
    await page.waitForFunction(() => document.getElementById("raw-dump").textContent.includes("vs1:"));
    await screenshot("indexeddb");
    const dump = await page.textContent("#raw-dump");
    assert.match(await page.textContent("#raw-summary"), /7 rows in “records”/);
    for (const needle of [...ENTRIES.flat(), "Email (work)", "SECRET-mail-94", PASSWORD, NEW_PASSWORD]) {
      assert.ok(!dump.includes(needle), `${needle} is not in IndexedDB in clear`);
    }

    // ---- a vault whose only entry is in the trash still checks the password (vault.unlock) ----
    await button("Lock now").click();
    await status(/Locked: keys wiped/);
    const trashVault = `${vaultName}-trash`;
    await page.getByLabel("Vault name", { exact: true }).fill(trashVault);
    await page.getByLabel("Vault name", { exact: true }).press("Tab");
    await page.waitForFunction(() => document.getElementById("unlock-title").textContent === "Create a vault");
    await page.getByLabel("Password", { exact: true }).fill(PASSWORD);
    await page.getByLabel("Repeat the password").fill(PASSWORD);
    await button("Create vault").click();
    await status(/created: the password you typed is now its password/);
    await button("Add entry").click();
    await page.waitForSelector("#entry-dialog[open]");
    await page.getByLabel("Name", { exact: true }).fill("Old note");
    await page.getByLabel("Secret", { exact: true }).fill("SECRET-old-note");
    await button("Save").click();
    await status(/“Old note” added/);
    await button("Move Old note to the trash").click();
    await status(/“Old note” moved to the trash/);
    await button("Lock now").click();
    await status(/Locked: keys wiped/);
    await page.waitForFunction(() => document.getElementById("unlock-title").textContent === "Unlock");
    await page.getByLabel("Password", { exact: true }).fill("not the password of this vault");
    await button("Unlock").click();
    await error(/Wrong password.*\[INVALID_PASSWORD\]/);
    assert.equal(await page.isVisible("#vault"), false, "a wrong password opens nothing, even with every entry in the trash");
    await screenshot("wrong-password-all-trashed");
    await page.getByLabel("Password", { exact: true }).fill(PASSWORD);
    await button("Unlock").click();
    await status(new RegExp(`Unlocked “${trashVault}”`));
    assert.equal(await page.textContent("#count-trash"), "(1)");

    // ---- every form control has a label; status and errors are live regions ----
    const unlabelled = await page.$$eval("input, select, textarea", (els) => els.filter((el) => el.labels.length === 0 && !el.ariaLabel).map((el) => el.id));
    assert.deepEqual(unlabelled, []);
    assert.deepEqual(await page.$eval("#status", (el) => [el.getAttribute("role"), el.getAttribute("aria-live")]), ["status", "polite"]);
    assert.equal(await page.$eval("#error", (el) => el.getAttribute("role")), "alert");

    assert.deepEqual(problems, [], "no console error, failed request or HTTP error");
  } finally {
    await browser.close();
    await server.close();
  }
});

test("the demo's passkey path: add a passkey, lock, unlock with it, sync, remove it; no PRF is said plainly", async () => {
  // On localhost (an IP is not a valid WebAuthn site id), with Chromium's virtual authenticator.
  mkdirSync(screenshots, { recursive: true });
  const syncDir = mkdtempSync(join(tmpdir(), "vaultstore-demo-sync-"));
  const sync = syncServer(join(syncDir, "demo.db"));
  await sync.start(() => import(pathToFileURL(join(consumer, "node_modules", "vaultstore-wasm", "dist", "node.js")).href));
  const server = await serve([join(root, "www"), { mount: "/dist", dir: join(consumer, "node_modules", "vaultstore-wasm", "dist") }], 0, { handle: sync.handle });
  const origin = server.url.replace("127.0.0.1", "localhost");
  const browser = await launchChromium();
  const context = await browser.newContext({ viewport: { width: 1100, height: 900 } });
  const page = await context.newPage();
  const problems = watchPage(page);
  const cdp = await context.newCDPSession(page);
  await cdp.send("WebAuthn.enable", { enableUI: false });
  const authenticator = {
    protocol: "ctap2", ctap2Version: "ctap2_1", transport: "internal", hasResidentKey: true, hasUserVerification: true,
    isUserVerified: true, hasPrf: true, automaticPresenceSimulation: true,
  };
  const { authenticatorId } = await cdp.send("WebAuthn.addVirtualAuthenticator", { options: authenticator });
  const { button, status, error, names, addEntry } = ui(page);
  const vaultName = `passkey-${Date.now()}`;
  const unlockWithPassword = async () => {
    await page.getByLabel("Password", { exact: true }).fill(PASSWORD);
    await button("Unlock").click();
    await status(/^Unlocked “[^”]*”\.$/);
  };

  try {
    await page.goto(`${origin}/`);
    await page.waitForFunction(() => document.getElementById("unlock-hint").textContent !== "Opening…");
    assert.equal(await page.isVisible("#passkey-note"), false, "no IP-address note on localhost");
    await page.getByLabel("Vault name", { exact: true }).fill(vaultName);
    await page.getByLabel("Vault name", { exact: true }).press("Tab");
    await page.waitForFunction(() => document.getElementById("unlock-title").textContent === "Create a vault");
    assert.equal(await button("Unlock with a passkey").isVisible(), false, "an empty vault has nothing a passkey could open");
    await page.getByLabel("Password", { exact: true }).fill(PASSWORD);
    await page.getByLabel("Repeat the password").fill(PASSWORD);
    await button("Create vault").click();
    await status(/created/);
    await addEntry("GitHub", "ghp_SECRET_github_7f3k");

    // ---- add a passkey (after unlocking with the password) ----
    await page.locator("summary", { hasText: "Passkey" }).click();
    await button("Add a passkey").click();
    await status(/Passkey added/);
    assert.equal(await button("Remove passkey").isVisible(), true);
    const { credentials } = await cdp.send("WebAuthn.getCredentials", { authenticatorId });
    assert.equal(credentials.length, 1, "the authenticator holds the new passkey");
    const stored = await page.evaluate((name) => localStorage.getItem(`secrets.passkey.${name}`), vaultName);
    assert.match(stored, /^[A-Za-z0-9_-]+$/, "the page keeps the credential id (public)");
    await page.screenshot({ path: join(screenshots, "passkey-added.png"), fullPage: true });

    // ---- lock, unlock with the passkey: the entries open, and a new one opens with the password too ----
    await button("Lock now").click();
    await status(/Locked: keys wiped/);
    await page.waitForFunction(() => document.getElementById("unlock-title").textContent === "Unlock");
    await button("Unlock with a passkey").click();
    await status(/Unlocked “.*” with the passkey/);
    assert.deepEqual(await names(), ["GitHub"]);
    await button("Reveal the secret of GitHub").click();
    await page.waitForSelector("#rows .secret");
    assert.equal(await page.textContent("#rows .secret"), "ghp_SECRET_github_7f3k");
    await addEntry("Email", "SECRET-mail-93");
    // A vault opened with the passkey syncs (sync needs no secret; the list re-renders with it).
    await page.locator("summary", { hasText: /^Sync$/ }).click();
    await button("Sync now").click();
    await status(/^Synced with http:\/\/localhost:\d+\/sync: pulled 0, pushed [1-9]\d*, 0 conflicts\.$/);
    assert.deepEqual((await names()).sort(), ["Email", "GitHub"]);
    await button("Lock now").click();
    await status(/Locked: keys wiped/);
    await unlockWithPassword();
    assert.deepEqual((await names()).sort(), ["Email", "GitHub"], "the password opens what was added with the passkey");

    // ---- remove the passkey: it opens nothing any more; the password still does ----
    await page.locator("summary", { hasText: "Passkey" }).click();
    await button("Remove passkey").click();
    await status(/Passkey removed: only the password opens this vault now/);
    assert.equal(await button("Add a passkey").isVisible(), true);
    assert.equal(await page.evaluate((name) => localStorage.getItem(`secrets.passkey.${name}`), vaultName), null);
    await button("Lock now").click();
    await status(/Locked: keys wiped/);
    await button("Unlock with a passkey").click();
    await error(/This passkey does not open this vault/);
    assert.equal(await page.isVisible("#vault"), false);
    await unlockWithPassword();
    assert.deepEqual((await names()).sort(), ["Email", "GitHub"]);

    // ---- an authenticator without PRF: a clear message, and the password keeps working ----
    await cdp.send("WebAuthn.removeVirtualAuthenticator", { authenticatorId });
    await cdp.send("WebAuthn.addVirtualAuthenticator", { options: { ...authenticator, transport: "usb", hasPrf: false } });
    await page.locator("summary", { hasText: "Passkey" }).click();
    await button("Add a passkey").click();
    await error(/Passkeys are not available here: .*PRF.*the password keeps working.*\[UNSUPPORTED\]/);
    assert.equal(await page.textContent("#status"), "", "the prompt's note is gone with the prompt");
    await page.screenshot({ path: join(screenshots, "passkey-no-prf.png"), fullPage: true });
    await button("Reveal the secret of Email").click();
    await page.waitForSelector("#rows .secret");
    assert.equal(await page.textContent("#rows .secret"), "SECRET-mail-93");

    assert.deepEqual(withoutAbortedSync(problems), [], "no console error, failed request or HTTP error");
  } finally {
    await browser.close();
    await server.close();
    await sync.close();
    rmSync(syncDir, { recursive: true, force: true });
  }
});

test("a browser that reports no PRF is offered no passkey button, on the unlock screen or after", async () => {
  // The demo asks PublicKeyCredential.getClientCapabilities() before offering passkeys. Chromium
  // here reports "extension:prf": true; a browser without PRF reports false, which this page is
  // told before any of its scripts run. (The test above shows the buttons where PRF is reported.)
  const server = await serve([join(root, "www"), { mount: "/dist", dir: join(consumer, "node_modules", "vaultstore-wasm", "dist") }]);
  const origin = server.url.replace("127.0.0.1", "localhost");
  const browser = await launchChromium();
  const context = await browser.newContext();
  await context.addInitScript(() => {
    PublicKeyCredential.getClientCapabilities = async () => ({ "extension:prf": false });
  });
  const page = await context.newPage();
  const problems = watchPage(page);
  const { button, status, addEntry } = ui(page);
  try {
    await page.goto(`${origin}/`);
    await page.waitForFunction(() => document.getElementById("unlock-hint").textContent !== "Opening…");
    await page.getByLabel("Vault name", { exact: true }).fill(`noprf-${Date.now()}`);
    await page.getByLabel("Vault name", { exact: true }).press("Tab");
    await page.waitForFunction(() => document.getElementById("unlock-title").textContent === "Create a vault");
    await page.getByLabel("Password", { exact: true }).fill(PASSWORD);
    await page.getByLabel("Repeat the password").fill(PASSWORD);
    await button("Create vault").click();
    await status(/created/);
    // An entry, so the locked vault has something a passkey could open (an empty one offers none).
    await addEntry("Email", "SECRET-mail-93");
    assert.equal(await page.isVisible("#passkey-panel"), false, "no passkey panel in a browser without PRF");
    await button("Lock now").click();
    await status(/Locked: keys wiped/);
    await page.waitForFunction(() => document.getElementById("unlock-title").textContent === "Unlock");
    assert.equal(await button("Unlock").isVisible(), true, "the password is still the way in");
    assert.equal(await button("Unlock with a passkey").isVisible(), false, "no passkey unlock without PRF");
    assert.deepEqual(problems, [], "no console error, failed request or HTTP error");
  } finally {
    await browser.close();
    await server.close();
  }
});


test("two browser profiles share a vault through the demo's sync server, which holds no plaintext; a server starting or down loses nothing", async () => {
  // What `npm start` serves (js/tools/start.mjs), with the packed package: the page, and POST /sync
  // answered by a Node vault on a libSQL file, started late as when the Node engine is still building.
  mkdirSync(screenshots, { recursive: true });
  const dir = mkdtempSync(join(tmpdir(), "vaultstore-demo-sync-"));
  const file = join(dir, "demo.db");
  const sync = syncServer(file);
  const roots = [join(root, "www"), { mount: "/dist", dir: join(consumer, "node_modules", "vaultstore-wasm", "dist") }];
  let server = await serve(roots, 0, { handle: sync.handle });
  const { url } = server;
  const browser = await launchChromium();
  const vaultName = `shared-${Date.now()}`;
  /** A browser profile (its own IndexedDB) on the demo. */
  const profile = async () => {
    const context = await browser.newContext({ viewport: { width: 1100, height: 1000 } });
    const page = await context.newPage();
    return { page, problems: watchPage(page), ...ui(page) };
  };
  const createVault = async ({ page, button, status }, password = PASSWORD) => {
    await page.goto(`${url}/`);
    await page.waitForFunction(() => document.getElementById("unlock-hint").textContent !== "Opening…");
    await page.getByLabel("Vault name", { exact: true }).fill(vaultName);
    await page.getByLabel("Vault name", { exact: true }).press("Tab");
    await page.waitForFunction(() => document.getElementById("unlock-title").textContent === "Create a vault");
    await page.getByLabel("Password", { exact: true }).fill(password);
    await page.getByLabel("Repeat the password").fill(password);
    await button("Create vault").click();
    await status(/created/);
  };
  const syncNow = async ({ page, button }) => {
    if (!(await page.$eval("#sync-panel", (d) => d.open))) await page.locator("summary", { hasText: /^Sync$/ }).click();
    await page.evaluate(() => {
      document.getElementById("status").textContent = "";
      document.getElementById("error").textContent = "";
    });
    await button("Sync now").click();
    await page.waitForFunction(() => /^(Synced|Not synced)\.$/.test(document.getElementById("sync-text").textContent));
  };
  const reveal = async ({ page, button }, name) => {
    await button(`Reveal the secret of ${name}`).click();
    await page.waitForSelector("#rows .secret");
    const secret = await page.textContent("#rows .secret");
    await button(`Hide the secret of ${name}`).click();
    return secret;
  };
  const a = await profile();
  const b = await profile();

  try {
    // ---- profile A: a vault with an entry; the server is still starting: said plainly ----
    await createVault(a);
    await a.addEntry("GitHub", "ghp_SECRET_github_7f3k");
    await syncNow(a);
    assert.equal(await a.page.getByLabel("Server URL").inputValue(), `${url}/sync`, "the server URL defaults to the page's origin + /sync");
    await a.error(/The sync server is starting.*try again in a few seconds.*\[STORAGE\]$/);
    assert.equal(await a.page.textContent("#sync-last"), "Not synced yet on this device.");
    assert.deepEqual(await a.names(), ["GitHub"]);
    await a.page.screenshot({ path: join(screenshots, "sync-server-starting.png"), fullPage: true });

    // ---- the engine is ready: A pushes; B (another profile, same name and password) pulls ----
    await sync.start(() => import(pathToFileURL(join(consumer, "node_modules", "vaultstore-wasm", "dist", "node.js")).href));
    await syncNow(a);
    await a.status(/^Synced with .*: pulled 0, pushed [1-9]\d*, 0 conflicts\.$/);
    assert.match(await a.page.textContent("#sync-last"), /^Last sync: .*pulled 0, pushed [1-9]\d*, 0 conflicts .*0 stranded\.$/);

    await createVault(b);
    assert.deepEqual(await b.names(), [], "B starts empty");
    await syncNow(b);
    await b.status(/^Synced with .*: pulled [1-9]\d*, pushed 0, 0 conflicts\.$/);
    assert.deepEqual(await b.names(), ["GitHub"], "the list re-renders with what the sync brought");
    assert.equal(await reveal(b, "GitHub"), "ghp_SECRET_github_7f3k", "B opens A's entry with the same password");
    await b.page.screenshot({ path: join(screenshots, "sync-profile-b.png"), fullPage: true });

    // ---- and back: B adds, A gets it ----
    await b.addEntry("Email", "SECRET-mail-93");
    await syncNow(b);
    await b.status(/pushed [1-9]/);
    await syncNow(a);
    await a.status(/pulled [1-9]/);
    assert.deepEqual((await a.names()).sort(), ["Email", "GitHub"]);
    assert.equal(await reveal(a, "Email"), "SECRET-mail-93");

    // ---- the server's libSQL file: envelopes, never a name, a secret or the password ----
    const stored = Buffer.concat([file, `${file}-wal`].filter(existsSync).map((f) => readFileSync(f)));
    assert.ok(stored.includes("vs1:"), "the server's file holds the vault's envelopes");
    for (const needle of ["GitHub", "ghp_SECRET_github_7f3k", "Email", "SECRET-mail-93", PASSWORD]) {
      assert.ok(!stored.includes(needle), `${needle} is not in the sync server's file in clear`);
    }

    // ---- a third profile joins with another password: told so, locked, and the right one opens ----
    const c = await profile();
    await createVault(c, "not the password of this vault");
    await syncNow(c);
    await c.status(/^Synced [1-9]\d* changes from the server, but the password you typed does not open them: unlock with the password of the vault on the server\.$/);
    assert.equal(await c.page.isVisible("#vault"), false, "nothing is shown with the wrong password");
    await c.page.waitForFunction(() => document.getElementById("unlock-title").textContent === "Unlock");
    await c.page.getByLabel("Password", { exact: true }).fill(PASSWORD);
    await c.button("Unlock").click();
    await c.status(/^Unlocked/);
    assert.deepEqual((await c.names()).sort(), ["Email", "GitHub"]);
    assert.deepEqual(withoutAbortedSync(c.problems), []);

    // ---- B changes the password: A's next sync says so and locks; the new password opens A ----
    await b.page.locator("summary", { hasText: "Change password" }).click();
    await b.page.getByLabel("Current password").fill(PASSWORD);
    await b.page.getByLabel("New password", { exact: true }).fill(NEW_PASSWORD);
    await b.page.getByLabel("Repeat the new password").fill(NEW_PASSWORD);
    await b.button("Change password").click();
    await b.status(/Password changed/);
    await syncNow(b);
    await b.status(/pushed [1-9]/);
    await syncNow(a);
    await a.status(/^Synced: the password of “shared-\d+” was changed on another device\. Unlock with the new password\.$/);
    assert.equal(await a.page.isVisible("#vault"), false);
    await a.page.getByLabel("Password", { exact: true }).fill(NEW_PASSWORD);
    await a.button("Unlock").click();
    await a.status(/^Unlocked/);
    assert.deepEqual((await a.names()).sort(), ["Email", "GitHub"]);

    // ---- the server is down: an error with its code, and nothing is lost ----
    await server.close();
    await a.addEntry("Door code", "SECRET-door-2580");
    await syncNow(a);
    await a.error(/The sync server cannot be reached at .*\/sync .*Nothing here was lost.*\[STORAGE\]$/);
    assert.equal(await a.page.textContent("#sync-text"), "Not synced.");
    assert.deepEqual((await a.names()).sort(), ["Door code", "Email", "GitHub"], "the entry added while the server is down stays");
    assert.equal(await reveal(a, "Door code"), "SECRET-door-2580");
    await a.page.screenshot({ path: join(screenshots, "sync-server-down.png"), fullPage: true });
    // Back on the same port (the same origin): the next sync delivers it.
    server = await serve(roots, Number(new URL(url).port), { handle: sync.handle });
    assert.equal(server.url, url, "the server is back on its port");
    await syncNow(a);
    await a.status(/pushed [1-9]/);
    await syncNow(b);
    await b.status(/pulled [1-9]/);
    assert.equal(await reveal(b, "Door code"), "SECRET-door-2580");

    // Only the sync requests the test made fail (a 503 while starting, refused while down) are errors.
    for (const { problems } of [a, b]) {
      const others = withoutAbortedSync(problems).filter(
        (p) => !/^HTTP 503: .*\/sync$|^request failed: .*\/sync |^console error: Failed to load resource: (the server responded with a status of 503|net::ERR_CONNECTION_REFUSED)/.test(p),
      );
      assert.deepEqual(others, [], "no other console error, failed request or HTTP error");
    }
  } finally {
    await browser.close();
    await server.close();
    await sync.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a stranded entry is listed in the Sync panel with what to do, and doing it delivers the entry", async () => {
  // Another device (a Node replica of the same vault on the demo's sync server) rotates the vault's
  // key; this profile, not synced since, adds an entry under the old key: the server refuses it
  // (SYNC.md 7), the panel lists it; changing the password here (old → new) moves it, and the next
  // sync delivers it.
  const dir = mkdtempSync(join(tmpdir(), "vaultstore-demo-sync-"));
  const sync = syncServer(join(dir, "demo.db"));
  const pkgUrl = pathToFileURL(join(consumer, "node_modules", "vaultstore-wasm", "dist", "node.js")).href;
  await sync.start(() => import(pkgUrl));
  const server = await serve([join(root, "www"), { mount: "/dist", dir: join(consumer, "node_modules", "vaultstore-wasm", "dist") }], 0, { handle: sync.handle });
  const browser = await launchChromium();
  const page = await (await browser.newContext({ viewport: { width: 1100, height: 1000 } })).newPage();
  const problems = watchPage(page);
  const { button, status, names, addEntry } = ui(page);
  const vaultName = `stranded-${Date.now()}`;
  const { Vault } = await import(pkgUrl);
  const other = await Vault.open({ backend: "memory", passwordIdentity: true });
  const remote = { url: `${server.url}/sync`, headers: { "x-vault-name": encodeURIComponent(vaultName) } };
  const syncNow = async () => {
    await page.evaluate(() => (document.getElementById("sync-text").textContent = ""));
    await button("Sync now").click();
    await page.waitForFunction(() => /^(Synced|Not synced)\.$/.test(document.getElementById("sync-text").textContent));
  };
  try {
    await page.goto(`${server.url}/`);
    await page.waitForFunction(() => document.getElementById("unlock-hint").textContent !== "Opening…");
    await page.getByLabel("Vault name", { exact: true }).fill(vaultName);
    await page.getByLabel("Vault name", { exact: true }).press("Tab");
    await page.waitForFunction(() => document.getElementById("unlock-title").textContent === "Create a vault");
    await page.getByLabel("Password", { exact: true }).fill(PASSWORD);
    await page.getByLabel("Repeat the password").fill(PASSWORD);
    await button("Create vault").click();
    await status(/created/);
    await addEntry("GitHub", "ghp_SECRET_github_7f3k");
    await page.locator("summary", { hasText: /^Sync$/ }).click();
    await syncNow();
    await status(/pushed [1-9]/);
    assert.equal(await page.isVisible("#sync-stranded-box"), false, "nothing stranded yet");

    // The other device joins, rotates the key to the new password, and syncs.
    assert.ok((await other.sync(remote)).pulled > 0);
    await other.bulkRekey(PASSWORD, NEW_PASSWORD, { rotate: true });
    await other.sync(remote);

    // This profile writes under the old key, then syncs: the entry stays here, listed.
    await addEntry("Door code", "SECRET-door-2580");
    const token = await page.textContent('#rows tr:has-text("Door code") td.token code');
    await syncNow();
    await status(/1 kept on this device only \(see Sync\)\.$/);
    assert.equal(await page.isVisible("#sync-stranded-box"), true);
    assert.deepEqual(await page.$$eval("#sync-stranded li", (items) => items.map((li) => li.textContent)), [`Door code: ${token}`]);
    assert.match(await page.textContent("#sync-stranded-box"), /change the password here \(current → new\), then\s+sync/);
    assert.match(await page.textContent("#sync-last"), /1 stranded\.$/);
    await page.screenshot({ path: join(screenshots, "sync-stranded.png"), fullPage: true });

    // What the panel says to do: change the password here to the new one, and sync.
    await page.locator("summary", { hasText: "Change password" }).click();
    await page.getByLabel("Current password").fill(PASSWORD);
    await page.getByLabel("New password", { exact: true }).fill(NEW_PASSWORD);
    await page.getByLabel("Repeat the new password").fill(NEW_PASSWORD);
    await button("Change password").click();
    await status(/Password changed/);
    await syncNow();
    await status(/^Synced with .*pushed [1-9]\d*, \d+ conflicts?\.$/);
    assert.equal(await page.isVisible("#sync-stranded-box"), false, "nothing stranded any more");
    assert.deepEqual((await names()).sort(), ["Door code", "GitHub"]);
    await other.sync(remote);
    assert.equal(JSON.parse(await other.tokenRead(token, NEW_PASSWORD)).secret, "SECRET-door-2580", "the other device has it");
    assert.deepEqual(withoutAbortedSync(problems), [], "no console error, failed request or HTTP error");
  } finally {
    await other.close();
    await browser.close();
    await server.close();
    await sync.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
