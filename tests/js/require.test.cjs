// CommonJS users: require("vaultstore-wasm") works too.
const assert = require("node:assert/strict");
const { test } = require("node:test");

test("require() gives the same API", async () => {
  const { Vault, VaultError, RecordQuery, isToken, isTokenValidLength, isVaultError } = require("vaultstore-wasm");
  const v = await Vault.open({ backend: "memory", kdfIterations: 1000 });
  const t = await v.tokenCreate("from cjs", "correct horse battery");
  assert.equal(await v.tokenRead(t, "correct horse battery"), "from cjs");
  assert.ok(isToken(t) && isTokenValidLength(t));
  await assert.rejects(v.tokenRead(t, "a wrong password"), (e) => e instanceof VaultError && isVaultError(e) && e.code === "INVALID_PASSWORD");
  assert.equal((await v.recordList(new RecordQuery().setLimit(1))).length, 1);
});
