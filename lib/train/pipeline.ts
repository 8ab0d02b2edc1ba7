/**
 * The three phases of Algorithm 1 end to end, with the evaluation the paper's tables need.
 *
 * - Phase 1 (teacher), per leave-one-out fold of the paired cohort: fold f tests subject f,
 *   validates on subject f+1, trains on the rest. Best checkpoint: validation PSNR and SSIM both
 *   improve (the authors' rule).
 * - Phase 2 (keeper), same folds, teacher frozen: a KKN update (Algorithm 1), then an LSGAN
 *   discriminator update on the same synthesis, detached.
 *   Best checkpoint: synthesis PSNR and SSIM both improve.
 * - Phase 3 (fusion) on the tissue cohort: the baseline segmenter (`fusion.network`, the 3D U-Net
 *   unless set otherwise) alone, then the
 *   same network initialised from its best checkpoint and fine-tuned with AFMs, the first fold's
 *   KKN frozen. Best checkpoint: validation sum of per-class Dice, background excluded (the
 *   authors' code includes it). As a control for the extra
 *   epochs of fine-tuning, the best baseline is also trained on alone for as many epochs.
 */
import * as tf from "@tensorflow/tfjs-core";
import { join } from "node:path";
import { adam, Module } from "../nn/module.ts";
import { writeFileAtomic } from "../io/nifti.ts";
import { dicePerClass, featureDistance, pairedTTest, psnr, ssim3d } from "../metrics.ts";
import { DEFAULT_TEACHER, Teacher, type TeacherConfig } from "../models/teacher.ts";
import { DEFAULT_KEEPER, type KeeperConfig, KnowledgeKeeper, PatchDiscriminator } from "../models/keeper.ts";
import {
  type AfmGate,
  type AfmParts,
  FULL_AFM,
  GuidedSegmenter,
  type SegmentationNetwork,
  UNetDecoder,
} from "../models/fusion.ts";
import {
  buildNetwork,
  decodeAll,
  networkLabel,
  type NetworkName,
  NETWORKS,
  type NetworkSpec,
} from "../models/networks.ts";
import type { VoxResDeconv } from "../models/voxresnet.ts";
import type { USegNetAfmLevels } from "../models/usegnet.ts";
import { UNEST_DEPTHS } from "../models/unest.ts";
import { slidingWindow } from "../volume/tensor.ts";
import {
  adversarialLoss,
  classWeightMap,
  crossEntropy,
  discriminatorLoss,
  distillationLoss,
  l1,
  SEGMENTATION_LOSSES,
  type SegmentationLoss,
  segmentationLoss,
} from "../losses.ts";
import { augment, drawAugmentation, toTensor } from "./augment.ts";
import type { Subject } from "../data/cohort.ts";
import {
  fromSlices,
  sliceShape,
  thickSlices,
  toSlices,
  type View,
  VIEW_AGGREGATIONS,
  type ViewAggregation,
} from "../data/views.ts";
import { type Scores, trainLoop } from "./loop.ts";
import { loadCheckpoint, readCheckpointMeta, saveCheckpoint } from "./state.ts";
import { GENERATOR_VERSION, IDEAL_KEY } from "../phantom/cohort.ts";
import { mulberry32 } from "../random.ts";
import {
  ConvergenceError,
  type ConvergenceReport,
  isPatchStep,
  judgeConvergence,
  learningRateAt,
  paperSchedule,
  roundsOf,
  samplePatch,
  type Schedule,
  scheduleProblem,
} from "./schedule.ts";

export interface RunConfig {
  profile: string;
  seed: number;
  /** Cross-validation folds of the paired cohort to run (1..subjects / testPerFold). */
  folds: number;
  /** Test subjects per fold (1: leave-one-out, the paper's protocol). */
  testPerFold: number;
  augment: boolean;
  teacher: TeacherConfig & { train: Schedule };
  keeper: KeeperConfig & { discriminatorNf: number; train: Schedule };
  fusion: {
    /** The segmentation network (`lib/models/networks.ts`). */
    network: NetworkName;
    /** VoxResNet's per-level decoder: `compact` (default) or the authors' `released` form. */
    voxresnetDeconv: VoxResDeconv;
    /** U-SegNet's AFM levels: `ends` (1 and 5, default) or `all`. */
    usegnetAfmLevels: USegNetAfmLevels;
    /** UNesT's layers per stage (the whole-brain task's `unestDepths`); absent for the tissue task. */
    unestDepths?: string;
    /** UNesT's input edge (the whole-brain task's `unestWindow`); absent: whole volumes. */
    unestWindow?: number;
    /**
     * The KKN whose features the AFMs take: `trained` (fold 1's, the method) or `random` (the same
     * architecture untrained: a control for what the trained 7T-like features add).
     */
    keeper: "trained" | "random";
    /**
     * Which trained KKNs guide: `first` (fold 1's: one guided model) or `each` (one guided model per
     * trained KKN fold, test Dice averaged over them per subject: the released code's protocol).
     */
    keeperFolds: KeeperFolds;
    nf: number;
    levels: number;
    classes: number;
    /** The tissue image the segmenters read (`ideal`: noise-free, for a ceiling). */
    input: SegmentationInput;
    /** How AFM outputs join the segmentation features (`none`: the paper's plain sum). */
    afmGate: AfmGate;
    /** The AFM's parts (Table 5 removes each in turn; default: all). */
    afm: AfmParts;
    /** `ce`: the authors' cross-entropy; `ce+dice`: plus soft Dice over the foreground classes. */
    loss: SegmentationLoss;
    baseline: Schedule;
    /** AFM fine-tuning (and the epoch-matched control, which gets the same schedule). */
    fusion: Schedule;
  };
  /**
   * Whole-brain segmentation (`--phase wholebrain`, `lib/train/wholebrain.ts`): a 2D teacher and
   * KKN per view on the paired cohort's slices (the teacher and keeper settings, 2D), then the
   * whole-brain network with and without AFMs on the whole-brain cohort, per view for a 2D network,
   * the three views aggregated.
   */
  wholebrain: {
    network: NetworkName;
    nf: number;
    levels: number;
    /** Slices a training step (the paper: 32). */
    batch: number;
    aggregation: ViewAggregation;
    /**
     * The segmentation objective (`wce+dice`: the released whole-brain code's, CE weighted by
     * median-frequency balancing and label edges, plus Dice per slice and class with background).
     */
    loss: SegmentationLoss;
    /**
     * UNesT's transformer layers per stage, comma-separated ("2,2,8": the released base model;
     * "1,1,2" the small default); the last repeats for more stages.
     */
    unestDepths: string;
    /**
     * UNesT's input edge (a multiple of 2^levels): its positional embeddings are learnt for this
     * cube, it trains on random crops of it (whatever the baseline and fusion schedules' `patch`,
     * and without whole-volume steps) and predicts a scan by sliding windows of it overlapping by
     * half, as the released code (96^3 crops) does.
     */
    unestWindow: number;
    /** The 2D teacher's and the 2D KKN's schedules (one per view each). */
    teacher: Schedule;
    keeper: Schedule;
    baseline: Schedule;
    fusion: Schedule;
  };
  /**
   * Brain extraction (`lib/train/brainmask.ts`): a 3D segmentation network (brain / not brain)
   * trained on the phantom's full-head scans (the `heads` cohort), what `deno task segment` runs
   * on an input that is not skull-stripped.
   */
  brainmask: {
    network: NetworkName;
    nf: number;
    levels: number;
    train: Schedule;
  };
  /** Convergence checks at the end of every phase (see `judgeConvergence`). */
  checks: {
    enforce: boolean;
    /** Fraction of a phase's steps, at the end, over which the validation gain is measured. */
    window: number;
    /** Largest validation PSNR gain (dB) over the window for teacher and KKN. */
    maxGainPsnr: number;
    /** Largest validation mean foreground Dice gain over the window for segmentation. */
    maxGainDice: number;
    /** Segmentation floor: validation mean foreground Dice. */
    minDice: number;
  };
  progress: boolean;
}

/**
 * Model sizes and schedules per profile (`--epochs` and the config file override them).
 *
 * - `paper`: the paper's protocol exactly: nf 16, whole volumes, Adam 2e-4 constant, 100 epochs,
 *   leave-one-out over 15 subjects (13 training subjects a fold), CE for the tissue networks.
 * - `default`: sized for the main job's budget on two CPU cores (20 minutes with cohort
 *   generation): steps as the unit, 32^3 patches with a foreground bias (no whole-volume steps),
 *   teacher and KKN without normalisation, KKN kernel 3, AFMs whose contribution starts at zero, a
 *   10x larger peak learning rate with warm-up and cosine decay, CE + soft Dice, one fold of three
 *   test subjects.
 * - `long`: the default's recipe on a larger budget (see README): about 5 hours here.
 * - `quick`: a smoke test of every code path (seconds); it does not converge and is not checked.
 */
