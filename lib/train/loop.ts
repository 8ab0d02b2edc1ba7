/**
 * The epoch loop shared by the three phases: seeded steps, validation every epoch, the best
 * checkpoint by the phase's rule, a last checkpoint (parameters and optimizer state) after every
 * epoch so that an interrupted run resumes where it stopped with the same result, a progress
 * line with loss and ETA, and one JSON log line per epoch.
 */
import * as tf from "@tensorflow/tfjs-core";
import { existsSync } from "node:fs";
import type { Module } from "../nn/module.ts";
import { loadCheckpoint, saveCheckpoint } from "./state.ts";
import { setLearningRate } from "./schedule.ts";

export type Scores = Record<string, number>;

/** A training step whose loss is not finite (NaN or infinite): the phase stops at once. */
export class DivergenceError extends Error {
  override name = "DivergenceError";
}

export interface LoopSpec<S> {
  /** e.g. "teacher fold 1" */
  label: string;
  /** checkpoint path prefix; `-last` and `-best` are appended */
  checkpoint: string;
  epochs: number;
  items: S[];
  module: Module;
  optimizers: Record<string, tf.Optimizer>;
  /**
   * One training step; returns named scalar losses (numbers). `step` counts from 0 over the whole
   * phase (epoch * items + index).
   */
  step(item: S, epoch: number, index: number, step: number): Promise<Record<string, number>>;
  /** Learning rate of every optimizer at a step (set before the step and logged as `lr`). */
  learningRate?(step: number): number;
  /** Recorded in every checkpoint's metadata (e.g. the network spec that rebuilds the module). */
  meta?: Record<string, unknown>;
  validate(): Promise<Scores>;
  /** Whether `current` beats `best` (the phase's checkpoint rule). */
  better(current: Scores, best: Scores | null): boolean;
  log(line: Record<string, unknown>): Promise<void>;
  progress?: boolean;
}

export interface LoopResult {
  best: Scores | null;
  /** Validation scores of every epoch (round) so far, including those before a resume. */
  history: Scores[];
  bestEpoch: number;
  epochsRun: number;
  resumedFrom: number;
}

/** The name of the first parameter of `module` holding a NaN or infinite value, or null. */
export function firstNonFinite(module: Module): string | null {
  for (const [name, v] of module.namedParameters()) {
    const finite = tf.tidy(() => tf.all(tf.isFinite(v)).dataSync()[0]);
    if (!finite) return name;
  }
  return null;
}

function fmtTime(s: number): string {
  if (!Number.isFinite(s)) return "?";
  const m = Math.floor(s / 60);
  return m > 0 ? `${m}m${Math.round(s % 60).toString().padStart(2, "0")}s` : `${s.toFixed(0)}s`;
}

export async function trainLoop<S>(spec: LoopSpec<S>): Promise<LoopResult> {
  let start = 0;
  let best: Scores | null = null;
  let bestEpoch = -1;
  let history: Scores[] = [];
  const last = `${spec.checkpoint}-last`;
  if (existsSync(`${last}.json`)) {
    const meta = await loadCheckpoint(last, spec.module, spec.optimizers);
    start = Number(meta.epoch) + 1;
    best = (meta.best as Scores | null) ?? null;
    bestEpoch = Number(meta.bestEpoch ?? -1);
    history = (meta.history as Scores[] | undefined) ?? [];
    if (spec.progress !== false) {
      console.error(`${spec.label}: resuming after epoch ${start} of ${spec.epochs}`);
    }
  }
  const resumedFrom = start;
  const total = (spec.epochs - start) * spec.items.length;
  let done = 0;
  const t0 = performance.now();
  for (let epoch = start; epoch < spec.epochs; epoch++) {
    const sums: Record<string, number> = {};
    for (let i = 0; i < spec.items.length; i++) {
      const step = epoch * spec.items.length + i;
      const lr = spec.learningRate?.(step);
      if (lr !== undefined) { for (const o of Object.values(spec.optimizers)) setLearningRate(o, lr); }
      const losses = await spec.step(spec.items[i], epoch, i, step);
      const bad = Object.entries(losses).find(([, v]) => !Number.isFinite(v));
      if (bad) {
        throw new DivergenceError(
          `${spec.label}: loss "${bad[0]}" is ${bad[1]} at step ${step + 1} (round ${epoch + 1}); ` +
            `checkpoints keep the last finished round; lower the learning rate through --config`,
        );
      }
      if (lr !== undefined) losses.lr = lr;
      for (const [k, v] of Object.entries(losses)) sums[k] = (sums[k] ?? 0) + v;
      done++;
      if (spec.progress !== false) {
        const elapsed = (performance.now() - t0) / 1000;
        const eta = (elapsed / done) * (total - done);
        const width = 20, filled = Math.round((width * done) / Math.max(1, total));
        const lossText = Object.entries(losses).map(([k, v]) => `${k} ${v.toPrecision(3)}`).join(" ");
        const line = `\r${spec.label} epoch ${epoch + 1}/${spec.epochs} [${"#".repeat(filled)}${
          " ".repeat(width - filled)
        }] ${lossText} ETA ${fmtTime(eta)}`;
        Deno.stderr.writeSync(new TextEncoder().encode(line.padEnd(110)));
      }
    }
    const means = Object.fromEntries(Object.entries(sums).map(([k, v]) => [k, v / spec.items.length]));
    // an update can overflow the weights while the loss that drove it was finite
    const broken = firstNonFinite(spec.module);
    if (broken) {
      throw new DivergenceError(
        `${spec.label}: parameter "${broken}" is not finite after round ${epoch + 1} ` +
          `(step ${(epoch + 1) * spec.items.length}); these weights are not kept, checkpoints keep the ` +
          `last finished round; lower the learning rate through --config`,
      );
    }
    const val = await spec.validate();
    const badScore = Object.entries(val).find(([, v]) => !Number.isFinite(v));
    if (badScore) {
      throw new DivergenceError(
        `${spec.label}: validation ${badScore[0]} is ${badScore[1]} after round ${epoch + 1} ` +
          `(step ${(epoch + 1) * spec.items.length}); these weights are not kept, checkpoints keep the ` +
          `last finished round; lower the learning rate through --config`,
      );
    }
    history.push(val);
    const improved = spec.better(val, best);
    if (improved) {
      best = val;
      bestEpoch = epoch;
      await saveCheckpoint(`${spec.checkpoint}-best`, spec.module, {}, { ...spec.meta, epoch, scores: val });
    }
    await saveCheckpoint(last, spec.module, spec.optimizers, {
      ...spec.meta,
      epoch,
      best,
      bestEpoch,
      history,
    });
    await spec.log({
      phase: spec.label,
      epoch: epoch + 1,
      steps: (epoch + 1) * spec.items.length,
      train: means,
      validation: val,
      best: improved,
      tensors: tf.memory().numTensors, // constant from the second epoch on: no leak
    });
  }
  if (spec.progress !== false && total > 0) Deno.stderr.writeSync(new TextEncoder().encode("\n"));
  // no epoch ever improved (e.g. NaN scores): keep the last weights as "best"
  if (!existsSync(`${spec.checkpoint}-best.json`)) {
    await saveCheckpoint(`${spec.checkpoint}-best`, spec.module, {}, {
      ...spec.meta,
      epoch: spec.epochs - 1,
      scores: null,
    });
  }
  return { best, history, bestEpoch, epochsRun: spec.epochs - start, resumedFrom };
}
