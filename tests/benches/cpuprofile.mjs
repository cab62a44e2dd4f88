// Where a V8 CPU profile's time went (profile.mjs, and the sync bench's SYNC_BENCH_PROFILE): self
// time per function, grouped as wasm, JavaScript by file and the browser's own work (IndexedDB,
// garbage collection, idle).

/** Self time per function, from the sample counts and the time between samples. */
export function summarize(profile, { title, top = 40 }) {
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const self = new Map();
  for (let i = 0; i < profile.samples.length; i++) {
    const node = byId.get(profile.samples[i]);
    const micros = profile.timeDeltas[i + 1] ?? 0;
    const { functionName, url } = node.callFrame;
    const where = url.endsWith(".wasm") || url.startsWith("wasm://") ? "wasm" : url ? url.split("/").pop() : "";
    const key = `${functionName || "(anonymous)"}${where ? `  [${where}]` : ""}`;
    self.set(key, (self.get(key) ?? 0) + micros);
  }
  const total = [...self.values()].reduce((a, b) => a + b, 0);
  const groups = new Map();
  for (const [key, micros] of self) {
    const group = key.endsWith("[wasm]") ? "wasm" : key.includes("  [") ? `js ${key.split("  [")[1].slice(0, -1)}` : key;
    groups.set(group, (groups.get(group) ?? 0) + micros);
  }
  const ms = (micros) => `${(micros / 1000).toFixed(1).padStart(8)} ms`;
  const pct = (micros) => `${((100 * micros) / total).toFixed(1).padStart(5)}%`;
  console.log(`${title}; ${(total / 1000).toFixed(0)} ms profiled`);
  console.log("\nby kind");
  for (const [group, micros] of [...groups].sort((a, b) => b[1] - a[1]).slice(0, 15)) console.log(`${ms(micros)} ${pct(micros)}  ${group}`);
  console.log(`\ntop ${top} functions by self time`);
  for (const [key, micros] of [...self].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`${ms(micros)} ${pct(micros)}  ${key}`);
}