export function profileConfig(profile: string, seed = 0): RunConfig {
  const nf = profile === "paper" ? 16 : profile === "quick" ? 4 : 8;
  const base = {
    profile,
    seed,
    augment: true,
    progress: true,
    checks: { enforce: true, window: 0.15, maxGainPsnr: 0.5, maxGainDice: 0.01, minDice: 0.5 },
  };
  const recipe = (steps: number, every: number, lr: number, patch = 32): Schedule => ({
    steps,
    validateEvery: every,
    learningRate: lr,
    warmupSteps: Math.round(steps * 0.05),
    minLearningRate: lr / 100,
    patch,
    foregroundBias: 0.5,
    wholeFraction: 0.2,
  });
  const teacher = { ...DEFAULT_TEACHER, nf };
  const keeper = { ...DEFAULT_KEEPER, nf, discriminatorNf: nf };
  const fusion = {
    network: "unet3d" as NetworkName,
    voxresnetDeconv: "compact" as VoxResDeconv,
    usegnetAfmLevels: "ends" as USegNetAfmLevels,
    keeper: "trained" as "trained" | "random",
    keeperFolds: "first" as KeeperFolds,
    nf,
    levels: 5,
    classes: 4,
    input: "low-field" as SegmentationInput,
    afmGate: "none" as AfmGate,
    afm: { ...FULL_AFM },
  };
  const wholebrain = {
    network: "unet2d" as NetworkName,
    // the released 2D U-Net's width (16 at every level); at 8, 28 classes came from 8 channels and the
    // default run's validation Dice stalled near 0.17 (README)
    nf: profile === "quick" ? nf : 16,
    levels: 5,
    batch: profile === "paper" ? 32 : profile === "quick" ? 2 : 8,
    aggregation: "average" as ViewAggregation,
    loss: "wce+dice" as SegmentationLoss,
    unestDepths: (profile === "paper" ? UNEST_DEPTHS.paper : UNEST_DEPTHS.small).join(","),
    // the released crops on the paper profile; 32: an eighth of the default 64^3 grid, each step
    // about an eighth of a whole-volume step's cost
    unestWindow: profile === "paper" ? 96 : 32,
  };
  const brainmask = { network: "unet3d" as NetworkName, nf, levels: 4 };
  if (profile === "paper") {
    // 2D epochs: batches of 32 over every slice of the training subjects (about 192 slices a view
    // on the paper profile's 1 mm phantom grid): 13 paired and 10 whole-brain training subjects
    const slices2d = (subjects: number) => paperSchedule(100, Math.ceil((subjects * 192) / 32));
    return {
      ...base,
      folds: 15,
      testPerFold: 1,
      teacher: { ...teacher, train: paperSchedule(100, 13) },
      keeper: { ...keeper, train: paperSchedule(100, 13) },
      fusion: { ...fusion, loss: "ce", baseline: paperSchedule(100, 7), fusion: paperSchedule(100, 7) },
      wholebrain: {
        ...wholebrain,
        teacher: slices2d(13),
        keeper: slices2d(13),
        baseline: slices2d(10),
        fusion: slices2d(10),
      },
      // whole heads, 100 epochs over the 12 training scans
      brainmask: { ...brainmask, train: paperSchedule(100, 12, 1e-3) },
    };
  }
  if (profile === "quick") {
    const q = (steps: number) => ({ ...recipe(steps, 1, 2e-3, 0), warmupSteps: 0 });
    return {
      ...base,
      checks: { ...base.checks, enforce: false },
      folds: 1,
      testPerFold: 1,
      teacher: { ...teacher, train: q(2) },
      keeper: { ...keeper, train: q(2) },
      fusion: { ...fusion, loss: "ce+dice", baseline: q(2), fusion: q(2) },
      wholebrain: { ...wholebrain, teacher: q(2), keeper: q(2), baseline: q(2), fusion: q(2) },
      brainmask: { ...brainmask, train: q(2) },
    };
  }
  const long = profile === "long";
  return {
    ...base,
    folds: long ? 5 : 1,
    testPerFold: 3,
    // Without normalisation the teacher is translation-equivariant, so patches teach it what a
    // whole volume needs: no whole-volume steps
    teacher: {
      ...teacher,
      norm: "none",
      train: { ...recipe(long ? 4000 : 600, long ? 200 : 50, 2e-3), wholeFraction: 0 },
    },
    // kernel 3 in the KKN: twice the steps a second, and more learned per step (README)
    keeper: {
      ...keeper,
      norm: "none",
      kernel: 3,
      // a 5x larger peak than the other phases: at 2e-3 the KKN ends 800 steps below its 3T floor
      train: { ...recipe(long ? 4000 : 800, long ? 200 : 50, 1e-2), wholeFraction: 0 },
    },
    fusion: {
      ...fusion,
      afmGate: "zero",
      loss: "ce+dice",
      // patches only: whole-volume steps cost 6x a patch step and did not raise validation Dice;
      // 900 steps: at 600 the validation Dice was still rising about 0.01 over the last 90 steps
      baseline: { ...recipe(long ? 3000 : 900, long ? 150 : 50, 2e-3), wholeFraction: 0 },
      fusion: {
        ...recipe(long ? 1500 : 160, long ? 75 : 16, 5e-4),
        warmupSteps: long ? 150 : 16,
        wholeFraction: 0,
      },
    },
    // whole slices (no patches): steps of `batch` slices
    wholebrain: {
      ...wholebrain,
      teacher: recipe(long ? 2000 : 300, long ? 100 : 50, 2e-3, 0),
      keeper: recipe(long ? 2000 : 250, long ? 100 : 50, 1e-2, 0),
      baseline: recipe(long ? 4000 : 1200, 100, 2e-3, 0),
      fusion: { ...recipe(long ? 1000 : 300, long ? 100 : 50, 5e-4, 0), warmupSteps: long ? 100 : 30 },
    },
    // patches, then 40 % of the steps on whole heads (the whole head's instance-norm statistics:
    // validation Dice jumps from about 0.85 to 0.93 when they start, so they outlast the
    // convergence window); nf 4: 0.94 validation Dice at 550 steps, as nf 8 reached at 300; 900
    // steps: at 600 it was still rising 0.009-0.013 over the last 90 steps (the check's limit 0.01)
    brainmask: {
      ...brainmask,
      nf: 4,
      train: { ...recipe(long ? 1200 : 900, 50, 2e-3), wholeFraction: 0.4 },
    },
  };
}

/** Every schedule of a configuration with its `config.json` key. */
export function schedulesOf(cfg: RunConfig): [string, Schedule][] {
  return [
    ["teacher.train", cfg.teacher.train],
    ["keeper.train", cfg.keeper.train],
    ["fusion.baseline", cfg.fusion.baseline],
    ["fusion.fusion", cfg.fusion.fusion],
    ["wholebrain.teacher", cfg.wholebrain.teacher],
    ["wholebrain.keeper", cfg.wholebrain.keeper],
    ["wholebrain.baseline", cfg.wholebrain.baseline],
    ["wholebrain.fusion", cfg.wholebrain.fusion],
    ["brainmask.train", cfg.brainmask.train],
  ];
}

/** Allowed values of the configuration's named choices, by `config.json` path. */
const CHOICES: Record<string, readonly (string | number | null)[]> = {
  "teacher.skipNoise": ["paper", "code", "none"],
  "teacher.noiseScale": ["absolute", "channel-sd"],
  "teacher.norm": ["instance", "none"],
  "keeper.distribution": ["paper", "code"],
  "keeper.norm": ["instance", "none"],
  "fusion.input": ["low-field", "ideal", "synthesized"],
  // the tissue task's networks are 3D (2D ones are trained per view: the whole-brain task)
  "fusion.network": Object.entries(NETWORKS).filter(([, e]) => e.dims === 3).map(([n]) => n),
  "fusion.voxresnetDeconv": ["compact", "released"],
  "fusion.usegnetAfmLevels": ["ends", "all"],
  "fusion.keeper": ["trained", "random"],
  "fusion.keeperFolds": ["first", "each"],
  "fusion.afmGate": ["none", "zero"],
  "fusion.afm.channelRefinement": ["two-path", "one-path", "none"],
  "fusion.loss": SEGMENTATION_LOSSES,
  "wholebrain.loss": SEGMENTATION_LOSSES,
  "wholebrain.network": Object.keys(NETWORKS),
  "wholebrain.aggregation": VIEW_AGGREGATIONS,
  "brainmask.network": Object.entries(NETWORKS).filter(([, e]) => e.dims === 3).map(([n]) => n),
};

/** Range rules beyond the type, by `config.json` path: the problem, or null. */
const RANGES: Record<string, (v: unknown) => string | null> = {
  folds: posInt,
  testPerFold: posInt,
  seed: (v) => (Number.isInteger(v) ? null : "must be an integer"),
  "teacher.nf": posInt,
  "teacher.levels": levels,
  "teacher.noiseSigma": nonNegative,
  "teacher.lambdaImg": nonNegative,
  "keeper.nf": posInt,
  "keeper.levels": levels,
  "keeper.discriminatorNf": posInt,
  "keeper.lambdaSyn": nonNegative,
  "keeper.lambdaAdv": nonNegative,
  "keeper.kernel": (
    v,
  ) => (Number.isInteger(v) && (v as number) >= 1 && (v as number) % 2 === 1
    ? null
    : "must be an odd positive integer"),
  "keeper.growth": (
    v,
  ) => (v === null || (Number.isInteger(v) && (v as number) >= 1)
    ? null
    : "must be null (nf / 4) or a positive integer"),
  "fusion.nf": posInt,
  "fusion.levels": levels,
  // the tissue task's labels: background, CSF, GM, WM (the cohort's label maps)
  "fusion.classes": (v) => (v === 4 ? null : "must be 4 (background, CSF, GM, WM: the tissue labels)"),
  "wholebrain.nf": posInt,
  "wholebrain.levels": levels,
  "wholebrain.batch": posInt,
  "brainmask.nf": posInt,
  "brainmask.levels": levels,
  "wholebrain.unestWindow": posInt,
  "wholebrain.unestDepths": (v) =>
    /^[1-9][0-9]*(,[1-9][0-9]*)*$/.test(String(v))
      ? null
      : 'must list positive layer counts per stage, comma-separated (e.g. "2,2,8")',
  "checks.window": (v) => ((v as number) > 0 && (v as number) <= 1 ? null : "must be in (0, 1]"),
  "checks.maxGainPsnr": nonNegative,
  "checks.maxGainDice": nonNegative,
  "checks.minDice": (v) => ((v as number) >= 0 && (v as number) <= 1 ? null : "must be in [0, 1]"),
};
function posInt(v: unknown): string | null {
  return Number.isInteger(v) && (v as number) >= 1 ? null : "must be a positive integer";
}
function levels(v: unknown): string | null {
  return Number.isInteger(v) && (v as number) >= 2 && (v as number) <= 6
    ? null
    : "must be an integer from 2 to 6";
}
function nonNegative(v: unknown): string | null {
  return typeof v === "number" && Number.isFinite(v) && v >= 0 ? null : "must be a finite number >= 0";
}

