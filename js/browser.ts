// Browsers and bundlers. The IndexedDB-only engine (small) is fetched next to this module and
// instantiated before the module finishes loading; the full engine (GlueSQL and the SQL backend,
// about 1.2 MB gzipped more) is fetched only on the first `backend: "memory"` or `"sql"` open, so
// an app that only uses IndexedDB never downloads it. Bundlers follow the `new URL(..., import.meta.url)` in each glue file.
import init, * as core from "./wasm/vaultstore_idb.js";
import { setRuntime } from "./runtime.js";
import type { EngineModule } from "./runtime.js";

await init();

let full: Promise<EngineModule> | undefined;

function loadFull(): Promise<EngineModule> {
  full ??= import("./wasm/vaultstore_full.js").then(
    async (engine) => {
      await engine.default();
      return engine;
    },
    (error: unknown) => {
      full = undefined; // a failed download (offline) is retried on the next memory open
      throw error;
    },
  );
  return full;
}

setRuntime({
  primary: core,
  engineFor: (backend) => (backend === "indexeddb" ? Promise.resolve(core) : loadFull()),
});

export * from "./index.js";
