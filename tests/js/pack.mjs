// Pack the package and install the tarball into an empty folder, as a user would get it from the
// registry: `import ... from "vaultstore-wasm"` there resolves to the installed tarball. Used by
// the packed-package suite (run-packed.mjs) and the benchmark (tests/benches/bench.mjs).
import { execFileSync } from "node:child_process";
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { root, run } from "../../js/tools/toolchain.mjs";

/**
 * Empty `work`, pack the package into it and install the tarball (and `extra` packages: paths or
 * names) into `work/consumer`. Returns the consumer folder.
 */
export function installPacked(work, extra = []) {
  rmSync(work, { recursive: true, force: true });
  mkdirSync(work, { recursive: true });

  const packed = JSON.parse(
    execFileSync("npm", ["pack", "--json", "--pack-destination", work], { cwd: root, encoding: "utf8" }),
  )[0];
  const tarball = join(work, packed.filename);
  console.log(`packed ${packed.filename}: ${packed.entryCount} files, ${(packed.size / 1024).toFixed(0)} KiB`);

  const consumer = join(work, "consumer");
  mkdirSync(consumer);
  writeFileSync(join(consumer, "package.json"), JSON.stringify({ name: "consumer", private: true, type: "module" }));
  run("npm", ["install", "--no-audit", "--no-fund", "--ignore-scripts", tarball, ...extra], { cwd: consumer });
  return consumer;
}
