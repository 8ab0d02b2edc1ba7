/**
 * Phase 3's fold protocols (`fusion.keeperFolds`): fold 1's KKN guides one model (the default), or
 * every fold's KKN guides its own model and the test Dice is their mean per subject (the released
 * code's protocol). Both start from the same baseline, so fold 1's model is the same in both.
 */
import { assert, assertAlmostEquals, assertEquals } from "@std/assert";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { runTraining } from "../lib/train/run.ts";
import { configProblem, type FusionMetrics, mergeConfig, profileConfig } from "../lib/train/pipeline.ts";
import { perFold } from "../lib/train/plan.ts";
import { guidanceProtocol } from "../lib/tables.ts";
import { loadRun } from "../lib/report.ts";
import { initBackend } from "../lib/backend.ts";

await initBackend("cpu", { quiet: true });

Deno.test("fold protocols: each KKN fold guides its own model; fold 1's equals the one-model protocol", async () => {
  const out = await Deno.makeTempDir();
  const run = async (name: string, keeperFolds: string) => {
    const config = join(out, `${name}.json`);
    await Deno.writeTextFile(config, JSON.stringify({ fusion: { keeperFolds } }));
    const dir = await runTraining({
      profile: "quick",
      seed: 0,
      phase: "all",
      progress: false,
      out,
      name,
      folds: 2,
      epochs: 1,
      config,
    });
    return loadRun(dir);
  };
  const first = await run("first", "first"), each = await run("each", "each");
  const fa = first.metrics.fusion as FusionMetrics, fe = each.metrics.fusion as FusionMetrics;
  assertEquals(fa.keeperFolds, [1]);
  assertEquals(fe.keeperFolds, [1, 2]);
  assert(existsSync(join(each.dir, "checkpoints", "guided-fold2-best.json")));
  assert(!existsSync(join(first.dir, "checkpoints", "guided-fold2-best.json")));
  const meta =
    JSON.parse(await Deno.readTextFile(join(each.dir, "checkpoints", "guided-fold2-best.json"))).meta;
  assertEquals(meta.keeperCheckpoint, "keeper-fold2-best");
  fe.subjects.forEach((s, n) => {
    assertEquals(s.guidedPerFold!.length, 2);
    // fold 1's guided model is the same model under both protocols (same baseline, AFM init, patches)
    s.guidedPerFold![0].forEach((d, c) => assertAlmostEquals(d, fa.subjects[n].guided[c], 1e-12));
    s.guided.forEach((d, c) =>
      assertAlmostEquals(d, (s.guidedPerFold![0][c] + s.guidedPerFold![1][c]) / 2, 1e-12)
    );
    assertEquals(s.baseline, fa.subjects[n].baseline);
  });
  assert(guidanceProtocol(each).includes("one guided model per KKN fold (folds 1, 2"));
  assert(guidanceProtocol(first).includes("no averaging over KKN folds"));
  await Deno.remove(out, { recursive: true });
});

Deno.test("fold protocols: the random-KKN control has one KKN; plans copy every fold's checkpoints", () => {
  const cfg = mergeConfig(profileConfig("default"), { fusion: { keeperFolds: "each", keeper: "random" } });
  assert(configProblem(cfg)!.includes('fusion.keeperFolds "each" needs fusion.keeper "trained"'));
  const bad = mergeConfig(profileConfig("default"), { fusion: { keeperFolds: "all" } });
  assert(configProblem(bad)!.startsWith("fusion.keeperFolds: must be one of"));
  assertEquals(perFold("keeper-fold1-best", 3), [
    "keeper-fold1-best",
    "keeper-fold2-best",
    "keeper-fold3-best",
  ]);
  assertEquals(perFold("baseline-best", 3), ["baseline-best"]);
});
