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

/**
 * Finds the public top-level type of a Java source file, and the top-level
 * type that declares `static void main`, ignoring comments and literals.
 *
 * @example Finding the classes of a source file
 * ```ts
 * import { javaClasses } from "./java_runner.ts";
 *
 * const found = javaClasses(`
 *   // public class NotThis {}
 *   class Helper { static class Inner {} }
 *   public final class Main { public static void main(String[] args) {} }
 * `);
 * console.log(found); // { publicClass: "Main", mainClass: "Main" }
 * ```
 */
export function javaClasses(source: string): JavaClasses {
  const code = stripCommentsAndLiterals(source);
  const token =
    /[{}]|((?:\b(?:public|protected|private|abstract|final|static|strictfp|sealed|non-sealed)\s+)*)\b(?:class|interface|enum|record)\s+([A-Za-z_$][\w$]*)|\bstatic\b[^;{}()=]*\bvoid\s+main\s*\(/g;
  let depth = 0;
  let current: string | undefined;
  let publicClass: string | undefined;
  let mainClass: string | undefined;
  for (const match of code.matchAll(token)) {
    const text = match[0];
    if (text === "{") depth++;
    else if (text === "}") depth = Math.max(0, depth - 1);
    else if (match[2] !== undefined) {
      if (depth !== 0) continue;
      current = match[2];
      if (publicClass === undefined && /\bpublic\b/.test(match[1] ?? "")) {
        publicClass = current;
      }
    } else if (
      depth === 1 && mainClass === undefined && current !== undefined
    ) {
      mainClass = current;
    }
  }
  return {
    ...publicClass === undefined ? {} : { publicClass },
    ...mainClass === undefined ? {} : { mainClass },
  };
}

/** Blanks out comments, string, text-block and char literals, keeping everything else in place. */
function stripCommentsAndLiterals(source: string): string {
  return source.replace(
    /\/\/[^\n]*|\/\*[\s\S]*?(?:\*\/|$)|"""[\s\S]*?(?:"""|$)|"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*'/g,
    (literal) => literal.replace(/[^\n]/g, " "),
  );
}