/**
 * Checks a configuration (after `--config` is merged) against its profile's defaults: every
 * setting has the default's type (an object stays an object; `null` defaults take a number),
 * named choices are among their values, numbers in their ranges, schedules valid. Returns the
 * first problem as one line naming the setting, or null.
 */
export function configProblem(cfg: RunConfig): string | null {
  const defaults = profileConfig(typeof cfg.profile === "string" ? cfg.profile : "default");
  const walk = (value: unknown, def: unknown, path: string): string | null => {
    const shown = JSON.stringify(value);
    if (def !== null && typeof def === "object") {
      if (value === null || typeof value !== "object" || Array.isArray(value)) {
        return `${path}: must be an object of settings, got ${shown}`;
      }
      for (const [k, d] of Object.entries(def)) {
        const p = walk((value as Record<string, unknown>)[k], d, path ? `${path}.${k}` : k);
        if (p) return p;
      }
      return null;
    }
    const okType = def === null ? value === null || typeof value === "number" : typeof value === typeof def;
    if (!okType) {
      return `${path}: must be ${def === null ? "null or a number" : `a ${typeof def}`}, got ${shown}`;
    }
    if (typeof value === "number" && !Number.isFinite(value)) return `${path}: must be finite, got ${shown}`;
    const choices = CHOICES[path];
    if (choices && !choices.includes(value as string)) {
      return `${path}: must be one of ${choices.map((c) => JSON.stringify(c)).join(", ")}, got ${shown}`;
    }
    const range = RANGES[path]?.(value);
    return range ? `${path}: ${range}, got ${shown}` : null;
  };
  const typed = walk(cfg, defaults, "");
  if (typed) return typed;
  for (const [where, sch] of schedulesOf(cfg)) {
    const problem = scheduleProblem(where, sch);
    if (problem) return problem;
  }
  if (cfg.fusion.keeperFolds === "each" && cfg.fusion.keeper === "random") {
    return 'fusion.keeperFolds "each" needs fusion.keeper "trained" (the random control is one untrained KKN)';
  }
  if (cfg.keeper.nf !== cfg.teacher.nf || cfg.keeper.levels !== cfg.teacher.levels) {
    return "keeper.nf and keeper.levels must equal teacher.nf and teacher.levels (the KKN feeds the teacher's decoder)";
  }
  return null;
}

/**
 * A configuration as an earlier version wrote it (a run's `config.json`, a plan arm's), with the
 * settings added since at their defaults: what it ran with. A setting since removed throws.
 */
export function withDefaults(written: unknown, profile: string, seed: number): RunConfig {
  return mergeConfig(profileConfig(profile, seed), written);
}

/** Recursively overlays `patch` on `base` (objects merge, other values replace). */
export function mergeConfig<T>(base: T, patch: unknown): T {
  if (patch === null || typeof patch !== "object" || Array.isArray(patch)) return patch as T;
  const out = { ...(base as Record<string, unknown>) };
  for (const [k, v] of Object.entries(patch as Record<string, unknown>)) {
    if (!(k in out)) throw new Error(`config: unknown setting "${k}"`);
    out[k] = typeof v === "object" && v !== null && !Array.isArray(v) ? mergeConfig(out[k], v) : v;
  }
  return out as T;
}

export interface Context {
  cfg: RunConfig;
  runDir: string;
  log(line: Record<string, unknown>): Promise<void>;
  /** Convergence verdicts of the phases run so far. */
  reports: ConvergenceReport[];
  /** Continue past a phase that has not converged (a warning instead of an error). */
  allowUnconverged: boolean;
  /**
   * The 2D three-view pipeline: the networks see the slices of `view` (`lib/data/views.ts`),
   * `batch` slices a training step; absent, they see volumes and 3D patches.
   */
  slices?: Slicing;
  /**
   * A 3D network with a fixed input (UNesT): the edge of the crops it trains on and of the sliding
   * windows (`slidingWindow`) that predict a volume. Absent: whole volumes.
   */
  window?: number;
  /** Put before every checkpoint name (a view's networks: `axial-`). */
  prefix?: string;
}

/**
 * A context for reading a finished run's models (scoring, figures, segment): nothing is logged or
 * judged, and nothing trains.
 */
export function readOnlyContext(cfg: RunConfig, runDir: string): Context {
  return { cfg, runDir, log: async () => {}, reports: [], allowUnconverged: true };
}

/** 2D training on one view's slices. */
export interface Slicing {
  view: View;
  batch: number;
  /**
   * Neighbouring slices on each side a segmentation network reads with each slice (its input
   * channels; FastSurfer-CNN: 3); 0 or absent: the slice alone. Teachers and KKNs read one slice.
   */
  thick?: number;
}

export const ckpt = (ctx: Context, name: string) =>
  join(ctx.runDir, "checkpoints", `${ctx.prefix ?? ""}${name}`);

export function seedOf(...parts: number[]): number {
  return parts.reduce((h, p) => (Math.imul(h ^ p, 2654435761) >>> 0) + 0x9e37, 0x811c9dc5) >>> 0;
}

/** A training sample: arrays of one or more subjects, and the tensor shape they make. */
interface Sample {
  /** The (first) subject sampled: what the arrays' keys mean. */
  subject: Subject;
  arrays: Record<string, Float32Array>;
  /** [1, D, H, W, 1] for a volume or patch, [B, 1, H, W, 1] for B slices. */
  tensorShape: [number, number, number, number, number];
  /** Slices: the subject and slice index of each batch entry (for thick-slice inputs). */
  picks?: { subject: Subject; slice: number }[];
}

/** An array of a sample as the networks' input tensor. */
function sampleTensor(a: Sample, key: string): tf.Tensor5D {
  return tf.tensor5d(a.arrays[key], a.tensorShape);
}

/**
 * A segmentation network's input from a sample: the image `key`, or with thick slices
 * (`slices.thick`) each drawn slice with its neighbours as channels `[B, 1, H, W, 2t + 1]`.
 */
function segmenterInput(a: Sample, key: string, slices?: Slicing): tf.Tensor5D {
  const t = slices?.thick ?? 0;
  if (!t || !a.picks) return sampleTensor(a, key);
  const [b, , h, w] = a.tensorShape;
  const shape = sliceShape(a.picks[0].subject.shape, slices!.view);
  const parts = a.picks.map(({ subject, slice }) =>
    thickSlices(viewStack(subject, key, slices!.view), shape, [slice], t)
  );
  const values = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  parts.reduce((at, p) => (values.set(p, at), at + p.length), 0);
  return tf.tensor5d(values, [b, 1, h, w, 2 * t + 1]);
}

/**
 * The slice itself of a thick-slice input (its middle channel), what a 2D KKN reads; a
 * one-channel input as it is.
 */
export function middleSlice(x: tf.Tensor5D): tf.Tensor5D {
  const c = x.shape[4];
  if (c === 1) return x;
  return tf.slice(x, [0, 0, 0, 0, (c - 1) / 2], [-1, -1, -1, -1, 1]);
}

/**
 * The training sample of 0-based step `step` of a phase. Volumes: the subject
 * `train[step % n]`, augmented (when enabled, seeded by the step), then cropped to a random patch
 * while the schedule trains on patches; `foregroundKey` names the array whose non-zero voxels
 * attract patches. Slices (`ctx.slices`): `batch` slices of the view drawn uniformly over every
 * slice of every training subject (seeded by the step), not augmented (the released code does not
 * augment the whole-brain slices).
 */
function drawSample(
  ctx: Context,
  schedule: Schedule,
  train: Subject[],
  step: number,
  seed: number,
  labelKeys: string[],
  foregroundKey: string,
): Sample {
  if (ctx.slices) return drawSlices(ctx.slices, train, seed);
  const s = train[step % train.length];
  const arrays = ctx.cfg.augment
    ? augment(s.arrays, s.shape, drawAugmentation(seed, s.shape), labelKeys)
    : s.arrays;
  const volume = (shape: [number, number, number], arrays: Record<string, Float32Array>): Sample => ({
    subject: s,
    arrays,
    tensorShape: [1, ...shape, 1],
  });
  if (!isPatchStep(schedule, step)) return volume(s.shape, arrays);
  const p = samplePatch(
    arrays,
    s.shape,
    schedule.patch,
    arrays[foregroundKey],
    schedule.foregroundBias,
    seed ^ 0x2545,
  );
  return volume(p.shape, p.arrays);
}

/** `batch` random slices of a view from the subjects (every array of theirs), seeded. */
function drawSlices({ view, batch }: Slicing, train: Subject[], seed: number): Sample {
  const r = mulberry32(seed);
  const [n, h, w] = sliceShape(train[0].shape, view);
  const keys = Object.keys(train[0].arrays);
  const arrays = Object.fromEntries(keys.map((k) => [k, new Float32Array(batch * h * w)]));
  const picks: { subject: Subject; slice: number }[] = [];
  for (let b = 0; b < batch; b++) {
    const s = train[Math.floor(r() * train.length)];
    if (sliceShape(s.shape, view).join() !== [n, h, w].join()) {
      throw new RangeError(`subject ${s.id}: grid ${s.shape.join("x")} differs from ${train[0].id}'s`);
    }
    const slice = Math.floor(r() * n);
    picks.push({ subject: s, slice });
    for (const k of keys) {
      arrays[k].set(viewStack(s, k, view).subarray(slice * h * w, (slice + 1) * h * w), b * h * w);
    }
  }
  return { subject: train[0], arrays, tensorShape: [batch, 1, h, w, 1], picks };
}

