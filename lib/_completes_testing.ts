/**
 * For tests of code that must stay linear in its input (regular expressions
 * and parsers that meet user text on a node's event loop): run the work in a
 * Worker and fail if it has not finished by a generous deadline.
 *
 * This is not a timed assertion: the deadline is far above what linear code
 * needs at the largest input (milliseconds) and far below what the
 * super-linear code it replaced took there (minutes), so it only tells "ends"
 * from "hangs", and lets a test fail instead of hanging CI.
 *
 * @module
 */

/** Options for {@linkcode assertCompletes}. */
export interface CompletesOptions {
  /**
   * How long the work may take before the test fails, in milliseconds.
   * @default {60_000}
   */
  readonly deadlineMs?: number;
}

/**
 * Runs `script` (a module's source, JavaScript, importing by absolute URL:
 * use `import.meta.resolve`) in a Worker and resolves when it finishes; the
 * worker is terminated and the returned promise rejects if it throws or has
 * not finished by the deadline. The script's last expression need not
 * signal anything: finishing its top-level code is finishing.
 *
 * @example Checking that a search ends on a large input
 * ```ts
 * import { assertCompletes } from "./_completes_testing.ts";
 *
 * await assertCompletes(`"a".repeat(1024 * 1024).search(/b/);`);
 * ```
 */
export async function assertCompletes(
  script: string,
  { deadlineMs = 60_000 }: CompletesOptions = {},
): Promise<void> {
  const code = `${script}\n;self.postMessage("done");\n`;
  const worker = new Worker(
    `data:application/javascript;base64,${encodeBase64(code)}`,
    { type: "module" },
  );
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await new Promise<void>((resolve, reject) => {
      timer = setTimeout(
        () =>
          reject(
            new Error(`the work did not finish within ${deadlineMs} ms`),
          ),
        deadlineMs,
      );
      worker.onmessage = () => resolve();
      worker.onerror = (event) => {
        event.preventDefault();
        reject(new Error(`the work failed: ${event.message}`));
      };
    });
  } finally {
    clearTimeout(timer);
    worker.terminate();
  }
}

/** Base64 of a string's UTF-8 bytes. */
function encodeBase64(text: string): string {
  const bytes = new TextEncoder().encode(text);
  let binary = "";
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary);
}
