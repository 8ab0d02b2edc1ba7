/**
 * `runTraining`: the main job behind `deno task train` (and the notebooks): resolves the
 * configuration (profile defaults, then a JSON config file, then options), generates the phantom
 * cohort when absent, runs the requested phases per fold, and writes `runs/<name>/`.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { UsageError } from "../cli.ts";
import { readJsonFile } from "../io/json.ts";
import { type BackendInfo, currentBackend } from "../backend.ts";
import { peakRssMiB } from "../memory.ts";
import { writeFileAtomic } from "../io/nifti.ts";
import type { KnowledgeKeeper } from "../models/keeper.ts";
import type { ConvergenceReport } from "./schedule.ts";
import { ensureCohorts, GENERATOR_VERSION } from "../phantom/cohort.ts";
import { sha256File } from "../io/hash.ts";
import { loadCohort, type Subject, verifyCohort } from "../data/cohort.ts";
import { loaded } from "./state.ts";
import { trainWholeBrain, type WholeBrainMetrics } from "./wholebrain.ts";
import { type BrainMaskMetrics, trainBrainMask } from "./brainmask.ts";
import { ensureHeadCohort } from "../phantom/head.ts";
import {
  addSyntheses,
  type BaselineMetrics,
  buildKeeper,
  buildTeacher,
  configProblem,
  type Context,
  type DecoderMetrics,
  evaluateFold,
  type FoldMetrics,
  type FoldSplit,
  foldSplits,
  type FusionMetrics,
  mergeConfig,
  metricsCsv,
  profileConfig,
  type RunConfig,
  schedulesOf,
  trainBaseline,
  trainDecoder,
  trainFusion,
  trainKeeper,
  trainTeacher,
  withDefaults,
  writeJson,
} from "./pipeline.ts";

/** A run's name: one folder under the runs folder, never a path out of it. */
export const RUN_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

/** A `deno task train` invocation's run: its resolved configuration, cohort folder and run folder. */
export interface PreparedRun {
  cfg: RunConfig;
  profile: string;
  /** The cohort root (`--data`, else the profile's generated phantom cohort). */
  data: string;
  /** `<out>/<name>`. */
  runDir: string;
  configPath: string;
}

/**
 * `deno task train`: resolves the run (`prepareRun`), takes the run folder's lock, records the
 * configuration and cohort, and trains the requested phases in this process.
 */
export async function runTraining(
  opts: Record<string, string | number | boolean | undefined>,
): Promise<string> {
  const { cfg, profile, data, runDir, configPath } = await prepareRun(opts);
  const releaseLock = await lockRun(runDir);
  try {
    await checkRunData(runDir, data);
    await writeJson(configPath, cfg);
    return await trainInto(runDir, cfg, data, profile, opts);
  } finally {
    await releaseLock();
  }
}

/**
 * Resolves a `deno task train` invocation's configuration (profile defaults, then `--config`,
 * then options), generates the phantom cohort when absent, checks the run name and creates the
 * run folder; a run folder holding another configuration is refused. With `dryRun` nothing is
 * written (no cohort generated, no folder created).
 */
