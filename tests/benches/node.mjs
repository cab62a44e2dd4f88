// The Node half of the benchmark: the packed package on `backend: "memory"` against WebCrypto and
// a Map, and (creates and reads) against node:crypto and a Map, with and without per-record HKDF
// (baselines-node.mjs). Run from the folder the tarball is installed in, one row per process (a fresh heap each):
//
//   node node.mjs <row> '<config JSON>'     prints { side: [sample, ...] } as JSON
//
// Samples are milliseconds. Keys are cached on both sides (the package caches derived keys; a
// baseline derives its key before the clock starts) except where the derivation is what is measured.
import { Vault } from "vaultstore-wasm";
import { hkdf, newRecord, newSalt, newToken, pbkdf2, plain } from "./baselines.mjs";
import { crossCheck, nodeHkdf, nodePlain } from "./baselines-node.mjs";
import { NEW_PASSWORD, PASSWORD, alternate, expectEqual, median, medianCall, seedOf, time, values } from "./protocol.mjs";

// Issue 16 asks for the memory a 100,000-record vault takes. The engine's linear memory is not
// exported by the package, so it is caught here as the package instantiates it (on first use,
// after these imports): it only grows, so its size after a build is the peak so far.
let engineMemory;
WebAssembly.Instance = new Proxy(WebAssembly.Instance, {
  construct(target, args) {
    const instance = Reflect.construct(target, args);
    engineMemory ??= Object.values(instance.exports).find((e) => e instanceof WebAssembly.Memory);
    return instance;
  },
});
const MiB = 1024 * 1024;
/** The JS heap in use, in MiB, after a full collection (bench.mjs runs this file with --expose-gc). */
function liveHeapMiB() {
  globalThis.gc();
  return process.memoryUsage().heapUsed / MiB;
}

const [row, configJson] = process.argv.slice(2);
const config = JSON.parse(configJson);
/** The rounds of this row, sides in a shuffled order seeded by the row's name and config.seed. */
const alternateRow = (sides) => alternate(config.rounds, sides, seedOf(row) ^ (config.seed ?? 1));

/** A node:crypto baseline's key (derived before the clock starts) and an empty Map. */
function nodeStore(scheme) {
  return { key: scheme.deriveKey(PASSWORD, newSalt(), config.kdfSmall), store: new Map() };
}

function expectNodeValues(store, key, scheme, expected) {
  const read = [...store.values()].map((r) => scheme.open(key, r.token, r.value));
  expectEqual(read.sort(), [...expected].sort(), `${scheme.name}: values read back`);
}

/** Both node:crypto sides of a create row: `create(scheme, key, store)` is the timed part. */
function nodeCreateSides(input, create) {
  const side = (scheme) => async () => {
    const { key, store } = nodeStore(scheme);
    const ms = await time(async () => create(scheme, key, store));
    expectNodeValues(store, key, scheme, input);
    return { ms };
  };
  return { nodeHkdf: side(nodeHkdf), nodePlain: side(nodePlain) };
}

/** A Map of `input` sealed with `scheme`, and its tokens in the order of `input`. */
function nodeFilled(scheme, input) {
  const { key, store } = nodeStore(scheme);
  const tokens = input.map((value) => {
    const token = newToken();
    store.set(token, newRecord(token, scheme.seal(key, token, value)));
    return token;
  });
  return { key, store, tokens };
}

/** A memory vault whose key for PASSWORD is already derived and cached. */
async function unlockedVault(options = {}) {
  const vault = await Vault.open({ backend: "memory", kdfIterations: config.kdfSmall, ...options });
  await vault.tokenDelete(await vault.tokenCreate("unlock", PASSWORD));
  return vault;
}

async function expectPackageValues(vault, tokens, expected, password = PASSWORD) {
  const read = await vault.tokensRead(tokens, password);
  expectEqual(tokens.map((t) => read[t]), expected, "package values read back");
}

async function expectMapValues(store, key, scheme, expected) {
  const read = await Promise.all([...store.values()].map((r) => scheme.open(key, r.token, r.value)));
  expectEqual(read.sort(), [...expected].sort(), "baseline values read back");
}

