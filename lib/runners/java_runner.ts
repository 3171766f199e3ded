/**
 * Java, compiled by javac and run on the JVM.
 *
 * @module
 */
import type { SourceFile } from "../job.ts";
import {
  type DetectOptions,
  executableFor,
  fileArg,
  firstLine,
  locate,
  sourcesWith,
  unavailable,
  versionFrom,
} from "./detect.ts";
import type {
  ArrangedSources,
  CommandSpec,
  LanguageRunner,
  StepContext,
  Toolchain,
} from "./runner.ts";

/**
 * JVM flags for short-lived processes: the serial collector starts fastest
 * and uses one GC thread; `-UsePerfData` stops the JVM from writing
 * `/tmp/hsperfdata_<user>` (outside the workdir) on every start.
 */
const JVM_FLAGS = ["-XX:+UseSerialGC", "-XX:-UsePerfData"] as const;

/**
 * The JVM sizes its heap from the machine's memory (a quarter of it) and
 * cannot see the sandbox's cgroup, so a program would grow its heap past the
 * memory limit and be OOM-killed. Told the limit, the JVM keeps its heap to
 * three quarters of it (the rest is metaspace, code cache and thread stacks)
 * and a program that needs more gets `java.lang.OutOfMemoryError`.
 */
function heapFlags(context: StepContext): string[] {
  return [`-XX:MaxRAM=${context.memoryMb}m`, "-XX:MaxRAMPercentage=75"];
}

/**
 * Compiles Java programs with
 * `javac -encoding UTF-8 -d . <every .java file>` and runs
 * `java -XX:+UseSerialGC -XX:-UsePerfData -Dfile.encoding=UTF-8 -cp . <Main> <args...>`.
 *
 * `javac` itself is a JVM that runs for half a second: it gets the same JVM
 * flags plus `-XX:TieredStopAtLevel=1` (C1 only), which cuts a hello world's
 * compile from ~0.65 s to ~0.4 s. The program's JVM keeps the full JIT, which
 * matters for anything that runs longer than a moment.
 *
 * {@linkcode JavaRunner.arrange} names the entry file after its public class,
 * since users submit `prog.java` holding `public class Main`; the run step
 * starts the class the entry file is named after. Classes in a `package` are
 * not supported.
 *
 * @example Finding the class to run
 * ```ts
 * import { JavaRunner } from "./java_runner.ts";
 *
 * const arranged = new JavaRunner().arrange(
 *   [{ name: "prog.java", content: "public class Main { public static void main(String[] a) {} }" }],
 *   "prog.java",
 * );
 * console.log(arranged.entry); // "Main.java"
 * ```
 */
export class JavaRunner implements LanguageRunner {
  readonly name = "java";
  readonly aliases: readonly string[] = [];
  readonly extensions: readonly string[] = [".java"];
  readonly outOfMemory: RegExp = /java\.lang\.OutOfMemoryError[^\n]*/;
  #options: DetectOptions;

  /** Makes a runner that will look for `javac` and `java` on the search path. */
  constructor(options: DetectOptions = {}) {
    this.#options = options;
  }

