/**
 * Finding a helper program of the sandbox (`setsid`, `perl`) among the
 * places distributions put it.
 *
 * @module
 */

/** The first of `paths` that is a regular file (links followed), or null. */
export async function firstFile(
  paths: readonly string[],
): Promise<string | null> {
  for (const path of paths) {
    try {
      if ((await Deno.stat(path)).isFile) return path;
    } catch {
      // Not there: try the next.
    }
  }
  return null;
}
