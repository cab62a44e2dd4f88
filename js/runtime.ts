// How an entry point (Node, browser, workerd) provides the wasm engine. Each entry registers one
// runtime before any other code runs; the rest of the package only talks to it.
import { VaultError, adoptError } from "./errors.js";
import type * as Engine from "./wasm/vaultstore_full.js";
import type { Backend } from "./types.js";

/** What every wasm build exports (see src/wasm.rs). */
export type EngineModule = Pick<typeof Engine, "Vault" | "RecordQuery" | "isToken" | "isTokenValidLength" | "lastPanic">;
export type EngineVault = Engine.Vault;

export interface Runtime {
  /** Loaded at import: tokens helpers, RecordQuery. */
  primary: EngineModule;
  /** The engine that hosts `backend` (loaded on first use where it is a separate download). */
  engineFor(backend: Backend): Promise<EngineModule>;
}

/** A runtime whose one engine hosts every backend (Node, workerd). */
export function singleEngine(engine: EngineModule): Runtime {
  return { primary: engine, engineFor: async () => engine };
}

let current: Runtime | undefined;
/** Set when an engine instance hit an internal error; it refuses every call from then on. */
let poisoned: string | undefined;

export function setRuntime(runtime: Runtime): void {
  current = runtime;
}

export function runtime(): Runtime {
  if (current === undefined) {
    throw new VaultError("INVALID_ARGUMENT", "vaultstore-wasm was imported without an entry point; import \"vaultstore-wasm\"");
  }
  return current;
}

function closedByPanic(): VaultError {
  return new VaultError(
    "CLOSED",
    `vaultstore-wasm stopped after an internal error and refuses further calls (${poisoned}); this is a bug, please report it. Reload the page or restart the worker, then open a new Vault.`,
  );
}

/** Turn anything a call threw into a `VaultError`. */
export function toVaultError(error: unknown, engine: EngineModule): VaultError {
  const adopted = adoptError(error);
  if (adopted !== undefined) return adopted;
  if (error instanceof WebAssembly.RuntimeError) {
    // A panic (or trap) leaves the instance's memory in an unknown state: stop using it.
    poisoned = engine.lastPanic() ?? error.message;
    return closedByPanic();
  }
  const message = error instanceof Error ? error.message : String(error);
  return new VaultError("STORAGE", `unexpected failure: ${message}`, { cause: error });
}

/** Call into the engine: refuse when poisoned, and make every failure a `VaultError`. */
export async function call<T>(engine: EngineModule, run: () => Promise<T>): Promise<T> {
  if (poisoned !== undefined) throw closedByPanic();
  try {
    return await run();
  } catch (error) {
    throw toVaultError(error, engine);
  }
}

/** The synchronous twin of {@link call}. */
export function callSync<T>(engine: EngineModule, run: () => T): T {
  if (poisoned !== undefined) throw closedByPanic();
  try {
    return run();
  } catch (error) {
    throw toVaultError(error, engine);
  }
}

/** What `Vault.open` uses when no backend is given: IndexedDB wherever it exists (API.md). */
export function defaultBackend(): Backend {
  const idb = (globalThis as { indexedDB?: unknown }).indexedDB;
  return typeof idb === "object" && idb !== null ? "indexeddb" : "memory";
}
