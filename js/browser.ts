// Browsers and bundlers: the wasm is fetched next to this module (bundlers follow the
// `new URL(..., import.meta.url)` in the glue) and instantiated before the module finishes loading.
import init, * as engine from "./wasm/vaultstore_full.js";
import { hasIndexedDB, setRuntime } from "./runtime.js";

await init();
setRuntime({
  primary: engine,
  engineFor: async () => engine,
  defaultBackend: () => (hasIndexedDB() ? "indexeddb" : "memory"),
});

export * from "./index.js";
