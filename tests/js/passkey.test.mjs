// Passkeys outside a browser (API.md "Passkeys"): the Node entry, ESM and CommonJS, exports
// passkeyRegister and passkeySecret, and both reject UNSUPPORTED (there is no WebAuthn here) with
// a message that says so and points at the password, whatever options they get. (The workerd
// entry is checked in workerd.test.mjs; the browser's WebAuthn in tests/browser/passkey.test.mjs.)
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { test } from "node:test";
import * as esm from "vaultstore-wasm";

const cjs = createRequire(import.meta.url)("vaultstore-wasm");

for (const [entry, api] of [["import", esm], ["require", cjs]]) {
  test(`${entry}: passkeyRegister and passkeySecret reject UNSUPPORTED in Node`, async () => {
    assert.equal(typeof api.passkeyRegister, "function");
    assert.equal(typeof api.passkeySecret, "function");
    for (const call of [
      () => api.passkeyRegister({ rpName: "Secrets", userName: "ada@example.com" }),
      () => api.passkeyRegister({ rpName: "Secrets", userName: "ada", rpId: "example.com", signal: new AbortController().signal }),
      () => api.passkeySecret(),
      () => api.passkeySecret({ credentialId: "AAECAwQFBgcICQ", rpId: "example.com" }),
    ]) {
      const error = await call().then(
        () => assert.fail("resolved"),
        (e) => e,
      );
      // The entry's own VaultError class (the CJS build bundles its own copy).
      assert.ok(error instanceof api.VaultError, String(error));
      assert.equal(error.code, "UNSUPPORTED");
      assert.match(error.message, /WebAuthn/);
      assert.match(error.message, /password/);
      assert.doesNotMatch(error.message, /ada|example\.com|AAECAwQF/, "a message never quotes the caller's input");
    }
  });
}