export async function prepareRun(
  opts: Record<string, string | number | boolean | undefined>,
  { dryRun = false }: { dryRun?: boolean } = {},
): Promise<PreparedRun> {
  const profile = String(opts.profile);
  let cfg = profileConfig(profile, Number(opts.seed));
  if (opts.config) {
    let patch: unknown;
    try {
      patch = JSON.parse(await Deno.readTextFile(String(opts.config)));
    } catch (err) {
      throw new UsageError(`--config ${opts.config}: ${(err as Error).message}`);
    }
    if (patch === null || typeof patch !== "object" || Array.isArray(patch)) {
      throw new UsageError(
        `--config ${opts.config}: must hold a JSON object of settings, got ${JSON.stringify(patch)}`,
      );
    }
    try {
      cfg = mergeConfig(cfg, patch);
    } catch (err) {
      throw new UsageError(`--config ${opts.config}: ${(err as Error).message}`);
    }
    const problem = configProblem(cfg);
    if (problem) throw new UsageError(`--config ${opts.config}: ${problem}`);
  }
  if (opts.epochs !== undefined) {
    // rounds per phase: each phase keeps its steps per round (one epoch in the paper profile)
    const e = Number(opts.epochs);
    if (!(e >= 1)) throw new UsageError("--epochs: must be at least 1");
    for (const [, s] of schedulesOf(cfg)) {
      s.steps = e * s.validateEvery;
      s.warmupSteps = Math.min(s.warmupSteps, Math.floor(s.steps / 4));
    }
  }
  if (opts.folds !== undefined) {
    if (Number(opts.folds) < 1) throw new UsageError("--folds: must be at least 1");
    cfg.folds = Number(opts.folds);
  }
  const problem = configProblem(cfg);
  if (problem) throw new UsageError(`${opts.config ? `--config ${opts.config}: ` : ""}${problem}`);
  if (opts.progress === false) cfg.progress = false;
  const data = String(opts.data ?? `data/generated/${cohortProfile(profile)}`);
  if (!existsSync(join(data, "paired", "manifest.json")) && !dryRun) {
    if (opts.data) throw new UsageError(`--data ${data}: no paired/manifest.json there`);
    console.log(`cohort ${data} absent: generating the "${profile}" phantom cohorts`);
    await ensureCohorts(cohortProfile(profile), data, { seed: Number(opts.seed) });
  }
  const name = String(opts.name ?? profile);
  if (!RUN_NAME.test(name)) {
    throw new UsageError(
      `--name ${JSON.stringify(name)}: must be a plain folder name (letters, digits, ".", "_", "-"; ` +
        `not a path), the run goes to ${String(opts.out)}/<name>`,
    );
  }
  const runDir = join(String(opts.out), name);
  if (!dryRun) await Deno.mkdir(join(runDir, "checkpoints"), { recursive: true });
  const configPath = join(runDir, "config.json");
  if (existsSync(configPath)) {
    let previous: unknown = await readJsonFile(configPath, "the run folder's configuration");
    try {
      previous = withDefaults(previous, cfg.profile, cfg.seed);
    } catch { /* an unknown setting: compared as written, so it differs */ }
    if (JSON.stringify({ ...(previous as RunConfig), progress: cfg.progress }) !== JSON.stringify(cfg)) {
      throw new UsageError(
        `${runDir} holds a run with a different configuration; resume it with the same options or pick another --name`,
      );
    }
  }
  return { cfg, profile, data, runDir, configPath };
}

/** Whether a process runs (Linux: present in /proc and not a zombie; elsewhere assumed alive). */
function processAlive(pid: number): boolean {
  if (Deno.build.os !== "linux") return true;
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return false;
  }
}

/**
 * Temporary files (`*.tmp`) a killed process left in a run folder and its checkpoints: never
 * committed, so safe to remove once the folder's lock is held.
 */
async function removeOrphans(runDir: string): Promise<void> {
  for (const dir of [runDir, join(runDir, "checkpoints")]) {
    if (!existsSync(dir)) continue;
    for await (const e of Deno.readDir(dir)) {
      if (e.isFile && e.name.endsWith(".tmp")) await Deno.remove(join(dir, e.name)).catch(() => {});
    }
  }
}

/** What a lock file records: the holder's PID, its host, and what it holds the lock for. */
export interface LockHolder {
  pid: number;
  /** The holder's host name (absent in locks written before hosts were recorded: this host). */
  host: string | null;
  /** `train` (an in-process run), `job setup` (a job's brief setup), `job <id>` (a job running). */
  purpose: string;
}

