/**
 * Benchmark cases for the project's own jobs: phantom generation (target: the default profile
 * in under 2 minutes).
 */
import { generateCohorts } from "../lib/phantom/cohort.ts";

export const CASE_MODELS = [
  {
    name: "phantom",
    description: "generating the default phantom cohorts (68 scans, 64^3; target < 120 s)",
    backends: ["cpu"],
    async run() {
      const dir = await Deno.makeTempDir({ prefix: "bench-phantom-" });
      try {
        const t0 = performance.now();
        await generateCohorts("default", dir, { seed: 0 });
        return { step_s: (performance.now() - t0) / 1000, note: "seconds for all three cohorts" };
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    },
  },
];
