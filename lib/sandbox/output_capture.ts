/**
 * Captures a program's stdout and stderr under one shared byte budget,
 * *while* they stream: the budget bounds the node's memory whatever the
 * program prints, and the moment it is spent the caller is told so it can
 * kill the program (a program printing 1 GB is stopped after the budget, not
 * read to the end).
 *
 * @module
 */
import type { OutputStream } from "../job.ts";

/** What one stream captured. */
export interface CapturedText {
  readonly stdout: string;
  readonly stderr: string;
  /** Whether some output was dropped because the budget was spent. */
  readonly truncated: boolean;
}

/** Options of {@linkcode OutputCapture}. */
export interface OutputCaptureOptions {
  /** Bytes of stdout and stderr together to keep. */
  readonly limitBytes: number;
  /** Called with each kept chunk, decoded, as it arrives. */
  readonly onOutput?:
    | ((stream: OutputStream, data: string) => void)
    | undefined;
  /** Called once, when output first goes past the budget. */
  readonly onLimit?: (() => void) | undefined;
}

/**
 * Reads both streams of a child process within one budget.
 *
 * @example Capturing a child's output
 * ```ts
 * import assert from "node:assert/strict";
 * import { OutputCapture } from "./output_capture.ts";
 *
 * const child = new Deno.Command("echo", { args: ["hi"], stdout: "piped", stderr: "piped" }).spawn();
 * const capture = new OutputCapture({ limitBytes: 1024 });
 * const [captured] = await Promise.all([capture.drain(child.stdout, child.stderr), child.status]);
 * assert.equal(captured.stdout, "hi\n");
 * ```
 */
export class OutputCapture {
  #remaining: number;
  #truncated = false;
  #options: OutputCaptureOptions;
  #text: Record<OutputStream, string[]> = { stdout: [], stderr: [] };
  #readers = new Set<ReadableStreamDefaultReader<Uint8Array>>();

  constructor(options: OutputCaptureOptions) {
    this.#options = options;
    this.#remaining = options.limitBytes;
  }

  /** Reads both streams to their end (or until {@linkcode cancel}), then returns what was kept. */
  async drain(
    stdout: ReadableStream<Uint8Array>,
    stderr: ReadableStream<Uint8Array>,
  ): Promise<CapturedText> {
    await Promise.all([
      this.#read("stdout", stdout),
      this.#read("stderr", stderr),
    ]);
    return {
      stdout: this.#text.stdout.join(""),
      stderr: this.#text.stderr.join(""),
      truncated: this.#truncated,
    };
  }

  /**
   * Stops reading. Used when the program is dead but a process that escaped
   * the kill still holds a pipe open: `drain` then returns what it has.
   */
  cancel(): void {
    for (const reader of this.#readers) reader.cancel().catch(() => {});
  }

  async #read(
    stream: OutputStream,
    readable: ReadableStream<Uint8Array>,
  ): Promise<void> {
    const reader = readable.getReader();
    this.#readers.add(reader);
    const decoder = new TextDecoder();
    try {
      while (true) {
        const { done, value } = await reader.read();
        if (done) break;
        if (this.#truncated) continue; // Keep draining so the writer never blocks.
        const kept = value.byteLength <= this.#remaining
          ? value
          : value.subarray(0, this.#remaining);
        this.#remaining -= kept.byteLength;
        this.#keep(stream, decoder.decode(kept, { stream: true }));
        if (kept !== value) {
          this.#truncated = true;
          this.#options.onLimit?.();
        }
      }
    } catch {
      // Cancelled, or the pipe broke because the process was killed.
    } finally {
      this.#readers.delete(reader);
      // Past the budget, a character the cut split in two is dropped whole,
      // never kept as U+FFFD: its other bytes were never kept.
      if (!this.#truncated) this.#keep(stream, decoder.decode());
      reader.releaseLock();
    }
  }

  #keep(stream: OutputStream, text: string): void {
    if (text === "") return;
    this.#text[stream].push(text);
    this.#options.onOutput?.(stream, text);
  }
}
