// Secrets: a small password manager, and the showcase of vaultstore-wasm's public API. Nothing
// here touches a key or a cipher: the package seals and opens every value.
//
// An entry is ONE sealed value, the JSON {name, secret}, stored with tokenCreate; the list
// decrypts the names of the page it shows with one tokensRead. The vault is opened with password
// identities, so a passkey can be added beside the password (secretAdd: a second key for the
// same entries), and changing the password seals the vault's key anew (bulkRekey). The Sync panel
// syncs the vault with a server replica (vault.sync; `npm start` serves one at /sync).
import { RecordQuery, Vault, VaultError, passkeyRegister, passkeySecret } from "vaultstore-wasm";

const $ = (id) => document.getElementById(id);

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
/** Expiry choices offered for an entry: label → milliseconds from now (null: never). */
const EXPIRIES = { never: null, "1 hour": HOUR, "1 day": DAY, "7 days": 7 * DAY, "30 days": 30 * DAY, "1 year": 365 * DAY };
const AUTO_LOCK_SETTING = "secrets.autoLockMinutes";

const session = {
  vault: undefined, // the open Vault (a database name; opening needs no password)
  name: undefined,
  isNew: false, // the vault has no entry yet: the unlock form creates its password
  password: undefined, // only while unlocked: the typed password, or the passkey's secret
  byPasskey: false, // unlocked with the passkey (session.password is its secret)
  names: new Map(), // token → name, decrypted this session; forgotten on lock
  revealed: new Map(), // token → secret, for the entries whose secret is shown
  view: "entries", // or "trash"
  page: 0,
  renders: 0,
  lastActivity: Date.now(),
  lockTimer: undefined,
};

// ---- messages ----

function say(text) {
  $("error").textContent = "";
  $("status").textContent = text;
}

/** A sentence a person can act on, for any error; VaultErrors by their stable `code`. */
function explain(error) {
  if (!(error instanceof VaultError)) return error?.message ?? String(error);
  switch (error.code) {
    case "INVALID_PASSWORD":
      return "Wrong password: it does not open this vault's entries.";
    case "IDENTITY_NOT_FOUND":
      return "Wrong current password: it does not open this vault.";
    case "DECRYPTION_FAILED":
      return "This entry is damaged (it was changed outside this app) and cannot be decrypted.";
    case "PASSWORD_POLICY":
      return `Choose a stronger password: ${error.message.replace(/^.*policy: /, "")}.`;
    case "RECORD_NOT_FOUND":
      return {
        expired: "This entry has expired: renew it to read it again.",
        soft_deleted: "This entry is in the trash: restore it first.",
        missing: "This entry no longer exists (was it deleted in another tab?).",
      }[error.reason] ?? error.message;
    case "QUOTA_EXCEEDED":
      return "The browser refused to store more: free some disk space, or empty the trash.";
    case "ABORTED":
      return "Stopped: nothing was changed.";
    case "CLOSED":
      return "The vault is closed: reload the page.";
    case "UNSUPPORTED":
      return `Passkeys are not available here: ${error.message}.`;
    case "STORAGE":
      return error.cause?.name === "VersionChangeError"
        ? "A newer version of this page changed the vault in another tab: reload the page."
        : `The browser's storage failed: ${error.message}. Reload the page and try again.`;
    case "INVALID_ARGUMENT":
      return `That did not work: ${error.message.replace(/^invalid argument: /, "")}.`;
    default:
      return error.message;
  }
}

/** Run a user action; whatever it throws is shown, never lost. */
async function act(action) {
  try {
    await action();
  } catch (error) {
    $("error").textContent = explain(error) + (error instanceof VaultError ? ` [${error.code}]` : "");
  }
}

// ---- formatting ----

const relativeTime = new Intl.RelativeTimeFormat("en", { numeric: "auto" });

function relative(date) {
  const diff = date.getTime() - Date.now();
  for (const [unit, ms] of [["year", 365 * DAY], ["month", 30 * DAY], ["day", DAY], ["hour", HOUR], ["minute", 60_000]]) {
    if (Math.abs(diff) >= 0.95 * ms) return relativeTime.format(Math.round(diff / ms), unit); // 59.9 minutes: "in 1 hour"
  }
  return relativeTime.format(Math.round(diff / 1000), "second");
}

const isExpired = (record) => record.expiresAt !== null && record.expiresAt.getTime() < Date.now();

/** The sealed value: `{name, secret}` (a value written by another app is all secret). */
function parseEntry(value) {
  try {
    const entry = JSON.parse(value);
    if (typeof entry?.name === "string" && typeof entry?.secret === "string") return entry;
  } catch {
    // not ours: fall through
  }
  return { name: "(untitled)", secret: value };
}

