// What a JavaScript developer writes instead of the package: WebCrypto, and a Map or Dexie for
// storage. Nothing but WebCrypto here, so Node and the browser page share it. The records keep the
// same fields as the package's (id, token, value, createdAt, updatedAt, expiresAt, softDeletedAt),
// and the token is bound to its value as AES-GCM associated data, as the package does.
const encoder = new TextEncoder();
const decoder = new TextDecoder();
const randomBytes = (n) => crypto.getRandomValues(new Uint8Array(n));

const ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz";
/** "tk_" and 29 random base32 characters, as long as the package's default token. */
export const newToken = () => `tk_${Array.from(randomBytes(29), (b) => ALPHABET[b & 31]).join("")}`;
export const newSalt = () => randomBytes(16);

export function newRecord(token, value) {
  const now = Date.now();
  return { id: crypto.randomUUID(), token, value, createdAt: now, updatedAt: now, expiresAt: null, softDeletedAt: null };
}

/** The password's 256 bits: PBKDF2-HMAC-SHA256, as the package derives them. */
export async function pbkdf2(password, salt, iterations) {
  const key = await crypto.subtle.importKey("raw", encoder.encode(password), "PBKDF2", false, ["deriveBits"]);
  return crypto.subtle.deriveBits({ name: "PBKDF2", hash: "SHA-256", salt, iterations }, key, 256);
}

/** "Plain": one AES-256-GCM key for every record, a random nonce per write. */
export const plain = {
  async deriveKey(password, salt, iterations) {
    return crypto.subtle.importKey("raw", await pbkdf2(password, salt, iterations), "AES-GCM", false, ["encrypt", "decrypt"]);
  },
  async seal(key, token, value) {
    const iv = randomBytes(12);
    const data = await crypto.subtle.encrypt({ name: "AES-GCM", iv, additionalData: encoder.encode(token) }, key, encoder.encode(value));
    return { iv, data };
  },
  async open(key, token, { iv, data }) {
    return decoder.decode(await crypto.subtle.decrypt({ name: "AES-GCM", iv, additionalData: encoder.encode(token) }, key, data));
  },
};

/** "HKDF+AES-GCM": per record a random salt and nonce, and an AES key derived with HKDF-SHA256. */
export const hkdf = {
  async deriveKey(password, salt, iterations) {
    return crypto.subtle.importKey("raw", await pbkdf2(password, salt, iterations), "HKDF", false, ["deriveKey"]);
  },
  recordKey(master, salt) {
    return crypto.subtle.deriveKey(
      { name: "HKDF", hash: "SHA-256", salt, info: encoder.encode("record") },
      master,
      { name: "AES-GCM", length: 256 },
      false,
      ["encrypt", "decrypt"],
    );
  },
  async seal(master, token, value) {
    const salt = randomBytes(16);
    const iv = randomBytes(12);
    const key = await hkdf.recordKey(master, salt);
    const data = await crypto.subtle.encrypt({ name: "AES-GCM", iv, additionalData: encoder.encode(token) }, key, encoder.encode(value));
    return { salt, iv, data };
  },
  async open(master, token, { salt, iv, data }) {
    const key = await hkdf.recordKey(master, salt);
    return decoder.decode(await crypto.subtle.decrypt({ name: "AES-GCM", iv, additionalData: encoder.encode(token) }, key, data));
  },
};