/** A subject's array as a view's slice stack, computed once per subject, array and view. */
const stacks = new WeakMap<Float32Array, Partial<Record<View, Float32Array>>>();
function viewStack(s: Subject, key: string, view: View): Float32Array {
  const a = s.arrays[key];
  const cached = stacks.get(a) ?? {};
  stacks.set(a, cached);
  return (cached[view] ??= toSlices(a, s.shape, view));
}

/** Slices a 2D network reads at once when it predicts a whole volume. */
const PREDICT_SLICES = 16;

/** Rounds, per-round step indices and the learning rate of a schedule, for `trainLoop`. */
function loopShape(
  schedule: Schedule,
): { epochs: number; items: number[]; learningRate: (step: number) => number } {
  return {
    epochs: roundsOf(schedule),
    items: Array.from({ length: schedule.validateEvery }, (_, i) => i),
    learningRate: (step) => learningRateAt(schedule, step),
  };
}

/** Records a phase's convergence verdict; throws unless the run allows unconverged phases. */
async function checkPhase(ctx: Context, report: ConvergenceReport): Promise<void> {
  ctx.reports.push(report);
  await ctx.log({ phase: report.phase, convergence: report });
  if (!report.problems.length) return;
  const line = `${report.phase}: ${report.problems.join("; ")}`;
  if (ctx.cfg.checks.enforce && !ctx.allowUnconverged) {
    throw new ConvergenceError(
      `${line} (train longer through --config, or pass --allow-unconverged to continue)`,
    );
  }
  console.error(`warning: ${line}`);
}

/**
 * A network's output for one subject, computed from the subject's image `key` (e.g. "3T"), as
 * a flat array in the volume's voxel order (channels last). With `slices`, the 2D network reads
 * the view's slices ([B, 1, H, W, 1], a few at a time) and its outputs are put back in place.
 */
export async function predictVolume(
  s: Subject,
  key: string,
  f: (x: tf.Tensor5D) => tf.Tensor,
  slices?: Slicing,
): Promise<Float32Array> {
  if (!slices) {
    const x = toTensor(s.arrays[key], s.shape);
    const y = await readAndDispose(tf.tidy(() => f(x)));
    x.dispose();
    return y;
  }
  const { view } = slices;
  const shape = sliceShape(s.shape, view);
  const [n, h, w] = shape;
  const stack = viewStack(s, key, view);
  const t = slices.thick ?? 0;
  const parts: Float32Array[] = [];
  for (let first = 0; first < n; first += PREDICT_SLICES) {
    const count = Math.min(PREDICT_SLICES, n - first);
    const x = t
      ? tf.tensor5d(
        thickSlices(stack, shape, Array.from({ length: count }, (_, i) => first + i), t),
        [count, 1, h, w, 2 * t + 1],
      )
      : tf.tensor5d(stack.subarray(first * h * w, (first + count) * h * w), [count, 1, h, w, 1]);
    parts.push(await readAndDispose(tf.tidy(() => f(x))));
    x.dispose();
  }
  const out = new Float32Array(parts.reduce((a, p) => a + p.length, 0));
  parts.reduce((at, p) => (out.set(p, at), at + p.length), 0);
  return fromSlices(out, s.shape, view, out.length / (n * h * w));
}

/**
 * `predict` as is (`window` absent), or by sliding windows of `window`^3 voxels (`slidingWindow`:
 * a network with a fixed input on a larger volume).
 */
export function windowed(
  predict: (x: tf.Tensor5D) => tf.Tensor5D,
  window?: number,
): (x: tf.Tensor5D) => tf.Tensor5D {
  return window ? (x) => slidingWindow(x, window, predict) : predict;
}

/** Per-voxel argmax of class logits, as float labels. */
export function labelsOf(logits: tf.Tensor5D): tf.Tensor {
  return tf.cast(tf.argMax(logits, 4), "float32");
}

/** A tensor's values, disposing the tensor. */
export async function readAndDispose(t: tf.Tensor): Promise<Float32Array> {
  const v = (await t.data()) as Float32Array;
  t.dispose();
  return v;
}

/** Values clipped to the images' range [0, 1] (how syntheses are scored and used). */
export function clip01(v: Float32Array): Float32Array {
  return v.map((x) => Math.min(1, Math.max(0, x)));
}

/** A subject's image `key` synthesised into a 7T-like image: the KKN, then the teacher's decoder (unclipped). */
export function synthesisOf(
  s: Subject,
  key: string,
  teacher: Teacher,
  kkn: KnowledgeKeeper,
  slices?: Slicing,
): Promise<Float32Array> {
  return predictVolume(s, key, (x) => teacher.decoder.apply(kkn.apply(x)), slices);
}

export function imageScores(
  pred: Float32Array,
  truth: Float32Array,
  shape: [number, number, number],
): Scores {
  const clipped = clip01(pred);
  return { psnr: psnr(clipped, truth), ssim: ssim3d(clipped, truth, shape) };
}

const bothImprove = (cur: Scores, best: Scores | null) =>
  !best || (cur.psnr > best.psnr && cur.ssim > best.ssim);

export interface FoldSplit {
  fold: number;
  test: Subject[];
  validation: Subject;
  train: Subject[];
}

export interface FoldSplitsOptions {
  folds: number;
  /** Test subjects per fold (1: leave-one-out). */
  testPerFold: number;
}

/**
 * Cross-validation folds: fold f tests subjects f*t .. f*t+t-1 (t = testPerFold), validates on
 * the next subject and trains on the rest; t = 1 is the paper's leave-one-out.
 */
export function foldSplits(subjects: Subject[], { folds, testPerFold }: FoldSplitsOptions): FoldSplit[] {
  const n = subjects.length, t = testPerFold;
  if (n < t + 2) {
    throw new Error(`paired cohort: ${t} test subjects a fold need at least ${t + 2} subjects, found ${n}`);
  }
  if (folds > Math.floor(n / t)) {
    throw new RangeError(
      `folds ${folds}: the paired cohort's ${n} subjects make at most ${Math.floor(n / t)} folds of ` +
        `${t} test subjects (testPerFold)`,
    );
  }
  return Array.from({ length: folds }, (_, f) => {
    const test = Array.from({ length: t }, (_, i) => f * t + i);
    const v = (f * t + t) % n;
    return {
      fold: f + 1,
      test: test.map((i) => subjects[i]),
      validation: subjects[v],
      train: subjects.filter((_, i) => !test.includes(i) && i !== v),
    };
  });
}

export function buildTeacher(cfg: RunConfig, fold: number): Teacher {
  return new Teacher(cfg.teacher, seedOf(cfg.seed, 1, fold));
}

export function buildKeeper(cfg: RunConfig, fold: number): KnowledgeKeeper {
  return new KnowledgeKeeper(cfg.keeper, seedOf(cfg.seed, 2, fold));
}

/**
 * The spec of a run's segmentation network (runs written before `network` existed: the 3D U-Net),
 * recorded in every segmentation checkpoint.
 */
export function networkSpec(cfg: RunConfig): NetworkSpec {
  const { classes, nf, levels } = cfg.fusion;
  const network = cfg.fusion.network ?? "unet3d";
  if (network === "voxresnet") {
    return { network, classes, nf, levels, voxresnetDeconv: cfg.fusion.voxresnetDeconv ?? "compact" };
  }
  if (network === "usegnet") {
    return { network, classes, nf, levels, usegnetAfmLevels: cfg.fusion.usegnetAfmLevels ?? "ends" };
  }
  if (network === "unest") {
    const depths = (cfg.fusion.unestDepths ?? UNEST_DEPTHS.small.join(",")).split(",").map(Number);
    const window = cfg.fusion.unestWindow;
    return { network, classes, nf, levels, unestDepths: depths, ...(window ? { window } : {}) };
  }
  return { network, classes, nf, levels };
}

/**
 * The segmentation network a checkpoint holds, rebuilt from the spec it records (checkpoints
 * written before specs existed: the run's configuration), with its weights loaded.
 */
export async function loadSegmenter(cfg: RunConfig, path: string): Promise<SegmentationNetwork> {
  const net = buildSegmenter(cfg, specOf(cfg, await readCheckpointMeta(path)));
  await loadCheckpoint(path, net);
  return net;
}

/** The spec a segmentation checkpoint's metadata records, else the run configuration's. */
function specOf(cfg: RunConfig, meta: Record<string, unknown>): NetworkSpec {
  return (meta.spec as NetworkSpec | undefined) ?? networkSpec(cfg);
}

/**
 * The AFM-guided network of a run's `guided-best` checkpoint, rebuilt from its spec, and the KKN
 * it was trained with (fold 1's, or the one a `fusion.keeper` "random" control names), loaded.
 */
export async function loadGuided(
  cfg: RunConfig,
  checkpoints: string,
): Promise<{ keeper: KnowledgeKeeper; guided: GuidedSegmenter }> {
  const path = join(checkpoints, "guided-best");
  const meta = await readCheckpointMeta(path);
  const keeper = buildKeeper(cfg, 1);
  await loadCheckpoint(
    join(checkpoints, String(meta.keeperCheckpoint ?? "keeper-fold1-best")),
    keeper,
    {},
    "keeper.",
  );
  const net = buildSegmenter(cfg, specOf(cfg, meta));
  const gate = (meta.afmGate as AfmGate | undefined) ?? cfg.fusion.afmGate ?? "none";
  const parts = (meta.afm as AfmParts | undefined) ?? cfg.fusion.afm ?? FULL_AFM;
  const guided = new GuidedSegmenter(net, keeper.widths, seedOf(cfg.seed, 5), gate, parts);
  await loadCheckpoint(path, guided);
  return { keeper, guided };
}

