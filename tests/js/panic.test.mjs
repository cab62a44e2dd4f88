// If the wasm instance ever traps (a panic), it must not be silently poisoned: the call that hit
// it and every later one reject with a VaultError that says what happened. Nothing reachable from
// the API panics, so the trap is simulated at the one place the package handles it (its runtime
// module, imported by path from the installed package). Poisoning is global, hence its own file.
import assert from "node:assert/strict";
import { test } from "node:test";
import { Vault, VaultError } from "vaultstore-wasm";
import { call } from "./node_modules/vaultstore-wasm/dist/runtime.js";

test("a trapped engine rejects that call and every later one with CLOSED and the panic message", async () => {
  const vault = await Vault.open({ backend: "memory", kdfIterations: 1000 });
  const token = await vault.tokenCreate("v", "correct horse battery");
  const engine = { lastPanic: () => "panicked at src/example.rs:1:1: boom" };
  const trapped = await call(engine, async () => {
    throw new WebAssembly.RuntimeError("unreachable");
  }).catch((e) => e);
  assert.ok(trapped instanceof VaultError);
  assert.equal(trapped.code, "CLOSED");
  assert.match(trapped.message, /boom/);
  assert.match(trapped.message, /Reload the page or restart the worker/);
  for (const later of [vault.tokenRead(token, "correct horse battery"), Vault.open({ backend: "memory" })]) {
    const error = await later.catch((e) => e);
    assert.ok(error instanceof VaultError && error.code === "CLOSED", String(error));
    assert.match(error.message, /boom/);
  }
});
