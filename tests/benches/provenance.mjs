// Whether dist/ was built from the source state a benchmark report would name (bench.mjs).
// dist/BUILD is JSON written by js/tools/build.mjs: { built, commit, dirty, changes, names,
// optimized, tsOnly }; an older build wrote only a date.

/**
 * Why a build (the text of dist/BUILD) is not what `source` ({ commit, dirty, changes }, from
 * toolchain.mjs sourceState) would produce, or undefined when it is.
 */
export function buildMismatch(buildText, source) {
  let build;
  try {
    build = JSON.parse(buildText);
  } catch {
    return "dist/ was built by an older build script that did not record its commit";
  }
  if (typeof build !== "object" || build === null || typeof build.commit !== "string") {
    return "dist/BUILD does not name the commit dist/ was built from";
  }
  const describe = (s) => `${s.commit.slice(0, 7)}${s.dirty ? ` with uncommitted changes (${s.changes})` : ""}`;
  if (build.commit === "unknown" || source.commit === "unknown") return "the commit of dist/ or of the tree is unknown (not a git checkout?)";
  if (build.commit !== source.commit || Boolean(build.dirty) !== source.dirty || (build.changes ?? "") !== source.changes) {
    return `dist/ was built from ${describe(build)}, the tree is at ${describe(source)}`;
  }
  if (build.names || build.optimized === false) return "dist/ is a --names or --no-opt build, not what users get";
  if (build.tsOnly) return "dist/ is a --ts-only build: its wasm may come from another commit";
  return undefined;
}
