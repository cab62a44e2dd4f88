// FORMAT.md says anyone with the format page, a password and a snapshot can decrypt the values
// with nothing but WebCrypto. This is that decryptor, written from the page alone.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { PASSWORD, open } from "./helpers.mjs";

const { subtle } = globalThis.crypto;
const utf8 = new TextEncoder();
const b64u = (s) => new Uint8Array(Buffer.from(s, "base64url"));
const concat = (...parts) => new Uint8Array(parts.flatMap((p) => [...p]));

async function hkdf(ikm, salt, info) {
  const key = await subtle.importKey("raw", ikm, "HKDF", false, ["deriveBits"]);
  return new Uint8Array(await subtle.deriveBits({ name: "HKDF", hash: "SHA-256", salt, info: utf8.encode(info) }, key, 256));
}

async function hmac(key, data) {
  const k = await subtle.importKey("raw", key, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return new Uint8Array(await subtle.sign("HMAC", k, data));
}

async function masterKey(password, kdf) {
  const key = await subtle.importKey("raw", utf8.encode(password), "PBKDF2", false, ["deriveBits"]);
  return new Uint8Array(await subtle.deriveBits({ name: "PBKDF2", hash: "SHA-256", salt: b64u(kdf.salt), iterations: kdf.iterations }, key, 256));
}

async function gcmOpen(key, nonce, sealed, aad) {
  const k = await subtle.importKey("raw", key, "AES-GCM", false, ["decrypt"]);
  return new Uint8Array(await subtle.decrypt({ name: "AES-GCM", iv: nonce, additionalData: utf8.encode(aad) }, k, sealed));
}

async function openEnvelope(K, token, value) {
  assert.ok(value.startsWith("vs1:"));
  const bytes = b64u(value.slice(4));
  const [kcv, rsalt, nonce, sealed] = [bytes.slice(0, 4), bytes.slice(4, 20), bytes.slice(20, 32), bytes.slice(32)];
  assert.deepEqual((await hmac(K, concat(utf8.encode("vaultstore/v1/kcv"), rsalt))).slice(0, 4), kcv, "key check value");
  const rk = await hkdf(K, rsalt, "vaultstore/v1/record");
  return new TextDecoder().decode(await gcmOpen(rk, nonce, sealed, `vaultstore/v1/record:${token}`));
}

/** Every readable value of a snapshot for `password`, by token. */
async function decryptSnapshot(snapshot, password) {
  const meta = (type, id, key) => snapshot.meta.find((m) => m.objectType === type && m.objectId === id && m.key === key)?.value;
  const kdf = JSON.parse(meta("vault", "settings", "kdf"));
  assert.equal(kdf.alg, "pbkdf2-sha256");
  const mk = await masterKey(password, kdf);
  const tag = Buffer.from(await hmac(mk, utf8.encode("vaultstore/v1/identity"))).toString("hex");
  const identity = snapshot.meta.find((m) => m.objectType === "password_identity" && m.key === "tag" && m.value === tag)?.objectId;
  let dek;
  if (identity) {
    const kek = await hkdf(mk, b64u(kdf.salt), "vaultstore/v1/kek");
    const wrapped = b64u(meta("password_identity", identity, "dek").slice(5));
    dek = await gcmOpen(kek, wrapped.slice(0, 12), wrapped.slice(12), `vaultstore/v1/dek:${identity}`);
  }
  const out = {};
  for (const r of snapshot.records) {
    const link = meta("record", `r_${r.id}`, "password_id");
    const K = link ? (link === identity ? dek : undefined) : mk;
    if (K) {
      try {
        out[r.token] = await openEnvelope(K, r.token, r.value);
      } catch {
        /* another password's record */
      }
    }
  }
  return out;
}

test("values decrypt with nothing but WebCrypto and FORMAT.md (identities off and on)", async () => {
  for (const passwordIdentity of [false, true]) {
    const v = await open({ passwordIdentity });
    const tokens = await v.tokensCreate(["first", "", "ünïcødé 😀"], PASSWORD);
    await v.tokenCreate("not mine", "another long password");
    const snapshot = JSON.parse(new TextDecoder().decode(await v.exportSnapshot()));
    const values = await decryptSnapshot(snapshot, PASSWORD);
    assert.deepEqual(values, { [tokens[0]]: "first", [tokens[1]]: "", [tokens[2]]: "ünïcødé 😀" });
  }
});

test("the frozen envelope vectors open with WebCrypto", async () => {
  const f = JSON.parse(readFileSync("fixtures/envelope_v1.json", "utf8"));
  const kdf = { salt: Buffer.from(f.vault.salt).toString("base64url"), iterations: f.vault.iterations };
  const mk = await masterKey(f.password.password, kdf);
  assert.equal(Buffer.from(mk).toString("hex"), f.password.masterKey);
  assert.equal(await openEnvelope(mk, f.password.token, f.password.envelope), f.password.plaintext);
  const dek = Uint8Array.from(Buffer.from(f.identity.dek, "hex"));
  assert.equal(await openEnvelope(dek, f.identity.token, f.identity.envelope), f.identity.plaintext);
});