/** The run's segmentation network, freshly initialised. */
export function buildSegmenter(cfg: RunConfig, spec: NetworkSpec = networkSpec(cfg)): SegmentationNetwork {
  return buildNetwork(spec, seedOf(cfg.seed, 4));
}

/**
 * A segmentation network with the run's AFMs (runs written before `afmGate` existed: `none`;
 * before `afm`: the full AFM).
 */
export function buildGuided(
  cfg: RunConfig,
  net: SegmentationNetwork,
  keeperWidths: number[],
): GuidedSegmenter {
  return new GuidedSegmenter(
    net,
    keeperWidths,
    seedOf(cfg.seed, 5),
    cfg.fusion.afmGate ?? "none",
    cfg.fusion.afm ?? FULL_AFM,
  );
}

/** PSNR/SSIM of the 3T input itself against 7T: the floor a synthesis has to beat. */
export function floorScores(s: Subject): Scores {
  return imageScores(s.arrays["3T"], s.arrays["7T"], s.shape);
}

/** Phase 1 for one fold. */
export async function trainTeacher(ctx: Context, split: FoldSplit): Promise<Teacher> {
  const teacher = buildTeacher(ctx.cfg, split.fold);
  const schedule = ctx.cfg.teacher.train;
  const opt = adam(schedule.learningRate);
  const params = teacher.parameters();
  const label = `${ctx.slices ? `${ctx.slices.view} 2D ` : ""}teacher fold ${split.fold}`;
  const result = await trainLoop({
    label,
    checkpoint: ckpt(ctx, `teacher-fold${split.fold}`),
    ...loopShape(schedule),
    module: teacher,
    optimizers: { teacher: opt },
    progress: ctx.cfg.progress,
    step: (_i, _round, _index, step) => {
      const seed = seedOf(ctx.cfg.seed, 11, split.fold, step);
      const a = drawSample(ctx, schedule, split.train, step, seed, [], "7T");
      const y7 = sampleTensor(a, "7T");
      let parts: Record<string, number> = {};
      const cost = opt.minimize(
        () => {
          const l = teacher.loss(y7, seed);
          parts = { image: l.image.dataSync()[0], feature: l.feature.dataSync()[0] };
          return l.total;
        },
        true,
        params,
      )!;
      const loss = cost.dataSync()[0];
      tf.dispose([cost, y7]);
      return Promise.resolve({ loss, ...parts });
    },
    validate: async () => {
      const s = split.validation;
      return imageScores(
        await predictVolume(s, "7T", (y) => teacher.reconstruct(y), ctx.slices),
        s.arrays["7T"],
        s.shape,
      );
    },
    better: bothImprove,
    log: ctx.log,
  });
  await checkPhase(ctx, judgeImage(ctx, label, result.history, schedule, floorScores(split.validation)));
  await loadCheckpoint(ckpt(ctx, `teacher-fold${split.fold}-best`), teacher);
  opt.dispose();
  return teacher;
}

/** Convergence of an image phase: validation PSNR, floored by the 3T input's own PSNR. */
function judgeImage(ctx: Context, label: string, history: Scores[], schedule: Schedule, floor: Scores) {
  const { window, maxGainPsnr } = ctx.cfg.checks;
  return judgeConvergence(label, "PSNR", history.map((h) => h.psnr), schedule.validateEvery, {
    window,
    maxGain: maxGainPsnr,
    floor: floor.psnr,
    floorName: "the 3T input's own PSNR",
  });
}

/** KKN and discriminator as one module, so one checkpoint resumes both. */
class KeeperPair extends Module {
  constructor(kkn: KnowledgeKeeper, disc?: PatchDiscriminator) {
    super();
    this.child("keeper", kkn);
    if (disc) this.child("discriminator", disc);
  }
}

/** Phase 2 for one fold (teacher frozen). */
export async function trainKeeper(
  ctx: Context,
  split: FoldSplit,
  teacher: Teacher,
): Promise<KnowledgeKeeper> {
  const kkn = buildKeeper(ctx.cfg, split.fold);
  const disc = new PatchDiscriminator(
    ctx.cfg.keeper.discriminatorNf,
    seedOf(ctx.cfg.seed, 3, split.fold),
    ctx.cfg.keeper.dims ?? 3,
  );
  const schedule = ctx.cfg.keeper.train;
  const optK = adam(schedule.learningRate), optD = adam(schedule.learningRate);
  const { lambdaSyn, lambdaAdv, distribution } = ctx.cfg.keeper;
  // runs written before `distillation` existed distilled
  const distilling = ctx.cfg.keeper.distillation ?? true;
  const pair = new KeeperPair(kkn, disc);
  const label = `${ctx.slices ? `${ctx.slices.view} 2D ` : ""}keeper fold ${split.fold}`;
  const result = await trainLoop({
    label,
    checkpoint: ckpt(ctx, `keeper-fold${split.fold}`),
    ...loopShape(schedule),
    module: pair,
    optimizers: { keeper: optK, discriminator: optD },
    progress: ctx.cfg.progress,
    step: (_i, _round, _index, step) => {
      const a = drawSample(
        ctx,
        schedule,
        split.train,
        step,
        seedOf(ctx.cfg.seed, 12, split.fold, step),
        [],
        "7T",
      );
      const x3 = sampleTensor(a, "3T"), y7 = sampleTensor(a, "7T");
      const target = distilling ? tf.tidy(() => teacher.encoder.apply(y7)) : null;
      // Algorithm 1 lines 12-19: the KKN update through the frozen teacher decoder; its synthesis
      // is kept (outside the gradient tape, i.e. detached) for the LSGAN discriminator update
      // that follows, so one forward pass serves both.
      let parts: Record<string, number> = {};
      let fake: tf.Tensor5D | undefined;
      const kCost = optK.minimize(
        () => {
          const feats = kkn.apply(x3);
          const syn = teacher.decoder.apply(feats);
          fake = tf.keep(syn);
          const distill = target ? distillationLoss(target, feats, distribution) : tf.scalar(0);
          const synthesis = l1(syn, y7);
          const adv = adversarialLoss(disc.apply(syn));
          parts = {
            distill: distill.dataSync()[0],
            synthesis: synthesis.dataSync()[0],
            adversarial: adv.dataSync()[0],
          };
          return tf.add(distill, tf.add(tf.mul(lambdaSyn, synthesis), tf.mul(lambdaAdv, adv))) as tf.Scalar;
        },
        true,
        kkn.parameters(),
      )!;
      const dCost = optD.minimize(
        () => discriminatorLoss(disc.apply(y7), disc.apply(fake!)),
        true,
        disc.parameters(),
      )!;
      const out = { loss: kCost.dataSync()[0], discriminator: dCost.dataSync()[0], ...parts };
      tf.dispose([x3, y7, fake!, dCost, kCost]);
      if (target) tf.dispose(target);
      return Promise.resolve(out);
    },
    validate: async () => {
      const s = split.validation;
      return imageScores(await synthesisOf(s, "3T", teacher, kkn, ctx.slices), s.arrays["7T"], s.shape);
    },
    better: bothImprove,
    log: ctx.log,
  });
  await checkPhase(ctx, judgeImage(ctx, label, result.history, schedule, floorScores(split.validation)));
  await loadCheckpoint(ckpt(ctx, `keeper-fold${split.fold}-best`), pair);
  optK.dispose();
  optD.dispose();
  return kkn;
}

export interface FeatureDistances {
  level: number;
  voxels: number;
  /** 3T features from the teacher encoder. */
  d3T7T: number;
  d3TLike: number;
  d7TLike: number;
  /** 3T features from the KKN's dense extractor (the paper's Appendix A); absent in older runs. */
  dX7T?: number;
  dXLike?: number;
}

export interface FoldMetrics {
  fold: number;
  subject: string;
  teacher: Scores;
  keeper: Scores;
  floor3T: Scores;
  /**
   * Per level, L2 distances between channel-averaged feature maps (Table A.1), under two readings
   * of "3T features": the teacher encoder applied to the 3T image (`d3T7T`, `d3TLike`) and, as in
   * the paper's Appendix A, the KKN's own low-field extractor (`dX7T`, `dXLike`). `voxels` turns
   * an L2 distance into a root mean square (L2 / sqrt(voxels)).
   */
  featureDistance: FeatureDistances[];
}

/**
 * Test-subject metrics of one fold: Table 1-style synthesis scores and Table A.1 distances.
 * `images`, when given, receives each subject's reconstruction and synthesis (volume order).
 */
export async function evaluateFold(
  split: FoldSplit,
  teacher: Teacher,
  kkn: KnowledgeKeeper,
  slices?: Slicing,
  images?: (s: Subject, recon: Float32Array, syn: Float32Array) => void,
): Promise<FoldMetrics[]> {
  const out: FoldMetrics[] = [];
  for (const s of split.test) out.push(await evaluateSubject(split.fold, s, teacher, kkn, slices, images));
  return out;
}

/**
 * A subject's whole image `key` as one input tensor: [1, D, H, W, 1], or with `slices` every
 * slice of the view [n, 1, H, W, 1] (outputs go back to volume order with `predictVolume`).
 */
function volumeTensor(s: Subject, key: string, slices?: Slicing): tf.Tensor5D {
  if (!slices) return toTensor(s.arrays[key], s.shape);
  const [n, h, w] = sliceShape(s.shape, slices.view);
  return tf.tensor5d(viewStack(s, key, slices.view), [n, 1, h, w, 1]);
}

