// The `workerd` entry in real workerd (Cloudflare's runtime): a worker bundled the way wrangler
// bundles it (esbuild, `workerd` condition, the .wasm kept as a module import), no nodejs_compat,
// WebCrypto PBKDF2 capped at 100,000 iterations as in deployed Workers.
// WORKERD and ESBUILD name the binaries (dev dependencies of the repository).
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { test } from "node:test";
import { Vault } from "vaultstore-wasm";

// Deployed Workers refuse WebCrypto PBKDF2 above 100,000 iterations; local workerd does not, so
// this module (imported first) makes it refuse the same way and counts the refusals: each one is
// a derivation the package's Rust PBKDF2 had to do instead.
const CAP = `
const deriveBits = SubtleCrypto.prototype.deriveBits;
globalThis.refused = [];
SubtleCrypto.prototype.deriveBits = function (algorithm, key, length) {
  if (algorithm?.name === "PBKDF2" && algorithm.iterations > 100000) {
    globalThis.refused.push(algorithm.iterations);
    return Promise.reject(new DOMException("iteration counts above 100000 are not supported", "NotSupportedError"));
  }
  return deriveBits.call(this, algorithm, key, length);
};
`;

const WORKER = `
import "./cap.mjs";
import { Vault, VaultError, isToken, passkeyRegister, passkeySecret } from "vaultstore-wasm";
export default {
  async fetch() {
    // 200,000 iterations: more than Workers' WebCrypto allows, so the Rust PBKDF2 takes over.
    const v = await Vault.open({ kdfIterations: 200000, passwordIdentity: true });
    const webcrypto = await crypto.subtle.importKey("raw", new TextEncoder().encode("p"), "PBKDF2", false, ["deriveBits"]);
    const capped = await crypto.subtle.deriveBits({ name: "PBKDF2", hash: "SHA-256", salt: new Uint8Array(16), iterations: 100001 }, webcrypto, 256)
      .then(() => "derived", (e) => e.name);
    globalThis.refused.length = 0;
    const token = await v.tokenCreate("sealed in a worker", "correct horse battery");
    const wrong = await v.tokenRead(token, "not the password").catch((e) => [e instanceof VaultError, e.code]);
    const key = crypto.getRandomValues(new Uint8Array(32));
    const raw = await v.tokenRead(await v.tokenCreate("raw key", key), key);
    const snapshot = new TextDecoder().decode(await v.exportSnapshot());
    const read = await v.tokenRead(token, "correct horse battery");
    // No WebAuthn in a worker: both passkey functions reject UNSUPPORTED.
    const passkeys = await Promise.all([passkeyRegister({ rpName: "Secrets", userName: "ada" }), passkeySecret()].map((p) =>
      p.then(() => "resolved", (e) => [e instanceof VaultError, e.code])));
    return Response.json({ token, isToken: isToken(token), read, wrong, raw, snapshot, capped, refused: globalThis.refused, passkeys });
  },
};
`;

function freePort() {
  return new Promise((resolve) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

test("the package runs in workerd, and keys derived there match Node's", { skip: !process.env.WORKERD && "WORKERD not set" }, async () => {
  const dir = join(process.cwd(), "workerd-app");
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "cap.mjs"), CAP);
  writeFileSync(join(dir, "worker.mjs"), WORKER);
  execFileSync(process.env.ESBUILD, [
    join(dir, "worker.mjs"), "--bundle", "--format=esm", "--conditions=workerd,worker,browser",
    "--loader:.wasm=copy", `--outdir=${join(dir, "out")}`, "--log-level=warning",
  ]);
  const wasm = readdirSync(join(dir, "out")).find((f) => f.endsWith(".wasm"));
  const port = await freePort();
  writeFileSync(
    join(dir, "config.capnp"),
    `using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [ (name = "main", worker = .app) ],
  sockets = [ (name = "http", address = "127.0.0.1:${port}", http = (), service = "main") ],
);
const app :Workerd.Worker = (
  modules = [ (name = "worker.js", esModule = embed "out/worker.js"), (name = "${wasm}", wasm = embed "out/${wasm}") ],
  compatibilityDate = "2026-11-01",
);
`,
  );
  // workerd's own output is kept, and shown if it exits or never answers: the test runs beside
  // the other test files on a shared 2-core machine, where a cold workerd can take seconds to
  // listen, and a port taken meanwhile makes it exit at once.
  const server = spawn(process.env.WORKERD, ["serve", join(dir, "config.capnp")], { stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  server.stdout.on("data", (chunk) => (output += chunk));
  server.stderr.on("data", (chunk) => (output += chunk));
  let exited = null;
  server.on("exit", (code, signal) => (exited = signal ?? code));
  try {
    let body;
    let lastError;
    const deadline = Date.now() + 60_000;
    while (body === undefined && exited === null && Date.now() < deadline) {
      try {
        const response = await fetch(`http://127.0.0.1:${port}/`);
        const text = await response.text();
        // The worker answered: anything but its JSON is a failure of the worker, not a wait.
        assert.equal(response.status, 200, `the worker answered ${response.status}: ${text}\n${output}`);
        body = JSON.parse(text);
      } catch (error) {
        if (error instanceof assert.AssertionError) throw error;
        lastError = error;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    assert.ok(body, `workerd answered (exited: ${exited}; last error: ${lastError?.cause?.code ?? lastError}):\n${output}`);
    assert.equal(body.read, "sealed in a worker");
    assert.equal(body.isToken, true);
    assert.deepEqual(body.wrong, [true, "INVALID_PASSWORD"]);
    assert.equal(body.raw, "raw key");
    assert.deepEqual(body.passkeys, [[true, "UNSUPPORTED"], [true, "UNSUPPORTED"]]);
    assert.equal(body.capped, "NotSupportedError", "WebCrypto refuses PBKDF2 above 100,000 iterations, as deployed");
    // Two passwords derived (the right one, cached after its first use, and the wrong one): two
    // refusals, so the Rust PBKDF2 derived both keys. The raw key needs no PBKDF2.
    assert.deepEqual(body.refused, [200000, 200000], "the Rust PBKDF2 ran once per password");
    // Derived in the worker with Rust, here with WebCrypto: the same key opens the value.
    const v = await Vault.open({ backend: "memory", snapshot: body.snapshot, passwordIdentity: true });
    assert.equal(await v.tokenRead(body.token, "correct horse battery"), "sealed in a worker");
  } finally {
    server.kill();
  }
});
