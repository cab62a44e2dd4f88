// Passkeys (API.md "Passkeys") in real headless Chromium, on the packaged browser build, with a
// CDP virtual authenticator: Chromium itself runs the WebAuthn ceremonies and the authenticator
// computes the PRF (hmac-secret) outputs; nothing here stands in for either. The page is served
// on http://localhost:<port>: an IP address is not a valid WebAuthn relying-party id.
// CONSUMER_DIR is the folder the packed tarball was installed in.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { serve } from "../../js/tools/serve.mjs";
import { launchChromium } from "./chromium.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const consumer = process.env.CONSUMER_DIR;
assert.ok(consumer, "CONSUMER_DIR must name the folder with the installed package");

const AUTHENTICATOR = {
  protocol: "ctap2",
  ctap2Version: "ctap2_1",
  transport: "internal",
  hasResidentKey: true,
  hasUserVerification: true,
  isUserVerified: true,
  hasPrf: true,
  automaticPresenceSimulation: true,
};

let server;
let browser;
let origin;
const uncaught = [];
before(async () => {
  server = await serve([here, consumer]);
  origin = server.url.replace("127.0.0.1", "localhost");
  browser = await launchChromium();
});
after(async () => {
  await browser?.close();
  await server?.close();
});

const unique = (name) => `${name}-${Date.now()}-${Math.random().toString(36).slice(2)}`;

