// How an entry point (Node, browser, workerd) provides the wasm engine. Each entry registers one
// runtime when it is imported; the rest of the package only talks to it. No entry waits for an
// engine at import (no top-level await, which bundlers targeting es2020 refuse): an engine starts
// on the first call that needs it.
import { VaultError, adoptError } from "./errors.js";
import type * as Engine from "./wasm/vaultstore_full.js";
import type { Backend, VaultOptions } from "./types.js";

type FullVault = typeof Engine.Vault;
/**
 * The server side of sync, which only the full engine has: the browser's IndexedDB engine syncs
 * as a replica and leaves it out (its download budget); its `syncHandle` refuses every request.
 */
type ServerOnly = "syncRefusal" | "closed";
export type EngineVault = Omit<Engine.Vault, ServerOnly> & Partial<Pick<Engine.Vault, ServerOnly>>;

/** What every wasm build exports (see src/wasm.rs). */
export interface EngineModule {
  Vault: Omit<FullVault, "open" | "prototype"> & { open(options: VaultOptions | undefined): Promise<EngineVault> };
  RecordQuery: typeof Engine.RecordQuery;
  lastPanic: typeof Engine.lastPanic;
}

export interface Runtime {
  /**
   * An engine that runs now or can start synchronously (Node, workerd), for synchronous callers;
   * `undefined` in a browser until a `Vault.open` has loaded one.
   */
  readyEngine(): EngineModule | undefined;
  /**
   * The engine that hosts `backend`, started on first use. Rejects only with `VaultError`.
   * `withSnapshot`: the vault opens from a snapshot, which only the full engine can read.
   */
  engineFor(backend: Backend, withSnapshot: boolean): Promise<EngineModule>;
}

function engineLoadError(error: unknown): VaultError {
  const adopted = adoptError(error);
  if (adopted !== undefined) return adopted;
  const message = error instanceof Error ? error.message : String(error);
  return new VaultError(
    "STORAGE",
    `could not load the vaultstore-wasm engine (${message}); check that the package's .wasm files are served next to its JavaScript (as application/wasm) and try again`,
    { cause: error },
  );
}

/** A runtime whose one engine hosts every backend and starts synchronously (Node, workerd). */
export function singleEngine(start: () => EngineModule): Runtime {
  let engine: EngineModule | undefined;
  const get = (): EngineModule => {
    try {
      return (engine ??= start());
    } catch (error) {
      throw engineLoadError(error);
    }
  };
  return { readyEngine: get, engineFor: async () => get() };
}

/** An engine fetched on first use (browsers). A failed download (offline) is retried next time. */
export interface LazyEngine {
  /** The engine if it has loaded. */
  ready(): EngineModule | undefined;
  load(): Promise<EngineModule>;
}

export function lazyEngine(fetchEngine: () => Promise<EngineModule>): LazyEngine {
  let loaded: EngineModule | undefined;
  let loading: Promise<EngineModule> | undefined;
  return {
    ready: () => loaded,
    load: () =>
      (loading ??= fetchEngine().then(
        (engine) => (loaded = engine),
        (error: unknown) => {
          loading = undefined;
          throw engineLoadError(error);
        },
      )),
  };
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
