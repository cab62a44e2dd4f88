// Property-based: whatever a caller passes (option objects, arguments, queries, of any type and
// shape), every call resolves or rejects with a VaultError carrying a code a caller can act on,
// never traps the engine and never leaves the Vault unusable. FUZZ_RUNS sets the number of
// runs (default 150 each, a few seconds; e.g. FUZZ_RUNS=20000 for a long run).
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { RecordQuery, Vault, VaultError } from "vaultstore-wasm";
import { PASSWORD, open } from "./helpers.mjs";

const numRuns = Number(process.env.FUZZ_RUNS ?? 150);
/** Codes a bad argument may produce; STORAGE here would be an unexpected failure, CLOSED a trap. */
const ACTIONABLE = new Set(["INVALID_ARGUMENT", "PASSWORD_POLICY", "RECORD_NOT_FOUND", "INVALID_PASSWORD", "DECRYPTION_FAILED", "TOKEN_EXISTS", "ABORTED"]);

const anything = fc.anything({
  withBigInt: true,
  withDate: true,
  withTypedArray: true,
  withSparseArray: true,
  withNullPrototype: true,
  withMap: true,
  withSet: true,
  withBoxedValues: true,
  withObjectString: true,
  maxDepth: 2,
});
const hostile = fc.oneof(
  anything,
  fc.constant(new Proxy({}, { get() { throw new Error("trap"); } })),
  fc.constant(Object.defineProperty({}, "limit", { enumerable: true, get() { throw new Error("getter"); } })),
  fc.constant(new Uint8Array(32)),
  fc.constant(new Uint8Array(31)),
  fc.constant(new Date(NaN)),
);
const options = fc.oneof(
  hostile,
  fc.record(
    {
      backend: fc.oneof(fc.constant("memory"), hostile),
      name: hostile,
      passwordIdentity: fc.oneof(fc.boolean(), hostile),
      kdfIterations: fc.oneof(fc.integer({ min: 1_000, max: 2_000 }), fc.double(), hostile),
      minKdfIterations: fc.oneof(fc.integer({ min: 0, max: 2_000 }), hostile),
      keyCacheTtlMs: fc.oneof(fc.nat(), hostile),
      passwordPolicy: fc.oneof(fc.record({ minLength: fc.oneof(fc.integer(), hostile), allowEmpty: hostile }, { requiredKeys: [] }), hostile),
      snapshot: hostile,
      onEvent: hostile,
    },
    { requiredKeys: [] },
  ),
);

async function expectActionable(promise, what) {
  try {
    await promise;
  } catch (e) {
    assert.ok(e instanceof VaultError, `${what}: not a VaultError: ${e}`);
    assert.ok(ACTIONABLE.has(e.code), `${what}: ${e.code} ${e.message}`);
  }
}

test("any options object opens a vault or is refused with a clear code", async () => {
  await fc.assert(
    fc.asyncProperty(options, async (o) => {
      await expectActionable(
        Vault.open(o).then((v) => v.close()),
        "Vault.open",
      );
    }),
    { numRuns },
  );
});

test("any arguments to any method: a result or a clear code, and the Vault keeps working", async () => {
  const v = await open();
  const token = await v.tokenCreate("kept", PASSWORD);
  const methods = [
    "tokenCreate", "tokensCreate", "tokenCreateCustom", "tokenRead", "tokensRead", "tokensReadToResolvedMap",
    "tokenUpdate", "tokenUpsert", "tokenExists", "tokenRenew", "tokenSoftDelete", "tokenRestore",
    "recordList", "recordCount", "recordFindById", "recordFindByToken", "recordSoftDeleteById",
    "bulkRekey", "getVaultSetting", "setVaultSetting", "setVaultVersion",
  ];
  await fc.assert(
    fc.asyncProperty(fc.constantFrom(...methods), hostile, hostile, hostile, async (method, a, b, c) => {
      await expectActionable(v[method](a, b, c), method);
    }),
    { numRuns: numRuns * 4 },
  );
  await fc.assert(
    fc.property(hostile, (init) => {
      try {
        new RecordQuery(init).validate();
      } catch (e) {
        assert.ok(e instanceof VaultError && e.code === "INVALID_ARGUMENT", `RecordQuery: ${e}`);
      }
    }),
    { numRuns },
  );
  assert.equal(await v.tokenRead(token, PASSWORD), "kept");
});
