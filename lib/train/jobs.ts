/**
 * A `deno task train` invocation as a graph of jobs, each runnable alone in its own process
 * (`deno task train <options> --only <job>`), so a cluster can run them in parallel
 * (`deno task slurm`, `lib/train/slurm.ts`) with the same results as the in-process run.
 *
 * - **Jobs** are the units the in-process run (`runTraining`) goes through, in its order: per fold
 *   the teacher (`teacher-fold2`), the KKN (`keeper-fold2`) and the fold's test scores
 *   (`evaluate-fold2`); the tissue segmentation stages (`fusion-baseline`, the epoch-matched
 *   control `fusion-control`, the AFM-guided `fusion-guided`, and `fusion-guided-fold2` ... under
 *   `fusion.keeperFolds` "each") and their test scores (`fusion-evaluate`); the decoder of Table 1
 *   (d) (`decoder-fold2`); the whole-brain task's per-view teacher, KKN and stages
 *   (`axial-teacher-fold1`, `axial-keeper-fold1`, `axial-baseline`, `axial-control`,
 *   `axial-guided`; a 3D network's `wholebrain-baseline` ...) and its scores
 *   (`wholebrain-evaluate`). A phase the in-process run would load instead of train (its best
 *   checkpoint is already in the run folder) is no job, exactly as `runTraining` decides.
 * - **Dependencies** are checkpoints: a job needs the best checkpoints it reads, and the job of
 *   the plan that writes each must have finished (`jobs/<id>/result.json`).
 * - **Training jobs** call the phase functions of `lib/train/pipeline.ts` as `runTraining` does;
 *   a segmentation stage is set up as `trainFusion` / the whole-brain stages set it up.
 *   **Evaluation jobs** call `evaluateFold`, `trainFusion` and `trainWholeBrain` themselves once
 *   every stage has finished: those find each stage's finished last checkpoint, train nothing and
 *   compute the run's scores with the in-process code.
 * - **Files**: the plan is written once per phase (`jobs/plan-<phase>.json`, with `config.json`
 *   and `data.json`, under the run's lock) and read by every job and by `collectRun`, so the
 *   graph does not change while jobs finish. A job writes only its own checkpoints and
 *   `jobs/<id>/` (`log.jsonl`, `result.json`, a `.lock` while it runs); a job whose result exists
 *   is never rerun. `collectRun` merges the results into `metrics.json`, `metrics.csv` and
 *   `log.jsonl` as the in-process run writes them.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { UsageError } from "../cli.ts";
import { currentBackend } from "../backend.ts";
import { DamagedFileError, readJsonFile } from "../io/json.ts";
import { peakRssMiB } from "../memory.ts";
import { writeFileAtomic } from "../io/nifti.ts";
import { loadCohort } from "../data/cohort.ts";
import { type View, VIEWS } from "../data/views.ts";
import { KnowledgeKeeper } from "../models/keeper.ts";
import { networkLabel } from "../models/networks.ts";
import { loaded } from "./state.ts";
import type { ConvergenceReport } from "./schedule.ts";
import {
  type BaselineMetrics,
  buildGuided,
  buildKeeper,
  buildSegmenter,
  buildTeacher,
  ckpt,
  type Context,
  type DecoderMetrics,
  evaluateFold,
  type FoldMetrics,
  type FoldSplit,
  foldSplits,
  type FusionMetrics,
  guidedStage,
  networkSpec,
  type RunConfig,
  seedOf,
  tissueSplits,
  trainBaseline,
  trainDecoder,
  trainFusion,
  trainKeeper,
  trainSegmenter,
  trainTeacher,
  unguidedStage,
  writeJson,
} from "./pipeline.ts";
import {
  isSliceNetwork,
  trainStage,
  trainWholeBrain,
  viewContext,
  viewData,
  type WholeBrainMetrics,
  wholeBrainSplits,
} from "./wholebrain.ts";
import type { BrainMaskMetrics } from "./brainmask.ts";
import {
  brainMaskPhase,
  brainMaskSummary,
  checkGenerated,
  checkRunData,
  describeHolder,
  lockRun,
  type PreparedRun,
  prepareRun,
  type RunMetrics,
  summary,
  synthesize,
  takeLock,
  wholeBrainSummary,
  writeMetrics,
} from "./run.ts";

/** What a job does. */
export type JobKind =
  | "teacher"
  | "keeper"
  | "evaluate"
  | "decoder"
  | "baseline"
  | "control"
  | "guided"
  | "fusion-evaluate"
  | "wb-teacher"
  | "wb-keeper"
  | "wb-baseline"
  | "wb-control"
  | "wb-guided"
  | "wb-evaluate"
  | "brainmask";

