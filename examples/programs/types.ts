// A typed function, checked by `deno check` before it runs.
interface Firing {
  readonly piece: string;
  readonly cone: number;
}

function describe({ piece, cone }: Firing): string {
  return `${piece} fired to cone ${cone}`;
}

console.log(describe({ piece: "mug", cone: 6 }));