async function evaluateSubject(
  fold: number,
  s: Subject,
  teacher: Teacher,
  kkn: KnowledgeKeeper,
  slices?: Slicing,
  images?: (s: Subject, recon: Float32Array, syn: Float32Array) => void,
): Promise<FoldMetrics> {
  // the images through `predictVolume`; the feature maps (whose L2 distances sum over every
  // position, in any order) from whole-volume (or whole-stack) tensors
  const recon = await predictVolume(s, "7T", (y) => teacher.reconstruct(y), slices);
  const syn = await synthesisOf(s, "3T", teacher, kkn, slices);
  images?.(s, recon, syn);
  const x3 = volumeTensor(s, "3T", slices), y7 = volumeTensor(s, "7T", slices);
  const f7 = tf.tidy(() => teacher.encoder.apply(y7));
  const f3 = tf.tidy(() => teacher.encoder.apply(x3));
  const fx = tf.tidy(() => kkn.extract(x3));
  const fk = tf.tidy(() => kkn.guide(fx));
  const distances: FeatureDistances[] = [];
  for (let i = 0; i < f7.length; i++) {
    const [b0, d, h, w, c] = f7[i].shape, cx = fx[i].shape[4];
    const [a, b, k, x] = [await f3[i].data(), await f7[i].data(), await fk[i].data(), await fx[i].data()];
    distances.push({
      level: i + 1,
      voxels: b0 * d * h * w,
      d3T7T: featureDistance(a, b, c),
      d3TLike: featureDistance(a, k, c),
      d7TLike: featureDistance(b, k, c),
      dX7T: featureDistance(x, b, cx, c),
      dXLike: featureDistance(x, k, cx, c),
    });
  }
  tf.dispose([x3, y7, ...f7, ...f3, ...fk, ...fx]);
  return {
    fold,
    subject: s.id,
    teacher: imageScores(recon, s.arrays["7T"], s.shape),
    keeper: imageScores(syn, s.arrays["7T"], s.shape),
    floor3T: floorScores(s),
    featureDistance: distances,
  };
}

/** Which trained KKNs guide the segmenter in phase 3 (`RunConfig.fusion.keeperFolds`). */
export type KeeperFolds = "first" | "each";

export interface FusionMetrics {
  classes: string[];
  /**
   * The KKN folds that guided (one guided model each); `guided` is the mean of their Dice per
   * subject, `guidedPerFold` each one's. Absent in runs from before the option: fold 1's only.
   */
  keeperFolds?: number[];
  /**
   * Per test subject: the baseline (the paper's protocol), the baseline trained on for as many
   * epochs as the AFM fine-tuning without AFMs (a control for the extra training), and the guided.
   */
  subjects: {
    id: string;
    baseline: number[];
    baselineMatched: number[];
    guided: number[];
    guidedPerFold?: number[][];
  }[];
  /** Paired t-tests per class: guided against the baseline and against the epoch-matched control. */
  tTest: {
    class: string;
    baselineMean: number;
    baselineMatchedMean: number;
    guidedMean: number;
    t: number;
    p: number;
    tMatched: number;
    pMatched: number;
  }[];
}

/**
 * Which tissue image the segmenters read: `low-field` (the 1.5T scan, or 3T where a cohort has
 * no 1.5T), `ideal` (the phantom's noise-free 1.5T image, for measuring a segmentation ceiling) or
 * `synthesized` (the low-field scan through fold 1's KKN and teacher decoder: the image-level
 * guidance of Table B.1; `addSyntheses` computes it).
 */
export type SegmentationInput = "low-field" | "ideal" | "synthesized";

/** The key under which `addSyntheses` stores a subject's 7T-like synthesis. */
export const SYNTHESIZED_KEY = "synthesized";

/** The manifest key of the image a segmentation subject is segmented from. */
export function segInput(s: Subject, input: SegmentationInput = "low-field"): string {
  if (input === "synthesized") {
    if (!(SYNTHESIZED_KEY in s.arrays)) {
      throw new Error(
        `tissue subject ${s.id}: no 7T-like synthesis (fusion.input "synthesized" needs addSyntheses)`,
      );
    }
    return SYNTHESIZED_KEY;
  }
  if (input === "ideal") {
    if (!(IDEAL_KEY in s.arrays)) {
      throw new Error(
        `tissue subject ${s.id}: no "${IDEAL_KEY}" image (fusion.input "ideal" needs a phantom cohort from generator ${GENERATOR_VERSION} or later)`,
      );
    }
    return IDEAL_KEY;
  }
  return "1.5T" in s.arrays ? "1.5T" : "3T";
}

/**
 * Adds to every subject its low-field image synthesised into a 7T-like image by the KKN and the
 * frozen teacher decoder (whole volume, clipped to [0, 1] as the synthesis scores are), under
 * `SYNTHESIZED_KEY`.
 */
export async function addSyntheses(
  subjects: Subject[],
  teacher: Teacher,
  kkn: KnowledgeKeeper,
): Promise<void> {
  for (const s of subjects) {
    s.arrays[SYNTHESIZED_KEY] = clip01(await synthesisOf(s, segInput(s, "low-field"), teacher, kkn));
  }
}

/** A segmentation cohort's splits, what the segmenters read and the label maps they learn. */
export interface TissueSplits {
  train: Subject[];
  validation: Subject[];
  test: Subject[];
  input: SegmentationInput;
  /** The label array's key: `tissue` (the default) or `structures` (whole brain). */
  labels?: string;
  /**
   * Predictions are background wherever the input is exactly 0 (the whole-brain task, whose test
   * scores and label maps mask air so: `WholeBrainModels.labels`), in validation too, so the
   * checkpoint is chosen by the Dice it will be scored with.
   */
  airIsBackground?: boolean;
}

/**
 * A cohort's train, validation and test subjects by their manifest split; an error naming the
 * `cohort` (and what its manifest lists: `scans` or `subjects`) when one of the three is empty.
 */
export function cohortSplits(
  subjects: Subject[],
  cohort: string,
  listed = "scans",
): Pick<TissueSplits, "train" | "validation" | "test"> {
  const of = (split: string) => subjects.filter((s) => s.split === split);
  const data = { train: of("train"), validation: of("validation"), test: of("test") };
  if (!data.train.length || !data.validation.length || !data.test.length) {
    throw new Error(`${cohort} cohort: needs train, validation and test ${listed} in its manifest`);
  }
  return data;
}

/** The tissue cohort's train, validation and test subjects and the input `fusion.input` names. */
export function tissueSplits(cfg: RunConfig, subjects: Subject[]): TissueSplits {
  const data = cohortSplits(subjects, "tissue", "subjects");
  const input = cfg.fusion.input ?? "low-field";
  for (const s of subjects) segInput(s, input); // fails early, naming the subject
  return { ...data, input };
}

/** The stage fields of a segmentation network trained without AFMs. */
export function unguided(net: SegmentationNetwork) {
  return {
    module: net,
    logits: (x: tf.Tensor5D) => net.apply(x),
    forward: (x: tf.Tensor5D) => decodeAll(net, net.encode(x)),
    keeper: null,
    auxDecay: net.auxDecay ?? 0,
  };
}

/**
 * The stage fields of the network trained alone: the `baseline` (on its own schedule) or the
 * epoch-matched control `baseline-matched` (trained on from the best baseline, on the AFM
 * fine-tuning's schedule and seed).
 */
export function unguidedStage(
  ctx: Context,
  net: SegmentationNetwork,
  name: "baseline" | "baseline-matched",
  label: string,
  meta: Record<string, unknown>,
) {
  const matched = name === "baseline-matched";
  return {
    label: matched ? `baseline ${label}, epoch-matched` : `baseline ${label}`,
    name,
    schedule: matched ? ctx.cfg.fusion.fusion : ctx.cfg.fusion.baseline,
    seedTag: matched ? 14 : 13,
    ...unguided(net),
    meta,
  };
}

/**
 * The stage fields of AFM fine-tuning: `guided` with the frozen `kkn`, on the fine-tuning's
 * schedule and seed; its checkpoints record `meta` with the AFM settings, the KKN's widths and
 * the checkpoint of the KKN that guided (`keeperCheckpoint`), from which it is rebuilt.
 */
export function guidedStage(
  ctx: Context,
  guided: GuidedSegmenter,
  kkn: KnowledgeKeeper,
  { label, name, keeperCheckpoint, auxDecay, meta }: {
    label: string;
    name: string;
    keeperCheckpoint: string;
    auxDecay: number;
    meta: Record<string, unknown>;
  },
) {
  return {
    label,
    name,
    schedule: ctx.cfg.fusion.fusion,
    module: guided,
    seedTag: 14,
    logits: (x: tf.Tensor5D, fk: tf.Tensor5D[]) => guided.apply(x, fk),
    forward: (x: tf.Tensor5D, fk: tf.Tensor5D[]) => guided.forward(x, fk),
    keeper: kkn,
    meta: {
      ...meta,
      afmGate: ctx.cfg.fusion.afmGate ?? "none",
      afm: ctx.cfg.fusion.afm ?? FULL_AFM,
      keeperWidths: kkn.widths,
      keeperCheckpoint,
    },
    auxDecay,
  };
}

/** The key of a training subject's per-voxel loss weights (`wce+dice`). */
const LOSS_WEIGHTS_KEY = "lossWeights";

/** Each label volume's `classWeightMap`, computed once. */
const lossWeights = new WeakMap<Float32Array, Float32Array>();

/**
 * The subjects with their label volume's loss weights (`classWeightMap`, computed on the whole
 * volume as the released code does, before slicing or patching) as one more array.
 */
function withLossWeights(subjects: Subject[], labelsKey: string): Subject[] {
  return subjects.map((s) => {
    const labels = s.arrays[labelsKey];
    if (!labels) throw new Error(`subject ${s.id}: no "${labelsKey}" label map for the loss weights`);
    let w = lossWeights.get(labels);
    if (!w) lossWeights.set(labels, w = classWeightMap(labels, s.shape));
    return { ...s, arrays: { ...s.arrays, [LOSS_WEIGHTS_KEY]: w } };
  });
}

