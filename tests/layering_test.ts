/**
 * Each module depends only on those below it: the import edges that once
 * made cycles or reached up a layer stay gone.
 */
import assert from "node:assert/strict";

const ROOT = new URL("../", import.meta.url);

/** Every import edge between kiln's own modules under lib/, as `from -> to` paths. */
async function importEdges(): Promise<[string, string][]> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", new URL("mod.ts", ROOT).pathname],
    stdout: "piped",
    stderr: "null",
  }).output();
  assert.ok(output.success, "deno info --json mod.ts failed");
  const info = JSON.parse(new TextDecoder().decode(output.stdout)) as {
    modules: {
      specifier: string;
      dependencies?: {
        code?: { specifier: string };
        type?: { specifier: string };
      }[];
    }[];
  };
  const local = (specifier: string) =>
    specifier.startsWith(ROOT.href) ? specifier.slice(ROOT.href.length) : "";
  return info.modules.flatMap((module) =>
    (module.dependencies ?? []).flatMap((dependency) =>
      [dependency.code?.specifier, dependency.type?.specifier]
        .map((to) => [local(module.specifier), local(to ?? "")])
        .filter((edge): edge is [string, string] =>
          edge[0] !== "" && edge[1] !== ""
        )
    )
  );
}

Deno.test("lower layers do not import higher ones", async () => {
  const edges = await importEdges();
  assert.ok(edges.length > 50, "deno info found kiln's modules");
  const forbidden: [string, RegExp, RegExp][] = [
    // The handshake uses credentials: security is below the protocol.
    ["security imports protocol", /^lib\/security\//, /^lib\/protocol\//],
    // Messages describe sandboxes but do not depend on the sandbox.
    ["protocol imports sandbox", /^lib\/protocol\//, /^lib\/sandbox\//],
    // A remote worker only forwards jobs; the executor runs them locally.
    ["remote_worker imports executor", /remote_worker\.ts$/, /executor\.ts$/],
    // Placement and the job's life are pure logic on the scheduler's own
    // types: the nodes translate to and from the wire and their events.
    ["scheduler imports protocol", /^lib\/scheduler\//, /^lib\/protocol\//],
    ["scheduler imports nodes", /^lib\/scheduler\//, /^lib\/nodes\//],
    // The master's door knows peers, not jobs or where they run.
    [
      "master_connections imports scheduler",
      /master_connections\.ts$/,
      /^lib\/scheduler\//,
    ],
  ];
  const found = forbidden.flatMap(([what, from, to]) =>
    edges.filter(([a, b]) => from.test(a) && to.test(b))
      .map(([a, b]) => `${what}: ${a} -> ${b}`)
  );
  assert.deepEqual(found, []);
});
