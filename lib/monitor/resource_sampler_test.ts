import assert from "node:assert/strict";
import { join } from "node:path";
import { createResourceSampler, sampleResources } from "./resource_sampler.ts";

Deno.test("sampleResources() reads numbers consistent with the kernel's", async () => {
  const sample = await sampleResources();
  const totalMb = Deno.systemMemoryInfo().total / 1024 / 1024;
  assert.ok(
    sample.cpuPercent >= 0 && sample.cpuPercent <= 100,
    `cpu ${sample.cpuPercent}`,
  );
  assert.ok(
    sample.ramUsedMb > 0 && sample.ramUsedMb < totalMb,
    `ram used ${sample.ramUsedMb} MB`,
  );
  const percentFromMb = (sample.ramUsedMb / totalMb) * 100;
  assert.ok(
    Math.abs(sample.ramPercent - percentFromMb) < 1,
    `${sample.ramPercent}% vs ${percentFromMb}%`,
  );
});

Deno.test({
  name:
    "a sampler's CPU % covers the time since its previous sample, from /proc/stat",
  ignore: Deno.build.os !== "linux",
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "kiln-sampler-" });
    try {
      const stat = join(dir, "stat");
      // user nice system idle iowait irq softirq steal guest guest_nice
      const write = (fields: number[]) =>
        Deno.writeTextFile(
          stat,
          `cpu  ${fields.join(" ")}\ncpu0 ${fields.join(" ")}\nintr 1 2\n`,
        );
      const sample = createResourceSampler({ statFile: stat });
      await write([100, 0, 100, 700, 100, 0, 0, 0, 50, 0]);
      // Since boot: 200 busy of 1000 (guest time is inside user already).
      assert.equal((await sample()).cpuPercent, 20);
      await write([400, 0, 200, 900, 100, 50, 50, 0, 50, 0]);
      // 300 + 100 + 50 + 50 busy, 200 idle: 500 of 700.
      assert.equal((await sample()).cpuPercent, 71.4);
      // No tick since: nothing to say, not a division by zero.
      assert.equal((await sample()).cpuPercent, 0);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
