// Node >= 20 (and Deno, Bun): the full engine (memory backend; IndexedDB too where a polyfill
// provides it), instantiated synchronously from the file next to this one on first use.
import { readFileSync } from "node:fs";
import * as engine from "./wasm/vaultstore_full.js";
import { setRuntime, singleEngine } from "./runtime.js";

setRuntime(
  singleEngine(() => {
    engine.initSync({ module: readFileSync(new URL("./wasm/vaultstore_full_bg.wasm", import.meta.url)) });
    return engine;
  }),
);

export * from "./index.js";
