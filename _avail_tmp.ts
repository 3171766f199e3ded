import { createDefaultRegistry } from "./lib/runners/mod.ts";
const r = createDefaultRegistry();
console.log(JSON.stringify(await r.available(), null, 1));