/** The lock file `path`'s holder when it is alive, else null (no file, or its process is gone). */
export async function liveHolder(path: string): Promise<LockHolder | null> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch {
    return null;
  }
  const [pidLine, host, purpose] = text.split("\n");
  const pid = Number(pidLine.trim());
  const holder = { pid, host: host?.trim() || null, purpose: purpose?.trim() || "train" };
  if (holder.host && holder.host !== Deno.hostname()) {
    // another host's process cannot be checked from here (a shared run folder): alive, unless it
    // is a Slurm job that Slurm no longer runs (killed at its time limit, its node lost)
    const slurmJob = /Slurm job (\d+)/.exec(holder.purpose)?.[1];
    return slurmJob && !(await slurmJobActive(slurmJob)) ? null : holder;
  }
  return Number.isInteger(pid) && pid > 0 && processAlive(pid) ? holder : null;
}

/** Whether Slurm still has job `id` queued or running (true where `squeue` cannot tell). */
async function slurmJobActive(id: string): Promise<boolean> {
  try {
    const out = await new Deno.Command("squeue", {
      args: ["-h", "-j", id, "-o", "%T"],
      stdout: "piped",
      stderr: "piped",
    })
      .output();
    // a job id Slurm has forgotten (long finished) is an error; other errors (no controller) tell nothing
    if (out.code !== 0) return !/invalid job id/i.test(new TextDecoder().decode(out.stderr));
    return new TextDecoder().decode(out.stdout).trim() !== "";
  } catch {
    return true; // no squeue here
  }
}

/**
 * Creates the lock file `path` for this process (PID, host, `purpose`); a lock whose process no
 * longer runs is taken over. Returns the release function, or the live holder.
 */
export async function takeLock(
  path: string,
  purpose: string,
): Promise<{ release: () => Promise<void> } | { holder: LockHolder }> {
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      await Deno.writeTextFile(path, `${Deno.pid}\n${Deno.hostname()}\n${purpose}\n`, { createNew: true });
      return { release: async () => await Deno.remove(path).catch(() => {}) };
    } catch (err) {
      if (!(err instanceof Deno.errors.AlreadyExists)) throw err;
      const holder = await liveHolder(path);
      if (holder) return { holder };
      await Deno.remove(path).catch(() => {}); // stale: its process is gone
    }
  }
  throw new UsageError(`cannot take ${path}`);
}

/** Who holds a lock, in words. */
export function describeHolder(h: LockHolder): string {
  return `PID ${h.pid}${h.host && h.host !== Deno.hostname() ? ` on ${h.host}` : ""}`;
}

/**
 * The jobs of a run folder running now (`deno task train --only`, `lib/train/jobs.ts`): their
 * ids and holders, from the live `jobs/<id>/.lock` files.
 */
export async function runningJobs(runDir: string): Promise<{ id: string; holder: LockHolder }[]> {
  const dir = join(runDir, "jobs");
  const out: { id: string; holder: LockHolder }[] = [];
  if (!existsSync(dir)) return out;
  for await (const e of Deno.readDir(dir)) {
    if (!e.isDirectory) continue;
    const holder = await liveHolder(join(dir, e.name, ".lock"));
    if (holder) out.push({ id: e.name, holder });
  }
  return out.sort((a, b) => a.id.localeCompare(b.id));
}

/**
 * Takes `runDir/.lock` so two processes cannot train into one run folder; a lock left by a
 * process that no longer runs is taken over. `train` (an in-process run) also refuses while jobs
 * of the run are running and then removes temporary files killed processes left; `job setup` (a
 * job writing the run-level files before it runs) waits up to `waitSeconds` for another job's
 * setup. Returns the release function.
 */
