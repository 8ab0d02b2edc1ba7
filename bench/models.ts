/**
 * Benchmark cases for the project's own networks and jobs: the paper's teacher and KKN (nf 16)
 * training steps on the default profile's 64^3 grid, phantom generation (target: the default
 * profile in under 2 minutes) and the main job (target: under 20 minutes, 4 GiB). The last two
 * are long, so they run only when named.
 */
import * as tf from "@tensorflow/tfjs-core";
import { adam } from "../lib/nn/module.ts";
import { DEFAULT_TEACHER, Teacher } from "../lib/models/teacher.ts";
import { DEFAULT_KEEPER, KnowledgeKeeper } from "../lib/models/keeper.ts";
import { distillationLoss, l1 } from "../lib/losses.ts";
import { generateCohorts } from "../lib/phantom/cohort.ts";
import { medianSeconds } from "./timing.ts";

const GRID: [number, number, number] = [64, 64, 64];

export const CASE_MODELS = [
  {
    name: "teacher",
    description: "paper teacher (nf 16, 5 levels) training step, 64^3",
    backends: ["cpu"],
    async run(steps: number) {
      const t = new Teacher({ ...DEFAULT_TEACHER }, 0);
      const y = tf.randomUniform([1, ...GRID, 1], 0, 1, "float32", 1) as tf.Tensor5D;
      const opt = adam(2e-4);
      let i = 0;
      const step = await medianSeconds(
        () => tf.dispose(opt.minimize(() => t.loss(y, ++i).total, true, t.parameters())!),
        steps,
      );
      return { step_s: step, note: `${(t.parameterCount() / 1e6).toFixed(2)} M parameters` };
    },
  },
  {
    name: "keeper",
    description: "paper KKN (nf 16) training step with the frozen teacher decoder, 64^3",
    backends: ["cpu"],
    async run(steps: number) {
      const t = new Teacher({ ...DEFAULT_TEACHER }, 0);
      const k = new KnowledgeKeeper({ ...DEFAULT_KEEPER }, 1);
      const x = tf.randomUniform([1, ...GRID, 1], 0, 1, "float32", 2) as tf.Tensor5D;
      const y = tf.randomUniform([1, ...GRID, 1], 0, 1, "float32", 3) as tf.Tensor5D;
      const target = t.encoder.apply(y);
      const opt = adam(2e-4);
      const step = await medianSeconds(() =>
        tf.dispose(
          opt.minimize(
            () => {
              const f = k.apply(x);
              return tf.add(
                distillationLoss(target, f, "paper"),
                tf.mul(100, l1(t.decoder.apply(f), y)),
              ) as tf.Scalar;
            },
            true,
            k.parameters(),
          )!,
        ), steps);
      return { step_s: step, note: `${(k.parameterCount() / 1e6).toFixed(2)} M parameters` };
    },
  },
  {
    name: "phantom",
    heavy: true,
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
  {
    name: "main",
    heavy: true,
    description: "the main job: deno task train on the default profile (targets: < 20 min, < 4 GiB)",
    backends: ["cpu"],
    async run() {
      const out = await Deno.makeTempDir({ prefix: "bench-main-" });
      try {
        const t0 = performance.now();
        const r = await new Deno.Command(Deno.execPath(), {
          args: [
            "run",
            "-A",
            new URL("../scripts/train.ts", import.meta.url).pathname,
            "--out",
            out,
            "--progress=false",
          ],
          stdout: "null",
          stderr: "null",
        }).output();
        const metrics = JSON.parse(await Deno.readTextFile(`${out}/default/metrics.json`));
        return {
          step_s: (performance.now() - t0) / 1000,
          note: `seconds; exit ${r.code}; peak RSS ${metrics.peakRssMiB?.toFixed(0)} MiB (child)`,
        };
      } finally {
        await Deno.remove(out, { recursive: true });
      }
    },
  },
];
