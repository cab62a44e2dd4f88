// wasm-opt's output, kept by what it was made from. wasm-opt is the slowest step of a build that
// changed nothing in Rust (about 20 s for the IndexedDB engine and 40 s for the full one on two
// cores), and it runs again whenever dist/ is rebuilt from the same cargo output: `npm run build`
// after a TypeScript change, `npm start` after `npm test`, the fresh-clone check (which shares
// this checkout's target directory). Its output is a pure function of its input bytes, its
// arguments and the binaryen version, so those three name the entry; a hit copies the file.
//
// Entries live in `<target>/wasm-opt-cache/` (`cargo clean` clears them) and only the newest few
// are kept. An entry is written to a temporary name and renamed, so a build killed mid-write
// leaves no half file under a real name.
import { createHash } from "node:crypto";
import { copyFileSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, utimesSync } from "node:fs";
import { join } from "node:path";

/** Entries kept: the two engines of the last few source states. */
export const KEEP = 8;

/** The entry's name: binaryen's version, the arguments (minus the file paths) and the input's bytes. */
export function cacheKey(version, args, input) {
  const hash = createHash("sha256");
  hash.update(`binaryen ${version}\0${args.join("\0")}\0`);
  hash.update(readFileSync(input));
  return hash.digest("hex");
}

/**
 * Optimise `wasm` in place with `args` (without the paths), running `optimize(args, wasm)` only
 * when no entry of `dir` was made from the same input, arguments and `version`. Returns whether
 * the output came from the cache.
 */
export function optimizeCached({ dir, version, args, wasm, optimize }) {
  const key = cacheKey(version, args, wasm);
  const entry = join(dir, `${key}.wasm`);
  // Copy without checking first: another build sharing the directory may prune the entry at any
  // moment, and a copy whose source is missing fails with ENOENT and writes nothing.
  let hit = true;
  try {
    copyFileSync(entry, wasm);
  } catch (error) {
    if (error?.code !== "ENOENT") throw error;
    hit = false;
  }
  if (hit) {
    const now = new Date();
    try {
      utimesSync(entry, now, now); // newest use, for pruning
    } catch {
      // Pruned right after the copy: the copy is whole all the same.
    }
    return true;
  }
  optimize(args, wasm);
  mkdirSync(dir, { recursive: true });
  const partial = `${entry}.${process.pid}.partial`;
  copyFileSync(wasm, partial);
  renameSync(partial, entry);
  prune(dir);
  return false;
}

/**
 * Remove all but the `KEEP` most recently used entries, and partial files an hour old (left by
 * killed builds; a younger one may be another build's write in progress).
 */
function prune(dir) {
  const files = readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    try {
      return [{ name, path, used: statSync(path).mtimeMs }];
    } catch {
      return []; // removed by another build meanwhile
    }
  });
  const hourAgo = Date.now() - 3_600_000;
  for (const file of files) if (file.name.endsWith(".partial") && file.used < hourAgo) rmSync(file.path, { force: true });
  const entries = files.filter((file) => file.name.endsWith(".wasm")).sort((a, b) => b.used - a.used);
  for (const stale of entries.slice(KEEP)) rmSync(stale.path, { force: true });
}