export async function lockRun(
  runDir: string,
  { purpose = "train", waitSeconds = 0 }: { purpose?: "train" | "job setup"; waitSeconds?: number } = {},
): Promise<() => Promise<void>> {
  const path = join(runDir, ".lock");
  const deadline = performance.now() + waitSeconds * 1000;
  while (true) {
    const taken = await takeLock(path, purpose);
    if ("release" in taken) {
      if (purpose === "train") {
        const jobs = await runningJobs(runDir);
        if (jobs.length) {
          await taken.release();
          throw new UsageError(
            `${runDir}: jobs of this run are running (${
              jobs.map((j) => `${j.id}, ${describeHolder(j.holder)}`).join("; ")
            }); wait for them or pick another --name`,
          );
        }
        await removeOrphans(runDir);
      }
      return taken.release;
    }
    const { holder } = taken;
    if (holder.purpose === "job setup" && performance.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100 + Math.random() * 200));
      continue;
    }
    throw new UsageError(
      `${runDir}: another process (${describeHolder(holder)}) is ${
        holder.purpose === "train" ? "training into this run folder" : `holding ${path} (${holder.purpose})`
      }${holder.host && holder.host !== Deno.hostname() ? `; remove ${path} if that process is gone` : ""}`,
    );
  }
}

/**
 * A run's identity includes its data: `data.json` records the cohort folder and the SHA-256 of
 * its manifests (which hold every file's checksum); a run folder trained on another cohort is
 * refused instead of having its results overwritten with scores on different data. With `write`
 * false an existing record is only checked (a job's setup: the record is written once).
 */
export async function checkRunData(runDir: string, data: string, { write = true } = {}): Promise<void> {
  const identity: Record<string, string> = {};
  for (const cohort of ["paired", "tissue", "wholebrain"]) {
    const manifest = join(data, cohort, "manifest.json");
    if (existsSync(manifest)) identity[cohort] = await sha256File(manifest);
  }
  const path = join(runDir, "data.json");
  if (existsSync(path)) {
    const previous = await readJsonFile<{ data?: string; manifests?: Record<string, string> }>(
      path,
      "the run folder's cohort record",
    );
    // (a cohort a run folder's record predates is added, not a change)
    const changed = Object.keys(identity).find((k) =>
      previous.manifests && k in previous.manifests && previous.manifests[k] !== identity[k]
    );
    if (changed) {
      throw new UsageError(
        `${runDir} was trained on another cohort (${previous.data}; ${changed}/manifest.json differs from ${
          join(data, changed)
        }); pick another --name`,
      );
    }
  }
  if (write || !existsSync(path)) await writeJson(path, { data, manifests: identity });
}

