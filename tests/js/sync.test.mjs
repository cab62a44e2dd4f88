// vault.sync and vault.syncHandle (SYNC.md "API"): two replicas and a server vault in one process,
// on the memory backend, the remote being `(request) => server.syncHandle(request)`.
import assert from "node:assert/strict";
import { test } from "node:test";
import { VaultError } from "vaultstore-wasm";
import { OTHER, PASSWORD, open, rejects } from "./helpers.mjs";

const NEW_PASSWORD = "a brand new password";

/** The server replica and a remote that reaches it in process, counting the requests. */
async function server(options = {}) {
  const vault = await open(options);
  const requests = [];
  const remote = async (request) => {
    requests.push(request.method);
    return vault.syncHandle(request);
  };
  return { vault, remote, requests };
}

function post(body, headers = { "content-type": "application/json" }) {
  return new Request("https://sync.example/", { method: "POST", headers, body });
}

async function errorBody(response) {
  assert.equal(response.headers.get("content-type"), "application/json");
  assert.equal(response.headers.get("cache-control"), "no-store");
  const body = await response.json();
  assert.equal(typeof body.error.code, "string");
  assert.ok(body.error.message.length > 10, "an error says what went wrong");
  return body.error;
}

test("a record created on one replica reads on the other, through the server", async () => {
  const s = await server();
  const a = await open();
  const b = await open();
  const token = await a.tokenCreate("4111 1111 1111 1111", PASSWORD);
  const pushed = await a.sync(s.remote);
  assert.ok(pushed.pushed >= 1, `the new record went up: ${JSON.stringify(pushed)}`);
  assert.deepEqual(pushed.stranded, []);
  assert.ok(s.requests.length >= 2 && s.requests.every((m) => m === "POST"));

  const pulled = await b.sync(s.remote);
  assert.ok(pulled.pulled >= 1, `the record came down: ${JSON.stringify(pulled)}`);
  assert.equal(await b.tokenRead(token, PASSWORD), "4111 1111 1111 1111");
  // The server holds the record sealed; its value is the same envelope on every replica.
  const onServer = await s.vault.recordFindByToken(token);
  assert.equal(onServer.value, (await a.recordFindByToken(token)).value);
  assert.equal((await b.recordFindByToken(token)).value, onServer.value);

  // And back: a change on b reaches a.
  await b.tokenUpdate(token, "5500 0000 0000 0004", PASSWORD);
  await b.sync(s.remote);
  await a.sync(s.remote);
  assert.equal(await a.tokenRead(token, PASSWORD), "5500 0000 0000 0004");
  // With nothing new anywhere, a sync moves nothing.
  const idle = await a.sync(s.remote);
  assert.equal(idle.pulled + idle.pushed, 0, JSON.stringify(idle));
});

test("sync reaches a server through fetch, with the remote's headers", async () => {
  const s = await server();
  const a = await open();
  const seen = [];
  const fetch = async (url, init) => {
    const request = new Request(url, init);
    seen.push([request.url, request.headers.get("authorization"), request.headers.get("content-type")]);
    return s.vault.syncHandle(request);
  };
  const token = await a.tokenCreate("over fetch", PASSWORD);
  await a.sync({ url: "https://sync.example/v1/sync", headers: { authorization: "Bearer t0k" }, fetch });
  assert.ok(seen.length >= 2);
  for (const [url, auth, type] of seen) {
    assert.equal(url, "https://sync.example/v1/sync");
    assert.equal(auth, "Bearer t0k");
    assert.equal(type, "application/json");
  }
  const b = await open();
  await b.sync(s.remote);
  assert.equal(await b.tokenRead(token, PASSWORD), "over fetch");

  // Headers as a Headers object (or pairs) count too.
  seen.length = 0;
  await b.sync({ url: new URL("https://sync.example/v1/sync"), headers: new Headers({ authorization: "Bearer h2" }), fetch });
  await b.sync({ url: "https://sync.example/v1/sync", headers: [["authorization", "Bearer h3"]], fetch });
  assert.deepEqual([...new Set(seen.map(([, auth]) => auth))], ["Bearer h2", "Bearer h3"]);
});

