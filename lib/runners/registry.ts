/**
 * {@linkcode RunnerRegistry}: the languages one node knows, looked up by
 * name, alias or file extension, with each toolchain detected once.
 *
 * @module
 */
import { BashRunner } from "./bash_runner.ts";
import { CRunner } from "./c_runner.ts";
import { CppRunner } from "./cpp_runner.ts";
import type { DetectOptions } from "./detect.ts";
import { JavaRunner } from "./java_runner.ts";
import { JavaScriptRunner } from "./javascript_runner.ts";
import { PythonRunner } from "./python_runner.ts";
import type {
  AvailableToolchain,
  LanguageRunner,
  Toolchain,
} from "./runner.ts";
import { RustRunner } from "./rust_runner.ts";
import { TypeScriptRunner } from "./typescript_runner.ts";

/** A runner whose toolchain is available: everything the executor needs. */
export interface ResolvedRunner {
  /** The runner that builds the commands. */
  readonly runner: LanguageRunner;
  /** What its `detect()` found: the executables its commands use. */
  readonly toolchain: AvailableToolchain;
}

/** One runner and what its detection found, as reported by {@linkcode RunnerRegistry.detect}. */
export interface RunnerStatus {
  /** The runner's canonical name. */
  readonly name: string;
  /** Its other names. */
  readonly aliases: readonly string[];
  /** Its file extensions, with the dot. */
  readonly extensions: readonly string[];
  /** Its toolchain, or why it has none. */
  readonly toolchain: Toolchain;
}

/**
 * What {@linkcode RunnerRegistry.resolve} answers: the runner ready to use,
 * or why there is none, told apart so a caller can say "unknown language"
 * or "toolchain missing".
 */
export type RunnerResolution =
  | { readonly ok: true; readonly resolved: ResolvedRunner }
  | {
    readonly ok: false;
    readonly problem: "unknown_language";
    /** `unknown language "cobol"` */
    readonly reason: string;
  }
  | {
    readonly ok: false;
    readonly problem: "toolchain_unavailable";
    readonly runner: LanguageRunner;
    /** `language "java" is unavailable: executable "javac" not found on PATH` */
    readonly reason: string;
  };

/**
 * The languages a node knows. Owned by whoever makes it: there is no global
 * registry.
 *
 * Names and aliases are matched case-insensitively; so are file extensions.
 * Each runner's `detect()` runs at most once per registry: the result, good
 * or bad, is cached for the registry's lifetime.
 *
 * @example Looking up languages
 * ```ts
 * import { createDefaultRegistry } from "./registry.ts";
 *
 * const registry = createDefaultRegistry();
 * console.log(registry.get("PY")?.name); // "python"
 * console.log(registry.forFile("main.cc")?.name); // "cpp"
 *
 * const resolution = await registry.resolve("java");
 * if (resolution.ok) console.log(resolution.resolved.toolchain.version);
 * else console.log(resolution.reason);
 * ```
 */
export class RunnerRegistry {
  #runners: LanguageRunner[] = [];
  /** Lower-case names and aliases. */
  #byName = new Map<string, LanguageRunner>();
  /** Lower-case extensions, with the dot. */
  #byExtension = new Map<string, LanguageRunner>();
  #detections = new Map<LanguageRunner, Promise<Toolchain>>();

  /**
   * Adds a runner.
   *
   * @throws {TypeError} when its name, an alias or an extension is malformed
   * (empty, surrounded by spaces, an extension without its leading dot).
   * @throws {RangeError} when its name, an alias or an extension is already
   * taken by a registered runner; the message names both runners.
   */
  register(runner: LanguageRunner): this {
    const names = unique(
      [runner.name, ...runner.aliases].map((name) => name.toLowerCase()),
    );
    const extensions = unique(
      runner.extensions.map((ext) => ext.toLowerCase()),
    );
    for (const name of names) {
      if (name === "" || name.trim() !== name) {
        throw new TypeError(
          `Cannot register runner "${runner.name}": name or alias "${name}" is empty or padded`,
        );
      }
      const taken = this.#byName.get(name);
      if (taken) {
        throw new RangeError(
          `Cannot register runner "${runner.name}": "${name}" is already a name or alias of runner "${taken.name}"`,
        );
      }
    }
    for (const ext of extensions) {
      if (!/^\.[^./\s][^/\s]*$/.test(ext)) {
        throw new TypeError(
          `Cannot register runner "${runner.name}": extension "${ext}" must start with one dot, as in ".py"`,
        );
      }
      const taken = this.#byExtension.get(ext);
      if (taken) {
        throw new RangeError(
          `Cannot register runner "${runner.name}": extension "${ext}" already belongs to runner "${taken.name}"`,
        );
      }
    }
    this.#runners.push(runner);
    for (const name of names) this.#byName.set(name, runner);
    for (const ext of extensions) this.#byExtension.set(ext, runner);
    return this;
  }

