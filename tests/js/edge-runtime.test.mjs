// A `Request => Response` handler that uses the package, run in Vercel's Edge Runtime (the npm
// `edge-runtime` VM: web APIs only, no Node APIs, a script rather than modules). It is bundled as
// a worker's code is: the `workerd` entry (synchronous start, no top-level await), its `.wasm`
// inlined as bytes. ESBUILD names the esbuild binary.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { EdgeRuntime } from "edge-runtime";
import { Vault } from "vaultstore-wasm";

const HANDLER = `
import { Vault, VaultError, isToken } from "vaultstore-wasm";

export default async function handler(request) {
  const password = new URL(request.url).searchParams.get("password");
  const vault = await Vault.open({ kdfIterations: 1000 });
  const token = await vault.tokenCreate("sealed at the edge", password);
  const wrong = await vault.tokenRead(token, "not the password").catch((e) => [e instanceof VaultError, e.code]);
  const snapshot = new TextDecoder().decode(await vault.exportSnapshot());
  const read = await vault.tokenRead(token, password);
  // Closing clears the cached key and its expiry timer; edge-runtime's timers cannot be
  // unreferenced, so a vault left open would keep this test's process alive for 15 minutes.
  await vault.close();
  return Response.json({ token, isToken: isToken(token), read, wrong, snapshot });
}
`;

const ENTRY = `
import handler from "./handler.mjs";
addEventListener("fetch", (event) => event.respondWith(handler(event.request)));
`;

test("a handler using the package runs in Vercel's edge-runtime", { skip: !process.env.ESBUILD && "ESBUILD not set" }, async () => {
  const dir = join(process.cwd(), "edge-app");
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "handler.mjs"), HANDLER);
  writeFileSync(join(dir, "entry.mjs"), ENTRY);
  execFileSync(process.env.ESBUILD, [
    join(dir, "entry.mjs"), "--bundle", "--format=iife", "--target=es2022", "--conditions=workerd",
    "--loader:.wasm=binary", `--outfile=${join(dir, "out.js")}`, "--log-level=warning",
  ]);
  const runtime = new EdgeRuntime({ initialCode: readFileSync(join(dir, "out.js"), "utf8") });
  assert.equal(runtime.evaluate("typeof process === 'undefined' && typeof require === 'undefined'"), true, "no Node APIs in there");
  const response = await runtime.dispatchFetch("http://127.0.0.1/?password=correct%20horse%20battery");
  await response.waitUntil();
  assert.equal(response.status, 200);
  const body = await response.json();
  assert.equal(body.read, "sealed at the edge");
  assert.equal(body.isToken, true);
  assert.deepEqual(body.wrong, [true, "INVALID_PASSWORD"]);
  // What the edge sealed opens here (at the test's low cost, accepted explicitly).
  const vault = await Vault.open({ backend: "memory", snapshot: body.snapshot, minKdfIterations: 1000 });
  assert.equal(await vault.tokenRead(body.token, "correct horse battery"), "sealed at the edge");
});
