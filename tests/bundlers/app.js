// A tiny app that uses vaultstore-wasm as a user would, built by each bundler of the matrix with
// its default configuration. It stores a token in IndexedDB on the first load and reads it back on
// every load; `window.openMemoryVault()` loads the memory backend on demand.
import { Vault, RecordQuery, VaultError, isToken } from "vaultstore-wasm";

const PASSWORD = "correct horse battery";

/** What the synchronous helpers give before anything was awaited (no engine is loaded yet). */
function beforeAnyAwait() {
  let invalid;
  try {
    new RecordQuery({ limit: -1 }).validate();
    invalid = "accepted";
  } catch (error) {
    invalid = error instanceof VaultError ? error.code : String(error);
  }
  return { isToken: isToken("tk_abcdefghjkmnpq"), query: new RecordQuery().setLimit(1).toJSON(), invalid };
}

async function run(sync) {
  const vault = await Vault.open({ name: "bundled-app", kdfIterations: 1000 });
  let token = localStorage.getItem("token");
  const created = token === null;
  if (created) {
    token = await vault.tokenCreate("sealed in a bundled app", PASSWORD);
    localStorage.setItem("token", token);
  }
  const value = await vault.tokenRead(token, PASSWORD);
  return { sync, created, token, value, count: await vault.recordCount() };
}

window.openMemoryVault = async () => {
  const vault = await Vault.open({ backend: "memory", kdfIterations: 1000 });
  return vault.tokenRead(await vault.tokenCreate("in memory", PASSWORD), PASSWORD);
};

const sync = beforeAnyAwait();
const result = document.getElementById("result");
run(sync).then(
  (outcome) => {
    result.textContent = JSON.stringify(outcome);
  },
  (error) => {
    result.textContent = `failed: ${error?.code ?? ""} ${error?.message ?? error}`;
  },
);
