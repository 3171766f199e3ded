import assert from "node:assert/strict";
import {
  canRun,
  chooseNode,
  loadScore,
  type NodeLoad,
  nodeState,
} from "./placement.ts";

const NOW = 1_700_000_000_000;

interface TestNode extends NodeLoad {
  assigned: number;
}

function node(id: string, fields: Partial<NodeLoad> = {}): TestNode {
  return {
    id,
    name: id,
    local: false,
    languages: new Set(["python", "c"]),
    slots: 4,
    assigned: 0,
    cpuPercent: 0,
    ramPercent: 0,
    maxCpu: 90,
    maxRam: 90,
    draining: false,
    failingUntil: 0,
    ...fields,
  };
}

// Fails the test if a tie-break asks for a random number.
function noRandom(): number {
  throw new Error("random() called without a tie");
}

function choose(
  nodes: readonly TestNode[],
  language = "python",
  random: () => number = noRandom,
): string | undefined {
  return chooseNode(nodes, language, { now: NOW, random })?.id;
}

Deno.test("chooseNode only picks nodes that run the language", () => {
  const nodes = [
    node("py", { languages: new Set(["python"]) }),
    node("c", { languages: new Set(["c"]), local: true }),
  ];
  assert.equal(choose(nodes, "python"), "py");
  assert.equal(choose(nodes, "c"), "c");
  assert.equal(choose(nodes, "rust"), undefined);
});

Deno.test("chooseNode skips a full node", () => {
  const full = node("full", { slots: 2, assigned: 2 });
  assert.equal(canRun(full, "python", NOW), false);
  assert.equal(canRun({ ...full, assigned: 1 }, "python", NOW), true);
  assert.equal(choose([full, node("free", { cpuPercent: 80 })]), "free");
  assert.equal(choose([full]), undefined);
  // A coordinator-only master has no slots.
  assert.equal(choose([node("master", { local: true, slots: 0 })]), undefined);
});

Deno.test("chooseNode respects CPU and RAM thresholds, inclusive", () => {
  const at = node("at", { cpuPercent: 90, ramPercent: 90 });
  assert.equal(canRun(at, "python", NOW), true);
  assert.equal(canRun({ ...at, cpuPercent: 90.5 }, "python", NOW), false);
  assert.equal(canRun({ ...at, ramPercent: 91 }, "python", NOW), false);
  assert.equal(canRun({ ...at, cpuPercent: NaN }, "python", NOW), false);
  const hot = node("hot", { cpuPercent: 95, local: true });
  const swapping = node("swapping", { ramPercent: 99 });
  assert.equal(choose([hot, swapping]), undefined);
  assert.equal(choose([hot, swapping, node("cool", { assigned: 3 })]), "cool");
});

Deno.test("chooseNode skips a draining node", () => {
  const draining = node("draining", { draining: true, local: true });
  assert.equal(canRun(draining, "python", NOW), false);
  assert.equal(choose([draining]), undefined);
  assert.equal(choose([draining, node("s1", { assigned: 3 })]), "s1");
});

Deno.test("chooseNode skips a failing node until its back-off ends", () => {
  const failing = node("failing", { failingUntil: NOW + 1 });
  assert.equal(canRun(failing, "python", NOW), false);
  assert.equal(canRun(failing, "python", NOW + 1), true);
  assert.equal(choose([failing]), undefined);
  assert.equal(
    chooseNode([failing], "python", { now: NOW + 1 })?.id,
    "failing",
  );
  assert.equal(choose([node("ok", { failingUntil: NOW })]), "ok");
});

Deno.test("chooseNode prefers the master's own slots while it can run", () => {
  const master = node("master", {
    local: true,
    assigned: 3,
    cpuPercent: 85,
    ramPercent: 80,
  });
  const idle = node("idle");
  assert.ok(loadScore(master) > loadScore(idle));
  assert.equal(choose([idle, master]), "master");
  // Over its limit, or full, it steps aside.
  assert.equal(choose([idle, { ...master, cpuPercent: 95 }]), "idle");
  assert.equal(choose([idle, { ...master, assigned: 4 }]), "idle");
});

Deno.test("chooseNode picks the least loaded secondary", () => {
  const nodes = [
    node("half", { assigned: 2 }),
    node("quarter", { assigned: 1, cpuPercent: 20 }),
    node("busy-cpu", { assigned: 0, cpuPercent: 80, ramPercent: 40 }),
  ];
  // half 0.5, quarter 0.35, busy-cpu 0.5
  assert.equal(choose(nodes), "quarter");
  // Free slots count relative to size: 3 of 8 busy beats 1 of 2.
  assert.equal(
    choose([
      node("small", { slots: 2, assigned: 1 }),
      node("big", { slots: 8, assigned: 3 }),
    ]),
    "big",
  );
  // RAM weighs less than CPU.
  assert.equal(
    choose([node("cpu", { cpuPercent: 30 }), node("ram", { ramPercent: 30 })]),
    "ram",
  );
});

