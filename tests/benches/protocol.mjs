// How every benchmark is run, in Node and in the page alike: the sides of a comparison take turns,
// in a shuffled order each round, so that a noisy moment of a shared machine hits all of them,
// and each side checks what it produced, so a fast wrong answer fails instead of winning. The
// report gives every ratio a bootstrap interval over the rounds (medianRatio) and calls a goal met
// only when the whole interval is on its side (verdict).
export const PASSWORD = "correct horse battery staple";
export const NEW_PASSWORD = "a brand new password";

/**
 * `n` distinct 100-byte values, flat: V8 makes `padEnd`'s result a rope, and the first code to
 * read one flattens it, so whichever side read the values first would pay that in its timed part
 * (and a heap figure taken across it would shrink by about 10 MiB at 100,000 values).
 */
export const values = (n) =>
  Array.from({ length: n }, (_, i) => {
    const value = `value ${i} `.padEnd(100, ".");
    value.charCodeAt(0);
    return value;
  });

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

/** A seeded pseudo-random generator (mulberry32): the same seed gives the same numbers in [0, 1). */
export function seededRandom(seed) {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A number from a string, to seed a row's generator with its name. */
export const seedOf = (text) => [...text].reduce((h, c) => Math.imul(h ^ c.charCodeAt(0), 16777619) >>> 0, 2166136261);

/** `list` shuffled (Fisher-Yates) with `random`. */
export function shuffle(list, random) {
  const out = [...list];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

/**
 * `rounds` rounds of every side; each side returns one sample (an object of numbers). The order
 * of the sides is shuffled every round with a generator seeded by `seed`, so no side always runs
 * first (on a warm or a cold machine) and a run can be repeated exactly. Resolves to
 * `{ side: [sample, ...] }`; sample i of every side comes from round i.
 */
export async function alternate(rounds, sides, seed = 1) {
  const random = seededRandom(seed);
  const samples = Object.fromEntries(Object.keys(sides).map((side) => [side, []]));
  for (let round = 0; round < rounds; round++) {
    for (const side of shuffle(Object.keys(sides), random)) samples[side].push(await sides[side](round));
  }
  return samples;
}

/**
 * A 95% percentile-bootstrap interval for `statistic(indices)`, where `indices` resamples the
 * rounds 0..rounds-1 with replacement (rounds stay paired: a round's noise hits every side of
 * it). `resamples` draws from a generator seeded by `seed`. Returns `[low, high]`.
 */
export function bootstrap(rounds, statistic, { resamples = 2000, seed = 7, level = 0.95 } = {}) {
  const random = seededRandom(seed);
  const values = [];
  for (let r = 0; r < resamples; r++) {
    const indices = Array.from({ length: rounds }, () => Math.floor(random() * rounds));
    values.push(statistic(indices));
  }
  values.sort((a, b) => a - b);
  const tail = (1 - level) / 2;
  const at = (q) => values[Math.min(values.length - 1, Math.max(0, Math.round(q * (values.length - 1))))];
  return [at(tail), at(1 - tail)];
}

/**
 * The ratio of two sides' medians, `numerator ÷ denominator` (arrays of per-round numbers), with its
 * bootstrap interval: `{ ratio, low, high }`.
 */
export function medianRatio(numerator, denominator, options) {
  const rounds = Math.min(numerator.length, denominator.length);
  const ratioOf = (indices) => median(indices.map((i) => numerator[i])) / median(indices.map((i) => denominator[i]));
  const all = Array.from({ length: rounds }, (_, i) => i);
  const [low, high] = bootstrap(rounds, ratioOf, options);
  return { ratio: ratioOf(all), low, high };
}

/** The median of per-round numbers with its bootstrap interval: `{ value, low, high }`. */
export function medianInterval(numbers, options) {
  const [low, high] = bootstrap(numbers.length, (indices) => median(indices.map((i) => numbers[i])), options);
  return { value: median(numbers), low, high };
}

/**
 * Whether a goal `value ≤ limit` holds given an interval: "met" only when the whole interval is at
 * or below the limit, "not met" when it is all above, "undecided" when it straddles the limit.
 */
export function verdict({ low, high }, limit) {
  if (high <= limit) return "met";
  if (low > limit) return "not met";
  return "undecided";
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

/** The median of `calls` timings of `call`, each answer checked by `check` (a listing row's figure). */
export async function medianCall(calls, call, check) {
  const samples = [];
  for (let i = 0; i < calls; i++) {
    let answer;
    samples.push(await time(async () => {
      answer = await call();
    }));
    check(answer);
  }
  return median(samples);
}
