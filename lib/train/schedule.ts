/**
 * What a phase trains on and how fast: optimisation steps as the unit of budget, a learning rate
 * with linear warm-up and cosine decay, random patches with a foreground bias and a final stretch
 * on whole volumes, and the convergence check that fails a run whose validation score is still
 * rising when the phase stops.
 *
 * The paper's setting is a special case: whole volumes every step, a constant learning rate, and
 * one validation per pass over the training subjects (an epoch).
 */
import type * as tf from "@tensorflow/tfjs-core";
import { mulberry32 } from "../random.ts";

export interface Schedule {
  /** Optimisation steps of the phase (one volume or patch each, batch 1). */
  steps: number;
  /** Steps per round: a round ends with validation and checkpoints (the paper: one epoch). */
  validateEvery: number;
  /** Peak learning rate of Adam. */
  learningRate: number;
  /** Steps of linear warm-up from learningRate / warmupSteps to learningRate. */
  warmupSteps: number;
  /** Cosine decay from learningRate after warm-up to this at the last step (= learningRate: constant). */
  minLearningRate: number;
  /** Edge of the cubic training patch in voxels (a multiple of 16); 0 trains on whole volumes. */
  patch: number;
  /** Probability that a patch is centred on a random foreground voxel (else anywhere). */
  foregroundBias: number;
  /** Fraction of the steps, at the end, trained on whole volumes (instance-norm statistics of the whole). */
  wholeFraction: number;
}

/** The paper's protocol: `epochs` passes over `trainSubjects` whole volumes at a constant rate. */
export function paperSchedule(epochs: number, trainSubjects: number, learningRate = 2e-4): Schedule {
  return {
    steps: epochs * trainSubjects,
    validateEvery: trainSubjects,
    learningRate,
    warmupSteps: 0,
    minLearningRate: learningRate,
    patch: 0,
    foregroundBias: 0,
    wholeFraction: 1,
  };
}

/**
 * Checks a schedule read from a profile or `--config` (`where` names it, e.g. "teacher.train"):
 * returns the first problem as one line, or null.
 */
export function scheduleProblem(where: string, s: Schedule): string | null {
  const num = (k: keyof Schedule) => typeof s[k] === "number" && Number.isFinite(s[k]);
  for (const k of Object.keys(s) as (keyof Schedule)[]) {
    if (!num(k)) return `${where}.${k}: not a finite number`;
  }
  if (!Number.isInteger(s.steps) || s.steps < 1) return `${where}.steps: must be a positive integer`;
  if (!Number.isInteger(s.validateEvery) || s.validateEvery < 1) {
    return `${where}.validateEvery: must be a positive integer`;
  }
  if (!(s.learningRate > 0) || !(s.minLearningRate > 0) || s.minLearningRate > s.learningRate) {
    return `${where}: learning rates must satisfy 0 < minLearningRate <= learningRate`;
  }
  if (!Number.isInteger(s.warmupSteps) || s.warmupSteps < 0 || s.warmupSteps >= s.steps) {
    return `${where}.warmupSteps: must be an integer in [0, steps)`;
  }
  // five levels of 2x pooling: a patch needs at least 2 voxels at the deepest level
  if (s.patch !== 0 && (s.patch < 32 || s.patch % 16 !== 0)) {
    return `${where}.patch: must be 0 (whole volumes) or a multiple of 16 of at least 32`;
  }
  if (s.foregroundBias < 0 || s.foregroundBias > 1) return `${where}.foregroundBias: must be in [0, 1]`;
  if (s.wholeFraction < 0 || s.wholeFraction > 1) return `${where}.wholeFraction: must be in [0, 1]`;
  return null;
}

/** Rounds (validation points) of a schedule; the steps are rounded up to whole rounds. */
export function roundsOf(s: Schedule): number {
  return Math.ceil(s.steps / s.validateEvery);
}

/** Steps a schedule actually runs: `steps` rounded up to whole rounds. */
function totalSteps(s: Schedule): number {
  return roundsOf(s) * s.validateEvery;
}

/** Learning rate at 0-based `step`: linear warm-up, then cosine decay to the minimum. */
export function learningRateAt(s: Schedule, step: number): number {
  if (step < s.warmupSteps) return (s.learningRate * (step + 1)) / s.warmupSteps;
  const span = Math.max(1, totalSteps(s) - s.warmupSteps - 1);
  const t = Math.min(1, (step - s.warmupSteps) / span);
  return s.minLearningRate + 0.5 * (s.learningRate - s.minLearningRate) * (1 + Math.cos(Math.PI * t));
}

/** Sets Adam's learning rate for the next step (tfjs reads the field on every update). */
export function setLearningRate(opt: tf.Optimizer, lr: number): void {
  (opt as unknown as { learningRate: number }).learningRate = lr;
}

