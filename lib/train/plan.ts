/**
 * Runs derived from a finished run: an "arm" is the source run's configuration with a few
 * settings changed, a phase to train, and checkpoints copied in first (the source's teacher and
 * KKN, or another arm's trained baseline), so that rows of a table differ only in what the table
 * varies. Each arm is an ordinary `deno task train` run folder that resumes like any other; an arm
 * already finished with the same configuration is read, not retrained. Table 2 and the ablation
 * tables (`scripts/table2.ts`, `scripts/tables.ts`) are plans of arms.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { type OptionSpec, UsageError } from "../cli.ts";
import { backendOption } from "../backend.ts";
import { writeFileAtomic } from "../io/nifti.ts";
import type { RunData } from "../report.ts";
import { mergeConfig, withDefaults } from "./pipeline.ts";
import { runTraining } from "./run.ts";
import { copyCheckpoint } from "./state.ts";

export interface Arm {
  /** Run folder suffix: the run is `<runs>/<prefix>-<id>`. */
  id: string;
  /** Deep changes to the source run's configuration. */
  changes: {
    keeper?: Record<string, unknown>;
    fusion?: Record<string, unknown>;
    wholebrain?: Record<string, unknown>;
  };
  phase: "fusion" | "baseline" | "decoder" | "wholebrain";
  /**
   * Checkpoints copied before training: from the source run or from another arm of the plan. A
   * fold 1 name (`teacher-fold1-best`) stands for the same checkpoint of every fold the arm runs.
   */
  copy: { from: "source" | string; names: string[] }[];
}

export const TEACHER_KKN = ["teacher-fold1-best", "keeper-fold1-best"];

/** Where an arm's runs go and how they report. */
export interface PlanOptions {
  runs: string;
  prefix: string;
  progress: boolean;
}

/**
 * The options every plan command shares: the run-name prefix, the folders for the runs and the
 * written tables, the backend and progress bars (`PlanOptions` is made from them).
 */
export function planCommandOptions(prefix: { default: string; runs: string }, out: string): OptionSpec[] {
  return [
    { name: "name", description: `run name prefix: runs/${prefix.runs}`, default: prefix.default },
    { name: "runs", description: "folder the runs go to", default: "runs" },
    { name: "out", description: out, default: "figures" },
    backendOption(),
    { name: "progress", description: "progress bars", type: "boolean", default: true },
  ];
}

/** The `PlanOptions` of a plan command's parsed options (`planCommandOptions`). */
export function planOptions(opts: Record<string, string | number | boolean | undefined>): PlanOptions {
  return { runs: String(opts.runs), prefix: String(opts.name), progress: opts.progress !== false };
}

/**
 * The folds an arm runs: every fold of the source when each fold's KKN guides (`fusion.keeperFolds`
 * "each", the released code's protocol), else fold 1 (the KKN that guides).
 */
export function armFolds(source: RunData): number {
  return source.config.fusion.keeperFolds === "each" ? source.config.folds : 1;
}

/** A fold 1 checkpoint name for each of `folds` folds; other names as they are. */
export function perFold(name: string, folds: number): string[] {
  if (!name.includes("-fold1-")) return [name];
  return Array.from({ length: folds }, (_, f) => name.replace("-fold1-", `-fold${f + 1}-`));
}

/** The arm's configuration: the source's (settings added since it was written at their defaults) changed. */
export function armConfig(arm: Pick<Arm, "changes">, source: RunData): unknown {
  return mergeConfig(withDefaults(source.config, source.config.profile, source.config.seed), arm.changes);
}

/** Trains one arm (or reads it when finished with the same configuration); returns its run folder. */
export async function runArm(
  arm: Arm,
  source: RunData,
  { runs, prefix, progress }: PlanOptions,
): Promise<string> {
  const name = `${prefix}-${arm.id}`;
  const dir = join(runs, name);
  const folds = armFolds(source);
  await Deno.mkdir(join(dir, "checkpoints"), { recursive: true });
  for (const { from, names } of arm.copy) {
    const fromDir = from === "source" ? source.dir : join(runs, `${prefix}-${from}`);
    for (const ck of names.flatMap((n) => perFold(n, folds))) {
      if (existsSync(join(dir, "checkpoints", `${ck}.json`))) continue;
      if (!existsSync(join(fromDir, "checkpoints", `${ck}.json`))) {
        throw new UsageError(`${fromDir}: checkpoints/${ck}.json missing (needed by ${name})`);
      }
      await copyCheckpoint(join(fromDir, "checkpoints", ck), join(dir, "checkpoints", ck));
    }
  }
  if (await finishedArm(arm, source, runs, prefix)) {
    console.log(`${name}: finished, read from ${dir}`);
    return dir;
  }
  const configPath = join(dir, "plan-config.json");
  await writeFileAtomic(configPath, JSON.stringify(armConfig(arm, source), null, 2));
  console.log(`${name}: ${arm.phase} (${JSON.stringify(arm.changes)})`);
  return await runTraining({
    profile: source.config.profile,
    seed: source.config.seed,
    phase: arm.phase,
    config: configPath,
    name,
    out: runs,
    data: source.metrics.data,
    folds,
    progress,
    // an unconverged arm is reported in its table, not fatal to the others
    "allow-unconverged": true,
  });
}

/**
 * The run folder of an arm (`<runs>/<prefix>-<id>`) that finished with the configuration it would
 * be given from `source` now, else null.
 */
export async function finishedArm(
  arm: Pick<Arm, "id" | "changes">,
  source: RunData,
  runs: string,
  prefix: string,
): Promise<string | null> {
  const dir = join(runs, `${prefix}-${arm.id}`);
  const configPath = join(dir, "plan-config.json");
  const config = JSON.stringify(armConfig(arm, source), null, 2);
  return existsSync(join(dir, "metrics.json")) && existsSync(configPath) &&
      await sameConfig(configPath, config, source)
    ? dir
    : null;
}

/**
 * Whether a finished arm's written configuration is `config`; settings added since it was
 * written take their defaults (what the arm ran with), as when a run resumes.
 */
async function sameConfig(path: string, config: string, source: RunData): Promise<boolean> {
  const written = await Deno.readTextFile(path);
  if (written === config) return true;
  try {
    return JSON.stringify(
      withDefaults(JSON.parse(written), source.config.profile, source.config.seed),
      null,
      2,
    ) ===
      config;
  } catch {
    return false; // unreadable, or a setting since removed: retrain
  }
}