/** A baseline's plain key and an empty Map, made before the clock starts. */
async function plainStore(iterations = config.kdfSmall) {
  const salt = newSalt();
  return { salt, key: await plain.deriveKey(PASSWORD, salt, iterations), store: new Map() };
}

/**
 * p50 of `count` sequential reads of random tokens (microseconds), each checked, after `count`
 * untimed ones: the steady state an application reading often is in. Each readLatency round runs
 * in a fresh process (bench.mjs), where the first reads would also time V8 compiling the read
 * path (p50 20-21 µs against 17-19 µs in warm rounds, 4 December 2026).
 */
async function readP50(read, tokens, expected, count) {
  for (let i = 0; i < count; i++) await read(tokens[Math.floor(Math.random() * tokens.length)]);
  const micros = [];
  for (let i = 0; i < count; i++) {
    const pick = Math.floor(Math.random() * tokens.length);
    const started = performance.now();
    const value = await read(tokens[pick]);
    micros.push((performance.now() - started) * 1000);
    if (value !== expected[pick]) throw new Error(`read ${tokens[pick]}: got ${value}`);
  }
  return median(micros);
}

/**
 * Both node:crypto sides of a read row: `repeat` × `readAll(scheme, key, store, tokens)` timed,
 * the last one's values checked against `input`.
 */
function nodeReadSides(input, repeat, readAll) {
  const side = (scheme) => async () => {
    const { key, store, tokens } = nodeFilled(scheme, input);
    let read;
    const ms = await time(async () => {
      for (let i = 0; i < repeat; i++) read = readAll(scheme, key, store, tokens);
    });
    expectEqual(read, input, `${scheme.name}: reads`);
    return { ms };
  };
  return { nodeHkdf: side(nodeHkdf), nodePlain: side(nodePlain) };
}