/** Sets `labels` to background (0) wherever `input` is exactly 0: air of a skull-stripped scan. */
export function airAsBackground(labels: Float32Array, input: Float32Array): Float32Array {
  for (let i = 0; i < labels.length; i++) if (input[i] === 0) labels[i] = 0;
  return labels;
}

/**
 * Dice per class of each subject, `predict` giving logits of a volume, or with `feed.slices` of a
 * view's slices (a 2D network), or with `feed.window` of each sliding window (averaged).
 */
export async function diceOf(
  subjects: Subject[],
  data: Pick<TissueSplits, "input" | "labels" | "airIsBackground">,
  classes: number,
  predict: (x: tf.Tensor5D) => tf.Tensor5D,
  feed: Pick<Context, "slices" | "window"> = {},
): Promise<number[][]> {
  const out: number[][] = [];
  const logits = windowed(predict, feed.window);
  for (const s of subjects) {
    const input = segInput(s, data.input);
    const labels = await predictVolume(s, input, (x) => labelsOf(logits(x)), feed.slices);
    if (data.airIsBackground) airAsBackground(labels, s.arrays[input]);
    out.push(dicePerClass(labels, s.arrays[data.labels ?? "tissue"], classes));
  }
  return out;
}

/**
 * One segmentation stage (baseline, epoch-matched control or AFM fine-tuning): the segmentation
 * loss on augmented patches or volumes, validated by Dice (best: the sum of foreground per-class
 * Dice), judged for convergence, then left at its best checkpoint.
 */
export async function trainSegmenter(
  ctx: Context,
  data: TissueSplits,
  stage: {
    label: string;
    name: string;
    schedule: Schedule;
    module: Module;
    seedTag: number;
    logits: (x: tf.Tensor5D, keeper: tf.Tensor5D[]) => tf.Tensor5D;
    /** Training forward pass: logits and deep-supervision outputs. */
    forward: (x: tf.Tensor5D, keeper: tf.Tensor5D[]) => { logits: tf.Tensor5D; aux: tf.Tensor5D[] };
    /** The frozen KKN whose 7T-like features the network takes (AFM stage), or null. */
    keeper: KnowledgeKeeper | null;
    /** Recorded in the stage's checkpoints (the network spec). */
    meta: Record<string, unknown>;
    /** Deep supervision weight 1 - auxDecay * round (the network's; 0: constant). */
    auxDecay: number;
  },
): Promise<void> {
  const { label, name, schedule, module, seedTag, logits, forward, keeper } = stage;
  const { classes, loss: lossKind } = ctx.cfg.fusion;
  const labelsKey = data.labels ?? "tissue";
  const weighted = lossKind === "wce+dice";
  const train = weighted ? withLossWeights(data.train, labelsKey) : data.train;
  // (a thick-slice input's KKN reads the slice itself)
  const features = (x: tf.Tensor5D) => (keeper ? tf.tidy(() => keeper.apply(middleSlice(x))) : []);
  const mean = (v: number[]) => v.reduce((a, b) => a + b, 0) / v.length;
  const opt = adam(schedule.learningRate);
  const result = await trainLoop({
    label,
    checkpoint: ckpt(ctx, name),
    ...loopShape(schedule),
    module,
    optimizers: { [name]: opt },
    progress: ctx.cfg.progress,
    meta: stage.meta,
    step: (_i, round, _index, step) => {
      const a = drawSample(
        ctx,
        schedule,
        train,
        step,
        seedOf(ctx.cfg.seed, seedTag, step),
        // (the loss weights follow their labels through augmentation: nearest neighbour)
        weighted ? [labelsKey, LOSS_WEIGHTS_KEY] : [labelsKey],
        labelsKey,
      );
      const x = segmenterInput(a, segInput(a.subject, data.input), ctx.slices);
      const truth = a.arrays[labelsKey];
      const y = tf.tensor(Int32Array.from(truth), [truth.length], "int32");
      const w = weighted ? tf.tensor(a.arrays[LOSS_WEIGHTS_KEY], [truth.length]) : undefined;
      const fk = features(x);
      module.train(true, seedOf(ctx.cfg.seed, seedTag, step, 0xd0));
      // deep supervision (VoxResNet, RP-Net): CE on each auxiliary output, weighted by the network's
      // schedule (VoxResNet: 1 - 0.001 a round; RP-Net: 1)
      const auxWeight = Math.max(0, 1 - stage.auxDecay * round);
      const cost = opt.minimize(
        () => {
          const out = forward(x, fk);
          const main = segmentationLoss(lossKind, out.logits, y, w);
          if (!out.aux.length || auxWeight === 0) return main;
          return tf.add(
            main,
            tf.mul(auxWeight, tf.addN(out.aux.map((a) => crossEntropy(a, y)))),
          ) as tf.Scalar;
        },
        true,
        module.parameters(),
      )!;
      module.train(false);
      const loss = cost.dataSync()[0];
      tf.dispose([x, y, cost, ...fk, ...(w ? [w] : [])]);
      return Promise.resolve({ loss });
    },
    // validation: the sum of per-class Dice without background (the authors' code includes it,
    // which lets a model that labels everything background look good) and the mean foreground Dice
    validate: async () => {
      const d = await diceOf(data.validation, data, classes, (x) => logits(x, features(x)), ctx);
      return {
        diceSum: mean(d.map((r) => r.slice(1).reduce((a, b) => a + b, 0))),
        dice: mean(d.map((r) => mean(r.slice(1)))),
      };
    },
    better: (cur, best) => !best || cur.diceSum > best.diceSum,
    log: ctx.log,
  });
  const { window, maxGainDice, minDice } = ctx.cfg.checks;
  await checkPhase(
    ctx,
    judgeConvergence(
      label,
      "mean foreground Dice",
      result.history.map((h) => h.dice),
      schedule.validateEvery,
      {
        window,
        maxGain: maxGainDice,
        floor: minDice,
        floorName: "the sanity floor",
      },
    ),
  );
  await loadCheckpoint(ckpt(ctx, `${name}-best`), module);
  opt.dispose();
}

export const TISSUE_CLASSES = ["background", "CSF", "GM", "WM"];

export interface BaselineMetrics {
  /** What the network read (`ideal`: the noise-free image, a ceiling). */
  input: SegmentationInput;
  classes: string[];
  subjects: { id: string; dice: number[] }[];
  /** Mean Dice per class over the test subjects. */
  mean: number[];
}

/** The baseline segmenter alone on the tissue cohort (phase 3's first stage), with its test Dice. */
export function trainBaseline(
  ctx: Context,
  subjects: Subject[],
): Promise<{ net: SegmentationNetwork; metrics: BaselineMetrics }> {
  return baselineStage(ctx, tissueSplits(ctx.cfg, subjects));
}

async function baselineStage(
  ctx: Context,
  data: TissueSplits,
): Promise<{ net: SegmentationNetwork; metrics: BaselineMetrics }> {
  const { classes } = ctx.cfg.fusion;
  const spec = networkSpec(ctx.cfg);
  const net = buildSegmenter(ctx.cfg, spec);
  await trainSegmenter(ctx, data, unguidedStage(ctx, net, "baseline", networkLabel(spec), { spec }));
  const dice = await diceOf(data.test, data, classes, (x) => net.apply(x));
  return { net, metrics: { input: data.input, ...testDiceMetrics(data.test, dice, classes) } };
}

/** Per-subject and mean Dice per class of test subjects. */
function testDiceMetrics(test: Subject[], dice: number[][], classes: number) {
  const mean = (c: number) => dice.reduce((a, r) => a + r[c], 0) / dice.length;
  return {
    classes: TISSUE_CLASSES.slice(0, classes),
    subjects: test.map((s, n) => ({ id: s.id, dice: dice[n] })),
    mean: Array.from({ length: classes }, (_, c) => mean(c)),
  };
}

export interface DecoderMetrics {
  fold: number;
  classes: string[];
  subjects: { id: string; dice: number[] }[];
  /** Mean Dice per class over the fold's test subjects. */
  mean: number[];
  /** The control: the run's segmentation network trained end to end on the same 3T images. */
  control?: { classes: string[]; subjects: { id: string; dice: number[] }[]; mean: number[] };
}

/**
 * Table 1 (d): the paper "trained only a U-Net decoder by taking the pre-trained KKN as an
 * encoder". A 3D U-Net decoder over the KKN's widths learns tissue labels from the frozen KKN's
 * 7T-like features of the fold's paired training subjects' 3T images (the baseline's schedule),
 * is validated on the fold's validation subject and scored on its test subjects: the same
 * subjects as Table 1's Atropos rows. As a control, the run's segmentation network (encoder
 * included) learns the same labels from the same 3T images on the same schedule and patches:
 * what the KKN's features add over the image itself.
 */
export async function trainDecoder(
  ctx: Context,
  split: FoldSplit,
  kkn: KnowledgeKeeper,
): Promise<DecoderMetrics> {
  const { classes } = ctx.cfg.fusion;
  const data: TissueSplits = {
    train: split.train,
    validation: [split.validation],
    test: split.test,
    input: "low-field", // the paired subjects' 3T image
  };
  const decoder = new UNetDecoder(classes, kkn.widths, seedOf(ctx.cfg.seed, 7, split.fold));
  const logits = (_x: tf.Tensor5D, fk: tf.Tensor5D[]) => decoder.decode(fk);
  await trainSegmenter(ctx, data, {
    label: `3D U-Net decoder on the frozen KKN, fold ${split.fold}`,
    name: `decoder-fold${split.fold}`,
    schedule: ctx.cfg.fusion.baseline,
    module: decoder,
    seedTag: 15,
    logits,
    forward: (x, fk) => ({ logits: logits(x, fk), aux: [] }),
    keeper: kkn,
    meta: { widths: kkn.widths, classes, keeperCheckpoint: `keeper-fold${split.fold}-best` },
    auxDecay: 0,
  });
  const dice = await diceOf(data.test, data, classes, (x) => decoder.decode(kkn.apply(x)));
  decoder.dispose();

  const spec = networkSpec(ctx.cfg);
  const net = buildSegmenter(ctx.cfg, spec);
  await trainSegmenter(ctx, data, {
    label: `${networkLabel(spec)} on the 3T images, fold ${split.fold}`,
    name: `paired-${spec.network}-fold${split.fold}`,
    schedule: ctx.cfg.fusion.baseline,
    seedTag: 15,
    ...unguided(net),
    meta: { spec },
  });
  const control = await diceOf(data.test, data, classes, (x) => net.apply(x));
  net.dispose();
  return {
    fold: split.fold,
    ...testDiceMetrics(data.test, dice, classes),
    control: testDiceMetrics(data.test, control, classes),
  };
}

