// Type-checked (strict) against @cloudflare/workers-types, with the `workerd` export condition and
// no DOM library: the package as a Worker's author sees it. Compiling is the test.
import { Vault, VaultError, isToken, passkeySecret, type VaultRecord } from "vaultstore-wasm";

interface Env {
  /** A 32-byte key, base64, set with `wrangler secret put VAULT_KEY`. */
  VAULT_KEY: string;
}

export default {
  async fetch(request: Request, env: Env): Promise<Response> {
    const key: Uint8Array = Uint8Array.from(atob(env.VAULT_KEY), (c) => c.charCodeAt(0));
    const vault: Vault = await Vault.open({ backend: "memory", passwordIdentity: false });
    const value = await request.text();
    const token: string = await vault.tokenCreate(value, key, { expiresAt: Date.now() + 60_000 });
    const records: VaultRecord[] = await vault.recordList({ limit: 10 });
    try {
      await vault.tokenRead(token, new Uint8Array(32));
    } catch (error) {
      if (error instanceof VaultError) return Response.json({ code: error.code }, { status: 403 });
    }
    const snapshot: Uint8Array = await vault.exportSnapshot();
    // The same passkey names type-check without the DOM library (they reject UNSUPPORTED here).
    const passkey: Promise<Uint8Array> = passkeySecret({ signal: request.signal });
    passkey.catch(() => undefined);
    return Response.json({ token, isToken: isToken(token), records: records.length, bytes: snapshot.byteLength });
  },
} satisfies ExportedHandler<Env>;