/** A page of page.html on localhost, with a virtual authenticator (`options` override the default). */
async function openPage(options = {}) {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.on("pageerror", (e) => uncaught.push(e.message));
  const cdp = await context.newCDPSession(page);
  await cdp.send("WebAuthn.enable", { enableUI: false });
  const { authenticatorId } = await cdp.send("WebAuthn.addVirtualAuthenticator", { options: { ...AUTHENTICATOR, ...options } });
  const load = async () => {
    await page.goto(`${origin}/page.html`);
    await page.waitForFunction(() => document.getElementById("status").textContent === "ready");
    // In-page helpers: the code of a rejection, and bytes as hex (evaluate cannot return typed arrays).
    await page.evaluate(() => {
      window.codeOf = async (p) => {
        try {
          await p;
          return "resolved";
        } catch (e) {
          return e instanceof window.vaultstore.VaultError ? e.code : `not a VaultError: ${e?.name}: ${e?.message}`;
        }
      };
      window.hex = (bytes) => (bytes instanceof Uint8Array ? [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("") : `not bytes: ${bytes}`);
    });
  };
  await load();
  return { page, cdp, authenticatorId, load, close: () => context.close() };
}

test("register gives 32 bytes; the same passkey gives them again, another passkey other bytes; the salt is the documented one", async () => {
  const { page, close } = await openPage();
  try {
    const out = await page.evaluate(async () => {
      const { passkeyRegister, passkeySecret } = window.vaultstore;
      // Watch what the package asks the browser for (inputs only: the answers are Chromium's).
      const salts = [];
      const watch = (method) => {
        const original = navigator.credentials[method].bind(navigator.credentials);
        navigator.credentials[method] = (options) => {
          salts.push(new TextDecoder().decode(options.publicKey.extensions.prf.eval.first));
          return original(options);
        };
      };
      watch("create");
      watch("get");
      const first = await passkeyRegister({ rpName: "Secrets", userName: "ada@example.com" });
      const again = await passkeySecret({ credentialId: first.credentialId });
      const third = await passkeySecret({ credentialId: first.credentialId });
      const discoverable = await passkeySecret(); // the only passkey of the site
      const second = await passkeyRegister({ rpName: "Secrets", userName: "grace@example.com" });
      const secondAgain = await passkeySecret({ credentialId: second.credentialId });
      const firstAfter = await passkeySecret({ credentialId: first.credentialId });
      return {
        credentialId: first.credentialId,
        isArray: first.secret instanceof Uint8Array && first.secret.length,
        first: window.hex(first.secret),
        again: window.hex(again),
        third: window.hex(third),
        discoverable: window.hex(discoverable),
        fresh: again !== third && again.buffer !== third.buffer,
        second: window.hex(second.secret),
        secondAgain: window.hex(secondAgain),
        firstAfter: window.hex(firstAfter),
        otherId: second.credentialId !== first.credentialId,
        salts,
      };
    });
    assert.match(out.credentialId, /^[A-Za-z0-9_-]{16,}$/, "credentialId is base64url without padding");
    assert.equal(out.isArray, 32);
    assert.match(out.first, /^[0-9a-f]{64}$/);
    assert.notEqual(out.first, "0".repeat(64), "an empty (zero) PRF result is no secret");
    assert.equal(out.again, out.first, "passkeySecret gives register's secret");
    assert.equal(out.third, out.first, "and the same again");
    assert.equal(out.discoverable, out.first, "without credentialId too");
    assert.ok(out.fresh, "each call returns a fresh array");
    assert.notEqual(out.second, out.first, "another passkey gives another secret");
    assert.equal(out.secondAgain, out.second);
    assert.equal(out.firstAfter, out.first);
    assert.ok(out.otherId);
    // The PRF salt is part of the format (README "Passkeys"): changing it changes every secret.
    assert.ok(out.salts.length >= 6, `every ceremony asks for the PRF (${out.salts.length})`);
    assert.deepEqual([...new Set(out.salts)], ["vaultstore/v1/passkey-prf"]);
  } finally {
    await close();
  }
});

test("an authenticator that enables PRF at creation but answers it only on a get: register asks for it", async () => {
  // Chromium's virtual authenticator evaluates the PRF at creation already; many real ones only
  // say `enabled` then. Hide the create-time results (the bytes come from Chromium either way),
  // so register must fetch the secret with a get of the new credential, and compare.
  const { page, close } = await openPage();
  try {
    const out = await page.evaluate(async () => {
      const { passkeyRegister, passkeySecret } = window.vaultstore;
      let hidden;
      const gets = [];
      const create = navigator.credentials.create.bind(navigator.credentials);
      const get = navigator.credentials.get.bind(navigator.credentials);
      navigator.credentials.create = async (options) => {
        const credential = await create(options);
        hidden = window.hex(new Uint8Array(credential.getClientExtensionResults().prf.results.first));
        return new Proxy(credential, {
          get: (target, key) =>
            key === "getClientExtensionResults" ? () => ({ prf: { enabled: true } }) : typeof target[key] === "function" ? target[key].bind(target) : target[key],
        });
      };
      navigator.credentials.get = (options) => {
        gets.push(options.publicKey.allowCredentials.length);
        return get(options);
      };
      const { credentialId, secret } = await passkeyRegister({ rpName: "Secrets", userName: "ada" });
      return { hidden, secret: window.hex(secret), later: window.hex(await passkeySecret({ credentialId })), gets };
    });
    assert.match(out.hidden, /^[0-9a-f]{64}$/);
    assert.equal(out.secret, out.hidden, "the get gives the PRF output creation would have");
    assert.equal(out.later, out.hidden);
    assert.deepEqual(out.gets, [1, 1], "register asked for the new credential only");
  } finally {
    await close();
  }
});

test("a passkey's secret, used as a raw key, opens a vault after a reload", async () => {
  const { page, load, close } = await openPage();
  const name = unique("raw");
  try {
    const { token, credentialId } = await page.evaluate(async (name) => {
      const { Vault, passkeyRegister } = window.vaultstore;
      const v = await Vault.open({ name, kdfIterations: 1000 });
      const { credentialId, secret } = await passkeyRegister({ rpName: "Secrets", userName: "ada" });
      const token = await v.tokenCreate("sealed by a passkey", secret);
      await v.close();
      return { token, credentialId };
    }, name);
    await load();
    const out = await page.evaluate(
      async ({ name, token, credentialId }) => {
        const { Vault, passkeySecret } = window.vaultstore;
        const v = await Vault.open({ name, kdfIterations: 1000 });
        const out = {
          wrongKey: await window.codeOf(v.unlock(new Uint8Array(32).fill(1))),
          unlocked: await v.unlock(await passkeySecret({ credentialId })),
          read: await v.tokenRead(token, await passkeySecret()),
        };
        await v.close();
        return out;
      },
      { name, token, credentialId },
    );
    assert.deepEqual(out, { wrongKey: "INVALID_PASSWORD", unlocked: true, read: "sealed by a passkey" });
  } finally {
    await close();
  }
});

test("a passkey added with secretAdd unlocks the vault after a reload, beside the password", async () => {
  const { page, load, close } = await openPage();
  const name = unique("passkey");
  try {
    const setup = await page.evaluate(async (name) => {
      const { Vault, passkeyRegister } = window.vaultstore;
      const v = await Vault.open({ name, kdfIterations: 1000, passwordIdentity: true });
      const pw = "correct horse battery";
      const token = await v.tokenCreate("card 4111", pw);
      const { credentialId, secret } = await passkeyRegister({ rpName: "Secrets", userName: "ada" });
      await v.secretAdd(pw, secret);
      await v.close();
      return { token, credentialId };
    }, name);
    await load();
    const out = await page.evaluate(
      async ({ name, token, credentialId }) => {
        const { Vault, passkeySecret } = window.vaultstore;
        const v = await Vault.open({ name, kdfIterations: 1000, passwordIdentity: true });
        const secret = await passkeySecret({ credentialId });
        const out = { unlocked: await v.unlock(secret), byPasskey: await v.tokenRead(token, secret) };
        v.lock();
        out.password = await v.unlock("correct horse battery");
        out.byPassword = await v.tokenRead(token, "correct horse battery");
        v.lock();
        out.wrong = await window.codeOf(v.unlock(new Uint8Array(32).fill(7)));
        const added = await v.tokenCreate("added by passkey", secret);
        out.addedByPassword = await v.tokenRead(added, "correct horse battery");
        await v.close();
        return out;
      },
      { name, ...setup },
    );
    assert.deepEqual(out, {
      unlocked: true,
      byPasskey: "card 4111",
      password: true,
      byPassword: "card 4111",
      wrong: "INVALID_PASSWORD",
      addedByPassword: "added by passkey",
    });
  } finally {
    await close();
  }
});

test("a password change keeps the passkey; a rotation removes it; secretRemove forgets it", async () => {
  const { page, close } = await openPage();
  try {
    const out = await page.evaluate(async (name) => {
      const { Vault, passkeyRegister, passkeySecret } = window.vaultstore;
      const v = await Vault.open({ name, kdfIterations: 1000, passwordIdentity: true });
      const pw = "correct horse battery";
      const pw2 = "a brand new password";
      const pw3 = "a rotated password!!";
      const token = await v.tokenCreate("card 4111", pw);
      const { credentialId, secret } = await passkeyRegister({ rpName: "Secrets", userName: "ada" });
      await v.secretAdd(pw, secret);
      const out = {};
      out.changed = await v.bulkRekey(pw, pw2);
      v.lock();
      const again = await passkeySecret({ credentialId });
      out.passkeyAfterChange = await v.tokenRead(token, again);
      out.oldPassword = await window.codeOf(v.tokenRead(token, pw));
      out.rotated = await v.bulkRekey(pw2, pw3, { rotate: true });
      v.lock();
      out.passkeyAfterRotation = await window.codeOf(v.unlock(await passkeySecret({ credentialId })));
      out.passwordAfterRotation = await v.tokenRead(token, pw3);
      // Add it again, then remove it: the password stays.
      await v.secretAdd(pw3, secret);
      out.readded = await v.tokenRead(token, secret);
      await v.secretRemove(secret);
      v.lock();
      out.afterRemove = await window.codeOf(v.unlock(secret));
      out.passwordAfterRemove = await v.tokenRead(token, pw3);
      await v.close();
      return out;
    }, unique("rekey"));
    assert.deepEqual(out, {
      changed: 1,
      passkeyAfterChange: "card 4111",
      oldPassword: "INVALID_PASSWORD",
      rotated: 1,
      passkeyAfterRotation: "INVALID_PASSWORD",
      passwordAfterRotation: "card 4111",
      readded: "card 4111",
      afterRemove: "INVALID_PASSWORD",
      passwordAfterRemove: "card 4111",
    });
  } finally {
    await close();
  }
});

test("an authenticator without PRF: UNSUPPORTED, saying so, the useless passkey is dropped; the password keeps working", async () => {
  const { page, cdp, authenticatorId, close } = await openPage({ hasPrf: false });
  try {
    const out = await page.evaluate(async (name) => {
      const { Vault, passkeyRegister, passkeySecret, VaultError } = window.vaultstore;
      const out = {};
      try {
        await passkeyRegister({ rpName: "Secrets", userName: "ada" });
        out.register = "resolved";
      } catch (e) {
        out.register = e instanceof VaultError ? e.code : String(e);
        out.message = e.message;
      }
      out.secret = await window.codeOf(passkeySecret());
      const v = await Vault.open({ name, kdfIterations: 1000, passwordIdentity: true });
      const token = await v.tokenCreate("still here", "correct horse battery");
      out.password = await v.tokenRead(token, "correct horse battery");
      await v.close();
      return out;
    }, unique("noprf"));
    assert.equal(out.register, "UNSUPPORTED");
    assert.match(out.message, /PRF/);
    assert.match(out.message, /password keeps working/);
    // The passkey the authenticator made without PRF was dropped again (Signal API), so the
    // user's list holds no dead entry and there is nothing left to offer.
    const { credentials } = await cdp.send("WebAuthn.getCredentials", { authenticatorId });
    assert.equal(credentials.length, 0, "the passkey without PRF stays on the authenticator");
    assert.equal(out.secret, "ABORTED");
    assert.equal(out.password, "still here");
  } finally {
    await close();
  }
});

test("a passkey removed from the authenticator: ABORTED, and the password path keeps working", async () => {
  const { page, cdp, authenticatorId, close } = await openPage();
  try {
    const name = unique("removed");
    const { credentialId, token } = await page.evaluate(async (name) => {
      const { Vault, passkeyRegister } = window.vaultstore;
      const v = await Vault.open({ name, kdfIterations: 1000, passwordIdentity: true });
      const token = await v.tokenCreate("card 4111", "correct horse battery");
      const { credentialId, secret } = await passkeyRegister({ rpName: "Secrets", userName: "ada" });
      await v.secretAdd("correct horse battery", secret);
      await v.close();
      return { credentialId, token };
    }, name);
    const { credentials } = await cdp.send("WebAuthn.getCredentials", { authenticatorId });
    assert.equal(credentials.length, 1);
    await cdp.send("WebAuthn.removeCredential", { authenticatorId, credentialId: credentials[0].credentialId });
    const out = await page.evaluate(
      async ({ name, credentialId, token }) => {
        const { Vault, passkeySecret } = window.vaultstore;
        const out = { secret: await window.codeOf(passkeySecret({ credentialId, signal: AbortSignal.timeout(5000) })) };
        const v = await Vault.open({ name, kdfIterations: 1000, passwordIdentity: true });
        out.unlock = await v.unlock("correct horse battery");
        out.read = await v.tokenRead(token, "correct horse battery");
        await v.close();
        return out;
      },
      { name, credentialId, token },
    );
    assert.deepEqual(out, { secret: "ABORTED", unlock: true, read: "card 4111" });
  } finally {
    await close();
  }
});

test("a cancelled request is ABORTED: a user who fails verification, and an AbortSignal", async () => {
  const { page, cdp, authenticatorId, close } = await openPage();
  try {
    const { credentialId } = await page.evaluate(() => window.vaultstore.passkeyRegister({ rpName: "Secrets", userName: "ada" }));
    const signalled = await page.evaluate(async (credentialId) => {
      const { passkeySecret, passkeyRegister } = window.vaultstore;
      const before = new AbortController();
      before.abort();
      const during = new AbortController();
      const pending = window.codeOf(passkeyRegister({ rpName: "Secrets", userName: "ada", signal: during.signal }));
      during.abort();
      return {
        alreadyAborted: await window.codeOf(passkeySecret({ credentialId, signal: before.signal })),
        abortedDuring: await pending,
      };
    }, credentialId);
    assert.deepEqual(signalled, { alreadyAborted: "ABORTED", abortedDuring: "ABORTED" });
    // The user does not pass verification (the authenticator says so): the browser's NotAllowedError.
    await cdp.send("WebAuthn.setUserVerified", { authenticatorId, isUserVerified: false });
    const refused = await page.evaluate(async (credentialId) => ({
      secret: await window.codeOf(window.vaultstore.passkeySecret({ credentialId, signal: AbortSignal.timeout(5000) })),
      register: await window.codeOf(window.vaultstore.passkeyRegister({ rpName: "Secrets", userName: "bob", signal: AbortSignal.timeout(5000) })),
    }), credentialId);
    assert.deepEqual(refused, { secret: "ABORTED", register: "ABORTED" });
  } finally {
    await close();
  }
});

test("bad arguments are INVALID_ARGUMENT, and a message never quotes them", async () => {
  const { page, close } = await openPage();
  try {
    const out = await page.evaluate(async () => {
      const { passkeyRegister, passkeySecret, VaultError } = window.vaultstore;
      const seen = [];
      const code = async (p) => {
        try {
          await p;
          return "resolved";
        } catch (e) {
          seen.push(e.message);
          return e instanceof VaultError ? e.code : String(e);
        }
      };
      return {
        noName: await code(passkeyRegister({ rpName: "", userName: "ada" })),
        noUser: await code(passkeyRegister({ rpName: "Secrets" })),
        noOptions: await code(passkeyRegister()),
        badId: await code(passkeySecret({ credentialId: "hunter2 secret!" })),
        badRpId: await code(passkeySecret({ rpId: 42 })),
        badSignal: await code(passkeySecret({ signal: "stop" })),
        quoted: seen.some((m) => m.includes("hunter2")),
      };
    });
    assert.deepEqual(out, {
      noName: "INVALID_ARGUMENT",
      noUser: "INVALID_ARGUMENT",
      noOptions: "INVALID_ARGUMENT",
      badId: "INVALID_ARGUMENT",
      badRpId: "INVALID_ARGUMENT",
      badSignal: "INVALID_ARGUMENT",
      quoted: false,
    });
  } finally {
    await close();
  }
});

test("a page on an IP address cannot hold passkeys: UNSUPPORTED, saying to use localhost or https", async () => {
  const context = await browser.newContext();
  try {
    const page = await context.newPage();
    const cdp = await context.newCDPSession(page);
    await cdp.send("WebAuthn.enable", { enableUI: false });
    await cdp.send("WebAuthn.addVirtualAuthenticator", { options: AUTHENTICATOR });
    await page.goto(`${server.url}/page.html`);
    await page.waitForFunction(() => document.getElementById("status").textContent === "ready");
    const out = await page.evaluate(async () => {
      try {
        await window.vaultstore.passkeyRegister({ rpName: "Secrets", userName: "ada" });
        return { code: "resolved" };
      } catch (e) {
        return { code: e.code, message: e.message };
      }
    });
    assert.equal(out.code, "UNSUPPORTED");
    assert.match(out.message, /localhost/);
  } finally {
    await context.close();
  }
});

test("no page threw an uncaught exception", () => {
  assert.deepEqual(uncaught, []);
});