/**
 * Phase 3 on the tissue cohort: the baseline, an epoch-matched control (the best baseline trained
 * on without AFMs for as long as the fine-tuning), then the baseline fine-tuned with AFMs (KKN
 * frozen), once per guiding KKN (`keepers`: fold 1's, or every fold's under `fusion.keeperFolds`
 * "each"; each guided model starts from the same baseline and AFM weights and sees the same
 * patches); Dice on the test subjects (averaged over the guided models) with paired t-tests.
 */
export async function trainFusion(
  ctx: Context,
  subjects: Subject[],
  keepers: { fold: number; kkn: KnowledgeKeeper }[],
): Promise<FusionMetrics> {
  const { classes } = ctx.cfg.fusion;
  const spec = networkSpec(ctx.cfg), label = networkLabel(spec);
  const data = tissueSplits(ctx.cfg, subjects);
  const testDice = (predict: (x: tf.Tensor5D) => tf.Tensor5D) => diceOf(data.test, data, classes, predict);
  const { net: baseline, metrics } = await baselineStage(ctx, data);
  const auxDecay = baseline.auxDecay ?? 0;
  baseline.dispose();
  const fromBaseline = async () => {
    const net = buildSegmenter(ctx.cfg, spec);
    await loadCheckpoint(ckpt(ctx, "baseline-best"), net);
    return net;
  };

  const matched = await fromBaseline();
  await trainSegmenter(ctx, data, unguidedStage(ctx, matched, "baseline-matched", label, { spec }));
  const matchedDice = await testDice((x) => matched.apply(x));
  matched.dispose();

  // the control `fusion.keeper` "random": an untrained KKN of the same architecture, saved so the
  // guided checkpoint names the weights it was trained with
  const random = (ctx.cfg.fusion.keeper ?? "trained") === "random";
  if (random) {
    const kkn = new KnowledgeKeeper(ctx.cfg.keeper, seedOf(ctx.cfg.seed, 6));
    keepers = [{ fold: 1, kkn }];
    // the KKN's checkpoint layout (`keeper.` names), without a discriminator
    await saveCheckpoint(ckpt(ctx, "keeper-random"), new KeeperPair(kkn), {}, { random: true });
  }
  const guidedPerFold: number[][][] = [];
  for (const { fold, kkn } of keepers) {
    const guided = buildGuided(ctx.cfg, await fromBaseline(), kkn.widths);
    await trainSegmenter(
      ctx,
      data,
      guidedStage(ctx, guided, kkn, {
        label: keepers.length > 1 ? `${label} + AFM, KKN fold ${fold}` : `${label} + AFM`,
        // fold 1's is `guided` (what the figures and `deno task segment` load)
        name: fold === 1 ? "guided" : `guided-fold${fold}`,
        keeperCheckpoint: random ? "keeper-random" : `keeper-fold${fold}-best`,
        auxDecay,
        meta: { spec },
      }),
    );
    guidedPerFold.push(await testDice((x) => guided.apply(x, kkn.apply(x))));
    guided.dispose();
  }
  const guidedDice = metrics.subjects.map((_, n) =>
    metrics.classes.map((_, c) => guidedPerFold.reduce((a, d) => a + d[n][c], 0) / guidedPerFold.length)
  );

  const rows: FusionMetrics["subjects"] = metrics.subjects.map((r, n) => ({
    id: r.id,
    baseline: r.dice,
    baselineMatched: matchedDice[n],
    guided: guidedDice[n],
    ...(keepers.length > 1 ? { guidedPerFold: guidedPerFold.map((d) => d[n]) } : {}),
  }));
  return pairedMetrics(metrics.classes, rows, keepers.map((k) => k.fold));
}

/** Per-subject Dice of the three models with the paired t-tests per class (`FusionMetrics`). */
export function pairedMetrics(
  classes: string[],
  rows: FusionMetrics["subjects"],
  keeperFolds?: number[],
): FusionMetrics {
  const mean = (v: number[]) => v.reduce((p, q) => p + q, 0) / v.length;
  const test2 = (a: number[], b: number[]) => (rows.length > 1 ? pairedTTest(a, b) : { t: NaN, p: NaN });
  const tTest = classes.map((name, c) => {
    const a = rows.map((r) => r.baseline[c]), m = rows.map((r) => r.baselineMatched[c]);
    const b = rows.map((r) => r.guided[c]);
    const t = test2(a, b), tm = test2(m, b);
    return {
      class: name,
      baselineMean: mean(a),
      baselineMatchedMean: mean(m),
      guidedMean: mean(b),
      t: t.t,
      p: t.p,
      tMatched: tm.t,
      pMatched: tm.p,
    };
  });
  return { classes, ...(keeperFolds ? { keeperFolds } : {}), subjects: rows, tTest };
}

/** Long-format CSV rows (phase, fold, subject, metric, index, value) of a run's metrics. */
/**
 * One score of a run: a row of the long-format record every table and plot can be rebuilt from.
 * `phase`: teacher / keeper (synthesis, feature distances) or segmentation; `task`: synthesis,
 * features or tissue; `network`: the model scored (the 3T floor is the 3T image itself); `variant`:
 * baseline, control (epoch-matched) or afm for segmentation, else the model's role; `unit`: the
 * class name or the feature level, empty where the metric has neither.
 */
export interface ResultRow {
  phase: string;
  task: string;
  network: string;
  variant: string;
  fold: number | "";
  subject: string;
  metric: string;
  unit: string;
  value: number;
}

export const RESULT_COLUMNS: (keyof ResultRow)[] = [
  "phase",
  "task",
  "network",
  "variant",
  "fold",
  "subject",
  "metric",
  "unit",
  "value",
];

/** Every score of a run as `ResultRow`s (the content of `metrics.csv`). */
export function resultRows(
  folds: FoldMetrics[],
  fusion: FusionMetrics | null,
  network: string,
  decoders: DecoderMetrics[] = [],
): ResultRow[] {
  const rows: ResultRow[] = [];
  for (const f of folds) {
    const base = { fold: f.fold, subject: f.subject };
    for (
      const [phase, net, variant, s] of [
        ["teacher", "teacher", "reconstruction", f.teacher],
        ["keeper", "kkn", "synthesis", f.keeper],
        ["keeper", "3T", "floor", f.floor3T],
      ] as const
    ) {
      for (const metric of ["psnr", "ssim"] as const) {
        rows.push({
          phase,
          task: "synthesis",
          network: net,
          variant,
          ...base,
          metric,
          unit: "",
          value: s[metric],
        });
      }
    }
    for (const d of f.featureDistance) {
      for (
        const [metric, value] of [
          ["d_3T_7T", d.d3T7T],
          ["d_3T_7Tlike", d.d3TLike],
          ["d_7T_7Tlike", d.d7TLike],
          ["d_3Textractor_7T", d.dX7T],
          ["d_3Textractor_7Tlike", d.dXLike],
        ] as const
      ) {
        if (value === undefined) continue; // runs from before the extractor distances
        rows.push({
          phase: "keeper",
          task: "features",
          network: "kkn",
          variant: "distance",
          ...base,
          metric,
          unit: `level ${d.level}`,
          value,
        });
      }
    }
  }
  for (const s of fusion?.subjects ?? []) {
    for (
      const [variant, dice] of [["baseline", s.baseline], ["control", s.baselineMatched], [
        "afm",
        s.guided,
      ]] as const
    ) {
      fusion!.classes.forEach((c, i) =>
        rows.push({
          phase: "segmentation",
          task: "tissue",
          network,
          variant,
          fold: "",
          subject: s.id,
          metric: "dice",
          unit: c,
          value: dice[i],
        })
      );
    }
  }
  // Table 1 (d): the decoder on the frozen KKN and its control, on the paired test subjects' 3T images
  for (const d of decoders) {
    for (
      const [net, subjects] of [["kkn+unet-decoder", d.subjects], [
        network,
        d.control?.subjects ?? [],
      ]] as const
    ) {
      for (const s of subjects) {
        d.classes.forEach((c, i) =>
          rows.push({
            phase: "segmentation",
            task: "tissue",
            network: net,
            variant: "paired 3T",
            fold: d.fold,
            subject: s.id,
            metric: "dice",
            unit: c,
            value: s.dice[i],
          })
        );
      }
    }
  }
  return rows;
}

/** `metrics.csv`: `resultRows` with a header (RFC 4180; no field needs quoting). */
export function metricsCsv(
  folds: FoldMetrics[],
  fusion: FusionMetrics | null,
  network: string,
  decoders: DecoderMetrics[] = [],
): string {
  const rows = resultRows(folds, fusion, network, decoders).map((r) =>
    RESULT_COLUMNS.map((k) => r[k]).join(",")
  );
  return [RESULT_COLUMNS.join(","), ...rows].join("\n") + "\n";
}

export async function writeJson(path: string, value: unknown): Promise<void> {
  await writeFileAtomic(path, JSON.stringify(value, null, 2) + "\n");
}