Deno.test("loadScore counts assignments above heartbeats and clamps readings", () => {
  assert.equal(loadScore(node("idle")), 0);
  assert.equal(
    loadScore(
      node("full-load", {
        assigned: 2,
        slots: 4,
        cpuPercent: 100,
        ramPercent: 100,
      }),
    ),
    1.25,
  );
  assert.equal(
    loadScore(node("odd", { cpuPercent: 250, ramPercent: -5 })),
    0.5,
  );
  assert.equal(loadScore(node("none", { slots: 0 })), Infinity);
  // A whole node's CPU counts like half its slots busy, RAM like a quarter.
  assert.equal(
    loadScore(node("cpu", { cpuPercent: 100 })),
    loadScore(node("jobs", { assigned: 2 })),
  );
  assert.equal(
    loadScore(node("ram", { ramPercent: 100 })),
    loadScore(node("job", { assigned: 1 })),
  );
});

Deno.test("a burst of placements spreads evenly over equal nodes", () => {
  // Heartbeats are stale during the burst: every node still reports idle,
  // and one even looks idler than the rest. Only `assigned` moves.
  const nodes = [
    node("s1", { slots: 8, cpuPercent: 0 }),
    node("s2", { slots: 8, cpuPercent: 5 }),
    node("s3", { slots: 8, cpuPercent: 5 }),
    node("s4", { slots: 8, cpuPercent: 5 }),
  ];
  let seed = 7;
  const random = () => (seed = (seed * 16807) % 2147483647) / 2147483647;
  const placed = new Map<string, number>();
  for (let job = 0; job < 24; job++) {
    const chosen = chooseNode(nodes, "python", { now: NOW, random });
    assert.ok(chosen);
    chosen.assigned++;
    placed.set(chosen.id, (placed.get(chosen.id) ?? 0) + 1);
    // At every step, no node is more than one job ahead of another.
    const counts = nodes.map((n) => n.assigned);
    assert.ok(Math.max(...counts) - Math.min(...counts) <= 1, `${counts}`);
  }
  assert.deepEqual([...placed.values()], [6, 6, 6, 6]);
  // Then everything is full.
  for (let job = 0; job < 8; job++) {
    chooseNode(nodes, "python", { now: NOW, random })!.assigned++;
  }
  assert.equal(choose(nodes, "python", random), undefined);
});

Deno.test("chooseNode breaks ties with the injected random()", () => {
  const nodes = [node("a"), node("b"), node("c", { assigned: 1 })];
  assert.equal(choose(nodes, "python", () => 0), "a");
  assert.equal(choose(nodes, "python", () => 0.49), "a");
  assert.equal(choose(nodes, "python", () => 0.5), "b");
  assert.equal(choose(nodes, "python", () => 0.999), "b");
  // A random() that returns 1 (out of contract) still picks a node.
  assert.equal(choose(nodes, "python", () => 1), "b");
  // Scores within 1e-9 tie; beyond, they do not.
  const close = [
    node("x", { cpuPercent: 10 }),
    node("y", { cpuPercent: 10 + 1e-10 }),
  ];
  assert.equal(choose(close, "python", () => 0.9), "y");
  const apart = [
    node("x", { cpuPercent: 10 + 1e-3 }),
    node("y", { cpuPercent: 10 }),
  ];
  assert.equal(choose(apart), "y");
  // No tie, no call: noRandom() would have thrown.
  assert.equal(choose([node("only")]), "only");
});

Deno.test("chooseNode on no nodes is undefined", () => {
  assert.equal(choose([]), undefined);
  assert.equal(chooseNode([], "python"), undefined);
});

Deno.test("chooseNode defaults now to the clock", () => {
  const failing = node("failing", { failingUntil: Date.now() + 60_000 });
  const recovered = node("recovered", { failingUntil: Date.now() - 1 });
  assert.equal(chooseNode([failing, recovered], "python")?.id, "recovered");
});

Deno.test("nodeState names failing, busy and ready nodes", () => {
  const base = node("n");
  assert.equal(nodeState(base, 1000), "ready");
  assert.equal(nodeState({ ...base, failingUntil: 2000 }, 1000), "failing");
  assert.equal(nodeState({ ...base, assigned: base.slots }, 1000), "busy");
  assert.equal(
    nodeState({ ...base, cpuPercent: 99, maxCpu: 50 }, 1000),
    "busy",
  );
});
