/**
 * Training schedules: learning-rate warm-up and cosine decay, patch sampling with a foreground
 * bias, the convergence verdict, schedule validation and cross-validation folds.
 */
import { assert, assertAlmostEquals, assertEquals, assertRejects, assertThrows } from "@std/assert";
import {
  isPatchStep,
  judgeConvergence,
  learningRateAt,
  paperSchedule,
  samplePatch,
  type Schedule,
  scheduleProblem,
} from "../lib/train/schedule.ts";
import { foldSplits, profileConfig, schedulesOf } from "../lib/train/pipeline.ts";
import type { Subject } from "../lib/data/cohort.ts";
import { runTraining } from "../scripts/train.ts";
import { initBackend } from "../lib/mod.ts";

await initBackend("cpu", { quiet: true });

const S: Schedule = {
  steps: 100,
  validateEvery: 10,
  learningRate: 1e-3,
  warmupSteps: 10,
  minLearningRate: 1e-5,
  patch: 32,
  foregroundBias: 0.5,
  wholeFraction: 0.2,
};

Deno.test("learning rate: linear warm-up, cosine decay to the minimum", () => {
  assertAlmostEquals(learningRateAt(S, 0), 1e-4, 1e-12); // (0 + 1) / 10 of the peak
  assertAlmostEquals(learningRateAt(S, 9), 1e-3, 1e-12);
  assertAlmostEquals(learningRateAt(S, 10), 1e-3, 1e-12); // cosine starts at the peak
  // half-way through the decay (step 10 + 89/2): the mean of peak and minimum
  assertAlmostEquals(learningRateAt(S, 54.5), (1e-3 + 1e-5) / 2, 1e-12);
  assertAlmostEquals(learningRateAt(S, 99), 1e-5, 1e-12);
  const p = paperSchedule(100, 13);
  assertEquals([p.steps, p.validateEvery], [1300, 13]);
  for (const step of [0, 500, 1299]) assertEquals(learningRateAt(p, step), 2e-4);
  assert(!isPatchStep(p, 0));
});

Deno.test("patches: the first steps, then whole volumes for the last wholeFraction", () => {
  assert(isPatchStep(S, 0) && isPatchStep(S, 79));
  assert(!isPatchStep(S, 80) && !isPatchStep(S, 99));
});

Deno.test("samplePatch: copies the right voxels, stays inside, follows the foreground", () => {
  const shape: [number, number, number] = [6, 5, 4];
  const n = 6 * 5 * 4;
  const a = Float32Array.from({ length: n }, (_, i) => i);
  // foreground: one voxel at (z, y, x) = (5, 4, 3), the last corner
  const fg = new Float32Array(n);
  fg[n - 1] = 1;
  const p = samplePatch({ a, fg }, shape, 2, fg, 1, 7);
  assertEquals(p.shape, [2, 2, 2]);
  // centred on the foreground voxel and clipped into the volume: corner (4, 3, 2)
  const at = (z: number, y: number, x: number) => (z * 5 + y) * 4 + x;
  assertEquals(Array.from(p.arrays.a), [
    at(4, 3, 2),
    at(4, 3, 3),
    at(4, 4, 2),
    at(4, 4, 3),
    at(5, 3, 2),
    at(5, 3, 3),
    at(5, 4, 2),
    at(5, 4, 3),
  ]);
  assertEquals(p.arrays.fg[7], 1);
  // uniform corners always stay inside the volume
  for (let seed = 1; seed < 50; seed++) {
    const q = samplePatch({ a }, shape, 3, fg, 0, seed);
    assertEquals(q.arrays.a.length, 27);
    assert(q.arrays.a.every((v) => v >= 0 && v < n));
  }
});

Deno.test("convergence: a rising curve, a flat curve, a curve below its floor", () => {
  const rising = Array.from({ length: 10 }, (_, i) => 20 + i); // +1 dB a round
  const r = judgeConvergence("t", "PSNR", rising, 50, { window: 0.2, maxGain: 0.5 });
  assertEquals(r.problems.length, 1);
  assert(r.problems[0].includes("still rising"));
  assertAlmostEquals(r.recentGain, 2, 1e-9); // mean(28, 29) - mean(26, 27)
  assertAlmostEquals(r.slopePer100Steps, 2, 1e-9); // 2 dB over 2 rounds of 50 steps
  const flat = [10, 20, 25, 27, 28, 28.2, 28.3, 28.3, 28.35, 28.4];
  assertEquals(judgeConvergence("t", "PSNR", flat, 50, { window: 0.2, maxGain: 0.5 }).problems, []);
  const low = judgeConvergence("t", "PSNR", flat, 50, { window: 0.2, maxGain: 0.5, floor: 30 });
  assert(low.problems[0].includes("below"), low.problems.join());
  assert(judgeConvergence("t", "PSNR", [1, NaN], 1, { window: 0.2, maxGain: 1 }).problems[0].includes("NaN"));
});

Deno.test("schedules from --config are validated", () => {
  assertEquals(scheduleProblem("x", S), null);
  assert(scheduleProblem("x", { ...S, patch: 16 })!.includes("x.patch"));
  assert(scheduleProblem("x", { ...S, steps: 0 })!.includes("x.steps"));
  assert(
    scheduleProblem("x", { ...S, learningRate: "0.1" as unknown as number })!.includes("x.learningRate"),
  );
  assert(scheduleProblem("x", { ...S, minLearningRate: 1 })!.includes("learning rates"));
  for (const p of ["default", "long", "paper", "quick"]) {
    const c = profileConfig(p);
    for (const [where, s] of schedulesOf(c)) assertEquals(scheduleProblem(`${p} ${where}`, s), null);
  }
});

Deno.test("folds: t test subjects, the next validates, the rest train; t = 1 is leave-one-out", () => {
  const subjects = Array.from({ length: 7 }, (_, i) => ({ id: `s${i}` }) as Subject);
  const ids = (xs: Subject[]) => xs.map((s) => s.id);
  const [a, b] = foldSplits(subjects, { folds: 2, testPerFold: 3 });
  assertEquals([ids(a.test), a.validation.id, ids(a.train)], [["s0", "s1", "s2"], "s3", ["s4", "s5", "s6"]]);
  assertEquals([ids(b.test), b.validation.id], [["s3", "s4", "s5"], "s6"]);
  // more folds than the subjects hold are refused, not clamped
  assertThrows(() => foldSplits(subjects, { folds: 3, testPerFold: 3 }), RangeError, "at most 2 folds");
  const loo = foldSplits(subjects, { folds: 7, testPerFold: 1 });
  assertEquals(loo.length, 7);
  assertEquals([ids(loo[6].test), loo[6].validation.id], [["s6"], "s0"]);
});

Deno.test("a phase that has not converged stops the run with a ConvergenceError", async () => {
  const out = await Deno.makeTempDir();
  const config = `${out}/enforce.json`;
  await Deno.writeTextFile(config, JSON.stringify({ checks: { enforce: true } }));
  const opts = { profile: "quick", seed: 0, out, phase: "teacher", progress: false, config };
  const err = await assertRejects(() => runTraining({ ...opts, name: "a" }));
  assertEquals((err as Error).name, "ConvergenceError");
  assert((err as Error).message.startsWith("teacher fold 1:"), (err as Error).message);
  // told to continue, the same run finishes
  await runTraining({ ...opts, name: "b", "allow-unconverged": true });
  await Deno.remove(out, { recursive: true });
});
