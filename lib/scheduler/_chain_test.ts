import assert from "node:assert/strict";
import {
  append,
  type Chain,
  chain,
  type Linked,
  live,
  unlink,
} from "./_chain.ts";

interface Item extends Linked<Item> {
  readonly name: string;
}

function item(name: string): Item {
  return { name, prev: undefined, next: undefined, removed: false };
}

function names(list: Chain<Item>): string[] {
  const seen: string[] = [];
  for (let link = live(list.head); link; link = live(link.next)) {
    seen.push(link.name);
  }
  return seen;
}

Deno.test("chain links at the back and unlinks anywhere, counting", () => {
  const list = chain<Item>();
  const [a, b, c] = [item("a"), item("b"), item("c")];
  for (const link of [a, b, c]) append(list, link);
  assert.deepEqual(names(list), ["a", "b", "c"]);
  assert.equal(list.size, 3);
  unlink(list, b);
  assert.deepEqual(names(list), ["a", "c"]);
  unlink(list, a);
  unlink(list, c);
  assert.equal(list.size, 0);
  assert.equal(list.head, undefined);
  assert.equal(list.tail, undefined);
  const d = item("d");
  append(list, d);
  assert.deepEqual(names(list), ["d"]);
  assert.equal(list.head, d);
});

Deno.test("chain: a walk standing on a link that leaves goes on to those after it", () => {
  const list = chain<Item>();
  const links = ["a", "b", "c", "d"].map(item);
  for (const link of links) append(list, link);
  const [a, b, c] = links as [Item, Item, Item, Item];
  const seen: string[] = [];
  for (let link = live(list.head); link; link = live(link.next)) {
    seen.push(link.name);
    if (link === a) {
      // Standing on "a": it and the one after it leave, "a" comes back
      // as a new link at the back.
      unlink(list, a);
      unlink(list, b);
      append(list, item("a"));
    }
    if (link === c) unlink(list, c);
  }
  assert.deepEqual(seen, ["a", "c", "d", "a"]);
  assert.deepEqual(names(list), ["d", "a"]);
});