async function trainInto(
  runDir: string,
  cfg: RunConfig,
  data: string,
  profile: string,
  opts: Record<string, string | number | boolean | undefined>,
): Promise<string> {
  const logPath = join(runDir, "log.jsonl");
  const ctx: Context = {
    cfg,
    runDir,
    reports: [],
    allowUnconverged: opts["allow-unconverged"] === true,
    log: async (line) =>
      await Deno.writeTextFile(logPath, JSON.stringify({ time: new Date().toISOString(), ...line }) + "\n", {
        append: true,
      }),
  };
  const phase = String(opts.phase);
  const t0 = performance.now();
  // every cohort the phase needs is checked (present, complete, checksums) before anything trains
  if (phase === "all" || phase === "fusion" || phase === "baseline") await verifyCohort(join(data, "tissue"));
  if (phase === "wholebrain") await verifyCohort(join(data, "wholebrain"));
  if (phase === "brainmask") await headsCohort(data, profile, opts.data !== undefined, true);
  const paired = await loadCohort(join(data, "paired"));
  if (!opts.data) checkGenerated(join(data, "paired"), paired.manifest.generatorVersion);
  // `baseline`: the baseline segmenter alone (no paired folds); more folds than the cohort holds
  // is the user's setting, so a usage error
  let splits: FoldSplit[] = [];
  try {
    if (phase !== "baseline") splits = foldSplits(paired.subjects, cfg);
  } catch (err) {
    throw err instanceof RangeError ? new UsageError(`${join(data, "paired")}: ${err.message}`) : err;
  }
  const folds: FoldMetrics[] = [];
  const decoders: DecoderMetrics[] = [];
  // the KKNs phase 3 is guided by: fold 1's, or every fold's (`fusion.keeperFolds` "each")
  const guiding: { fold: number; kkn: KnowledgeKeeper }[] = [];
  const guides = (fold: number) =>
    (phase === "fusion" || phase === "all") && (fold === 1 || cfg.fusion.keeperFolds === "each");
  // the whole-brain task uses fold 1 (its 2D teacher and KKN, or its 3D KKN for a 3D network)
  for (const split of phase === "wholebrain" || phase === "brainmask" ? [] : splits) {
    const teacher = phase === "teacher" || phase === "all" ||
        !existsSync(join(runDir, "checkpoints", `teacher-fold${split.fold}-best.json`))
      ? await trainTeacher(ctx, split)
      : await loaded(
        buildTeacher(cfg, split.fold),
        join(runDir, "checkpoints", `teacher-fold${split.fold}-best`),
      );
    if (phase === "teacher") continue;
    const kkn = (phase === "fusion" || phase === "decoder") &&
        existsSync(join(runDir, "checkpoints", `keeper-fold${split.fold}-best.json`))
      ? await loaded(
        buildKeeper(cfg, split.fold),
        join(runDir, "checkpoints", `keeper-fold${split.fold}-best`),
        "keeper.",
      )
      : await trainKeeper(ctx, split, teacher);
    folds.push(...await evaluateFold(split, teacher, kkn));
    if (phase === "decoder") decoders.push(await trainDecoder(ctx, split, kkn));
    if (guides(split.fold)) guiding.push({ fold: split.fold, kkn });
    else kkn.dispose();
    teacher.dispose();
  }
  let fusion: FusionMetrics | null = null;
  let baseline: BaselineMetrics | null = null;
  if (guiding.length) {
    const tissue = await loadCohort(join(data, "tissue"));
    if (cfg.fusion.input === "synthesized") await synthesize(runDir, cfg, tissue.subjects, guiding[0].kkn);
    fusion = await trainFusion(ctx, tissue.subjects, guiding);
    for (const { kkn } of guiding) kkn.dispose();
  }
  if (phase === "baseline") {
    const tissue = await loadCohort(join(data, "tissue"));
    if (cfg.fusion.input === "synthesized") await synthesize(runDir, cfg, tissue.subjects);
    const trained = await trainBaseline(ctx, tissue.subjects);
    trained.net.dispose();
    baseline = trained.metrics;
  }
  let wholebrain: WholeBrainMetrics | null = null;
  if (phase === "wholebrain") {
    const cohort = await loadCohort(join(data, "wholebrain"));
    const split = splits[0];
    wholebrain = await trainWholeBrain(ctx, split, cohort.subjects, async () => {
      const path = (name: string) => join(runDir, "checkpoints", `${name}-fold${split.fold}-best`);
      if (existsSync(`${path("keeper")}.json`)) {
        return await loaded(buildKeeper(cfg, split.fold), path("keeper"), "keeper.");
      }
      const teacher = existsSync(`${path("teacher")}.json`)
        ? await loaded(buildTeacher(cfg, split.fold), path("teacher"))
        : await trainTeacher(ctx, split);
      const kkn = await trainKeeper(ctx, split, teacher);
      teacher.dispose();
      return kkn;
    });
  }
  const brainmask = phase === "all" || phase === "brainmask"
    ? await brainMaskPhase(ctx, data, profile, opts.data !== undefined)
    : null;
  const seconds = (performance.now() - t0) / 1000;
  const rss = peakRssMiB();
  const peakRss = Number.isFinite(rss) ? rss : null;
  await writeMetrics(runDir, cfg, {
    run: runDir,
    profile,
    backend: currentBackend(),
    data,
    spacing: paired.manifest.grid.spacing,
    wallSeconds: seconds,
    peakRssMiB: peakRss,
    folds,
    fusion,
    baseline,
    decoders,
    wholebrain,
    brainmask,
    convergence: ctx.reports,
  });
  console.log(summary(folds, fusion, baseline, decoders, seconds));
  if (wholebrain) console.log(wholeBrainSummary(wholebrain));
  if (brainmask) console.log(brainMaskSummary(brainmask));
  return runDir;
}

