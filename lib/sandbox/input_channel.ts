/**
 * Stdin for an interactive program: text pushed while the program runs,
 * read by the launcher as an async iterable, ended when the client says so.
 *
 * @module
 */

/**
 * A one-reader queue of text chunks. `push` never blocks (the output side of
 * a job is capped; input is bounded by the frames that carry it), `end`
 * closes it after what was pushed, and the reader's `return()` (the program
 * exited) drops the rest and wakes a pending read.
 *
 * @example Feeding a program two lines, then EOF
 * ```ts
 * import { InputChannel } from "./input_channel.ts";
 *
 * const input = new InputChannel();
 * input.push("first\n");
 * input.push("second\n");
 * input.end();
 * const chunks = await Array.fromAsync(input);
 * console.log(chunks); // ["first\n", "second\n"]
 * ```
 */
export class InputChannel implements AsyncIterable<string> {
  #chunks: string[] = [];
  #ended = false;
  #waiting: ((result: IteratorResult<string>) => void) | undefined;

  /** Whether `end()` was called or the reader stopped. */
  get ended(): boolean {
    return this.#ended;
  }

  /** Appends text for the program; ignored once ended. */
  push(text: string): void {
    if (this.#ended || text === "") return;
    const waiting = this.#waiting;
    if (waiting) {
      this.#waiting = undefined;
      waiting({ value: text, done: false });
    } else this.#chunks.push(text);
  }

  /** No more input: the program sees EOF after what was pushed. */
  end(): void {
    this.#ended = true;
    if (this.#chunks.length === 0) this.#wake();
  }

  [Symbol.asyncIterator](): AsyncIterator<string> {
    return {
      next: () => {
        const chunk = this.#chunks.shift();
        if (chunk !== undefined) {
          return Promise.resolve({ value: chunk, done: false });
        }
        if (this.#ended) {
          return Promise.resolve({ value: undefined, done: true });
        }
        return new Promise((resolve) => this.#waiting = resolve);
      },
      return: () => {
        this.#ended = true;
        this.#chunks = [];
        this.#wake();
        return Promise.resolve({ value: undefined, done: true });
      },
    };
  }

  #wake(): void {
    const waiting = this.#waiting;
    this.#waiting = undefined;
    waiting?.({ value: undefined, done: true });
  }
}
