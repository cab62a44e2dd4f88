// Cloudflare Workers / workerd: the wasm is imported as a module (Workers refuse to compile wasm
// from bytes) and instantiated synchronously on first use. No randomness is drawn at module scope.
import wasmModule from "./wasm/vaultstore_full_bg.wasm";
import * as engine from "./wasm/vaultstore_full.js";
import { setRuntime, singleEngine } from "./runtime.js";

setRuntime(
  singleEngine(() => {
    engine.initSync({ module: wasmModule });
    return engine;
  }),
);

export * from "./index.js";
