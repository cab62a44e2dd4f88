// Browsers and bundlers. Nothing is fetched at import: the IndexedDB engine (small) is fetched and
// instantiated by the first IndexedDB `Vault.open`, the full engine (GlueSQL and the SQL backend,
// about 0.4 MB gzipped more) by the first `backend: "memory"` or `"sql"` open, so an app that only
// uses IndexedDB never downloads it.
// There is no top-level await (Vite's default es2020 target refuses it). Bundlers follow the
// `new URL("…_bg.wasm", import.meta.url)` in each glue file and emit the WebAssembly next to the
// JavaScript.
import initIndexedDbEngine, * as indexedDbEngine from "./wasm/vaultstore_idb.js";
import { lazyEngine, setRuntime } from "./runtime.js";

const indexedDb = lazyEngine(async () => {
  await initIndexedDbEngine();
  return indexedDbEngine;
});

const full = lazyEngine(async () => {
  const engine = await import("./wasm/vaultstore_full.js");
  await engine.default();
  return engine;
});

setRuntime({
  readyEngine: () => indexedDb.ready() ?? full.ready(),
  // The IndexedDB engine has only IndexedDB, and leaves out what reads snapshots (its download
  // budget): anything else loads the full engine, which has IndexedDB too.
  engineFor: (backend, withSnapshot) => (backend === "indexeddb" && !withSnapshot ? indexedDb.load() : full.load()),
});

export * from "./index.js";
