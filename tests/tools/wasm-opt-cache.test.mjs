// js/tools/wasm-opt-cache.mjs: a rebuild of unchanged wasm reuses wasm-opt's output, and any
// change to the input, the arguments or binaryen runs wasm-opt again.
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { KEEP, optimizeCached } from "../../js/tools/wasm-opt-cache.mjs";

/** A scratch directory with a cache folder and an input file, and a stand-in for wasm-opt that counts its runs. */
function setup(t) {
  const work = mkdtempSync(join(tmpdir(), "wasm-opt-cache-"));
  t.after(() => rmSync(work, { recursive: true, force: true }));
  const wasm = join(work, "engine_bg.wasm");
  const runs = [];
  const optimize = (args, file) => {
    runs.push(args.join(" "));
    writeFileSync(file, `optimized(${args.join(" ")}):${readFileSync(file, "utf8")}`);
  };
  const build = (input, { args = ["-Os"], version = "132.0.0" } = {}) => {
    writeFileSync(wasm, input);
    const cached = optimizeCached({ dir: join(work, "cache"), version, args, wasm, optimize });
    return { cached, output: readFileSync(wasm, "utf8") };
  };
  return { work, runs, build };
}

test("the same input, arguments and binaryen give wasm-opt's earlier output without running it", (t) => {
  const { runs, build } = setup(t);
  assert.deepEqual(build("engine v1"), { cached: false, output: "optimized(-Os):engine v1" });
  assert.deepEqual(build("engine v1"), { cached: true, output: "optimized(-Os):engine v1" });
  assert.deepEqual(runs, ["-Os"]);
});

test("a changed input, argument or binaryen version runs wasm-opt again", (t) => {
  const { runs, build } = setup(t);
  build("engine v1");
  assert.deepEqual(build("engine v2"), { cached: false, output: "optimized(-Os):engine v2" });
  assert.deepEqual(build("engine v1", { args: ["-O3"] }), { cached: false, output: "optimized(-O3):engine v1" });
  assert.deepEqual(build("engine v1", { version: "133.0.0" }), { cached: false, output: "optimized(-Os):engine v1" });
  assert.equal(runs.length, 4);
  // And each of them is now an entry of its own.
  assert.equal(build("engine v2").cached, true);
  assert.equal(build("engine v1", { args: ["-O3"] }).cached, true);
});

test("a failed wasm-opt leaves no entry behind", (t) => {
  const { work, build } = setup(t);
  const wasm = join(work, "engine_bg.wasm");
  writeFileSync(wasm, "engine v1");
  const failing = () => {
    throw new Error("wasm-opt exited with 1");
  };
  assert.throws(() => optimizeCached({ dir: join(work, "cache"), version: "132.0.0", args: ["-Os"], wasm, optimize: failing }), /exited with 1/);
  assert.equal(existsSync(join(work, "cache")) && readdirSync(join(work, "cache")).length > 0, false);
  assert.equal(build("engine v1").cached, false);
});

test(`only the ${KEEP} most recently used entries are kept`, (t) => {
  const { work, build } = setup(t);
  const cache = join(work, "cache");
  build("engine 0");
  const first = readdirSync(cache)[0];
  // Used long ago: the first to go once the cache is full.
  const old = new Date(Date.now() - 86_400_000);
  utimesSync(join(cache, first), old, old);
  for (let i = 1; i <= KEEP; i++) build(`engine ${i}`);
  const left = readdirSync(cache);
  assert.equal(left.length, KEEP);
  assert.ok(!left.includes(first), "the least recently used entry was removed");
  assert.equal(build(`engine ${KEEP}`).cached, true);
});