test("a password change reaches the other replica: the new one opens, the old one is refused", async () => {
  const s = await server({ passwordIdentity: true });
  const a = await open({ passwordIdentity: true });
  const b = await open({ passwordIdentity: true });
  const tokens = await a.tokensCreate(["one", "two"], PASSWORD);
  await a.sync(s.remote);
  await b.sync(s.remote);
  assert.equal(await b.tokenRead(tokens[0], PASSWORD), "one");

  assert.equal(await a.bulkRekey(PASSWORD, NEW_PASSWORD), 2);
  await a.sync(s.remote);
  const report = await b.sync(s.remote);
  assert.ok(report.pulled >= 1, JSON.stringify(report));
  b.lock(); // the old key was cached by the read above
  assert.deepEqual(await b.tokensRead(tokens, NEW_PASSWORD), { [tokens[0]]: "one", [tokens[1]]: "two" });
  await rejects(b.tokenRead(tokens[1], PASSWORD), "INVALID_PASSWORD");
});

test("a secret added on one device while another rotated its identity away opens nothing after sync", async () => {
  const s = await server({ passwordIdentity: true });
  const a = await open({ passwordIdentity: true });
  const b = await open({ passwordIdentity: true });
  const [token] = await a.tokensCreate(["one"], PASSWORD);
  await a.sync(s.remote);
  await b.sync(s.remote);
  // Apart: a adds a second secret to the identity, b rotates it away.
  await a.secretAdd(PASSWORD, OTHER);
  await b.bulkRekey(PASSWORD, NEW_PASSWORD, { rotate: true });
  await a.sync(s.remote);
  await b.sync(s.remote);
  const report = await a.sync(s.remote);
  assert.deepEqual(report.stranded, []);
  for (const device of [a, b]) {
    device.lock();
    assert.equal(await device.tokenRead(token, NEW_PASSWORD), "one");
    // The added secret went with the identity it opened: it opens nothing, like the old password.
    await rejects(device.unlock(OTHER), "INVALID_PASSWORD");
    await rejects(device.unlock(PASSWORD), "INVALID_PASSWORD");
  }
});

test("a password change covers the identities two devices made for one password while apart", async () => {
  const s = await server({ passwordIdentity: true });
  const a = await open({ passwordIdentity: true });
  const b = await open({ passwordIdentity: true });
  await a.sync(s.remote);
  await b.sync(s.remote);
  // Apart, each device uses the password first: each makes an identity for it.
  const fromA = await a.tokenCreate("written on a", PASSWORD);
  const fromB = await b.tokenCreate("written on b", PASSWORD);
  for (const device of [a, b, a]) await device.sync(s.remote);

  assert.equal(await a.bulkRekey(PASSWORD, NEW_PASSWORD), 2);
  for (const device of [a, b]) await device.sync(s.remote);
  for (const device of [a, b]) {
    device.lock();
    assert.deepEqual(await device.tokensRead([fromA, fromB], NEW_PASSWORD), { [fromA]: "written on a", [fromB]: "written on b" });
    await rejects(device.unlock(PASSWORD), "INVALID_PASSWORD");
  }
});

test("a replica of another vault is refused with SYNC_CONFLICT, and nothing changes on either side", async () => {
  const events = [];
  const s = await server({ onEvent: (event) => events.push(event) });
  const a = await open();
  await a.tokenCreate("on the server", PASSWORD);
  await a.sync(s.remote);
  const before = await s.vault.exportSnapshot();

  const stranger = await open(); // another vault: another KDF salt
  const mine = await stranger.tokenCreate("mine", OTHER);
  const strangerBefore = await stranger.exportSnapshot();
  const error = await rejects(stranger.sync(s.remote), "SYNC_CONFLICT");
  assert.ok(error instanceof VaultError);
  assert.deepEqual(await s.vault.exportSnapshot(), before, "the server is unchanged");
  assert.deepEqual(await stranger.exportSnapshot(), strangerBefore, "the replica is unchanged");
  assert.equal(await stranger.tokenRead(mine, OTHER), "mine");
  assert.equal(await s.vault.recordCount(), 1);
  // The server's onEvent tells the refused request from the accepted ones.
  const handled = events.filter((e) => e.op === "syncHandle").map((e) => e.code);
  assert.ok(handled.includes("OK"), JSON.stringify(handled));
  assert.equal(handled.at(-1), "SYNC_CONFLICT");
  // `records` counts the rows a request moved: the push that stored a's record counts it, the
  // refused request nothing.
  const moved = events.filter((e) => e.op === "syncHandle").map((e) => e.records);
  assert.ok(moved.some((n) => n >= 1), JSON.stringify(moved));
  assert.equal(moved.at(-1), 0);
});

