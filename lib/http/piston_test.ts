import assert from "node:assert/strict";
import { fromPistonRequest } from "./piston.ts";

const file = (content: string, encoding: string) => ({
  language: "bash",
  files: [{ name: "ok.sh", content: "echo" }, {
    name: "data.bin",
    content,
    encoding,
  }],
});

Deno.test("fromPistonRequest decodes base64 and hex files", () => {
  const bytes = new TextEncoder().encode("héllo");
  const hex = [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
  const decoded = fromPistonRequest(file(hex.toUpperCase(), "hex"), []);
  assert.ok(decoded.ok);
  assert.equal(decoded.job.files[1]?.content, "héllo");
  const b64 = fromPistonRequest(
    file(btoa(String.fromCharCode(...bytes)), "base64"),
    [],
  );
  assert.ok(b64.ok);
  assert.equal(b64.job.files[1]?.content, "héllo");
});

Deno.test("fromPistonRequest refuses bad base64 and bad hex, naming the file and encoding", () => {
  for (
    const [content, encoding] of [
      ["not base64!", "base64"],
      ["zz", "hex"], // parseInt made NUL bytes of it
      ["abc", "hex"], // odd length
    ]
  ) {
    const job = fromPistonRequest(file(content!, encoding!), []);
    assert.equal(job.ok, false, `${encoding} ${content}`);
    assert.match(
      (job as { message: string }).message,
      new RegExp(
        `files\\[1\\] \\("data\\.bin"\\): the content is not valid ${encoding}`,
      ),
    );
  }
});
