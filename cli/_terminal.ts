/**
 * Text from elsewhere (a node's name, a master's reason, a language's
 * version) made safe to print on an operator's terminal: control
 * characters and bidirectional overrides are shown escaped, so a node named
 * `\x1b[2J` or one holding a newline and fake table rows prints as what it
 * is instead of clearing the screen or forging lines.
 *
 * @module
 */

/** C0 and C1 controls, DEL, and the bidi embeddings, overrides and isolates. */
const UNPRINTABLE = /[\p{Cc}\u200e\u200f\u202a-\u202e\u2066-\u2069]/gu;

/**
 * `text` with every control character written as an escape (`\x1b`,
 * `\n`, `\u202e`); one pass, linear in the text.
 *
 * @example A hostile node name, printed
 * ```ts
 * import assert from "node:assert/strict";
 * import { printable } from "./_terminal.ts";
 *
 * assert.equal(printable("east\x1b[2J\nfake  row"), "east\\x1b[2J\\nfake  row");
 * assert.equal(printable("plain ünïcode"), "plain ünïcode");
 * ```
 */
export function printable(text: string): string {
  return text.replace(UNPRINTABLE, (char) => {
    const code = char.charCodeAt(0);
    if (char === "\n") return "\\n";
    if (char === "\r") return "\\r";
    if (char === "\t") return "\\t";
    return code <= 0xff
      ? `\\x${code.toString(16).padStart(2, "0")}`
      : `\\u${code.toString(16).padStart(4, "0")}`;
  });
}