const rows = {
  /** n × `await tokenCreate` against n × (seal, Map.set). */
  async sequentialCreate() {
    const input = values(config.records10k);
    return alternateRow({
      async package() {
        const vault = await unlockedVault();
        const tokens = [];
        const ms = await time(async () => {
          for (const value of input) tokens.push(await vault.tokenCreate(value, PASSWORD));
        });
        await expectPackageValues(vault, tokens, input);
        await vault.close();
        return { ms };
      },
      async baseline() {
        const { key, store } = await plainStore();
        const ms = await time(async () => {
          for (const value of input) {
            const token = newToken();
            store.set(token, newRecord(token, await plain.seal(key, token, value)));
          }
        });
        await expectMapValues(store, key, plain, input);
        return { ms };
      },
      // node:crypto is synchronous: what a Node developer writes has no await.
      ...nodeCreateSides(input, (scheme, key, store) => {
        for (const value of input) {
          const token = newToken();
          store.set(token, newRecord(token, scheme.seal(key, token, value)));
        }
      }),
    });
  },

  /** `tokensCreate(n)` against Promise.all of seals, then Map.set. */
  async batchCreate() {
    const input = values(config.records10k);
    return alternateRow({
      async package() {
        const vault = await unlockedVault();
        let tokens;
        const ms = await time(async () => {
          tokens = await vault.tokensCreate(input, PASSWORD);
        });
        await expectPackageValues(vault, tokens, input);
        await vault.close();
        return { ms };
      },
      async baseline() {
        const { key, store } = await plainStore();
        const ms = await time(async () => {
          const records = await Promise.all(
            input.map(async (value) => {
              const token = newToken();
              return newRecord(token, await plain.seal(key, token, value));
            }),
          );
          for (const record of records) store.set(record.token, record);
        });
        await expectMapValues(store, key, plain, input);
        return { ms };
      },
      ...nodeCreateSides(input, (scheme, key, store) => {
        const records = input.map((value) => {
          const token = newToken();
          return newRecord(token, scheme.seal(key, token, value));
        });
        for (const record of records) store.set(record.token, record);
      }),
    });
  },

  /** 10 × `tokensRead(n)` against 10 × (Map.get, Promise.all of opens). */
  async batchRead() {
    const input = values(config.records1k);
    const repeat = 10;
    return alternateRow({
      async package() {
        const vault = await unlockedVault();
        const tokens = await vault.tokensCreate(input, PASSWORD);
        let read;
        const ms = await time(async () => {
          for (let i = 0; i < repeat; i++) read = await vault.tokensRead(tokens, PASSWORD);
        });
        expectEqual(tokens.map((t) => read[t]), input, "package tokensRead");
        await vault.close();
        return { ms };
      },
      async baseline() {
        const { key, store } = await plainStore();
        const tokens = input.map(() => newToken());
        for (const [i, token] of tokens.entries()) store.set(token, newRecord(token, await plain.seal(key, token, input[i])));
        let read;
        const ms = await time(async () => {
          for (let i = 0; i < repeat; i++) {
            read = await Promise.all(tokens.map((token) => plain.open(key, token, store.get(token).value)));
          }
        });
        expectEqual(read, input, "baseline reads");
        return { ms };
      },
      ...nodeReadSides(input, repeat, (scheme, key, store, tokens) => tokens.map((token) => scheme.open(key, token, store.get(token).value))),
    });
  },

  /** 10 × n × `await tokenRead` (each token in turn) against 10 × n × (Map.get, open). */
  async sequentialRead() {
    const input = values(config.records1k);
    const repeat = 10;
    const readAll = async (read, tokens) => {
      const out = [];
      for (let i = 0; i < repeat; i++) {
        out.length = 0;
        for (const token of tokens) out.push(await read(token));
      }
      return out;
    };
    return alternateRow({
      async package() {
        const vault = await unlockedVault();
        const tokens = await vault.tokensCreate(input, PASSWORD);
        let read;
        const ms = await time(async () => {
          read = await readAll((t) => vault.tokenRead(t, PASSWORD), tokens);
        });
        expectEqual(read, input, "package tokenRead");
        await vault.close();
        return { ms };
      },
      async baseline() {
        const { key, store } = await plainStore();
        const tokens = input.map(() => newToken());
        for (const [i, token] of tokens.entries()) store.set(token, newRecord(token, await plain.seal(key, token, input[i])));
        let read;
        const ms = await time(async () => {
          read = await readAll((t) => plain.open(key, t, store.get(t).value), tokens);
        });
        expectEqual(read, input, "baseline reads");
        return { ms };
      },
      ...nodeReadSides(input, repeat, (scheme, key, store, tokens) => {
        const out = [];
        for (const token of tokens) out.push(scheme.open(key, token, store.get(token).value));
        return out;
      }),
    });
  },

  /**
   * Build a vault of records100k (tokensCreate in chunks), then the p50 of single `tokenRead`s in
   * it and in a vault of records1k. The baseline reads a Map of HKDF+AES-GCM records (built once:
   * reads do not change it).
   */
  async readLatency() {
    const big = values(config.records100k);
    const small = values(config.records1k);
    let baselineStores;
    let baselineHeapMiB;
    async function hkdfStore(input) {
      const key = await hkdf.deriveKey(PASSWORD, newSalt(), config.kdfSmall);
      const store = new Map();
      for (let i = 0; i < input.length; i += config.chunk) {
        const records = await Promise.all(
          input.slice(i, i + config.chunk).map(async (value) => {
            const token = newToken();
            return newRecord(token, await hkdf.seal(key, token, value));
          }),
        );
        for (const record of records) store.set(record.token, record);
      }
      return { key, store, tokens: [...store.keys()] };
    }
    const baselineP50 = ({ key, store, tokens }, input) =>
      readP50((token) => hkdf.open(key, token, store.get(token).value), tokens, input, config.reads);

    const sides = {
      async package() {
        const vault = await unlockedVault();
        const tokens = [];
        const heapBefore = liveHeapMiB();
        const buildMs = await time(async () => {
          for (let i = 0; i < big.length; i += config.chunk) {
            tokens.push(...(await vault.tokensCreate(big.slice(i, i + config.chunk), PASSWORD)));
          }
        });
        // The engine's memory with the vault open (its peak: it never shrinks), and what the
        // build added to the live JS heap (the tokens the bench keeps, as on the baseline's side).
        const wasmMiB = engineMemory.buffer.byteLength / MiB;
        const heapMiB = liveHeapMiB() - heapBefore;
        const p50Big = await readP50((t) => vault.tokenRead(t, PASSWORD), tokens, big, config.reads);
        const listing = await listingMs(vault, tokens);
        await vault.close();

        const smallVault = await unlockedVault();
        const smallTokens = await smallVault.tokensCreate(small, PASSWORD);
        const p50Small = await readP50((t) => smallVault.tokenRead(t, PASSWORD), smallTokens, small, config.reads);
        await smallVault.close();
        return { buildMs, p50Big, p50Small, wasmMiB, heapMiB, ...listing };
      },
      async baseline() {
        if (!baselineStores) {
          const heapBefore = liveHeapMiB();
          const bigStore = await hkdfStore(big);
          // What the 100,000-record Map and its tokens add to the live JS heap; the Maps are
          // built once, so every round reports the first round's figure.
          baselineHeapMiB = liveHeapMiB() - heapBefore;
          baselineStores = { big: bigStore, small: await hkdfStore(small) };
        }
        // The Map is in insertion order, so the tokens line up with the values.
        return {
          heapMiB: baselineHeapMiB,
          p50Big: await baselineP50(baselineStores.big, big),
          p50Small: await baselineP50(baselineStores.small, small),
        };
      },
    };
    // bench.mjs runs this row one round per process, the package first: its build is then a
    // fresh engine's, as a user's first build is (a wasm memory never shrinks, so a later build
    // in the same process reuses what the first one grew), and neither its build nor its heap
    // figure depends on what the baseline left in the process.
    if (!config.packageFirst) return alternateRow(sides);
    const samples = {};
    for (const [side, run] of Object.entries(sides)) samples[side] = [await run()];
    return samples;
  },

  /** bulkRekey with identities (re-encrypting every record): `rotate: true`. */
  rekeyRotate: () => rekey({ passwordIdentity: true, rotate: true }),
  /** bulkRekey with identities off: the records of the old password found by key check. */
  rekeyScan: () => rekey({ passwordIdentity: false, rotate: false }),

  /** The first `tokenCreate` of a fresh vault (the unlock: PBKDF2) against deriveBits + 1 seal. */
  async unlock() {
    const value = values(1)[0];
    return alternateRow({
      async package() {
        const vault = await Vault.open({ backend: "memory", kdfIterations: config.kdfDefault });
        let token;
        const ms = await time(async () => {
          token = await vault.tokenCreate(value, PASSWORD);
        });
        expectEqual(await vault.tokenRead(token, PASSWORD), value, "package unlock read");
        await vault.close();
        return { ms };
      },
      async baseline() {
        const salt = newSalt();
        const store = new Map();
        let key;
        const ms = await time(async () => {
          key = await plain.deriveKey(PASSWORD, salt, config.kdfDefault);
          const token = newToken();
          store.set(token, newRecord(token, await plain.seal(key, token, value)));
        });
        await expectMapValues(store, key, plain, [value]);
        return { ms };
      },
    });
  },

  /**
   * The Rust PBKDF2, which takes over when WebCrypto refuses (Workers refuse more than 100,000
   * iterations): `deriveBits` is made to reject while the package unlocks a fresh vault.
   */
  async fallback() {
    const value = values(1)[0];
    return alternateRow({
      async package() {
        const vault = await Vault.open({ backend: "memory", kdfIterations: config.kdfDefault });
        let refused = 0;
        crypto.subtle.deriveBits = async () => {
          refused++;
          throw new DOMException("refused by the benchmark", "NotSupportedError");
        };
        let token;
        const ms = await time(async () => {
          token = await vault.tokenCreate(value, PASSWORD);
        }).finally(() => delete crypto.subtle.deriveBits);
        if (refused === 0) throw new Error("the package never asked WebCrypto: the fallback was not measured");
        expectEqual(await vault.tokenRead(token, PASSWORD), value, "package fallback read");
        await vault.close();
        return { ms };
      },
      async baseline() {
        return { ms: await time(() => pbkdf2(PASSWORD, newSalt(), config.kdfDefault)) };
      },
    });
  },
};