/** One job of a run's graph. */
export interface Job {
  /** Stable id, e.g. `teacher-fold2`, `fusion-baseline`, `axial-guided`. */
  id: string;
  kind: JobKind;
  /** The paired-cohort fold (teacher, KKN, evaluation, decoder; the guiding KKN's fold). */
  fold?: number;
  /** The whole-brain view of a 2D network's job, null for a 3D network's. */
  view?: View | null;
  /** What it runs, in words. */
  runs: string;
  /** Jobs of the plan that must have finished first (those that write what it reads). */
  after: string[];
  /** Best checkpoints it reads (under `checkpoints/`), each with the job of the plan writing it. */
  needs: { checkpoint: string; job: string | null }[];
  /** Checkpoints it writes (`-best`, `-last` of each). */
  writes: string[];
  /**
   * Whether it trains: its convergence verdicts and log lines are the run's. Evaluation jobs
   * replay finished stages (their verdicts are those of the stage jobs) and only score.
   */
  trains: boolean;
  /** 0 for a job that needs no other job, else one more than the highest level it comes after. */
  level: number;
}

/** A run's jobs for one `--phase`, in the order the in-process run goes through them. */
export interface JobPlan {
  phase: string;
  jobs: Job[];
}

/** What a finished job leaves in `jobs/<id>/result.json`. */
export interface JobResult {
  id: string;
  kind: JobKind;
  finished: string;
  host: string;
  /** The backend that ran it (`currentBackend()`). */
  backend: RunMetrics["backend"];
  wallSeconds: number;
  peakRssMiB: number | null;
  /** Convergence verdicts of the phases it trained (none for evaluation jobs). */
  reports: ConvergenceReport[];
  /** Scores: `evaluate` its fold's `folds`, `baseline` `baseline`, `decoder` `decoder`, ... */
  output: {
    folds?: FoldMetrics[];
    baseline?: BaselineMetrics;
    decoder?: DecoderMetrics;
    fusion?: FusionMetrics;
    wholebrain?: WholeBrainMetrics;
    brainmask?: BrainMaskMetrics | null;
  };
}

/** The phases `deno task train --phase` takes. */
export const PHASES = [
  "teacher",
  "keeper",
  "fusion",
  "all",
  "baseline",
  "decoder",
  "wholebrain",
  "brainmask",
] as const;

/**
 * The job graph of `--phase phase` for a run of configuration `cfg`; `has(name)` says whether
 * the run folder holds the best checkpoint `name` (e.g. `teacher-fold1-best`) already, which
 * decides, as in `runTraining`, whether a phase is trained or loaded.
 */
