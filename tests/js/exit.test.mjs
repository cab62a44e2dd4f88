// A script that reads a value and ends without closing its vault must end then, in every runtime
// the README names: the cached key's expiry timer (15 minutes by default) may not keep the process
// alive. Node and Bun unreference the timer; Deno needs `Deno.unrefTimer`. And `close()` clears
// the timer, for hosts that can do neither (edge-runtime, whose timers are plain numbers).
// A rekey long enough to yield to the event loop (every 8 ms, through a MessageChannel whose
// ports would keep the process alive if left open) may not either.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { test } from "node:test";

const SCRIPT = `import { Vault } from "vaultstore-wasm";
const vault = await Vault.open({ backend: "memory", kdfIterations: 1000 });
const token = await vault.tokenCreate("left open", "correct horse battery staple");
console.log(await vault.tokenRead(token, "correct horse battery staple"));
await vault.tokensCreate(Array.from({ length: 2000 }, (_, i) => "value " + i), "correct horse battery staple");
await vault.bulkRekey("correct horse battery staple", "a new passphrase, rotated", { rotate: true });
`;
writeFileSync("left-open.mjs", SCRIPT);

const runtimes = [
  ["Node", process.execPath, ["left-open.mjs"]],
  ["Deno", process.env.DENO, ["run", "--allow-read", "left-open.mjs"]],
  ["Bun", process.env.BUN, ["left-open.mjs"]],
];

for (const [name, binary, args] of runtimes) {
  test(`a ${name} script that leaves its vault open still exits when it is done`, { skip: !binary && `${name} not installed` }, () => {
    // Far more than the script needs (well under a second), far less than the key's 15 minutes.
    const printed = execFileSync(binary, args, { encoding: "utf8", env: { ...process.env, NO_COLOR: "1" }, timeout: 60_000 });
    assert.equal(printed, "left open\n");
  });
}