/** How many times each listing call is timed; its figure is the median. */
const LISTING_CALLS = 15;

/** The median of LISTING_CALLS timings of `call`, each answer checked by `check`. */
const listingCall = (call, check) => medianCall(LISTING_CALLS, call, check);

/**
 * A first page (`recordList({ limit: 20 })`), a page half-way down (`offset` n/2) and
 * `recordCount()` in the vault of `tokens` (issue 16: each under 1 ms at 100,000 records). Each
 * answer is checked against one listing of the whole vault, taken before the clock starts.
 */
async function listingMs(vault, tokens) {
  const PAGE = 20;
  const deep = tokens.length >> 1;
  const everything = (await vault.recordList()).map((r) => r.token);
  expectEqual(everything.length, tokens.length, "recordList() lists every record");
  expectEqual([...everything].sort(), [...tokens].sort(), "recordList() lists the vault's tokens");
  const page = (offset) => (records) => expectEqual(records.map((r) => r.token), everything.slice(offset, offset + PAGE), `recordList page at offset ${offset}`);
  return {
    listFirstMs: await listingCall(() => vault.recordList({ limit: PAGE }), page(0)),
    listDeepMs: await listingCall(() => vault.recordList({ limit: PAGE, offset: deep }), page(deep)),
    countMs: await listingCall(() => vault.recordCount(), (n) => expectEqual(n, tokens.length, "package record count")),
  };
}