  /** Finds `javac` and `java`, checks both start, and reports javac's version. */
  async detect(): Promise<Toolchain> {
    const [javac, java] = await Promise.all([
      locate("javac", ["-J-XX:-UsePerfData", "-version"], this.#options),
      locate("java", [...JVM_FLAGS, "-version"], this.#options),
    ]);
    if (!javac.ok) return unavailable(javac.reason);
    if (!java.ok) return unavailable(java.reason);
    // javac 9+ prints its version on stdout, javac 8 on stderr.
    const banner = firstLine(javac.stdout) ?? firstLine(javac.stderr) ?? "";
    return {
      available: true,
      version: versionFrom("javac", banner),
      executables: { compiler: javac.path, runtime: java.path },
    };
  }

  /**
   * Renames the entry file after the class it declares when the names differ:
   * its public top-level class (javac requires `Main.java` for
   * `public class Main`), or else the top-level class holding `main`. Other
   * files, and an entry whose new name is already taken, stay as they are.
   */
  arrange(files: readonly SourceFile[], entry: string): ArrangedSources {
    const source = files.find((file) => file.name === entry);
    if (source === undefined) return { files, entry };
    const declared = javaClasses(source.content);
    const mainClass = declared.publicClass ?? declared.mainClass;
    if (mainClass === undefined) return { files, entry };
    const wanted = `${mainClass}.java`;
    if (wanted === entry || files.some((file) => file.name === wanted)) {
      return { files, entry };
    }
    return {
      files: files.map((file) =>
        file === source ? { ...file, name: wanted } : file
      ),
      entry: wanted,
    };
  }

  /** `javac -encoding UTF-8 -d . <every .java file>` */
  compile(context: StepContext): CommandSpec {
    return {
      command: executableFor(context.toolchain, "compiler"),
      args: [
        ...[...JVM_FLAGS, ...heapFlags(context)].map((flag) => `-J${flag}`),
        "-J-XX:TieredStopAtLevel=1",
        "-encoding",
        "UTF-8",
        "-d",
        ".",
        ...sourcesWith(context.files, this.extensions).map(fileArg),
      ],
    };
  }

  /** `java -XX:+UseSerialGC -XX:-UsePerfData -Dfile.encoding=UTF-8 -cp . <entry's class> <args...>` */
  run(context: StepContext): CommandSpec {
    const mainClass = context.entry.replace(/\.java$/i, "");
    return {
      command: executableFor(context.toolchain, "runtime"),
      args: [
        ...JVM_FLAGS,
        ...heapFlags(context),
        "-Dfile.encoding=UTF-8",
        "-cp",
        ".",
        mainClass,
        ...context.args,
      ],
    };
  }
}

/** What {@linkcode javaClasses} finds in a compilation unit. */
export interface JavaClasses {
  /** The `public` top-level class, interface, enum or record. */
  readonly publicClass?: string;
  /** The first top-level type that declares a `static ... void main(`. */
  readonly mainClass?: string;
}

/** Modifiers that may precede a type declaration. */
const TYPE_MODIFIERS: ReadonlySet<string> = new Set([
  "public",
  "protected",
  "private",
  "abstract",
  "final",
  "static",
  "strictfp",
  "sealed",
  "non-sealed",
]);

/** Keywords that declare a type. */
const TYPE_KEYWORDS: ReadonlySet<string> = new Set([
  "class",
  "interface",
  "enum",
  "record",
]);

/** Tokens that end a `static ... void main(` signature before it is complete. */
const SIGNATURE_BREAKS: ReadonlySet<string> = new Set([
  ";",
  "{",
  "}",
  "(",
  ")",
  "=",
]);

/**
 * Finds the public top-level type of a Java source file, and the top-level
 * type that declares `static void main`, ignoring comments and literals.
 *
 * One pass over the text, in time linear in its length: this runs on a
 * node's event loop on submitted sources of up to the frame size, where a
 * backtracking regular expression cost seconds per hundred kilobytes.
 *
 * @example Finding the classes of a source file
 * ```ts
 * import assert from "node:assert/strict";
 * import { javaClasses } from "./java_runner.ts";
 *
 * const found = javaClasses(`
 *   // public class NotThis {}
 *   class Helper { static class Inner {} }
 *   public final class Main { public static void main(String[] args) {} }
 * `);
 * assert.deepEqual(found, { publicClass: "Main", mainClass: "Main" });
 * ```
 */
export function javaClasses(source: string): JavaClasses {
  let depth = 0;
  let current: string | undefined;
  let publicClass: string | undefined;
  let mainClass: string | undefined;
  // `public` among the modifiers read since the last other token.
  let publicModifier = false;
  // After `class` (or another type keyword): whether it was `public`.
  let declaring: { readonly isPublic: boolean } | undefined;
  // `static` read, and none of SIGNATURE_BREAKS since.
  let staticSeen = false;
  let previous = "";
  let beforePrevious = "";
  for (const token of javaTokens(source)) {
    if (declaring !== undefined && isIdentifier(token)) {
      // The type's name: only top-level types count.
      if (depth === 0) {
        current = token;
        if (publicClass === undefined && declaring.isPublic) {
          publicClass = current;
        }
      }
      declaring = undefined;
      publicModifier = false;
      beforePrevious = previous;
      previous = token;
      continue;
    }
    declaring = undefined;
    if (TYPE_KEYWORDS.has(token) && previous !== ".") {
      declaring = { isPublic: publicModifier };
    }
    publicModifier = TYPE_MODIFIERS.has(token)
      ? publicModifier || token === "public"
      : false;
    if (token === "static") staticSeen = true;
    if (
      token === "(" && staticSeen && beforePrevious === "void" &&
      previous === "main" && depth === 1 && mainClass === undefined &&
      current !== undefined
    ) {
      mainClass = current;
    }
    if (SIGNATURE_BREAKS.has(token)) staticSeen = false;
    if (token === "{") depth++;
    else if (token === "}") depth = Math.max(0, depth - 1);
    beforePrevious = previous;
    previous = token;
  }
  return {
    ...publicClass === undefined ? {} : { publicClass },
    ...mainClass === undefined ? {} : { mainClass },
  };
}

/** Whether a token from {@linkcode javaTokens} is a name (not a number, not punctuation). */
function isIdentifier(token: string): boolean {
  const first = token.charCodeAt(0);
  return isWordChar(token, 0) && !(first >= 48 && first <= 57) &&
    token !== "non-sealed";
}

/**
 * Java's tokens, roughly: words (identifiers, keywords and numbers, with
 * `non-sealed` as one word) and single punctuation characters. Whitespace,
 * comments, string and char literals and text blocks are skipped. Every
 * character is looked at a bounded number of times.
 */
function* javaTokens(source: string): Generator<string> {
  const length = source.length;
  let i = 0;
  while (i < length) {
    const c = source.charCodeAt(i);
    if (c === 32 || (c >= 9 && c <= 13)) { // space, \t, \n, \v, \f, \r
      i++;
    } else if (c === 47 && source.charCodeAt(i + 1) === 47) { // a // comment
      const end = source.indexOf("\n", i + 2);
      i = end === -1 ? length : end + 1;
    } else if (c === 47 && source.charCodeAt(i + 1) === 42) { // a /* comment */
      const end = source.indexOf("*/", i + 2);
      i = end === -1 ? length : end + 2;
    } else if (c === 34 && source.startsWith('"""', i)) { // a text block
      i = skipQuoted(source, i + 3, '"""', false);
    } else if (c === 34 || c === 39) { // a string or char literal
      i = skipQuoted(source, i + 1, c === 34 ? '"' : "'", true);
    } else if (isWordChar(source, i)) {
      const start = i;
      while (i < length && isWordChar(source, i)) {
        i += wordCharLength(source, i);
      }
      if (
        i - start === 3 && source.startsWith("non-sealed", start) &&
        !isWordChar(source, start + 10)
      ) {
        i = start + 10;
      }
      yield source.slice(start, i);
    } else {
      i += wordCharLength(source, i);
      yield source[i - 1]!;
    }
  }
}

/**
 * The index just past a literal whose body starts at `from`: past its
 * closing `quote`, or at the line's end for an unterminated one-line literal
 * (`oneLine`), or at the end of the text. A backslash escapes the next
 * character.
 */
function skipQuoted(
  source: string,
  from: number,
  quote: string,
  oneLine: boolean,
): number {
  const length = source.length;
  const first = quote.charCodeAt(0);
  let i = from;
  while (i < length) {
    const c = source.charCodeAt(i);
    if (c === 92) i += 2; // a backslash and the character it escapes
    else if (c === first && source.startsWith(quote, i)) {
      return i + quote.length;
    } else if (oneLine && c === 10) return i;
    else i++;
  }
  return length;
}

/** Whether the character at `index` may be part of a Java identifier. */
function isWordChar(source: string, index: number): boolean {
  const c = source.charCodeAt(index);
  if (c < 128) {
    return (c >= 97 && c <= 122) || (c >= 65 && c <= 90) ||
      (c >= 48 && c <= 57) || c === 95 || c === 36; // a-z A-Z 0-9 _ $
  }
  const point = source.codePointAt(index);
  return point !== undefined &&
    IDENTIFIER_PART.test(String.fromCodePoint(point));
}

/** A non-ASCII character Java accepts in identifiers (not spaces, not a BOM). */
const IDENTIFIER_PART = /^[\p{ID_Continue}\p{Sc}]$/u;

/** 2 for a character outside the BMP (a surrogate pair), else 1. */
function wordCharLength(source: string, index: number): number {
  const point = source.codePointAt(index);
  return point !== undefined && point > 0xffff ? 2 : 1;
}
