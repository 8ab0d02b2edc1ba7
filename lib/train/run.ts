/**
 * `runTraining`: the main job behind `deno task train` (and the notebooks): resolves the
 * configuration (profile defaults, then a JSON config file, then options), generates the phantom
 * cohort when absent, runs the requested phases per fold, and writes `runs/<name>/`.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { UsageError } from "../cli.ts";
import { readJsonFile } from "../io/json.ts";
import { currentBackend } from "../backend.ts";
import { peakRssMiB } from "../memory.ts";
import { writeFileAtomic } from "../io/nifti.ts";
import type { KnowledgeKeeper } from "../models/keeper.ts";
import { ensureCohorts, GENERATOR_VERSION } from "../phantom/cohort.ts";
import { sha256File } from "../io/hash.ts";
import { loadCohort, type Subject, verifyCohort } from "../data/cohort.ts";
import { loaded } from "./state.ts";
import { trainWholeBrain, type WholeBrainMetrics } from "./wholebrain.ts";
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
  if (!existsSync(join(data, "paired", "manifest.json"))) {
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
  await Deno.mkdir(join(runDir, "checkpoints"), { recursive: true });
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
 * Takes `runDir/.lock` for this process, so two processes cannot train into one run folder; a
 * lock left by a process that no longer runs is taken over. Returns the release function.
 */
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

export async function lockRun(runDir: string): Promise<() => Promise<void>> {
  const path = join(runDir, ".lock");
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      await Deno.writeTextFile(path, `${Deno.pid}\n`, { createNew: true });
      await removeOrphans(runDir);
      return async () => await Deno.remove(path).catch(() => {});
    } catch (err) {
      if (!(err instanceof Deno.errors.AlreadyExists)) throw err;
      const pid = Number((await Deno.readTextFile(path).catch(() => "")).trim());
      const alive = Number.isInteger(pid) && pid > 0 && processAlive(pid);
      if (alive) {
        throw new UsageError(`${runDir}: another process (PID ${pid}) is training into this run folder`);
      }
      await Deno.remove(path).catch(() => {}); // stale: its process is gone
    }
  }
  throw new UsageError(`${runDir}: cannot take ${path}`);
}

/**
 * A run's identity includes its data: `data.json` records the cohort folder and the SHA-256 of
 * its manifests (which hold every file's checksum); a run folder trained on another cohort is
 * refused instead of having its results overwritten with scores on different data.
 */
export async function checkRunData(runDir: string, data: string): Promise<void> {
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
  await writeJson(path, { data, manifests: identity });
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
  for (const split of phase === "wholebrain" ? [] : splits) {
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
  const seconds = (performance.now() - t0) / 1000;
  const rss = peakRssMiB();
  const peakRss = Number.isFinite(rss) ? rss : null;
  const metrics = {
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
    convergence: ctx.reports,
  };
  await writeJson(join(runDir, "metrics.json"), metrics);
  await writeFileAtomic(join(runDir, "metrics.csv"), metricsCsv(folds, fusion, cfg.fusion.network, decoders));
  console.log(summary(folds, fusion, baseline, decoders, seconds));
  if (wholebrain) console.log(wholeBrainSummary(wholebrain));
  return runDir;
}

/** The phantom cohort a training profile runs on (`long` trains longer on the default cohort). */
export function cohortProfile(profile: string): "quick" | "default" | "paper" {
  return profile === "long" ? "default" : profile as "quick" | "default" | "paper";
}

/**
 * `fusion.input` "synthesized": the tissue subjects' 7T-like syntheses through fold 1's KKN (the
 * one given, else the run's checkpoint) and teacher decoder, which must be in the run already.
 */
async function synthesize(runDir: string, cfg: RunConfig, subjects: Subject[], kkn?: KnowledgeKeeper) {
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

function summary(
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
    for (const t of fusion.tTest) {
      lines.push(
        `Dice ${t.class.padEnd(10)} baseline ${t.baselineMean.toFixed(4)} epoch-matched ${
          t.baselineMatchedMean.toFixed(4)
        } guided ${t.guidedMean.toFixed(4)} (paired t: p=${t.p.toFixed(4)} vs baseline, p=${
          t.pMatched.toFixed(4)
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
function wholeBrainSummary(m: WholeBrainMetrics): string {
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
function checkGenerated(dir: string, version: string | undefined): void {
  if (version === GENERATOR_VERSION) return;
  throw new UsageError(
    `${join(dir, "manifest.json")}: generated by phantom generator ${
      version ?? "(unknown)"
    }, this is ${GENERATOR_VERSION}; delete ${join(dir, "..")} to regenerate it`,
  );
}