test("syncHandle answers hostile requests with JSON errors before the engine reads them", async () => {
  const events = [];
  const { vault } = await server({ onEvent: (event) => events.push(event) });
  const get = await vault.syncHandle(new Request("https://sync.example/", { method: "GET" }));
  assert.equal(get.status, 405);
  assert.equal(get.headers.get("allow"), "POST");
  assert.equal((await errorBody(get)).code, "INVALID_ARGUMENT");

  const text = await vault.syncHandle(post("{}", { "content-type": "text/plain" }));
  assert.equal(text.status, 415);
  assert.equal((await errorBody(text)).code, "INVALID_ARGUMENT");

  // 5 MiB, streamed: the cap holds on the bytes read, whatever the headers say.
  let sent = 0;
  const chunk = new Uint8Array(64 * 1024).fill(0x20);
  const huge = new ReadableStream({
    pull(controller) {
      if (sent >= 5 << 20) return controller.close();
      sent += chunk.byteLength;
      controller.enqueue(chunk);
    },
  });
  const big = await vault.syncHandle(
    new Request("https://sync.example/", { method: "POST", headers: { "content-type": "application/json" }, body: huge, duplex: "half" }),
  );
  assert.equal(big.status, 413);
  assert.equal((await errorBody(big)).code, "INVALID_ARGUMENT");
  assert.ok(sent < 5 << 20, `reading stopped at the cap (read ${sent} bytes)`);

  // A declared length over the cap is refused without reading the body.
  const declared = post("{}", { "content-type": "application/json", "content-length": String(5 << 20) });
  const refused = await vault.syncHandle(declared);
  assert.equal(refused.status, 413);
  assert.equal(declared.bodyUsed, false, "the body was not read");
  await errorBody(refused);

  const malformed = await vault.syncHandle(post('{"sync":1,"op":'));
  assert.equal(malformed.status, 400);
  assert.equal((await errorBody(malformed)).code, "INVALID_ARGUMENT");

  const future = await vault.syncHandle(post(JSON.stringify({ sync: 99, op: "pull" })));
  assert.equal(future.status, 400);
  assert.equal((await errorBody(future)).code, "UNSUPPORTED");

  // A body the app read before passing the request on, and an upload that broke off: 400s that
  // say why, not a server failure.
  const read = post(JSON.stringify({ sync: 1, op: "pull" }));
  await read.text();
  const used = await vault.syncHandle(read);
  assert.equal(used.status, 400);
  const usedError = await errorBody(used);
  assert.equal(usedError.code, "INVALID_ARGUMENT");
  assert.match(usedError.message, /body could not be read/);
  const broken = new ReadableStream({
    pull(controller) {
      controller.error(new Error("connection reset"));
    },
  });
  const cut = await vault.syncHandle(
    new Request("https://sync.example/", { method: "POST", headers: { "content-type": "application/json" }, body: broken, duplex: "half" }),
  );
  assert.equal(cut.status, 400);
  assert.match((await errorBody(cut)).message, /body could not be read/);

  // Not a Request at all: rejected, not answered.
  const notRequest = await rejects(vault.syncHandle({ method: "POST", body: "{}" }), "INVALID_ARGUMENT");
  assert.match(notRequest.message, /takes a Request/);

  // A server's monitoring hears of every refusal, including those answered before the engine
  // reads a body (405, 415, 413 streamed and declared, the unreadable bodies).
  assert.deepEqual(
    events.filter((e) => e.op === "syncHandle").map((e) => e.code),
    ["INVALID_ARGUMENT", "INVALID_ARGUMENT", "INVALID_ARGUMENT", "INVALID_ARGUMENT", "INVALID_ARGUMENT", "UNSUPPORTED", "INVALID_ARGUMENT", "INVALID_ARGUMENT", "INVALID_ARGUMENT"],
  );

  // None of it wrote anything.
  assert.equal(await vault.recordCount(), 0);
});