function element(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

// ---- opening, creating and unlocking ----

async function openVault(name) {
  if (session.vault && session.name === name) return;
  await session.vault?.close();
  session.vault = await Vault.open({ name, passwordIdentity: true });
  session.name = name;
  localStorage.setItem("secrets.vault", name);
}

/** Show "create" for an empty vault, "unlock" otherwise. */
async function refreshUnlockForm() {
  const name = $("vault-name").value.trim();
  if (!name) return;
  await openVault(name);
  session.isNew = (await session.vault.recordCount({ softDeletedInclude: true })) === 0;
  $("unlock-title").textContent = session.isNew ? "Create a vault" : "Unlock";
  $("unlock-hint").textContent = session.isNew
    ? `“${name}” is empty. Choose its password: at least 12 characters. It cannot be recovered, so keep it safe. ` +
      "(To bring a vault of the same name here from the sync server, type its password, then “Sync now” in Sync.)"
    : `Enter the password of “${name}”.`;
  $("confirm-field").hidden = !session.isNew;
  $("confirm").required = session.isNew;
  $("password").autocomplete = session.isNew ? "new-password" : "current-password";
  if (session.isNew) $("password").minLength = 12;
  else $("password").removeAttribute("minlength");
  $("unlock-button").textContent = session.isNew ? "Create vault" : "Unlock";
  $("passkey-unlock").hidden = session.isNew || !passkeys.usable;
}

/**
 * Check the password with `vault.unlock`, which derives its key once (kept for the session) and
 * tries it against what the vault holds, entries in the trash and expired ones included:
 * `true` it opens them; `false` the vault holds nothing yet, so this password becomes its
 * password; a wrong one rejects with INVALID_PASSWORD and the vault stays locked.
 */
async function unlock() {
  if ($("vault-name").value.trim() !== session.name) await refreshUnlockForm();
  const password = $("password").value;
  if (session.isNew && password !== $("confirm").value) throw new Error("The two passwords differ: type the same password twice.");
  const known = await session.vault.unlock(password);
  if (!known && !session.isNew) {
    // Emptied since the form was shown (every entry deleted forever, maybe in another tab): the
    // password typed now would become the vault's, so have it typed twice first.
    session.vault.lock();
    await refreshUnlockForm();
    say(`“${session.name}” holds nothing any more: the password you type now becomes its password. Type it twice.`);
    $("password").focus();
    return;
  }
  session.isNew = !known;
  await opened(password, false);
}

/** The vault is open with `secret` (a password, or a passkey's secret): show the entries. */
async function opened(secret, byPasskey) {
  session.password = secret;
  session.byPasskey = byPasskey;
  $("password").value = "";
  $("confirm").value = "";
  $("unlock").hidden = true;
  $("vault").hidden = false;
  $("session").hidden = false;
  $("vault-label").textContent = session.name;
  $("auto-lock").value = (await session.vault.getVaultSetting(AUTO_LOCK_SETTING)) ?? "5";
  session.view = "entries";
  session.page = 0;
  $("search").value = "";
  showView();
  session.lastActivity = Date.now();
  scheduleLock();
  await render();
  showPasskeyPanel();
  showSyncPanel();
  say(
    session.isNew
      ? `Vault “${session.name}” created: the password you typed is now its password. Add your first entry.`
      : `Unlocked “${session.name}”${byPasskey ? " with the passkey" : ""}.`,
  );
  ($("rows").childElementCount > 0 ? $("search") : $("add")).focus();
}

/** Wipe the keys (vault.lock()), forget the password and every decrypted name, ask again. */
function lock(message) {
  session.vault.lock();
  if (session.password instanceof Uint8Array) session.password.fill(0); // a passkey's secret
  session.password = undefined;
  session.byPasskey = false;
  session.names.clear();
  session.revealed.clear();
  clearTimeout(session.lockTimer);
  for (const dialog of document.querySelectorAll("dialog[open]")) dialog.close();
  $("rows").replaceChildren();
  $("raw-dump").textContent = "";
  for (const id of ["current-password", "new-password", "repeat-password", "entry-name", "entry-secret"]) $(id).value = "";
  for (const panel of $("vault").querySelectorAll("details")) panel.open = false;
  $("rekey-progress").hidden = true;
  $("rekey-text").textContent = "";
  $("vault").hidden = true;
  $("session").hidden = true;
  $("unlock").hidden = false;
  say(message);
  $("password").focus();
  act(refreshUnlockForm);
}

// ---- auto-lock ----

function scheduleLock() {
  clearTimeout(session.lockTimer);
  const limit = Number($("auto-lock").value) * 60_000;
  if (session.password === undefined || limit === 0) return;
  session.lockTimer = setTimeout(() => {
    if (Date.now() - session.lastActivity >= limit) {
      lock(`Locked after ${$("auto-lock").selectedOptions[0].textContent} without activity. Enter the password to continue.`);
    } else {
      scheduleLock();
    }
  }, Math.max(session.lastActivity + limit - Date.now(), 0));
}

for (const type of ["pointerdown", "pointermove", "keydown", "wheel"]) {
  document.addEventListener(type, () => (session.lastActivity = Date.now()), { passive: true });
}

// ---- the list ----

const pageSize = () => Number($("page-size").value);

function sortQuery() {
  const [orderBy, sortOrder] = $("sort").value.split(" ");
  return { orderBy, sortOrder };
}

/**
 * Decrypt the names of `records` with one tokensRead (expired ones cannot be read). An entry
 * sealed with another password is left nameless instead of failing the whole page.
 */
async function readNames(records, { onlyMissing = false } = {}) {
  let tokens = records.filter((r) => !isExpired(r) && !(onlyMissing && session.names.has(r.token))).map((r) => r.token);
  for (let attempt = 0; tokens.length > 0 && attempt < 3; attempt++) {
    try {
      const values = await session.vault.tokensRead(tokens, session.password);
      for (const [token, value] of Object.entries(values)) session.names.set(token, parseEntry(value).name);
      return;
    } catch (error) {
      if (!(error instanceof VaultError) || !error.tokens || error.code === "RECORD_NOT_FOUND") throw error;
      tokens = tokens.filter((t) => !error.tokens.includes(t));
    }
  }
}

async function render() {
  const ticket = ++session.renders;
  const { vault } = session;
  const trash = session.view === "trash";
  const [live, trashed] = await Promise.all([vault.recordCount(), vault.recordCount({ softDeletedOnly: true })]);
  const size = pageSize();
  const search = trash ? "" : $("search").value.trim().toLocaleLowerCase();
  let records;
  let total;
  if (search) {
    // Names are sealed, so a search decrypts every live entry's name once (one tokensRead for those
    // not seen yet) and filters here; nothing about the search reaches storage.
    const all = await vault.recordList(sortQuery());
    await readNames(all, { onlyMissing: true });
    const hits = all.filter((r) => session.names.get(r.token)?.toLocaleLowerCase().includes(search));
    total = hits.length;
    session.page = Math.min(session.page, Math.max(0, Math.ceil(total / size) - 1));
    records = hits.slice(session.page * size, (session.page + 1) * size);
  } else {
    total = trash ? trashed : live;
    session.page = Math.min(session.page, Math.max(0, Math.ceil(total / size) - 1));
    const query = new RecordQuery(sortQuery()).setLimit(size).setOffset(session.page * size);
    if (trash) query.setSoftDeletedOnly(true);
    records = await vault.recordList(query);
    if (!trash) await readNames(records); // the visible page: one tokensRead
  }
  if (ticket !== session.renders) return; // a newer render is under way

  $("count-entries").textContent = `(${live})`;
  $("count-trash").textContent = `(${trashed})`;
  $("rows").replaceChildren(...records.map((record) => row(record, trash)));
  const pages = Math.max(1, Math.ceil(total / size));
  const noun = trash ? "in the trash" : search ? "matching" : "entries";
  $("caption").textContent = `${trash ? "Trash" : "Entries"}, page ${session.page + 1} of ${pages}`;
  $("page-info").textContent = `Page ${session.page + 1} of ${pages} · ${total} ${noun}`;
  $("prev").disabled = session.page === 0;
  $("next").disabled = session.page + 1 >= pages;
  $("empty").hidden = records.length > 0;
  $("empty").textContent = trash
    ? "The trash is empty."
    : search
      ? `No entry named like “${$("search").value.trim()}”.`
      : "No entries yet: “Add entry” seals a name and a secret with your password.";
}

function row(record, trash) {
  const { token } = record;
  const name = session.names.get(token);
  const label = name ?? token;
  const expired = isExpired(record);

  const nameCell = element("td", { className: "name" });
  nameCell.append(name === undefined
    ? element("em", {}, trash ? "Sealed (restore it to read its name)" : expired ? "Expired (renew it to read it)" : "Sealed with another password")
    : name);
  if (expired && !trash) nameCell.append(" ", element("span", { className: "badge" }, "expired"));
  if (session.revealed.has(token)) {
    nameCell.append(element("div", { className: "secret" }, element("code", { tabIndex: 0, ariaLabel: `Secret of ${label}` }, session.revealed.get(token))));
  }

  const tokenCell = element("td", { className: "token" }, element("code", {}, token), " ");
  tokenCell.append(button("Copy", `Copy the token of ${label}`, "copy-token", () => copy(token, `Token of “${label}” copied.`)));

  const expires = element("td", {}, record.expiresAt ? (expired ? `expired ${relative(record.expiresAt)}` : relative(record.expiresAt)) : "never");
  if (record.expiresAt) expires.title = record.expiresAt.toLocaleString();
  const changedAt = trash ? record.softDeletedAt : record.updatedAt;
  const changed = element("td", { title: changedAt.toLocaleString() }, trash ? `trashed ${relative(changedAt)}` : relative(changedAt));

  const actions = element("div", { className: "actions" });
  if (trash) {
    actions.append(
      button("Restore", `Restore ${label}`, "restore", async () => {
        await session.vault.tokenRestore(token);
        await render();
        say(`“${label}” restored.`);
      }),
      button("Delete forever", `Delete ${label} forever`, "purge", async () => {
        if (!confirm(`Delete “${label}” forever? This cannot be undone.`)) return;
        await session.vault.tokenDelete(token);
        session.names.delete(token);
        await render();
        say(`“${label}” deleted forever.`);
      }),
    );
  } else if (expired) {
    actions.append(button("Renew", `Renew ${label}`, "renew", () => openRenewDialog(record), { opensDialog: true }));
  } else {
    const shown = session.revealed.has(token);
    actions.append(
      button(shown ? "Hide" : "Reveal", `${shown ? "Hide" : "Reveal"} the secret of ${label}`, "reveal", async () => {
        if (shown) session.revealed.delete(token);
        else session.revealed.set(token, parseEntry(await session.vault.tokenRead(token, session.password)).secret);
        await render();
      }),
      button("Copy secret", `Copy the secret of ${label}`, "copy-secret", async () => {
        const { secret } = parseEntry(await session.vault.tokenRead(token, session.password));
        await copy(secret, `Secret of “${label}” copied.`);
      }),
      button("Edit", `Edit ${label}`, "edit", () => openEntryDialog(record), { opensDialog: true }),
    );
  }
  if (!trash) {
    actions.append(button("Trash", `Move ${label} to the trash`, "trash", async () => {
      await session.vault.tokenSoftDelete(token);
      session.revealed.delete(token);
      await render();
      say(`“${label}” moved to the trash.`);
    }));
  }
  const tr = element("tr", {}, nameCell, tokenCell, expires, changed, element("td", {}, actions));
  tr.dataset.token = token;
  return tr;
}

/** Put the focus back on a row's button after the list was redrawn (else on the list's first). */
function focusRowButton(token, action) {
  const again = $("rows").querySelector(`tr[data-token="${CSS.escape(token)}"] button[data-action="${action}"]`);
  (again ?? $("rows").querySelector("button") ?? $("add")).focus();
}

/** A row button. Unless it opens a dialog (which hands the focus back itself), the focus stays. */
function button(text, ariaLabel, action, run, { opensDialog = false } = {}) {
  const b = element("button", { type: "button", ariaLabel }, text);
  b.dataset.action = action;
  b.addEventListener("click", () =>
    act(async () => {
      const token = b.closest("tr").dataset.token;
      await run();
      if (!opensDialog && !b.isConnected) focusRowButton(token, action);
    }),
  );
  return b;
}

async function copy(text, message) {
  await navigator.clipboard.writeText(text);
  say(message);
}

function showView() {
  const trash = session.view === "trash";
  $("view-entries").setAttribute("aria-pressed", String(!trash));
  $("view-trash").setAttribute("aria-pressed", String(trash));
  $("search").disabled = trash;
  $("add").hidden = trash;
}

// ---- add, edit, renew ----

let editing; // the token the entry dialog edits (undefined: a new entry)

function expiryOptions(select, keep) {
  select.replaceChildren(
    ...(keep ? [element("option", { value: "keep" }, `Keep (${keep})`)] : []),
    ...Object.keys(EXPIRIES).map((label) => element("option", { value: label }, label === "never" ? "Never" : `In ${label}`)),
  );
}

const expiryFrom = (choice) => (EXPIRIES[choice] === null ? null : Date.now() + EXPIRIES[choice]);
const describeExpiry = (record) => (record.expiresAt ? `expires ${relative(record.expiresAt)}` : "never expires");

async function openEntryDialog(record) {
  editing = record?.token;
  const entry = record ? parseEntry(await session.vault.tokenRead(record.token, session.password)) : { name: "", secret: "" };
  $("entry-title").textContent = record ? `Edit “${entry.name}”` : "Add entry";
  $("entry-name").value = entry.name;
  $("entry-secret").value = entry.secret;
  expiryOptions($("entry-expiry"), record && describeExpiry(record));
  $("entry-dialog").returnValue = "";
  $("entry-dialog").showModal();
  $("entry-name").focus();
}

async function saveEntry() {
  const entry = { name: $("entry-name").value.trim(), secret: $("entry-secret").value };
  const choice = $("entry-expiry").value;
  const value = JSON.stringify(entry);
  let message;
  if (editing) {
    await session.vault.tokenUpdate(editing, value, session.password); // keeps the expiry
    if (choice !== "keep") await session.vault.tokenRenew(editing, expiryFrom(choice));
    session.revealed.delete(editing);
    message = `“${entry.name}” saved.`;
  } else {
    const token = await session.vault.tokenCreate(value, session.password, { expiresAt: expiryFrom(choice) });
    message = `“${entry.name}” added (token ${token}).`;
  }
  $("entry-name").value = "";
  $("entry-secret").value = "";
  await render();
  say(message);
  if (editing) focusRowButton(editing, "edit");
  else $("add").focus();
}

let renewing; // the record the renew dialog is for

function openRenewDialog(record) {
  renewing = record;
  $("renew-title").textContent = `Renew “${session.names.get(record.token) ?? record.token}”`;
  expiryOptions($("renew-expiry"));
  $("renew-expiry").value = "30 days";
  $("renew-dialog").returnValue = "";
  $("renew-dialog").showModal();
}

async function renew() {
  await session.vault.tokenRenew(renewing.token, expiryFrom($("renew-expiry").value));
  await render();
  say(`Renewed: ${$("renew-expiry").value === "never" ? "it never expires" : `it expires in ${$("renew-expiry").value}`}.`);
  focusRowButton(renewing.token, "reveal");
}

// ---- passkeys ----

/**
 * Whether this browser can use a passkey here. WebAuthn refuses an IP address as the site's id, so
 * on 127.0.0.1 the page points at its localhost twin; where the browser reports its capabilities,
 * the PRF extension must be among them (without that API, a try answers UNSUPPORTED if need be).
 */
const passkeys = { usable: false };

async function detectPasskeys() {
  if (typeof PublicKeyCredential !== "function" || !navigator.credentials) return;
  if (/^\d+\.\d+\.\d+\.\d+$|^\[/.test(location.hostname)) {
    const twin = new URL(location.href);
    twin.hostname = "localhost";
    $("passkey-note").replaceChildren(
      "Passkeys need a domain name, not an IP address: open ",
      element("a", { href: twin.href }, twin.origin),
      " to use one (another origin, so it has vaults of its own).",
    );
    $("passkey-note").hidden = false;
    return;
  }
  const capabilities = await PublicKeyCredential.getClientCapabilities?.().catch(() => undefined);
  passkeys.usable = capabilities === undefined || capabilities["extension:prf"] === true;
}

const passkeyKey = () => `secrets.passkey.${session.name}`;

/** Say what the browser is about to ask for, while it asks (the prompt is the browser's own). */
async function prompting(text, request) {
  say(text);
  try {
    return await request();
  } finally {
    $("status").textContent = "";
  }
}

function showPasskeyPanel() {
  const stored = localStorage.getItem(passkeyKey()) !== null;
  $("passkey-panel").hidden = !passkeys.usable;
  $("passkey-add").hidden = stored;
  $("passkey-remove").hidden = !stored;
}

/** Make a passkey and add its secret to the vault, beside the password. */
async function addPasskey() {
  if (session.byPasskey) throw new Error("Unlock with the password to add a passkey.");
  // Entries stored before this vault used identities get linked to the password's identity first.
  await session.vault.migrateRecordLinks(session.password);
  const { credentialId, secret } = await prompting("Follow your browser's prompt to create the passkey…", () =>
    passkeyRegister({ rpName: "Secrets (vaultstore-wasm demo)", userName: `vault “${session.name}”` }),
  );
  try {
    await session.vault.secretAdd(session.password, secret);
  } finally {
    secret.fill(0);
  }
  localStorage.setItem(passkeyKey(), credentialId); // public: it only says which passkey to ask for
  showPasskeyPanel();
  say("Passkey added: “Unlock with a passkey” now opens this vault. The password keeps working too.");
  $("passkey-remove").focus();
}

/** Ask for the passkey and open the vault with its secret (vault.unlock, as with a password). */
async function unlockWithPasskey() {
  if ($("vault-name").value.trim() !== session.name) await refreshUnlockForm();
  if (session.isNew) throw new Error("This vault is empty: create it with a password first.");
  const credentialId = localStorage.getItem(passkeyKey()) ?? undefined;
  const secret = await prompting("Follow your browser's prompt to use your passkey…", () => passkeySecret({ credentialId }));
  try {
    if (!(await session.vault.unlock(secret))) throw new Error("This vault holds nothing yet: create it with a password first.");
  } catch (error) {
    secret.fill(0);
    if (error instanceof VaultError && error.code === "INVALID_PASSWORD") {
      throw new Error("This passkey does not open this vault (it was removed, or the vault's key was rotated). Use the password.");
    }
    throw error;
  }
  await opened(secret, true);
}

/** Forget the passkey's key in the vault (secretRemove) and its id here; the password stays. */
async function removePasskey() {
  const credentialId = localStorage.getItem(passkeyKey()) ?? undefined;
  let secret = session.byPasskey ? session.password : undefined;
  if (secret === undefined) {
    secret = await prompting("Follow your browser's prompt to confirm with the passkey…", () => passkeySecret({ credentialId }));
  }
  await session.vault.secretRemove(secret);
  localStorage.removeItem(passkeyKey());
  if (session.byPasskey) {
    lock("Passkey removed: it no longer opens this vault. Unlock with the password.");
    return;
  }
  secret.fill(0);
  showPasskeyPanel();
  say("Passkey removed: only the password opens this vault now. (Delete the passkey in your browser's or device's settings too.)");
  $("passkey-add").focus();
}

// ---- sync ----

const SYNC_URL_SETTING = "secrets.syncUrl"; // this browser's choice (localStorage), not a vault setting: those sync
const lastSyncKey = () => `secrets.lastSync.${session.name}`;

/** The server URL: the one typed here before, else this page's own origin + /sync (npm start's server). */
function syncUrl() {
  return localStorage.getItem(SYNC_URL_SETTING) ?? `${location.origin}/sync`;
}

function showSyncPanel() {
  $("sync-url").value = syncUrl();
  $("sync-progress").hidden = true;
  $("sync-text").textContent = "";
  const last = JSON.parse(localStorage.getItem(lastSyncKey()) ?? "null");
  showLastSync(last);
  showStranded(last?.stranded ?? []);
}

function showLastSync(last) {
  if (!last) {
    $("sync-last").textContent = "Not synced yet on this device.";
    return;
  }
  const at = new Date(last.at);
  $("sync-last").replaceChildren(
    "Last sync: ",
    element("time", { dateTime: at.toISOString(), title: at.toLocaleString() }, at.toLocaleTimeString()),
    ` (${relative(at)}): pulled ${last.pulled}, pushed ${last.pushed}, ${last.conflicts} ${last.conflicts === 1 ? "conflict" : "conflicts"}` +
      ` (changes made here that a later change from another device replaced), ${last.stranded.length} stranded.`,
  );
}

function showStranded(tokens) {
  $("sync-stranded-box").hidden = tokens.length === 0;
  $("sync-stranded").replaceChildren(
    ...tokens.map((token) => {
      const name = session.names.get(token);
      return element("li", {}, ...(name === undefined ? [] : [`${name}: `]), element("code", {}, token));
    }),
  );
}

/** What a failed sync means for the user; the code is shown beside it. */
function explainSync(error, url) {
  if (!(error instanceof VaultError)) return explain(error);
  if (error.code === "SYNC_CONFLICT") {
    return "The server holds another vault under this name (this one had entries before it first synced): nothing was changed on either side. To get the server's vault here, sync it into a new, empty vault name.";
  }
  if (error.code === "STORAGE" && /answered 503/.test(error.message)) {
    return `The sync server is starting (npm start is still building its engine): try again in a few seconds. Nothing was changed. (${error.message})`;
  }
  if (error.code === "STORAGE" && error.cause !== undefined) {
    return `The sync server cannot be reached at ${url} (is npm start still running?). Nothing here was lost: your entries stay in this browser; sync again when it is back.`;
  }
  if (error.code === "STORAGE") return `The sync failed: ${error.message}. Nothing here was lost; try again.`;
  return explain(error);
}

/**
 * Sync with the server (vault.sync), showing its progress, then re-render the list with what it
 * brought. The page sends the vault's name (X-Vault-Name) so the demo's server keeps one vault per
 * name; a real server would pick the signed-in user's vault instead.
 */
async function syncNow() {
  const url = $("sync-url").value.trim();
  const progress = $("sync-progress");
  const wasEmpty = session.isNew;
  $("sync-now").disabled = true;
  progress.hidden = false;
  progress.removeAttribute("value"); // indeterminate until the first report
  $("sync-text").textContent = "Syncing…";
  let report;
  try {
    report = await session.vault.sync(
      { url, headers: { "x-vault-name": encodeURIComponent(session.name) } },
      {
        signal: AbortSignal.timeout(120_000),
        onProgress: (done, total) => {
          progress.max = Math.max(total, 1);
          progress.value = done;
          $("sync-text").textContent = `${done} of ${total} changes moved…`;
        },
      },
    );
  } catch (error) {
    progress.hidden = true;
    $("sync-text").textContent = "Not synced.";
    $("status").textContent = "";
    $("error").textContent = `${explainSync(error, url)}${error instanceof VaultError ? ` [${error.code}]` : ""}`;
    return;
  } finally {
    $("sync-now").disabled = false;
  }
  if (url !== `${location.origin}/sync`) localStorage.setItem(SYNC_URL_SETTING, url);
  else localStorage.removeItem(SYNC_URL_SETTING);
  const last = { at: Date.now(), pulled: report.pulled, pushed: report.pushed, conflicts: report.conflicts, stranded: report.stranded };
  localStorage.setItem(lastSyncKey(), JSON.stringify(last));
  $("sync-text").textContent = "Synced.";
  if (report.pulled > 0) {
    // Check that what this page was unlocked with still opens the vault (vault.unlock against what
    // the sync brought): this device may just have joined the server's vault with another
    // password, or another device may have changed the password.
    try {
      await session.vault.unlock(session.password);
    } catch (error) {
      if (!(error instanceof VaultError && error.code === "INVALID_PASSWORD")) throw error;
      lock(
        wasEmpty
          ? `Synced ${report.pulled} changes from the server, but the password you typed does not open them: unlock with the password of the vault on the server.`
          : `Synced: the password of “${session.name}” was changed on another device. Unlock with the new password.`,
      );
      return;
    }
    session.isNew = false;
  }
  session.names.clear(); // a name may have changed on another device
  session.revealed.clear();
  await render();
  showLastSync(last);
  showStranded(report.stranded);
  say(
    `Synced with ${url}: pulled ${report.pulled}, pushed ${report.pushed}, ${report.conflicts} ${report.conflicts === 1 ? "conflict" : "conflicts"}` +
      (report.stranded.length ? `, ${report.stranded.length} kept on this device only (see Sync).` : "."),
  );
}

// ---- change password ----

async function changePassword() {
  const current = $("current-password").value;
  const next = $("new-password").value;
  if (!session.byPasskey && current !== session.password) throw new Error("The current password is not the one this vault was unlocked with.");
  if (next !== $("repeat-password").value) throw new Error("The two new passwords differ: type the same password twice.");
  const controller = new AbortController();
  const progress = $("rekey-progress");
  $("abort").onclick = () => controller.abort();
  $("abort").disabled = false;
  $("rekey").disabled = true;
  progress.hidden = false;
  progress.value = 0;
  progress.max = 1;
  $("rekey-text").textContent = "Deriving the keys…";
  try {
    const moved = await session.vault.bulkRekey(current, next, {
      signal: controller.signal,
      onProgress: (done, total) => {
        progress.max = Math.max(total, 1);
        progress.value = done;
        $("rekey-text").textContent = `${done} of ${total} entries re-encrypted…`;
      },
    });
    if (!session.byPasskey) session.password = next;
    for (const id of ["current-password", "new-password", "repeat-password"]) $(id).value = "";
    $("rekey-text").textContent = `Done: ${moved} entries now open with the new password.`;
    say(`Password changed: ${moved} entries now open with the new password.`);
  } catch (error) {
    $("rekey-text").textContent = "Nothing was changed.";
    if (!(error instanceof VaultError && error.code === "ABORTED")) throw error;
    say("Password change aborted: nothing was changed, the current password still opens every entry.");
  } finally {
    $("abort").disabled = true;
    $("abort").onclick = null;
    $("rekey").disabled = false;
  }
}

// ---- snapshots ----

async function exportSnapshot() {
  const bytes = await session.vault.exportSnapshot();
  const count = await session.vault.recordCount({ softDeletedInclude: true });
  const link = element("a", {
    href: URL.createObjectURL(new Blob([bytes], { type: "application/json" })),
    download: `${session.name}-${new Date().toISOString().slice(0, 10)}.vaultstore.json`,
  });
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
  say(`Snapshot downloaded: ${count} entries, still encrypted.`);
}

async function importSnapshot() {
  const file = $("import-file").files[0];
  const name = $("import-name").value.trim();
  // Vault.open refuses a snapshot into a database that already has entries.
  const imported = await Vault.open({ name, passwordIdentity: true, snapshot: new Uint8Array(await file.arrayBuffer()) });
  const count = await imported.recordCount({ softDeletedInclude: true });
  await session.vault?.close();
  session.vault = imported;
  session.name = name;
  localStorage.setItem("secrets.vault", name);
  $("vault-name").value = name;
  $("import-form").reset();
  $("import").open = false;
  await refreshUnlockForm();
  say(`Imported ${count} entries into “${name}”. Unlock it with the password they were sealed with.`);
  $("password").focus();
}

// ---- what IndexedDB holds ----

function request(r) {
  return new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
}

async function rawDump() {
  // Read the database directly, as any script of this origin (or a forensic tool) could.
  const db = await request(indexedDB.open(session.name));
  const rows = {};
  try {
    for (const store of db.objectStoreNames) rows[store] = await request(db.transaction(store).objectStore(store).getAll());
  } finally {
    db.close();
  }
  $("raw-summary").textContent = Object.entries(rows).map(([store, list]) => `${list.length} rows in “${store}”`).join(", ");
  $("raw-dump").textContent = JSON.stringify(rows, null, 2);
}

// ---- wiring ----

$("vault-name").addEventListener("change", () => act(refreshUnlockForm));
$("unlock-form").addEventListener("submit", (event) => {
  event.preventDefault();
  act(unlock);
});
$("import-form").addEventListener("submit", (event) => {
  event.preventDefault();
  act(importSnapshot);
});
$("lock").addEventListener("click", () => lock("Locked: keys wiped from memory. Enter the password to continue."));
$("auto-lock").addEventListener("change", () =>
  act(async () => {
    await session.vault.setVaultSetting(AUTO_LOCK_SETTING, $("auto-lock").value);
    scheduleLock();
    say($("auto-lock").value === "0" ? "Auto-lock is off." : `Locks after ${$("auto-lock").selectedOptions[0].textContent} without activity.`);
  }),
);

for (const view of ["entries", "trash"]) {
  $(`view-${view}`).addEventListener("click", () =>
    act(async () => {
      session.view = view;
      session.page = 0;
      showView();
      await render();
    }),
  );
}
let searchTimer;
$("search").addEventListener("input", () => {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(() => {
    session.page = 0;
    act(render);
  }, 150);
});
for (const id of ["sort", "page-size"]) {
  $(id).addEventListener("change", () => {
    session.page = 0;
    act(render);
  });
}
$("prev").addEventListener("click", () => {
  session.page -= 1;
  act(render);
});
$("next").addEventListener("click", () => {
  session.page += 1;
  act(render);
});
$("add").addEventListener("click", () => act(() => openEntryDialog()));
$("entry-dialog").addEventListener("close", () => {
  if ($("entry-dialog").returnValue === "save") act(saveEntry);
});
$("renew-dialog").addEventListener("close", () => {
  if ($("renew-dialog").returnValue === "save") act(renew);
});
$("rekey-form").addEventListener("submit", (event) => {
  event.preventDefault();
  act(changePassword);
});
$("export").addEventListener("click", () => act(exportSnapshot));
$("sync-form").addEventListener("submit", (event) => {
  event.preventDefault();
  act(syncNow);
});
$("passkey-unlock").addEventListener("click", () => act(unlockWithPasskey));
$("passkey-add").addEventListener("click", () => act(addPasskey));
$("passkey-remove").addEventListener("click", () => act(removePasskey));
$("refresh-raw").addEventListener("click", () => act(rawDump));
$("raw").addEventListener("toggle", () => $("raw").open && act(rawDump));
document.addEventListener("keydown", (event) => {
  const typing = event.target instanceof HTMLInputElement || event.target instanceof HTMLTextAreaElement || event.target instanceof HTMLSelectElement;
  if (event.key === "/" && !typing && !$("vault").hidden && !$("search").disabled) {
    event.preventDefault();
    $("search").focus();
  }
});

$("vault-name").value = localStorage.getItem("secrets.vault") ?? "secrets";
act(async () => {
  await detectPasskeys();
  await refreshUnlockForm();
});
