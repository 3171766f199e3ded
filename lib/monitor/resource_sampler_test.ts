import assert from "node:assert/strict";
import { sampleResources } from "./resource_sampler.ts";

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