/** Whether 0-based `step` trains on a patch (else on the whole volume). */
export function isPatchStep(s: Schedule, step: number): boolean {
  if (s.patch <= 0) return false;
  return step < Math.round(totalSteps(s) * (1 - s.wholeFraction));
}

/**
 * A random cubic patch of every array of a subject (all share `shape` = [nz, ny, nx]), seeded.
 * With probability `foregroundBias` the patch is centred on a random voxel where `foreground`
 * is non-zero; otherwise its corner is uniform. Patches stay inside the volume.
 */
export function samplePatch(
  arrays: Record<string, Float32Array>,
  shape: [number, number, number],
  size: number,
  foreground: Float32Array,
  foregroundBias: number,
  seed: number,
): { arrays: Record<string, Float32Array>; shape: [number, number, number] } {
  const [nz, ny, nx] = shape;
  if (size > nz || size > ny || size > nx) {
    throw new RangeError(`patch ${size} is larger than the volume ${shape.join("x")}`);
  }
  const r = mulberry32(seed);
  let corner: [number, number, number];
  if (r() < foregroundBias) {
    let count = 0;
    for (let p = 0; p < foreground.length; p++) if (foreground[p] > 0) count++;
    let pick = Math.floor(r() * count), p = 0;
    for (; p < foreground.length; p++) if (foreground[p] > 0 && pick-- === 0) break;
    const c = [Math.floor(p / (ny * nx)), Math.floor(p / nx) % ny, p % nx];
    corner = c.map((v, d) => Math.min(shape[d] - size, Math.max(0, v - (size >> 1)))) as [
      number,
      number,
      number,
    ];
  } else {
    corner = shape.map((n) => Math.floor(r() * (n - size + 1))) as [number, number, number];
  }
  const out: Record<string, Float32Array> = {};
  for (const [key, a] of Object.entries(arrays)) {
    const b = new Float32Array(size * size * size);
    for (let z = 0; z < size; z++) {
      for (let y = 0; y < size; y++) {
        const src = ((corner[0] + z) * ny + corner[1] + y) * nx + corner[2];
        b.set(a.subarray(src, src + size), (z * size + y) * size);
      }
    }
    out[key] = b;
  }
  return { arrays: out, shape: [size, size, size] };
}

/** One phase's validation curve and the convergence verdict on it. */
export interface ConvergenceReport {
  phase: string;
  metric: string;
  final: number;
  /** Change of the validation score over the last `window` fraction of steps. */
  recentGain: number;
  /** recentGain per 100 steps. */
  slopePer100Steps: number;
  /** The floor the final score must reach, if any. */
  floor: number | null;
  /** Problems found: empty when the phase converged above its floor. */
  problems: string[];
}

/**
 * Judges a validation curve (score per round, higher is better, `stepsPerRound` apart): the
 * phase has not converged when the score gained more than `maxGain` over the last `window`
 * fraction of its steps (the mean of the last two rounds against the mean of the two rounds
 * ending where the window starts), and it is unusable when the final score lies below `floor`.
 */
export function judgeConvergence(
  phase: string,
  metric: string,
  scores: number[],
  stepsPerRound: number,
  { window, maxGain, floor, floorName }: {
    window: number;
    maxGain: number;
    floor?: number;
    floorName?: string;
  },
): ConvergenceReport {
  const n = scores.length;
  const problems: string[] = [];
  const final = scores[n - 1];
  const mean2 = (i: number) => (scores[Math.max(0, i - 1)] + scores[Math.max(0, i)]) / 2;
  const back = Math.max(1, Math.round(window * n));
  const start = n - 1 - back;
  const recentGain = n >= 3 ? mean2(n - 1) - mean2(start) : NaN;
  const slope = (recentGain / (back * stepsPerRound)) * 100;
  if (!Number.isFinite(final)) problems.push(`final validation ${metric} is ${final}`);
  else if (n < 3) problems.push(`only ${n} validation rounds: too few to judge convergence`);
  else if (recentGain > maxGain) {
    problems.push(
      `validation ${metric} still rising: +${recentGain.toPrecision(3)} over the last ${
        Math.round(window * 100)
      }% of steps (limit ${maxGain})`,
    );
  }
  if (floor !== undefined && Number.isFinite(final) && final < floor) {
    problems.push(
      `validation ${metric} ${final.toPrecision(4)} is below ${floorName ?? "the floor"} ${
        floor.toPrecision(4)
      }`,
    );
  }
  return { phase, metric, final, recentGain, slopePer100Steps: slope, floor: floor ?? null, problems };
}

/** A phase that ended unconverged or below its floor (exit 1 unless the run allows it). */
export class ConvergenceError extends Error {
  override name = "ConvergenceError";
}
