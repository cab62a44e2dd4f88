// The `workerd` entry in real workerd (Cloudflare's runtime): a worker bundled the way wrangler
// bundles it (esbuild, `workerd` condition, the .wasm kept as a module import), no nodejs_compat.
// WORKERD and ESBUILD name the binaries (dev dependencies of the repository).
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { test } from "node:test";
import { Vault } from "vaultstore-wasm";

const WORKER = `
import { Vault, VaultError, isToken } from "vaultstore-wasm";
export default {
  async fetch() {
    // 200,000 iterations: more than Workers' WebCrypto allows, so the Rust PBKDF2 takes over.
    const v = await Vault.open({ kdfIterations: 200000, passwordIdentity: true });
    const token = await v.tokenCreate("sealed in a worker", "correct horse battery");
    const wrong = await v.tokenRead(token, "not the password").catch((e) => [e instanceof VaultError, e.code]);
    const key = crypto.getRandomValues(new Uint8Array(32));
    const raw = await v.tokenRead(await v.tokenCreate("raw key", key), key);
    const snapshot = new TextDecoder().decode(await v.exportSnapshot());
    return Response.json({ token, isToken: isToken(token), read: await v.tokenRead(token, "correct horse battery"), wrong, raw, snapshot });
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
  const server = spawn(process.env.WORKERD, ["serve", join(dir, "config.capnp")], { stdio: ["ignore", "inherit", "inherit"] });
  try {
    let body;
    for (let attempt = 0; attempt < 100 && body === undefined; attempt++) {
      try {
        body = await (await fetch(`http://127.0.0.1:${port}/`)).json();
      } catch {
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    assert.ok(body, "workerd answered");
    assert.equal(body.read, "sealed in a worker");
    assert.equal(body.isToken, true);
    assert.deepEqual(body.wrong, [true, "INVALID_PASSWORD"]);
    assert.equal(body.raw, "raw key");
    // Derived in the worker with Rust, here with WebCrypto: the same key opens the value.
    const v = await Vault.open({ backend: "memory", snapshot: body.snapshot, passwordIdentity: true });
    assert.equal(await v.tokenRead(body.token, "correct horse battery"), "sealed in a worker");
  } finally {
    server.kill();
  }
});
