// Type-checked (strict) against @cloudflare/workers-types: a D1 binding and a Durable Object's
// storage fit the adapters as Workers users hold them. Compiling is the test; nothing here runs.
import { DurableObject } from "cloudflare:workers";
import { Vault, d1, durableObject, libsql } from "vaultstore-wasm";

interface Env {
  DB: D1Database;
}

export class Holder extends DurableObject<Env> {
  async open(): Promise<Vault> {
    return Vault.open({ backend: "sql", sql: durableObject(this.ctx.storage) });
  }
}

export default {
  async fetch(_request: Request, env: Env): Promise<Response> {
    const vault = await Vault.open({ backend: "sql", sql: d1(env.DB) });
    return Response.json({ token: await vault.tokenCreate("v", new Uint8Array(32)), libsql: typeof libsql });
  },
} satisfies ExportedHandler<Env>;
