// Shared by the packed-package suites.
import assert from "node:assert/strict";
import { Vault, VaultError } from "vaultstore-wasm";

export const PASSWORD = "correct horse battery";
export const OTHER = "another long password";

/** A memory vault with cheap KDF settings (these tests are not about KDF cost). */
export function open(options = {}) {
  return Vault.open({ backend: "memory", kdfIterations: 1000, ...options });
}

/** Assert that `promise` rejects with a VaultError of `code`; returns the error. */
export async function rejects(promise, code) {
  let error;
  try {
    await promise;
  } catch (e) {
    error = e;
  }
  assert.ok(error, `expected a rejection with ${code}`);
  assert.ok(error instanceof VaultError, `a VaultError, got ${error}`);
  assert.ok(error instanceof Error);
  assert.equal(error.name, "VaultError");
  assert.equal(error.code, code, error.message);
  assert.ok(error.message.length > 20, `an actionable message: ${error.message}`);
  return error;
}

export function throws(fn, code) {
  let error;
  try {
    fn();
  } catch (e) {
    error = e;
  }
  assert.ok(error instanceof VaultError, `a VaultError, got ${error}`);
  assert.equal(error.code, code, error.message);
  return error;
}