/**
 * The `heads` cohort (full-head scans, `lib/phantom/head.ts`) of a data folder: generated for the
 * phantom's own folders when absent; in a folder of the user's (`--data`) it must be there when
 * `required` (`--phase brainmask`), else null (`--phase all` then trains no brain extraction).
 */
async function headsCohort(
  data: string,
  profile: string,
  userData: boolean,
  required: boolean,
): Promise<string | null> {
  const dir = join(data, "heads");
  if (!existsSync(join(dir, "manifest.json"))) {
    if (userData) {
      if (required) {
        throw new UsageError(
          `--data ${data}: no heads/manifest.json there (the full-head scans the brain-mask network learns ` +
            `from; the phantom's: deno task prep --profile ${cohortProfile(profile)} --out DIR writes one)`,
        );
      }
      return null;
    }
    console.log(`cohort ${dir} absent: generating the "${cohortProfile(profile)}" full-head phantom scans`);
    await ensureHeadCohort(cohortProfile(profile), data);
  }
  await verifyCohort(dir);
  return dir;
}

/**
 * Brain extraction (`lib/train/brainmask.ts`) on the data folder's `heads` cohort, with its test
 * Dice; null (said in one line) when a folder of the user's holds no heads cohort.
 */
export async function brainMaskPhase(
  ctx: Context,
  data: string,
  profile: string,
  userData: boolean,
): Promise<BrainMaskMetrics | null> {
  const dir = await headsCohort(data, profile, userData, false);
  if (!dir) {
    console.log(
      `--data ${data}: no heads cohort, so no brain-extraction network (segment then needs skull-stripped scans)`,
    );
    return null;
  }
  const heads = await loadCohort(dir);
  return await trainBrainMask(ctx, heads.subjects, heads.manifest.grid.spacing);
}

/** The brain-extraction line of a run's summary. */
export function brainMaskSummary(m: BrainMaskMetrics): string {
  return `brain extraction (${m.network}, ${m.train} training heads): test brain-mask Dice mean ${
    m.meanDice.toFixed(4)
  }, lowest ${m.minDice.toFixed(4)} over ${m.subjects.length} held-out phantom heads`;
}

/** A run's `metrics.json` (key order as written). */
export interface RunMetrics {
  run: string;
  profile: string;
  /** The backend that trained (absent when none was initialised). */
  backend: BackendInfo | undefined;
  data: string;
  spacing: unknown;
  wallSeconds: number;
  peakRssMiB: number | null;
  folds: FoldMetrics[];
  fusion: FusionMetrics | null;
  baseline: BaselineMetrics | null;
  decoders: DecoderMetrics[];
  wholebrain: WholeBrainMetrics | null;
  /** Brain extraction (`--phase all` and `brainmask`), absent in runs written before it. */
  brainmask?: BrainMaskMetrics | null;
  convergence: ConvergenceReport[];
}

/** Writes a run's `metrics.json` and `metrics.csv` (each to a temporary file, then renamed). */
export async function writeMetrics(runDir: string, cfg: RunConfig, metrics: RunMetrics): Promise<void> {
  await writeJson(join(runDir, "metrics.json"), metrics);
  await writeFileAtomic(
    join(runDir, "metrics.csv"),
    metricsCsv(metrics.folds, metrics.fusion, cfg.fusion.network, metrics.decoders),
  );
}

/** The phantom cohort a training profile runs on (`long` trains longer on the default cohort). */
export function cohortProfile(profile: string): "quick" | "default" | "paper" {
  return profile === "long" ? "default" : profile as "quick" | "default" | "paper";
}

/**
 * `fusion.input` "synthesized": the tissue subjects' 7T-like syntheses through fold 1's KKN (the
 * one given, else the run's checkpoint) and teacher decoder, which must be in the run already.
 */
