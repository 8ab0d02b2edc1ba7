/**
 * `deno task train`: the main job. Trains the three phases of the paper (teacher, knowledge
 * keeper, adaptive fusion) on a cohort (by default the embedded phantom cohort) and writes
 * every metric the paper's tables need under `runs/<name>/`.
 */
import { type CommandSpec, runCommand, UsageError } from "../lib/cli.ts";
import { backendOption, initBackend } from "../lib/backend.ts";
import { runTraining } from "../lib/train/run.ts";
import { PHASES, planOnly, runJob } from "../lib/train/jobs.ts";

export { runTraining };

export const TRAIN_COMMAND: CommandSpec = {
  name: "deno task train",
  summary: "train teacher (phase 1), knowledge keeper (phase 2) and adaptive fusion (phase 3)",
  usage: "deno task train [options]",
  options: [
    {
      name: "phase",
      description:
        "which phase(s) to run (baseline: the baseline segmenter alone, e.g. on the noise-free image for a ceiling; decoder: a U-Net decoder on each fold's frozen KKN, Table 1 (d); wholebrain: the 27-structure task, Table 3; brainmask: brain extraction on full-head phantom scans, also part of all)",
      choices: [...PHASES],
      default: "all",
    },
    {
      name: "profile",
      description: "cohort and model size",
      choices: ["quick", "default", "long", "paper"],
      default: "default",
    },
    backendOption(),
    {
      name: "epochs",
      description:
        "validation rounds per phase, each of the phase's steps per round (an epoch in the paper profile)",
      type: "integer",
    },
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
      name: "allow-unconverged",
      description:
        "continue (with a warning) when a phase ends with its validation score still rising or below its floor",
      type: "boolean",
      default: false,
    },
    {
      name: "progress",
      description: "show the progress line (--progress=false to hide)",
      type: "boolean",
      default: true,
    },
    {
      name: "plan-only",
      description:
        "print the run's job graph (job ids, dependencies, what each runs) and train nothing (see deno task slurm)",
      type: "boolean",
      default: false,
    },
    {
      name: "only",
      description:
        "run exactly one job of the graph (an id --plan-only prints); the jobs it depends on must have finished; a finished job is not rerun",
    },
  ],
  notes: [
    "Results: <out>/<name>/config.json (resolved), checkpoints/, log.jsonl, metrics.json and metrics.csv.",
    "Jobs (--only): <out>/<name>/jobs/<id>/ (result.json, log.jsonl); deno task slurm collect merges them into metrics.json.",
  ],
};

if (import.meta.main) {
  await runCommand(TRAIN_COMMAND, async (args) => {
    if (args.options["plan-only"]) {
      if (args.options.only !== undefined) throw new UsageError("--plan-only and --only: give one of them");
      console.log(await planOnly(args.options));
      return;
    }
    await initBackend(String(args.options.backend));
    if (args.options.only !== undefined) {
      await runJob(args.options, String(args.options.only));
      return;
    }
    const dir = await runTraining(args.options);
    console.log(`results in ${dir}/ (metrics.json, metrics.csv, log.jsonl, checkpoints/)`);
  });
}
