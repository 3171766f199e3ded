import assert from "node:assert/strict";
import { LinkedSet } from "./_linked_set.ts";

Deno.test("LinkedSet keeps insertion order, adds once, deletes anywhere", () => {
  const set = new LinkedSet(["a", "b", "c"]);
  assert.equal(set.add("b"), set);
  assert.deepEqual([...set], ["a", "b", "c"]);
  assert.equal(set.delete("b"), true);
  assert.equal(set.delete("b"), false);
  assert.equal(set.has("b"), false);
  assert.deepEqual([...set], ["a", "c"]);
  assert.equal(set.first(), "a");
  set.delete("a");
  set.delete("c");
  assert.equal(set.size, 0);
  assert.equal(set.first(), undefined);
  set.add("d");
  assert.deepEqual([...set], ["d"]);
});

Deno.test("LinkedSet iterates live, as a Set does", () => {
  const set = new LinkedSet(["a", "b", "c", "d"]);
  const seen: string[] = [];
  for (const value of set) {
    seen.push(value);
    if (seen.length === 1) {
      // Standing on "a": delete it and the one after it, move it to the back.
      set.delete("a");
      set.delete("b");
      set.add("a");
    }
    if (value === "c") set.add("e");
  }
  assert.deepEqual(seen, ["a", "c", "d", "a", "e"]);
  assert.deepEqual([...set], ["c", "d", "a", "e"]);
});

Deno.test("LinkedSet finds its first value at once after many were taken", () => {
  // A Set used this way steps over every deleted entry to find the first.
  const set = new LinkedSet<number>();
  for (let i = 0; i < 100_000; i++) set.add(i);
  for (let i = 0; i < 100_000; i++) {
    assert.equal(set.first(), i);
    set.delete(i);
  }
  assert.equal(set.size, 0);
});
