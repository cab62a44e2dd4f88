// The demo: a vault in IndexedDB, used through the public API only.
import { Vault, VaultError } from "vaultstore-wasm";

const $ = (id) => document.getElementById(id);
let vault;
let name;
let password;

function say(text, isError = false) {
  $("message").textContent = text;
  $("message").className = isError ? "error" : "";
}

/** Run an action, reporting VaultErrors by code. */
async function act(action) {
  try {
    await action();
  } catch (error) {
    const detail = error instanceof VaultError ? `${error.code}: ${error.message}` : String(error);
    say(detail, true);
  }
}

const when = (date) => (date ? date.toLocaleString() : "never");

async function render() {
  const records = await vault.recordList({ softDeletedInclude: true, orderBy: "created_at" });
  const now = Date.now();
  $("records").replaceChildren(
    ...records.map((r) => {
      const row = document.createElement("tr");
      const status = r.softDeletedAt ? "deleted" : r.expiresAt && r.expiresAt.getTime() < now ? "expired" : "live";
      row.innerHTML = `<td><code></code></td><td>${when(r.createdAt)}</td><td>${when(r.expiresAt)}</td><td>${status}</td><td></td>`;
      row.querySelector("code").textContent = r.token;
      const actions = row.lastElementChild;
      const button = (label, run) => {
        const b = document.createElement("button");
        b.type = "button";
        b.textContent = label;
        b.addEventListener("click", () => act(run));
        actions.append(b);
      };
      if (status === "live") {
        button("Reveal", async () => {
          const value = await vault.tokenRead(r.token, password);
          const span = document.createElement("span");
          span.className = "revealed";
          span.textContent = value;
          actions.replaceChildren(span);
        });
        button("Delete", async () => {
          await vault.tokenSoftDelete(r.token);
          await render();
        });
      } else if (status === "deleted") {
        button("Restore", async () => {
          await vault.tokenRestore(r.token);
          await render();
        });
        button("Purge", async () => {
          await vault.tokenDelete(r.token);
          await render();
        });
      } else {
        button("Renew", async () => {
          await vault.tokenRenew(r.token, null);
          await render();
        });
      }
      return row;
    }),
  );
  $("empty").hidden = records.length > 0;
}

async function rawDump() {
  const db = await new Promise((resolve, reject) => {
    const request = indexedDB.open(name);
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
  const rows = {};
  for (const store of db.objectStoreNames) {
    rows[store] = await new Promise((resolve) => {
      const request = db.transaction(store).objectStore(store).getAll();
      request.onsuccess = () => resolve(request.result);
    });
  }
  db.close();
  $("raw-dump").textContent = JSON.stringify(rows, null, 2);
}

$("open-form").addEventListener("submit", (event) => {
  event.preventDefault();
  act(async () => {
    name = $("vault-name").value;
    password = $("password").value;
    say("Opening…");
    vault = await Vault.open({ name, passwordIdentity: $("identity").checked });
    $("vault-label").textContent = name;
    $("unlock").hidden = true;
    $("vault").hidden = false;
    await render();
    say(`Opened "${name}". Secrets you store are sealed with your password before they are written.`);
  });
});

$("store-form").addEventListener("submit", (event) => {
  event.preventDefault();
  act(async () => {
    const minutes = Number($("expires").value);
    const expiresAt = minutes > 0 ? Date.now() + minutes * 60_000 : null;
    const token = await vault.tokenCreate($("secret").value, password, { expiresAt });
    $("secret").value = "";
    await render();
    say(`Stored as ${token}.`);
  });
});

$("rekey-form").addEventListener("submit", (event) => {
  event.preventDefault();
  act(async () => {
    const controller = new AbortController();
    $("abort").disabled = false;
    $("abort").onclick = () => controller.abort();
    $("progress").hidden = false;
    try {
      const moved = await vault.bulkRekey(password, $("new-password").value, {
        rotate: $("rotate").checked,
        signal: controller.signal,
        onProgress: (done, total) => {
          $("progress").max = Math.max(total, 1);
          $("progress").value = done;
        },
      });
      password = $("new-password").value;
      $("new-password").value = "";
      say(`Password changed: ${moved} secret(s) now open with the new password.`);
    } finally {
      $("abort").disabled = true;
      $("progress").hidden = true;
    }
  });
});

$("lock").addEventListener("click", () => {
  vault.lock();
  say("Locked: derived keys wiped from memory. The next action derives the key again.");
});

$("close").addEventListener("click", () =>
  act(async () => {
    await vault.close();
    $("vault").hidden = true;
    $("unlock").hidden = false;
    $("password").value = "";
    password = undefined;
    say("Closed.");
  }),
);

$("refresh-raw").addEventListener("click", () => act(rawDump));
$("raw").addEventListener("toggle", () => $("raw").open && act(rawDump));

$("export").addEventListener("click", () =>
  act(async () => {
    const bytes = await vault.exportSnapshot();
    const link = document.createElement("a");
    link.href = URL.createObjectURL(new Blob([bytes], { type: "application/json" }));
    link.download = `${name}-snapshot.json`;
    link.click();
    URL.revokeObjectURL(link.href);
  }),
);

say("Ready.");
