/**
 * `deno task train`: the main job. Trains the three phases of the paper (teacher, knowledge
 * keeper, adaptive fusion) on a cohort (by default the embedded phantom cohort) and writes
 * every metric the paper's tables need under `runs/<name>/`.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { type CommandSpec, runCommand, UsageError } from "../lib/cli.ts";
import { BACKENDS, currentBackend, initBackend } from "../lib/backend.ts";
import { writeFileAtomic } from "../lib/io/nifti.ts";
import type { Module } from "../lib/nn/module.ts";
import type { KnowledgeKeeper } from "../lib/models/keeper.ts";
import { generateCohorts } from "../lib/phantom/cohort.ts";
import { loadCohort } from "../lib/train/data.ts";
import { loadCheckpoint } from "../lib/train/state.ts";
import {
  buildKeeper,
  buildTeacher,
  type Context,
  evaluateFold,
  type FoldMetrics,
  foldSplits,
  type FusionMetrics,
  mergeConfig,
  metricsCsv,
  profileConfig,
  trainFusion,
  trainKeeper,
  trainTeacher,
  writeJson,
} from "../lib/train/pipeline.ts";

export const TRAIN_COMMAND: CommandSpec = {
  name: "deno task train",
  summary: "train teacher (phase 1), knowledge keeper (phase 2) and adaptive fusion (phase 3)",
  usage: "deno task train [options]",
  options: [
    {
      name: "phase",
      description: "which phase(s) to run",
      choices: ["teacher", "keeper", "fusion", "all"],
      default: "all",
    },
    {
      name: "profile",
      description: "cohort and model size",
      choices: ["quick", "default", "paper"],
      default: "default",
    },
    {
      name: "backend",
      description: "compute backend",
      choices: BACKENDS,
      default: "auto",
      env: "TFJS_BACKEND",
    },
    { name: "epochs", description: "epochs per phase (overrides the profile)", type: "integer" },
    {
      name: "folds",
      description: "leave-one-out folds of the paired 3T/7T cohort to run (the paper profile runs all 15)",
      type: "integer",
    },
    { name: "data", description: "cohort folder with manifest.json (generated when absent)" },
    { name: "out", description: "runs folder", default: "runs" },
    { name: "name", description: "run name: results go to <out>/<name>/ (default: <profile>)" },
    {
      name: "config",
      description: "JSON file with any further settings (learning rate, loss weights, widths...)",
    },
    { name: "seed", description: "random seed", type: "integer", default: 0 },
    {
      name: "progress",
      description: "show the progress line (--progress=false to hide)",
      type: "boolean",
      default: true,
    },
  ],
  notes: [
    "Results: <out>/<name>/config.json (resolved), checkpoints/, log.jsonl, metrics.json and metrics.csv.",
  ],
};

export async function runTraining(
  opts: Record<string, string | number | boolean | undefined>,
): Promise<string> {
  const profile = String(opts.profile);
  let cfg = profileConfig(profile, Number(opts.seed));
  if (opts.config) {
    let patch: unknown;
    try {
      patch = JSON.parse(await Deno.readTextFile(String(opts.config)));
    } catch (err) {
      throw new UsageError(`--config ${opts.config}: ${(err as Error).message}`);
    }
    try {
      cfg = mergeConfig(cfg, patch);
    } catch (err) {
      throw new UsageError(`--config ${opts.config}: ${(err as Error).message}`);
    }
  }
  if (opts.epochs !== undefined) {
    const e = Number(opts.epochs);
    if (e < 1) throw new UsageError("--epochs: must be at least 1");
    cfg.teacher.epochs =
      cfg.keeper.epochs =
      cfg.fusion.baselineEpochs =
      cfg.fusion.fusionEpochs =
        e;
  }
  if (opts.folds !== undefined) {
    if (Number(opts.folds) < 1) throw new UsageError("--folds: must be at least 1");
    cfg.folds = Number(opts.folds);
  }
  if (opts.progress === false) cfg.progress = false;
  const data = String(opts.data ?? `data/generated/${profile}`);
  if (!existsSync(join(data, "paired", "manifest.json"))) {
    if (opts.data) throw new UsageError(`--data ${data}: no paired/manifest.json there`);
    console.log(`cohort ${data} absent: generating the "${profile}" phantom cohorts`);
    await generateCohorts(profile as "quick" | "default" | "paper", data, { seed: Number(opts.seed) });
  }
  const runDir = join(String(opts.out), String(opts.name ?? profile));
  await Deno.mkdir(join(runDir, "checkpoints"), { recursive: true });
  const configPath = join(runDir, "config.json");
  if (existsSync(configPath)) {
    const previous = JSON.parse(await Deno.readTextFile(configPath));
    if (JSON.stringify({ ...previous, progress: cfg.progress }) !== JSON.stringify(cfg)) {
      throw new UsageError(
        `${runDir} holds a run with a different configuration; resume it with the same options or pick another --name`,
      );
    }
  }
  await writeJson(configPath, cfg);
  const logPath = join(runDir, "log.jsonl");
  const ctx: Context = {
    cfg,
    runDir,
    log: async (line) =>
      await Deno.writeTextFile(logPath, JSON.stringify({ time: new Date().toISOString(), ...line }) + "\n", {
        append: true,
      }),
  };
  const phase = String(opts.phase);
  const t0 = performance.now();
  const paired = await loadCohort(join(data, "paired"));
  const splits = foldSplits(paired.subjects, cfg.folds);
  const folds: FoldMetrics[] = [];
  let firstKeeper: KnowledgeKeeper | undefined;
  for (const split of splits) {
    const teacher = phase === "teacher" || phase === "all" ||
        !existsSync(join(runDir, "checkpoints", `teacher-fold${split.fold}-best.json`))
      ? await trainTeacher(ctx, split)
      : await loaded(
        buildTeacher(cfg, split.fold),
        join(runDir, "checkpoints", `teacher-fold${split.fold}-best`),
      );
    if (phase === "teacher") continue;
    const kkn =
      phase === "fusion" && existsSync(join(runDir, "checkpoints", `keeper-fold${split.fold}-best.json`))
        ? await loaded(
          buildKeeper(cfg, split.fold),
          join(runDir, "checkpoints", `keeper-fold${split.fold}-best`),
          "keeper.",
        )
        : await trainKeeper(ctx, split, teacher);
    folds.push(await evaluateFold(split, teacher, kkn));
    if (split.fold === 1) firstKeeper = kkn;
    else kkn.dispose();
    teacher.dispose();
  }
  let fusion: FusionMetrics | null = null;
  if ((phase === "fusion" || phase === "all") && firstKeeper) {
    const tissue = await loadCohort(join(data, "tissue"));
    fusion = await trainFusion(ctx, tissue.subjects, firstKeeper);
  }
  const seconds = (performance.now() - t0) / 1000;
  const rss = Deno.readTextFileSync("/proc/self/status").match(/VmHWM:\s+(\d+) kB/);
  const metrics = {
    run: runDir,
    profile,
    backend: currentBackend(),
    data,
    spacing: paired.manifest.grid.spacing,
    wallSeconds: seconds,
    peakRssMiB: rss ? Number(rss[1]) / 1024 : null,
    folds,
    fusion,
  };
  await writeJson(join(runDir, "metrics.json"), metrics);
  await writeFileAtomic(join(runDir, "metrics.csv"), metricsCsv(folds, fusion));
  console.log(summary(folds, fusion, seconds));
  return runDir;
}

async function loaded<M extends Module>(m: M, path: string, prefix = ""): Promise<M> {
  await loadCheckpoint(path, m, {}, prefix);
  return m;
}

function summary(folds: FoldMetrics[], fusion: FusionMetrics | null, seconds: number): string {
  const mean = (v: number[]) => v.reduce((a, b) => a + b, 0) / v.length;
  const lines = [`finished in ${(seconds / 60).toFixed(1)} min`];
  if (folds.length) {
    lines.push(
      `teacher   PSNR ${mean(folds.map((f) => f.teacher.psnr)).toFixed(2)} SSIM ${
        mean(folds.map((f) => f.teacher.ssim)).toFixed(4)
      }`,
      `KKN       PSNR ${mean(folds.map((f) => f.keeper.psnr)).toFixed(2)} SSIM ${
        mean(folds.map((f) => f.keeper.ssim)).toFixed(4)
      }`,
      `3T floor  PSNR ${mean(folds.map((f) => f.floor3T.psnr)).toFixed(2)} SSIM ${
        mean(folds.map((f) => f.floor3T.ssim)).toFixed(4)
      }`,
    );
  }
  if (fusion) {
    for (const t of fusion.tTest) {
      lines.push(
        `Dice ${t.class.padEnd(10)} baseline ${t.baselineMean.toFixed(4)} guided ${
          t.guidedMean.toFixed(4)
        } (paired t p=${t.p.toFixed(3)})`,
      );
    }
  }
  return lines.join("\n");
}

if (import.meta.main) {
  await runCommand(TRAIN_COMMAND, async (args) => {
    await initBackend(String(args.options.backend));
    const dir = await runTraining(args.options);
    console.log(`results in ${dir}/ (metrics.json, metrics.csv, log.jsonl, checkpoints/)`);
  });
}