/**
 * A rekey of records10k records at the default iteration count, as a user runs it. The baseline
 * derives the new key, then opens and re-seals every record into the Map. A third side times one
 * PBKDF2 alone, so the report can show the time beyond the new password's derivation.
 */
async function rekey({ passwordIdentity, rotate }) {
  const input = values(config.records10k);
  return alternateRow({
    async package() {
      const vault = await Vault.open({ backend: "memory", passwordIdentity, kdfIterations: config.kdfDefault });
      const tokens = await vault.tokensCreate(input, PASSWORD);
      let moved;
      const ms = await time(async () => {
        moved = await vault.bulkRekey(PASSWORD, NEW_PASSWORD, { rotate });
      });
      expectEqual(moved, input.length, "package records rekeyed");
      await expectPackageValues(vault, tokens, input, NEW_PASSWORD);
      await vault.close();
      return { ms };
    },
    async baseline() {
      const { salt, key: oldKey, store } = await plainStore(config.kdfDefault);
      for (const value of input) {
        const token = newToken();
        store.set(token, newRecord(token, await plain.seal(oldKey, token, value)));
      }
      let newKey;
      const ms = await time(async () => {
        newKey = await plain.deriveKey(NEW_PASSWORD, salt, config.kdfDefault);
        await Promise.all(
          [...store.values()].map(async (record) => {
            const value = await plain.open(oldKey, record.token, record.value);
            store.set(record.token, { ...record, value: await plain.seal(newKey, record.token, value), updatedAt: Date.now() });
          }),
        );
      });
      await expectMapValues(store, newKey, plain, input);
      return { ms };
    },
    async pbkdf2() {
      return { ms: await time(() => pbkdf2(NEW_PASSWORD, newSalt(), config.kdfDefault)) };
    },
  });
}

if (!(row in rows)) throw new Error(`unknown Node benchmark ${row}; rows: ${Object.keys(rows).join(", ")}`);
// The node:crypto baselines frame values as WebCrypto does, or no row runs.
await crossCheck(PASSWORD, newSalt(), config.kdfSmall);
console.log(JSON.stringify(await rows[row]()));
