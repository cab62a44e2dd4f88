// Type-checked (strict) against the installed package: the public API as a TypeScript user
// sees it. Compiling is the test; nothing here runs.
import type { Client } from "@libsql/client";
import {
  Vault,
  RecordQuery,
  d1,
  durableObject,
  libsql,
  type SqlExecutor,
  type SqlStatement,
  type SqlValue,
  VaultError,
  isToken,
  isTokenValidLength,
  isVaultError,
  type ErrorCode,
  type QueryInit,
  type VaultOptions,
  type VaultRecord,
  passkeyRegister,
  passkeySecret,
  type PasskeyRegistration,
} from "vaultstore-wasm";

export async function usage(): Promise<void> {
  const options: VaultOptions = { backend: "memory", kdfIterations: 1000, passwordPolicy: { minLength: 8 } };
  const vault: Vault = await Vault.open(options);
  const token: string = await vault.tokenCreate("v", "password", { length: 20, expiresAt: new Date() });
  const tokens: string[] = await vault.tokensCreate(["a"], new Uint8Array(32));
  const values: Record<string, string> = await vault.tokensRead(tokens, "password");
  const resolved: Record<string, string> = await vault.tokensReadToResolvedMap({ k: token }, "password");
  const upserted: string = await vault.tokenUpsert(null, "v", "password");
  const exists: boolean = await vault.tokenExists(token);
  await vault.tokenRenew(token, null);
  await vault.tokenCreateCustom("custom", "v", "password", { expiresAt: 5 });
  const query: QueryInit = { orderBy: "token", sortOrder: "asc", limit: 10 };
  const list: VaultRecord[] = await vault.recordList(new RecordQuery(query).setSoftDeletedInclude(true));
  const count: number = await vault.recordCount(query);
  const found: VaultRecord | null = await vault.recordFindById(list[0]?.id ?? "");
  const created: Date | undefined = found?.createdAt;
  const expires: Date | null | undefined = found?.expiresAt;
  const moved: number = await vault.bulkRekey("password", "new", {
    rotate: true,
    signal: new AbortController().signal,
    onProgress: (done: number, total: number) => void [done, total],
  });
  const setting: string | null = await vault.getVaultSetting("k");
  const migrated: boolean = await vault.isVaultMigrated();
  const snapshot: Uint8Array = await vault.exportSnapshot();
  const known: boolean = await vault.unlock(new Uint8Array(32));
  const added: void = await vault.secretAdd("password", new Uint8Array(32));
  const removed: void = await vault.secretRemove(new Uint8Array(32));
  vault.lock();
  await vault.close();
  try {
    await vault.tokenRead(token, "password");
  } catch (e) {
    if (isVaultError(e)) {
      const code: ErrorCode = e.code;
      const tokensOfError: string[] | undefined = e.tokens;
      const reason: "missing" | "soft_deleted" | "expired" | undefined = e.reason;
      void [code, tokensOfError, reason];
    }
    if (e instanceof VaultError && e.code === "CLOSED") {
      // @ts-expect-error: codes are a closed union
      const wrong: ErrorCode = "NOT_A_CODE";
      void wrong;
    }
  }
  // @ts-expect-error: options are checked
  await Vault.open({ backend: "sqlite" });
  void [values, resolved, upserted, exists, count, created, expires, moved, setting, migrated, snapshot, known, added, removed, isToken(token), isTokenValidLength(5)];
}

/** The SQL backend: the libsql adapter takes a real `@libsql/client` Client; executors are plain objects. */
export async function sqlUsage(client: Client): Promise<void> {
  const vault: Vault = await Vault.open({ backend: "sql", sql: libsql(client), name: "tenant-a" });
  const own: SqlExecutor = {
    all: async (sql: string, params: SqlValue[]): Promise<SqlValue[][]> => [[sql, params.length]],
    batch: (statements: SqlStatement[]): void => void statements,
  };
  await Vault.open({ backend: "sql", sql: own });
  // @ts-expect-error: an executor needs batch()
  await Vault.open({ backend: "sql", sql: { all: async () => [] } });
  void [vault, d1, durableObject];
}

/** Passkeys: the same names and types on every entry; the secret is a raw-key Secret. */
export async function passkeyUsage(vault: Vault): Promise<void> {
  const { credentialId, secret }: PasskeyRegistration = await passkeyRegister({ rpName: "App", userName: "ada", signal: AbortSignal.timeout(60_000) });
  await vault.secretAdd("password", secret);
  const again: Uint8Array = await passkeySecret({ credentialId, rpId: "example.com" });
  const known: boolean = await vault.unlock(await passkeySecret());
  const unsupported: ErrorCode = "UNSUPPORTED";
  // @ts-expect-error: userName is required
  await passkeyRegister({ rpName: "App" });
  void [again, known, unsupported];
}
