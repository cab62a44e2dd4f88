// Node >= 20: the full engine (memory backend; IndexedDB too where a polyfill provides it),
// instantiated synchronously from the file next to this one.
import { readFileSync } from "node:fs";
import * as engine from "./wasm/vaultstore_full.js";
import { setRuntime, singleEngine } from "./runtime.js";

engine.initSync({ module: readFileSync(new URL("./wasm/vaultstore_full_bg.wasm", import.meta.url)) });
setRuntime(singleEngine(engine));

export * from "./index.js";