  /** The runner with this name or alias, in any case. */
  get(nameOrAlias: string): LanguageRunner | undefined {
    return this.#byName.get(nameOrAlias.trim().toLowerCase());
  }

  /** The runner for a file, by its extension (`main.PY` is Python), or undefined. */
  forFile(fileName: string): LanguageRunner | undefined {
    const lower = fileName.toLowerCase();
    let best: { ext: string; runner: LanguageRunner } | undefined;
    for (const [ext, runner] of this.#byExtension) {
      // The longest match wins, so ".d.ts" could beat ".ts"; ".py" alone is a name, not an extension.
      if (
        lower.length > ext.length && lower.endsWith(ext) &&
        ext.length > (best?.ext.length ?? 0)
      ) {
        best = { ext, runner };
      }
    }
    return best?.runner;
  }

  /** Every registered runner, in registration order. */
  list(): LanguageRunner[] {
    return [...this.#runners];
  }

  /**
   * Detects every runner's toolchain, concurrently, once: later calls (and
   * {@linkcode resolve}) reuse the results. A runner registered later is
   * detected on the next call. A `detect()` that throws, against its
   * contract, counts as unavailable with the error as the reason.
   */
  async detect(): Promise<RunnerStatus[]> {
    const runners = this.list();
    const toolchains = await Promise.all(
      runners.map((runner) => this.#detect(runner)),
    );
    return runners.map((runner, i) => ({
      name: runner.name,
      aliases: runner.aliases,
      extensions: runner.extensions,
      toolchain: toolchains[i]!,
    }));
  }

  /**
   * Finds the runner for `language` (a name, an alias, or a file extension
   * with or without its dot: `python`, `PY`, `.mjs`, `cc`) and its detected
   * toolchain.
   *
   * @returns `{ ok: true, resolved }`, or `{ ok: false, problem, reason }`
   * where `problem` is `"unknown_language"` or `"toolchain_unavailable"`.
   */
  async resolve(language: string): Promise<RunnerResolution> {
    const wanted = language.trim();
    const runner = this.get(wanted) ??
      this.#byExtension.get(
        (wanted.startsWith(".") ? wanted : `.${wanted}`).toLowerCase(),
      );
    if (runner === undefined) {
      return {
        ok: false,
        problem: "unknown_language",
        reason: `unknown language "${language}"`,
      };
    }
    const toolchain = await this.#detect(runner);
    if (!toolchain.available) {
      return {
        ok: false,
        problem: "toolchain_unavailable",
        runner,
        reason: `language "${runner.name}" is unavailable: ${toolchain.reason}`,
      };
    }
    return { ok: true, resolved: { runner, toolchain } };
  }

  /** Every runner whose toolchain is available, in registration order. */
  async available(): Promise<ResolvedRunner[]> {
    const statuses = await this.detect();
    const runners = this.list();
    const ready: ResolvedRunner[] = [];
    statuses.forEach(({ toolchain }, i) => {
      if (toolchain.available) ready.push({ runner: runners[i]!, toolchain });
    });
    return ready;
  }

  #detect(runner: LanguageRunner): Promise<Toolchain> {
    let detection = this.#detections.get(runner);
    if (detection === undefined) {
      detection = Promise.resolve()
        .then(() => runner.detect())
        .catch((error: unknown): Toolchain => ({
          available: false,
          reason: `detect() failed: ${
            error instanceof Error ? error.message : String(error)
          }`,
        }));
      this.#detections.set(runner, detection);
    }
    return detection;
  }
}

function unique(values: string[]): string[] {
  return [...new Set(values)];
}

/**
 * A registry holding the built-in runners: python, c, cpp, java, javascript,
 * typescript, rust and bash.
 *
 * @param options where every runner looks for its toolchain
 *
 * @example Listing the built-in runners and their toolchains
 * ```ts
 * import { createDefaultRegistry } from "./registry.ts";
 *
 * const registry = createDefaultRegistry();
 * for (const status of await registry.detect()) {
 *   console.log(status.name, status.toolchain.available ? status.toolchain.version : status.toolchain.reason);
 * }
 * ```
 */
export function createDefaultRegistry(
  options: DetectOptions = {},
): RunnerRegistry {
  return new RunnerRegistry()
    .register(new PythonRunner(options))
    .register(new CRunner(options))
    .register(new CppRunner(options))
    .register(new JavaRunner(options))
    .register(new JavaScriptRunner(options))
    .register(new TypeScriptRunner(options))
    .register(new RustRunner(options))
    .register(new BashRunner(options));
}
