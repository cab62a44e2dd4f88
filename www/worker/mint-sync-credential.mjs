#!/usr/bin/env node
// Mint a user's /sync credential (src/sync.js): `vss1.<userId>.<mac>`, mac being the unpadded
// base64url HMAC-SHA256 of the user id under SYNC_SIGNING_KEY. The key comes from the environment,
// never from an argument (arguments end up in shell history and `ps`):
//
//   read -rs SYNC_SIGNING_KEY && export SYNC_SIGNING_KEY   # the worker's key, 64 hex characters
//   node mint-sync-credential.mjs alice
//
// Prints the credential; the user's devices send it as `Authorization: Bearer <credential>`.
// It never expires: rotating SYNC_SIGNING_KEY revokes every credential at once.
import { createHmac } from "node:crypto";

const USER_ID = /^[A-Za-z0-9_-]{1,64}$/;

function fail(message) {
  console.error(message);
  process.exit(2);
}

const key = process.env.SYNC_SIGNING_KEY?.trim() ?? "";
if (!/^[0-9a-f]{64}$/i.test(key)) {
  fail("SYNC_SIGNING_KEY must hold the worker's key, 64 hex characters (openssl rand -hex 32)");
}
const userId = process.argv[2];
if (process.argv.length !== 3 || !USER_ID.test(userId)) {
  fail("usage: SYNC_SIGNING_KEY=<key> node mint-sync-credential.mjs <user id: 1 to 64 letters, digits, _ or ->");
}
const mac = createHmac("sha256", Buffer.from(key, "hex")).update(userId, "utf8").digest("base64url");
console.log(`vss1.${userId}.${mac}`);