export function planJobs(cfg: RunConfig, phase: string, has: (checkpoint: string) => boolean): JobPlan {
  if (!(PHASES as readonly string[]).includes(phase)) {
    throw new UsageError(`--phase ${phase}: not one of ${PHASES.join(", ")}`);
  }
  const jobs: Job[] = [];
  const writer = new Map<string, string>(); // best checkpoint -> job id
  const add = (job: Omit<Job, "after" | "level" | "needs"> & { needs: string[] }) => {
    const needs = job.needs.map((name) => ({
      checkpoint: `${name}-best`,
      job: writer.get(`${name}-best`) ?? null,
    }));
    const after = [...new Set(needs.flatMap((n) => (n.job ? [n.job] : [])))];
    const level = after.reduce((l, id) => Math.max(l, jobs.find((j) => j.id === id)!.level + 1), 0);
    jobs.push({ ...job, needs, after, level });
    for (const w of job.writes) writer.set(`${w}-best`, job.id);
  };
  const trainsTeacher = (f: number) =>
    phase === "teacher" || phase === "all" || !has(`teacher-fold${f}-best`);
  const trainsKeeper = (f: number) =>
    !((phase === "fusion" || phase === "decoder") && has(`keeper-fold${f}-best`));
  const teacherJob = (f: number) =>
    add({
      id: `teacher-fold${f}`,
      kind: "teacher",
      fold: f,
      runs: `phase 1: the teacher of fold ${f}`,
      needs: [],
      writes: [`teacher-fold${f}`],
      trains: true,
    });
  const keeperJob = (f: number) =>
    add({
      id: `keeper-fold${f}`,
      kind: "keeper",
      fold: f,
      runs: `phase 2: the KKN of fold ${f} (teacher frozen)`,
      needs: [`teacher-fold${f}`],
      writes: [`keeper-fold${f}`],
      trains: true,
    });
  const tissueFolds = phase === "baseline" || phase === "wholebrain" || phase === "brainmask" ? 0 : cfg.folds;
  for (let f = 1; f <= tissueFolds; f++) {
    if (trainsTeacher(f)) teacherJob(f);
    if (phase === "teacher") continue;
    if (trainsKeeper(f)) keeperJob(f);
    add({
      id: `evaluate-fold${f}`,
      kind: "evaluate",
      fold: f,
      runs: `fold ${f}'s test subjects: teacher and KKN synthesis scores, 3T floor, feature distances`,
      needs: [`teacher-fold${f}`, `keeper-fold${f}`],
      writes: [],
      trains: false,
    });
    if (phase === "decoder") {
      add({
        id: `decoder-fold${f}`,
        kind: "decoder",
        fold: f,
        runs: `Table 1 (d): a U-Net decoder on fold ${f}'s frozen KKN, and its control`,
        needs: [`keeper-fold${f}`],
        writes: [`decoder-fold${f}`, `paired-${networkSpec(cfg).network}-fold${f}`],
        trains: true,
      });
    }
  }
  const synthesized = cfg.fusion.input === "synthesized" ? ["teacher-fold1", "keeper-fold1"] : [];
  const label = networkLabel(networkSpec(cfg));
  if (phase === "fusion" || phase === "all" || phase === "baseline") {
    add({
      id: "fusion-baseline",
      kind: "baseline",
      runs: `phase 3: the baseline ${label} on the tissue cohort, its test Dice`,
      needs: synthesized,
      writes: ["baseline"],
      trains: true,
    });
  }
  if (phase === "fusion" || phase === "all") {
    add({
      id: "fusion-control",
      kind: "control",
      runs: `phase 3: the epoch-matched control (the best baseline trained on, no AFM)`,
      needs: [...synthesized, "baseline"],
      writes: ["baseline-matched"],
      trains: true,
    });
    const random = (cfg.fusion.keeper ?? "trained") === "random";
    const guiding = random ? [1] : cfg.fusion.keeperFolds === "each" ? range(cfg.folds) : [1];
    for (const g of guiding) {
      add({
        id: g === 1 ? "fusion-guided" : `fusion-guided-fold${g}`,
        kind: "guided",
        fold: g,
        runs: `phase 3: the best baseline fine-tuned with AFMs, ${
          random ? "an untrained KKN (fusion.keeper random)" : `fold ${g}'s KKN frozen`
        }`,
        needs: [...synthesized, "baseline", ...(random ? [] : [`keeper-fold${g}`])],
        writes: [g === 1 ? "guided" : `guided-fold${g}`],
        trains: true,
      });
    }
    add({
      id: "fusion-evaluate",
      kind: "fusion-evaluate",
      runs: "phase 3's test Dice of baseline, control and AFM-guided network, paired t-tests",
      needs: [
        ...new Set([
          ...synthesized,
          ...(random ? [] : guiding.map((g) => `keeper-fold${g}`)),
          "baseline",
          "baseline-matched",
          ...guiding.map((g) => (g === 1 ? "guided" : `guided-fold${g}`)),
        ]),
      ],
      writes: random ? ["keeper-random"] : [],
      trains: false,
    });
  }
  if (phase === "wholebrain") planWholeBrain(cfg, has, add);
  if (phase === "all" || phase === "brainmask") {
    add({
      id: "brainmask",
      kind: "brainmask",
      runs: "brain extraction: the brain-mask network on the full-head phantom scans, its test Dice",
      needs: [],
      writes: ["brainmask-baseline"],
      trains: true,
    });
  }
  return { phase, jobs };
}

function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i + 1);
}

/** The whole-brain phase's jobs (`trainWholeBrain`'s order): per view teacher and KKN, then stages. */
function planWholeBrain(
  cfg: RunConfig,
  has: (checkpoint: string) => boolean,
  add: (job: Omit<Job, "after" | "level" | "needs"> & { needs: string[] }) => void,
): void {
  const slices = isSliceNetwork(cfg);
  const views: (View | null)[] = slices ? [...VIEWS] : [null];
  const label = networkLabel(
    networkSpec({ ...cfg, fusion: { ...cfg.fusion, network: cfg.wholebrain.network } }),
  );
  if (slices) {
    for (const view of VIEWS) {
      if (!has(`${view}-teacher-fold1-best`)) {
        add({
          id: `${view}-teacher-fold1`,
          kind: "wb-teacher",
          fold: 1,
          view,
          runs: `whole brain: the ${view} 2D teacher (fold 1)`,
          needs: [],
          writes: [`${view}-teacher-fold1`],
          trains: true,
        });
      }
      if (!has(`${view}-keeper-fold1-best`)) {
        add({
          id: `${view}-keeper-fold1`,
          kind: "wb-keeper",
          fold: 1,
          view,
          runs: `whole brain: the ${view} 2D KKN (fold 1)`,
          needs: [`${view}-teacher-fold1`],
          writes: [`${view}-keeper-fold1`],
          trains: true,
        });
      }
    }
  } else if (!has("keeper-fold1-best")) {
    // the 3D KKN of fold 1 (its teacher loaded when present), as `runTraining` makes it
    if (!has("teacher-fold1-best")) {
      add({
        id: "teacher-fold1",
        kind: "teacher",
        fold: 1,
        runs: "phase 1: the teacher of fold 1",
        needs: [],
        writes: ["teacher-fold1"],
        trains: true,
      });
    }
    add({
      id: "keeper-fold1",
      kind: "keeper",
      fold: 1,
      runs: "phase 2: the KKN of fold 1 (teacher frozen)",
      needs: ["teacher-fold1"],
      writes: ["keeper-fold1"],
      trains: true,
    });
  }
  const needs: string[] = [];
  for (const view of views) {
    const prefix = view ? `${view}-` : "wholebrain-";
    const keeper = view ? `${view}-keeper-fold1` : "keeper-fold1";
    const what = `whole brain: ${label}${view ? ` ${view}` : ""}`;
    add({
      id: `${prefix}baseline`,
      kind: "wb-baseline",
      view,
      runs: `${what}, baseline`,
      needs: [],
      writes: [`${prefix}baseline`],
      trains: true,
    });
    add({
      id: `${prefix}control`,
      kind: "wb-control",
      view,
      runs: `${what}, epoch-matched control`,
      needs: [`${prefix}baseline`],
      writes: [`${prefix}baseline-matched`],
      trains: true,
    });
    add({
      id: `${prefix}guided`,
      kind: "wb-guided",
      view,
      runs: `${what} + AFM (${view ?? "3D"} KKN frozen)`,
      needs: [`${prefix}baseline`, keeper],
      writes: [`${prefix}guided`],
      trains: true,
    });
    if (view) needs.push(`${view}-teacher-fold1`);
    needs.push(keeper, `${prefix}baseline`, `${prefix}baseline-matched`, `${prefix}guided`);
  }
  add({
    id: "wholebrain-evaluate",
    kind: "wb-evaluate",
    runs: `whole brain: ${
      slices ? "synthesis per view and aggregated, " : ""
    }test Dice of the 27 structures (views aggregated), paired t-tests`,
    needs,
    writes: [],
    trains: false,
  });
}

/** `jobs/` of a run folder. */
export function jobsDir(runDir: string): string {
  return join(runDir, "jobs");
}

/** Where a job's result is written when it finishes. */
export function resultPath(runDir: string, id: string): string {
  return join(runDir, "jobs", id, "result.json");
}

/** The plan file of a phase. */
export function planPath(runDir: string, phase: string): string {
  return join(runDir, "jobs", `plan-${phase}.json`);
}

/** Whether a job of the run has finished (its result is there). */
export function finished(runDir: string, id: string): boolean {
  return existsSync(resultPath(runDir, id));
}

/** A job's result. */
export async function readResult(runDir: string, id: string): Promise<JobResult> {
  return await readJsonFile<JobResult>(resultPath(runDir, id), `job ${id}'s result`);
}

/** A phase's written plan, or null when the phase has none yet. */
export async function readPlan(runDir: string, phase: string): Promise<JobPlan | null> {
  const path = planPath(runDir, phase);
  if (!existsSync(path)) return null;
  const plan = await readJsonFile<JobPlan>(path, "the run's job plan");
  if (plan?.phase !== phase || !Array.isArray(plan.jobs)) {
    throw new DamagedFileError(path, `not the job plan of --phase ${phase}`);
  }
  return plan;
}

/** The phases a run folder holds plans of. */
export async function plannedPhases(runDir: string): Promise<string[]> {
  const out: string[] = [];
  if (!existsSync(jobsDir(runDir))) return out;
  for await (const e of Deno.readDir(jobsDir(runDir))) {
    const m = e.isFile ? /^plan-(.+)\.json$/.exec(e.name) : null;
    if (m) out.push(m[1]);
  }
  return out.sort();
}

/** The phase's plan as written, else computed from the run folder's checkpoints (writes nothing). */
export async function currentPlan(run: PreparedRun, phase: string): Promise<JobPlan> {
  return await readPlan(run.runDir, phase) ??
    planJobs(run.cfg, phase, (name) => existsSync(join(run.runDir, "checkpoints", `${name}.json`)));
}

/**
 * Writes the run-level files once, before any job: `config.json` and `data.json` when absent
 * (checked when present) and the phase's plan (read when present), under the run folder's lock
 * (waiting for another job's setup; refused while an in-process run trains). With `job`, that
 * job's lock is taken before the run's lock is released. Returns the plan (and the job's lock).
 */
export async function setUpJobs(
  run: PreparedRun,
  phase: string,
  job?: string,
): Promise<{ plan: JobPlan; release?: () => Promise<void> }> {
  await Deno.mkdir(jobsDir(run.runDir), { recursive: true });
  const releaseRun = await lockRun(run.runDir, { purpose: "job setup", waitSeconds: 120 });
  try {
    if (!existsSync(run.configPath)) await writeJson(run.configPath, run.cfg);
    await checkRunData(run.runDir, run.data, { write: false });
    let plan = await readPlan(run.runDir, phase);
    if (!plan) {
      plan = planJobs(run.cfg, phase, (name) => existsSync(join(run.runDir, "checkpoints", `${name}.json`)));
      await writeJson(planPath(run.runDir, phase), plan);
    }
    if (job === undefined) return { plan };
    if (!plan.jobs.some((j) => j.id === job)) {
      throw new UsageError(
        `--only ${job}: no such job in the plan of --phase ${phase} (${
          plan.jobs.map((j) => j.id).join(", ")
        })`,
      );
    }
    await Deno.mkdir(join(jobsDir(run.runDir), job), { recursive: true });
    const slurm = Deno.env.get("SLURM_JOB_ID");
    const taken = await takeLock(
      join(jobsDir(run.runDir), job, ".lock"),
      `job ${job}${slurm ? ` (Slurm job ${slurm})` : ""}`,
    );
    if ("holder" in taken) {
      throw new UsageError(
        `job ${job} of ${run.runDir} is running already (${
          describeHolder(taken.holder)
        }, ${taken.holder.purpose})`,
      );
    }
    return { plan, release: taken.release };
  } finally {
    await releaseRun();
  }
}

/** The reason a job cannot run yet (a missing checkpoint or an unfinished job it needs), or null. */
export function missingDependency(runDir: string, plan: JobPlan, job: Job): string | null {
  for (const { checkpoint, job: writer } of job.needs) {
    const file = join(runDir, "checkpoints", `${checkpoint}.json`);
    if (writer && !finished(runDir, writer)) {
      return `job ${job.id} needs ${file}, written by job ${writer}, which has not finished ` +
        `(${resultPath(runDir, writer)} missing): run ${writer} first (--only ${writer})`;
    }
    if (!existsSync(file)) {
      return `job ${job.id} needs ${file}, which is missing` +
        (writer
          ? ` although job ${writer} finished (removed since?)`
          : ` and no job of --phase ${plan.phase} writes it (train it into ${runDir} first)`);
    }
  }
  return null;
}

/**
 * `deno task train <options> --only <id>`: runs exactly one job of the run's graph in this
 * process (setting up the run-level files and the plan first when no job has), unless it has
 * finished already. Its dependencies must have finished, else a `UsageError` names the missing
 * checkpoint and the job that writes it. Returns the job's result.
 */
export async function runJob(
  opts: Record<string, string | number | boolean | undefined>,
  id: string,
): Promise<JobResult> {
  const run = await prepareRun(opts);
  const phase = String(opts.phase ?? "all");
  const { plan, release } = await setUpJobs(run, phase, id);
  try {
    const job = plan.jobs.find((j) => j.id === id)!;
    if (finished(run.runDir, id)) {
      console.log(`job ${id}: finished (${resultPath(run.runDir, id)}), not rerun`);
      return await readResult(run.runDir, id);
    }
    const missing = missingDependency(run.runDir, plan, job);
    if (missing) throw new UsageError(missing);
    await removeJobOrphans(run.runDir, job);
    const t0 = performance.now();
    const ctx: Context = {
      cfg: run.cfg,
      runDir: run.runDir,
      reports: [],
      allowUnconverged: opts["allow-unconverged"] === true,
      log: async (line) =>
        await Deno.writeTextFile(
          join(jobsDir(run.runDir), id, "log.jsonl"),
          JSON.stringify({ time: new Date().toISOString(), ...line }) + "\n",
          { append: true },
        ),
    };
    const output = await execute(job, ctx, run, opts.data !== undefined);
    const rss = peakRssMiB();
    const result: JobResult = {
      id,
      kind: job.kind,
      finished: new Date().toISOString(),
      host: Deno.hostname(),
      backend: currentBackend(),
      wallSeconds: (performance.now() - t0) / 1000,
      peakRssMiB: Number.isFinite(rss) ? rss : null,
      reports: job.trains ? ctx.reports : [],
      output,
    };
    await writeJson(resultPath(run.runDir, id), result);
    console.log(`job ${id}: finished in ${result.wallSeconds.toFixed(1)} s (${resultPath(run.runDir, id)})`);
    return result;
  } finally {
    await release!();
  }
}

/**
 * Temporary files a killed attempt of this job left: its checkpoints' (`<name>-best.*.tmp`,
 * `<name>-last.*.tmp`) and its folder's; never another job's.
 */
async function removeJobOrphans(runDir: string, job: Job): Promise<void> {
  const prefixes = job.writes.flatMap((w) => [`${w}-best.`, `${w}-last.`]);
  for (
    const [dir, own] of [
      [join(runDir, "checkpoints"), (name: string) => prefixes.some((p) => name.startsWith(p))],
      [join(jobsDir(runDir), job.id), () => true],
    ] as const
  ) {
    if (!existsSync(dir)) continue;
    for await (const e of Deno.readDir(dir)) {
      if (e.isFile && e.name.endsWith(".tmp") && own(e.name)) {
        await Deno.remove(join(dir, e.name)).catch(() => {});
      }
    }
  }
}

/** Runs one job; returns its scores. */
async function execute(
  job: Job,
  ctx: Context,
  run: PreparedRun,
  ownData: boolean,
): Promise<JobResult["output"]> {
  const { cfg, runDir, data } = run;
  const paired = await loadCohort(join(data, "paired"));
  if (!ownData) checkGenerated(join(data, "paired"), paired.manifest.generatorVersion);
  let splits: FoldSplit[];
  try {
    splits = foldSplits(paired.subjects, cfg);
  } catch (err) {
    throw err instanceof RangeError ? new UsageError(`${join(data, "paired")}: ${err.message}`) : err;
  }
  const split = splits[(job.fold ?? 1) - 1];
  const path = (name: string) => join(runDir, "checkpoints", name);
  const teacherOf = (f: number) => loaded(buildTeacher(cfg, f), path(`teacher-fold${f}-best`));
  const keeperOf = (f: number) => loaded(buildKeeper(cfg, f), path(`keeper-fold${f}-best`), "keeper.");
  const tissue = async () => {
    const subjects = (await loadCohort(join(data, "tissue"))).subjects;
    if (cfg.fusion.input === "synthesized") await synthesize(runDir, cfg, subjects);
    return subjects;
  };
  switch (job.kind) {
    case "teacher":
      (await trainTeacher(ctx, split)).dispose();
      return {};
    case "keeper": {
      const teacher = await teacherOf(split.fold);
      (await trainKeeper(ctx, split, teacher)).dispose();
      teacher.dispose();
      return {};
    }
    case "evaluate": {
      const teacher = await teacherOf(split.fold), kkn = await keeperOf(split.fold);
      const folds = await evaluateFold(split, teacher, kkn);
      teacher.dispose();
      kkn.dispose();
      return { folds };
    }
    case "decoder": {
      const kkn = await keeperOf(split.fold);
      const decoder = await trainDecoder(ctx, split, kkn);
      kkn.dispose();
      return { decoder };
    }
    case "baseline": {
      const trained = await trainBaseline(ctx, await tissue());
      trained.net.dispose();
      return { baseline: trained.metrics };
    }
    case "control":
    case "guided": {
      const data = tissueSplits(cfg, await tissue());
      const spec = networkSpec(cfg), label = networkLabel(spec);
      const net = await loaded(buildSegmenter(cfg, spec), ckpt(ctx, "baseline-best"));
      if (job.kind === "control") {
        await trainSegmenter(ctx, data, unguidedStage(ctx, net, "baseline-matched", label, { spec }));
        net.dispose();
        return {};
      }
      const random = (cfg.fusion.keeper ?? "trained") === "random";
      const fold = job.fold ?? 1;
      const kkn = random ? new KnowledgeKeeper(cfg.keeper, seedOf(cfg.seed, 6)) : await keeperOf(fold);
      const guiding = !random && cfg.fusion.keeperFolds === "each" ? cfg.folds : 1;
      const guided = buildGuided(cfg, net, kkn.widths);
      await trainSegmenter(
        ctx,
        data,
        guidedStage(ctx, guided, kkn, {
          label: guiding > 1 ? `${label} + AFM, KKN fold ${fold}` : `${label} + AFM`,
          name: fold === 1 ? "guided" : `guided-fold${fold}`,
          keeperCheckpoint: random ? "keeper-random" : `keeper-fold${fold}-best`,
          auxDecay: net.auxDecay ?? 0,
          meta: { spec },
        }),
      );
      guided.dispose();
      kkn.dispose();
      return {};
    }
    case "fusion-evaluate": {
      // every stage has finished: trainFusion resumes each from its last checkpoint (no step is
      // trained), scores the test subjects and writes the random KKN's checkpoint when it is one
      const subjects = (await loadCohort(join(data, "tissue"))).subjects;
      const random = (cfg.fusion.keeper ?? "trained") === "random";
      const folds = random ? [] : cfg.fusion.keeperFolds === "each" ? range(cfg.folds) : [1];
      const guiding = [];
      for (const fold of folds) guiding.push({ fold, kkn: await keeperOf(fold) });
      if (cfg.fusion.input === "synthesized") await synthesize(runDir, cfg, subjects, guiding[0]?.kkn);
      const fusion = await trainFusion(ctx, subjects, guiding);
      for (const { kkn } of guiding) kkn.dispose();
      return { fusion };
    }
    case "wb-teacher": {
      const v = viewContext(ctx, job.view!, false);
      (await trainTeacher(v, split)).dispose();
      return {};
    }
    case "wb-keeper": {
      const v = viewContext(ctx, job.view!, false);
      const teacher = await loaded(
        buildTeacher(v.cfg, split.fold),
        ckpt(v, `teacher-fold${split.fold}-best`),
      );
      (await trainKeeper(v, split, teacher)).dispose();
      teacher.dispose();
      return {};
    }
    case "wb-baseline":
    case "wb-control":
    case "wb-guided": {
      const view = job.view ?? null;
      const v = viewContext(ctx, view);
      const d = viewData(wholeBrainSplits((await loadCohort(join(data, "wholebrain"))).subjects), view);
      const stage = job.kind === "wb-baseline"
        ? "baseline"
        : job.kind === "wb-control"
        ? "baseline-matched"
        : "guided";
      if (stage !== "guided") {
        await trainStage(v, d, stage);
        return {};
      }
      const keeperContext = view ? viewContext(ctx, view, false) : ctx;
      const kkn = await loaded(
        buildKeeper(keeperContext.cfg, 1),
        ckpt(keeperContext, "keeper-fold1-best"),
        "keeper.",
      );
      await trainStage(v, d, stage, kkn);
      kkn.dispose();
      return {};
    }
    case "brainmask":
      return { brainmask: await brainMaskPhase(ctx, data, run.profile, ownData) };
    case "wb-evaluate": {
      // every view's teacher, KKN and stages have finished: trainWholeBrain loads or resumes
      // each (no step is trained) and scores the test scans, views aggregated
      const subjects = (await loadCohort(join(data, "wholebrain"))).subjects;
      const wholebrain = await trainWholeBrain(ctx, splits[0], subjects, () => keeperOf(1));
      return { wholebrain };
    }
  }
}

/** The lines of `--plan-only`: each job with its level, dependencies, what it runs and its state. */
export function formatPlan(runDir: string, plan: JobPlan, written: boolean): string {
  const levels = plan.jobs.reduce((l, j) => Math.max(l, j.level + 1), 0);
  const lines = [
    `${runDir}, --phase ${plan.phase}: ${plan.jobs.length} jobs in ${levels} levels (${
      written ? `plan written in ${planPath(runDir, plan.phase)}` : "plan not written yet"
    })`,
  ];
  const idWidth = Math.max(...plan.jobs.map((j) => j.id.length), 3);
  lines.push(`level  ${"job".padEnd(idWidth)}  runs (after: the jobs it waits for)`);
  for (const j of plan.jobs) {
    const reads = j.needs.filter((n) => !n.job).map((n) => n.checkpoint);
    lines.push(
      `${String(j.level).padEnd(5)}  ${j.id.padEnd(idWidth)}  ${j.runs}${
        reads.length ? `; reads ${reads.join(", ")} from the run folder` : ""
      }${j.after.length ? ` (after: ${j.after.join(", ")})` : ""}${
        finished(runDir, j.id) ? " [finished]" : ""
      }`,
    );
  }
  return lines.join("\n");
}

/** `--plan-only`: the job graph of a `deno task train` invocation, trained nothing, written nothing. */
export async function planOnly(opts: Record<string, string | number | boolean | undefined>): Promise<string> {
  const run = await prepareRun(opts, { dryRun: true });
  const phase = String(opts.phase ?? "all");
  const written = await readPlan(run.runDir, phase);
  return formatPlan(run.runDir, written ?? await currentPlan(run, phase), written !== null);
}

/**
 * The phase a command means for a run folder: `phase` when given, else the one phase it holds a
 * plan of (several: a usage error naming them).
 */
export async function phaseOf(runDir: string, phase: string | undefined): Promise<string> {
  if (phase) return phase;
  const phases = await plannedPhases(runDir);
  if (phases.length === 1) return phases[0];
  throw new UsageError(
    phases.length
      ? `${runDir} holds job plans of several phases (${phases.join(", ")}): pick one with --phase`
      : `${runDir} holds no job plan (jobs/plan-<phase>.json): submit or run its jobs first`,
  );
}

/**
 * Merges every job's result into the run's `metrics.json` and `metrics.csv` as `runTraining`
 * writes them (scores, convergence verdicts in the in-process order; `wallSeconds` is the sum of
 * the jobs' times, `peakRssMiB` the largest job's) and appends the training jobs' log lines to
 * `log.jsonl` (each line once, however often it is collected). Every job must have finished.
 */
export async function collectRun(runDir: string, phase: string): Promise<RunMetrics> {
  const plan = await readPlan(runDir, phase);
  if (!plan) {
    throw new UsageError(`${planPath(runDir, phase)} missing: no jobs of --phase ${phase} in ${runDir}`);
  }
  const open = plan.jobs.filter((j) => !finished(runDir, j.id)).map((j) => j.id);
  if (open.length) {
    throw new UsageError(
      `${runDir}: ${open.length} of ${plan.jobs.length} jobs have not finished (${open.join(", ")})`,
    );
  }
  const cfg = await readJsonFile<RunConfig>(join(runDir, "config.json"), "the run folder's configuration");
  const record = await readJsonFile<{ data: string }>(
    join(runDir, "data.json"),
    "the run folder's cohort record",
  );
  const paired = await readJsonFile<{ grid: { spacing: unknown } }>(
    join(record.data, "paired", "manifest.json"),
    "the paired cohort's manifest",
  );
  const results = new Map<string, JobResult>();
  for (const j of plan.jobs) results.set(j.id, await readResult(runDir, j.id));
  const all = [...results.values()];
  const of = (kind: JobKind) =>
    plan.jobs.filter((j) => j.kind === kind).map((j) => results.get(j.id)!.output);
  const backends = [...new Set(all.map((r) => JSON.stringify(r.backend ?? null)))];
  if (backends.length > 1) {
    console.error(`warning: the jobs ran on different backends: ${backends.join(", ")}`);
  }
  const rss = all.map((r) => r.peakRssMiB).filter((v): v is number => v !== null);
  const metrics: RunMetrics = {
    run: runDir,
    profile: cfg.profile,
    backend: results.get(plan.jobs[0].id)!.backend,
    data: record.data,
    spacing: paired.grid.spacing,
    wallSeconds: all.reduce((s, r) => s + r.wallSeconds, 0),
    peakRssMiB: rss.length ? Math.max(...rss) : null,
    folds: of("evaluate").flatMap((o) => o.folds ?? []),
    fusion: of("fusion-evaluate")[0]?.fusion ?? null,
    baseline: phase === "baseline" ? of("baseline")[0]?.baseline ?? null : null,
    decoders: of("decoder").map((o) => o.decoder!),
    wholebrain: of("wb-evaluate")[0]?.wholebrain ?? null,
    brainmask: of("brainmask")[0]?.brainmask ?? null,
    convergence: plan.jobs.flatMap((j) => results.get(j.id)!.reports),
  };
  await writeMetrics(runDir, cfg, metrics);
  await mergeLogs(runDir, plan);
  console.log(
    summary(metrics.folds, metrics.fusion, metrics.baseline, metrics.decoders, metrics.wallSeconds),
  );
  if (metrics.wholebrain) console.log(wholeBrainSummary(metrics.wholebrain));
  if (metrics.brainmask) console.log(brainMaskSummary(metrics.brainmask));
  return metrics;
}

/** Appends the training jobs' log lines (plan order) to the run's `log.jsonl`, each line once. */
async function mergeLogs(runDir: string, plan: JobPlan): Promise<void> {
  const path = join(runDir, "log.jsonl");
  const existing = existsSync(path) ? await Deno.readTextFile(path) : "";
  const seen = new Set(existing.split("\n"));
  const added: string[] = [];
  for (const j of plan.jobs.filter((j) => j.trains)) {
    const log = join(jobsDir(runDir), j.id, "log.jsonl");
    if (!existsSync(log)) continue;
    for (const line of (await Deno.readTextFile(log)).split("\n")) {
      if (line.trim() && !seen.has(line)) {
        seen.add(line);
        added.push(line);
      }
    }
  }
  if (!added.length) return;
  const text = existing && !existing.endsWith("\n") ? `${existing}\n` : existing;
  await writeFileAtomic(path, text + added.join("\n") + "\n");
}
