// What a Node developer writes instead of the package: node:crypto, synchronous, and a Map. Two
// variants, side by side with the WebCrypto ones of baselines.mjs and doing the same work: the
// same 100-byte values, the token bound as AES-GCM associated data, the 16-byte tag after the
// ciphertext and the 12-byte nonce beside it (WebCrypto's framing), real decryption on reads.
//
//   nodeHkdf   per record a random 16-byte salt, a 12-byte nonce and an AES-256-GCM key derived
//              with hkdfSync(SHA-256, info "record"): what the package does per record
//   nodePlain  one AES-256-GCM key for every record, a random nonce per write, no HKDF
//
// crossCheck() proves the framing is the same: what WebCrypto seals, node:crypto opens, and back.
import { createCipheriv, createDecipheriv, hkdfSync, pbkdf2Sync, randomBytes } from "node:crypto";
import { hkdf, plain } from "./baselines.mjs";
import { expectEqual } from "./protocol.mjs";

const INFO = Buffer.from("record");
const TAG = 16;

function seal(key, token, value) {
  const iv = randomBytes(12);
  const cipher = createCipheriv("aes-256-gcm", key, iv);
  cipher.setAAD(Buffer.from(token));
  const data = Buffer.concat([cipher.update(value, "utf8"), cipher.final(), cipher.getAuthTag()]);
  return { iv, data };
}

function open(key, token, { iv, data: sealed }) {
  // WebCrypto's seals are ArrayBuffers (crossCheck opens them too).
  const data = sealed instanceof Uint8Array ? sealed : new Uint8Array(sealed);
  const decipher = createDecipheriv("aes-256-gcm", key, iv);
  decipher.setAAD(Buffer.from(token));
  decipher.setAuthTag(data.subarray(data.length - TAG));
  return Buffer.concat([decipher.update(data.subarray(0, data.length - TAG)), decipher.final()]).toString("utf8");
}

/** The password's 256 bits, as baselines.mjs's pbkdf2 (and the package) derive them. */
const pbkdf2 = (password, salt, iterations) => pbkdf2Sync(password, salt, iterations, 32, "sha256");

export const nodePlain = {
  name: "node:crypto, one key",
  deriveKey: pbkdf2,
  seal,
  open,
};

export const nodeHkdf = {
  name: "node:crypto + HKDF",
  deriveKey: pbkdf2,
  recordKey: (master, salt) => Buffer.from(hkdfSync("sha256", master, salt, INFO, 32)),
  seal(master, token, value) {
    const salt = randomBytes(16);
    return { salt, ...seal(nodeHkdf.recordKey(master, salt), token, value) };
  },
  open(master, token, record) {
    return open(nodeHkdf.recordKey(master, record.salt), token, record);
  },
};

/**
 * What WebCrypto seals node:crypto opens and the other way round, for both variants, and a wrong
 * token fails to open: throws otherwise. Run before a row that measures these baselines.
 */
export async function crossCheck(password, salt, iterations) {
  const values = ["a", "value ".padEnd(100, "."), "é ✓ 𝄞"];
  const bits = pbkdf2(password, salt, iterations);
  const webPlain = await plain.deriveKey(password, salt, iterations);
  const webHkdf = await hkdf.deriveKey(password, salt, iterations);
  for (const value of values) {
    const token = `tk_${value.length}`;
    expectEqual(nodePlain.open(bits, token, await plain.seal(webPlain, token, value)), value, "node:crypto opens a WebCrypto plain seal");
    expectEqual(await plain.open(webPlain, token, nodePlain.seal(bits, token, value)), value, "WebCrypto opens a node:crypto plain seal");
    expectEqual(nodeHkdf.open(bits, token, await hkdf.seal(webHkdf, token, value)), value, "node:crypto opens a WebCrypto HKDF seal");
    expectEqual(await hkdf.open(webHkdf, token, nodeHkdf.seal(bits, token, value)), value, "WebCrypto opens a node:crypto HKDF seal");
  }
  let refused = false;
  try {
    nodeHkdf.open(bits, "tk_other", nodeHkdf.seal(bits, "tk_one", "x"));
  } catch {
    refused = true;
  }
  if (!refused) throw new Error("node:crypto opened a value under another token: the associated data is not checked");
}
