// A worker that hands the package's SQL adapters to the storage conformance suite, over HTTP:
// `POST /d1/{all,batch}` runs `d1(env.DB)`, `POST /do/<name>/{all,batch}` runs
// `durableObject(ctx.storage)` in the Durable Object <name> (a fresh SQLite database per name).
// Bodies are `{ sql, params }` or `{ statements }`; a failure is a 500 with the error's
// `name` and `message`, which the suite's executor throws again.
import { DurableObject } from "cloudflare:workers";
import { d1, durableObject } from "vaultstore-wasm";

async function serve(executor, action, request) {
  try {
    const body = await request.json();
    if (action === "all") return Response.json({ rows: await executor.all(body.sql, body.params) });
    if (action === "batch") {
      await executor.batch(body.statements);
      return Response.json({});
    }
    return Response.json({ name: "NotFound", message: `no action ${action}` }, { status: 404 });
  } catch (error) {
    return Response.json({ name: error?.name ?? "Error", message: error?.message ?? String(error) }, { status: 500 });
  }
}

export class SqlObject extends DurableObject {
  fetch(request) {
    const action = new URL(request.url).pathname.split("/").pop();
    return serve(durableObject(this.ctx.storage), action, request);
  }
}

export default {
  fetch(request, env) {
    const [, where, ...rest] = new URL(request.url).pathname.split("/");
    if (where === "d1") return serve(d1(env.DB), rest[0], request);
    if (where === "do") return env.SQL_OBJECT.get(env.SQL_OBJECT.idFromName(rest[0])).fetch(request);
    return new Response("not found", { status: 404 });
  },
};