test("syncHandle on a good request answers 200 JSON, not cached", async () => {
  const s = await server();
  const a = await open();
  await a.tokenCreate("x", PASSWORD);
  let answer;
  await a.sync(async (request) => {
    answer = await s.vault.syncHandle(request);
    return answer.clone();
  });
  assert.equal(answer.status, 200);
  assert.equal(answer.headers.get("content-type"), "application/json");
  assert.equal(answer.headers.get("cache-control"), "no-store");
  assert.equal((await answer.json()).sync, 1);
});

test("an aborted signal stops the sync with ABORTED; the next sync completes", async () => {
  const s = await server();
  const a = await open();
  const token = await a.tokenCreate("later", PASSWORD);

  const already = new AbortController();
  already.abort();
  await rejects(a.sync(s.remote, { signal: already.signal }), "ABORTED");
  assert.equal(s.requests.length, 0, "nothing was sent");

  // Aborted between pages: after the first exchange.
  const controller = new AbortController();
  const aborting = async (request) => {
    const response = await s.remote(request);
    controller.abort();
    return response;
  };
  await rejects(a.sync(aborting, { signal: controller.signal }), "ABORTED");
  assert.equal(s.requests.length, 1, "no exchange after the abort");

  // Aborted during an exchange: the remote gets the signal with its request.
  const during = new AbortController();
  const hanging = (request) =>
    new Promise((_, reject) => {
      request.signal.addEventListener("abort", () => reject(request.signal.reason));
      during.abort();
    });
  await rejects(a.sync(hanging, { signal: during.signal }), "ABORTED");

  await a.sync(s.remote);
  const b = await open();
  await b.sync(s.remote);
  assert.equal(await b.tokenRead(token, PASSWORD), "later");
});

test("a network failure is STORAGE with the failure as cause; bad arguments are INVALID_ARGUMENT", async () => {
  const a = await open();
  await a.tokenCreate("x", PASSWORD);
  const failure = new TypeError("fetch failed");
  const error = await rejects(
    a.sync({ url: "https://sync.example/", fetch: async () => Promise.reject(failure) }),
    "STORAGE",
  );
  assert.equal(error.cause, failure);

  // A server that answers garbage or an error status: STORAGE too, without a cause.
  const html = await rejects(a.sync(async () => new Response("<html>", { status: 502 })), "STORAGE");
  assert.match(html.message, /502/);

  // A "server" that answers more than the protocol's 4 MiB: reading stops at the cap.
  let served = 0;
  const endless = new ReadableStream({
    pull(controller) {
      served += 64 * 1024;
      controller.enqueue(new Uint8Array(64 * 1024).fill(0x20));
    },
  });
  const big = await rejects(a.sync(async () => new Response(endless, { status: 200 })), "STORAGE");
  assert.match(big.message, /4 MiB/);
  assert.ok(served <= (4 << 20) + 2 * 64 * 1024, `reading stopped at the cap (read ${served} bytes)`);

  await rejects(a.sync("not a url"), "INVALID_ARGUMENT");
  await rejects(a.sync(42), "INVALID_ARGUMENT");
  await rejects(a.sync(async () => new Response("{}"), { signal: "no" }), "INVALID_ARGUMENT");
  await rejects(a.syncHandle("not a request"), "INVALID_ARGUMENT");
});

test("onProgress is called after every page with rows done and an estimated total", async () => {
  const s = await server();
  const a = await open();
  await a.tokensCreate(["a", "b", "c"], PASSWORD);
  const progress = [];
  const report = await a.sync(s.remote, { onProgress: (done, total) => progress.push([done, total]) });
  // Once per exchange with the server (pull, push, pull again), and once at the end.
  assert.equal(progress.length, s.requests.length + 1);
  assert.ok(progress.every(([done, total], i) => done <= total && (i === 0 || done >= progress[i - 1][0])), JSON.stringify(progress));
  const [done, total] = progress.at(-1);
  assert.equal(done, total);
  assert.ok(done >= report.pushed && report.pushed >= 3, JSON.stringify({ progress, report }));
});
