#!/usr/bin/env node
// `npm start`: build the package if dist/ is missing or older than the sources, then serve the
// demo (www/) with the package (dist/) on 127.0.0.1 and print the URL. PORT picks the port
// (default 8080; a busy one falls back to any free port).
import { execFileSync } from "node:child_process";
import { existsSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { serve } from "./serve.mjs";
import { root } from "./toolchain.mjs";

/** Newest modification time of the files under `dir` that `keep` accepts. */
function newest(dir, keep = () => true) {
  let latest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) latest = Math.max(latest, newest(path, keep));
    else if (keep(path)) latest = Math.max(latest, statSync(path).mtimeMs);
  }
  return latest;
}

// What dist/ is built from: the crate and the TypeScript layer (not the build tools themselves).
const stamp = join(root, "dist", "BUILD");
const sources = Math.max(
  newest(join(root, "src")),
  newest(join(root, "js"), (path) => path.endsWith(".ts") || path.endsWith("tsconfig.json")),
  ...["Cargo.toml", "Cargo.lock"].map((f) => statSync(join(root, f)).mtimeMs),
);
if (!existsSync(stamp) || statSync(stamp).mtimeMs < sources) {
  // The demo runs whatever the download sizes: over budget is a warning here, not a failure.
  const env = { ...process.env, VAULTSTORE_SIZE_BUDGET: "warn" };
  execFileSync(process.execPath, [join(root, "js", "tools", "build.mjs")], { stdio: "inherit", cwd: root, env });
}

const { url } = await serve([join(root, "www"), { mount: "/dist", dir: join(root, "dist") }], Number(process.env.PORT ?? 8080));
console.log(`\nvaultstore-wasm demo: ${url}/\n(serving www/ and dist/ on 127.0.0.1; Ctrl+C to stop)`);
