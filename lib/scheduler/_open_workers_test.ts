import assert from "node:assert/strict";
import { OpenWorkers } from "./_open_workers.ts";
import type { NodeLoad } from "./placement.ts";
import type { Worker } from "./worker.ts";

/** A worker whose load the test sets, counting how often it is read. */
function worker(id: string, languages: string[], slots = 1) {
  let load: NodeLoad = {
    id,
    name: id,
    local: false,
    languages: new Set(languages),
    slots,
    assigned: 0,
    cpuPercent: 0,
    ramPercent: 0,
    maxCpu: 100,
    maxRam: 100,
    draining: false,
    failingUntil: 0,
  };
  const fake = {
    id,
    name: id,
    reads: 0,
    languages: languages.map((name) => ({
      name,
      version: "1",
      aliases: [],
      extensions: [],
    })),
    load() {
      fake.reads++;
      return load;
    },
    set(change: Partial<NodeLoad>) {
      load = { ...load, ...change };
    },
  };
  return fake as typeof fake & Worker;
}

const ids = (workers: Worker[]) => workers.map((w) => w.id).sort();

Deno.test("OpenWorkers lists the workers with room under each language they run", () => {
  const open = new OpenWorkers();
  const py = worker("py", ["python"]);
  const both = worker("both", ["python", "c"]);
  const full = worker("full", ["python"]);
  full.set({ assigned: 1 });
  for (const each of [py, both, full]) open.add(each);
  assert.deepEqual(ids(open.candidates("python", Date.now())), ["both", "py"]);
  assert.deepEqual(ids(open.candidates("c", Date.now())), ["both"]);
  assert.deepEqual(open.candidates("java", Date.now()), []);
  // A full worker was never listed: reading python's candidates read it not.
  full.reads = 0;
  open.candidates("python", Date.now());
  assert.equal(full.reads, 0);
});

Deno.test("OpenWorkers: a worker that filled up leaves on the next read; a refresh lists it again", () => {
  const open = new OpenWorkers();
  const a = worker("a", ["bash"]);
  const b = worker("b", ["bash"]);
  open.add(a);
  open.add(b);
  a.set({ assigned: 1 }); // started a job
  assert.deepEqual(ids(open.candidates("bash", Date.now())), ["b"]);
  assert.equal(open.size, 1);
  a.reads = 0;
  assert.deepEqual(ids(open.candidates("bash", Date.now())), ["b"]);
  assert.equal(a.reads, 0, "a full worker is not read again");
  a.set({ assigned: 0 }); // its job ended
  open.refresh(a);
  assert.deepEqual(ids(open.candidates("bash", Date.now())), ["a", "b"]);
  // Over a threshold, draining: no room either.
  a.set({ cpuPercent: 101 });
  b.set({ draining: true });
  open.refreshAll();
  assert.equal(open.size, 0);
  assert.deepEqual(open.candidates("bash", Date.now()), []);
  a.set({ cpuPercent: NaN });
  open.refresh(a);
  assert.equal(open.size, 0, "a NaN reading has no room");
});

Deno.test("OpenWorkers keeps a worker in back-off listed, and offers it once the back-off is over", () => {
  const open = new OpenWorkers();
  const now = Date.now();
  const a = worker("a", ["bash"]);
  a.set({ failingUntil: now + 5000 });
  open.add(a);
  assert.equal(open.size, 1);
  assert.deepEqual(open.candidates("bash", now), []);
  assert.deepEqual(ids(open.candidates("bash", now + 5000)), ["a"]);
});

Deno.test("OpenWorkers forgets a worker that left, under every language", () => {
  const open = new OpenWorkers();
  const a = worker("a", ["bash", "c"]);
  const b = worker("b", ["bash"]);
  open.add(a);
  open.add(b);
  open.add(a); // twice: still one entry per language
  assert.equal(open.size, 3);
  open.delete(a);
  open.delete(a);
  assert.equal(open.size, 1);
  assert.deepEqual(ids(open.candidates("bash", Date.now())), ["b"]);
  assert.deepEqual(open.candidates("c", Date.now()), []);
  open.refresh(a); // gone: nothing happens
  assert.equal(open.size, 1);
});