export async function synthesize(
  runDir: string,
  cfg: RunConfig,
  subjects: Subject[],
  kkn?: KnowledgeKeeper,
): Promise<void> {
  const path = (name: string) => {
    const p = join(runDir, "checkpoints", name);
    if (!existsSync(`${p}.json`)) {
      throw new UsageError(
        `fusion.input "synthesized": ${p}.json missing (train the teacher and keeper phases into ${runDir} first)`,
      );
    }
    return p;
  };
  const teacher = await loaded(buildTeacher(cfg, 1), path("teacher-fold1-best"));
  const keeper = kkn ?? await loaded(buildKeeper(cfg, 1), path("keeper-fold1-best"), "keeper.");
  await addSyntheses(subjects, teacher, keeper);
  teacher.dispose();
  if (!kkn) keeper.dispose();
}

/** The lines `deno task train` prints at the end: mean synthesis scores and Dice per model. */
export function summary(
  folds: FoldMetrics[],
  fusion: FusionMetrics | null,
  baseline: BaselineMetrics | null,
  decoders: DecoderMetrics[],
  seconds: number,
): string {
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
    // (a p-value read back from JSON is null where it was NaN: a single test subject)
    const p4 = (p: number | null) => (p ?? NaN).toFixed(4);
    for (const t of fusion.tTest) {
      lines.push(
        `Dice ${t.class.padEnd(10)} baseline ${t.baselineMean.toFixed(4)} epoch-matched ${
          t.baselineMatchedMean.toFixed(4)
        } guided ${t.guidedMean.toFixed(4)} (paired t: p=${p4(t.p)} vs baseline, p=${
          p4(t.pMatched)
        } vs matched)`,
      );
    }
  }
  if (baseline) {
    lines.push(
      `baseline on the ${baseline.input} image: Dice ${
        baseline.classes.map((c, i) => `${c} ${baseline.mean[i].toFixed(4)}`).join(", ")
      }`,
    );
  }
  for (const d of decoders) {
    lines.push(
      `fold ${d.fold} U-Net decoder on the frozen KKN (3T): Dice ${
        d.classes.map((c, i) => `${c} ${d.mean[i].toFixed(4)}`).join(", ")
      }`,
    );
  }
  return lines.join("\n");
}

/** Mean Dice of the cortical (1-4), subcortical (5-27) structures and all 27, per model. */
export function wholeBrainSummary(m: WholeBrainMetrics): string {
  const lines: string[] = [];
  if (m.synthesis) {
    const mean = (v: number[]) => v.reduce((a, b) => a + b, 0) / v.length;
    const a = m.synthesis.aggregated;
    lines.push(
      `2D KKN, ${m.views!.length} views averaged: PSNR ${mean(a.map((r) => r.keeper.psnr)).toFixed(2)} SSIM ${
        mean(a.map((r) => r.keeper.ssim)).toFixed(4)
      } (teacher ${mean(a.map((r) => r.teacher.psnr)).toFixed(2)}, 3T floor ${
        mean(a.map((r) => r.floor3T.psnr)).toFixed(2)
      })`,
    );
  }
  const t = m.segmentation.tTest;
  const avg = (key: "baselineMean" | "baselineMatchedMean" | "guidedMean", from: number, to: number) =>
    (t.slice(from, to).reduce((s, r) => s + r[key], 0) / (to - from)).toFixed(4);
  for (
    const [key, name] of [["baselineMean", "baseline"], ["baselineMatchedMean", "epoch-matched"], [
      "guidedMean",
      "guided",
    ]] as const
  ) {
    lines.push(
      `${m.label} ${name.padEnd(13)} Dice cortical ${avg(key, 1, 5)} subcortical ${avg(key, 5, 28)} average ${
        avg(key, 1, 28)
      }`,
    );
  }
  return lines.join("\n");
}

/**
 * A generated cohort from another generator version would silently mix old and new phantoms:
 * refuse it, naming the folder to delete.
 */
export function checkGenerated(dir: string, version: string | undefined): void {
  if (version === GENERATOR_VERSION) return;
  throw new UsageError(
    `${join(dir, "manifest.json")}: generated by phantom generator ${
      version ?? "(unknown)"
    }, this is ${GENERATOR_VERSION}; delete ${join(dir, "..")} to regenerate it`,
  );
}
