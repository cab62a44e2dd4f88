// How every benchmark is run, in Node and in the page alike: the sides of a comparison take turns
// (package, baseline, package, baseline, ...) so that a noisy moment of a shared machine hits
// both, and each side checks what it produced, so a fast wrong answer fails instead of winning.
export const PASSWORD = "correct horse battery staple";
export const NEW_PASSWORD = "a brand new password";

/** `n` distinct 100-byte values. */
export const values = (n) => Array.from({ length: n }, (_, i) => `value ${i} `.padEnd(100, "."));

/** Milliseconds `fn` took. */
export async function time(fn) {
  // profile.mjs sets this to profile only the timed part (DevTools' console.profile).
  const profiling = globalThis.PROFILE_TIMED === true;
  if (profiling) console.profile("timed");
  const started = performance.now();
  await fn();
  const ms = performance.now() - started;
  if (profiling) console.profileEnd("timed");
  return ms;
}

/**
 * `rounds` rounds of every side in turn; each side returns one sample (an object of numbers).
 * Resolves to `{ side: [sample, ...] }`.
 */
export async function alternate(rounds, sides) {
  const samples = Object.fromEntries(Object.keys(sides).map((side) => [side, []]));
  for (let round = 0; round < rounds; round++) {
    for (const [side, run] of Object.entries(sides)) samples[side].push(await run(round));
  }
  return samples;
}

export function median(numbers) {
  const sorted = [...numbers].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

/** Throws when `actual` and `expected` differ (compared as JSON). */
export function expectEqual(actual, expected, what) {
  const a = JSON.stringify(actual);
  const e = JSON.stringify(expected);
  if (a !== e) throw new Error(`${what}: expected ${e.slice(0, 200)}, got ${a.slice(0, 200)}`);
}
