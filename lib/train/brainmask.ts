/**
 * Brain extraction: a 3D segmentation network (brain / not brain, `brainmask.network`, a small 3D
 * U-Net by default) trained in the same framework as the tissue baselines (`trainSegmenter`: the
 * patch schedule, augmentation, validation Dice, convergence verdict) on the phantom's full-head
 * scans (`lib/phantom/head.ts`, the `heads` cohort: 1.5T and 3T MPRAGE with skull, scalp and noisy
 * air), scored by brain-mask Dice on its held-out test heads. `deno task segment` runs it on an
 * input that is not skull-stripped. Its prediction is cleaned as brain-extraction tools do: the
 * largest 6-connected component, with its enclosed holes filled.
 */
import * as tf from "@tensorflow/tfjs-core";
import { join } from "node:path";
import type { Subject } from "../data/cohort.ts";
import { dicePerClass } from "../metrics.ts";
import { networkLabel } from "../models/networks.ts";
import type { SegmentationNetwork } from "../models/fusion.ts";
import { BRAIN_KEY } from "../phantom/head.ts";
import { readCheckpointMeta } from "./state.ts";
import { fillHoles, largestComponent } from "../volume/geometry.ts";
import {
  buildSegmenter,
  cohortSplits,
  type Context,
  labelsOf,
  loadSegmenter,
  networkSpec,
  predictVolume,
  type RunConfig,
  segInput,
  trainSegmenter,
  unguidedStage,
} from "./pipeline.ts";

/** The checkpoint (under the run's `checkpoints/`) of the trained brain-mask network. */
export const BRAIN_MASK_CHECKPOINT = "brainmask-baseline-best";

export interface BrainMaskMetrics {
  network: string;
  /** The heads cohort's voxel size (mm): the grid the network works on. */
  spacing: number;
  train: number;
  validation: number;
  /** Test heads: brain-mask Dice of the cleaned prediction, and of the network's raw argmax. */
  subjects: { id: string; field: string; dice: number; rawDice: number }[];
  meanDice: number;
  minDice: number;
}

/** The run configuration as the brain-mask network sees it: its network and schedule, 2 classes. */
export function brainMaskConfig(cfg: RunConfig): RunConfig {
  const { network, nf, levels, train } = cfg.brainmask;
  return { ...cfg, fusion: { ...cfg.fusion, network, nf, levels, classes: 2, baseline: train } };
}

/** The brain-mask network's context: its configuration and checkpoint names (`brainmask-...`). */
function brainMaskContext(ctx: Context): Context {
  return { ...ctx, cfg: brainMaskConfig(ctx.cfg), prefix: "brainmask-", slices: undefined };
}

/**
 * Trains the brain-mask network on the heads cohort's train scans (validated on its validation
 * scans) and scores it on the test scans. Leaves `checkpoints/brainmask-baseline-best`.
 */
export async function trainBrainMask(
  ctx: Context,
  subjects: Subject[],
  spacing: number,
): Promise<BrainMaskMetrics> {
  const data = cohortSplits(subjects, "heads");
  const mctx = brainMaskContext(ctx);
  const spec = networkSpec(mctx.cfg);
  const net = buildSegmenter(mctx.cfg, spec);
  const label = `${networkLabel(spec)} brain mask`;
  try {
    await trainSegmenter(
      mctx,
      { ...data, input: "low-field", labels: BRAIN_KEY },
      unguidedStage(mctx, net, "baseline", label, { spec, spacing }),
    );
    const scored = [];
    for (const s of data.test) {
      const raw = await predictBrainMask(net, s);
      const truth = s.arrays[BRAIN_KEY];
      scored.push({
        id: s.id,
        field: segInput(s),
        dice: dicePerClass(cleanBrainMask(raw, s.shape), truth, 2)[1],
        rawDice: dicePerClass(raw, truth, 2)[1],
      });
    }
    const dice = scored.map((r) => r.dice);
    const metrics: BrainMaskMetrics = {
      network: label,
      spacing,
      train: data.train.length,
      validation: data.validation.length,
      subjects: scored,
      meanDice: dice.reduce((a, b) => a + b, 0) / dice.length,
      minDice: Math.min(...dice),
    };
    await ctx.log({ phase: label, test: { meanDice: metrics.meanDice, minDice: metrics.minDice } });
    return metrics;
  } finally {
    net.dispose();
  }
}

/** The network's brain labels (0/1) of a subject's image, on the subject's grid. */
export async function predictBrainMask(net: SegmentationNetwork, s: Subject): Promise<Uint8Array> {
  const labels = await predictVolume(s, segInput(s), (x) => labelsOf(net.apply(x as tf.Tensor5D)));
  return Uint8Array.from(labels);
}

/**
 * The trained brain-mask network of a run (`checkpoints/brainmask-baseline-best`) and the voxel
 * size (mm) of the grid it was trained on.
 */
export async function loadBrainMask(
  cfg: RunConfig,
  runDir: string,
): Promise<{ net: SegmentationNetwork; spacing: number }> {
  const path = join(runDir, "checkpoints", BRAIN_MASK_CHECKPOINT);
  const { spacing } = await readCheckpointMeta(path);
  if (typeof spacing !== "number" || !(spacing > 0)) {
    throw new Error(`${path}.json: records no voxel size ("spacing") of the brain-mask network's grid`);
  }
  return { net: await loadSegmenter(brainMaskConfig(cfg), path), spacing };
}

/**
 * A predicted mask (voxel order [k, j, i] of `shape` [nk, nj, ni], any non-zero value is brain)
 * as brain extraction keeps it: the largest 6-connected component, its holes (background not
 * connected to the grid's border) filled. Returns 0/1 labels.
 */
export function cleanBrainMask(mask: ArrayLike<number>, shape: [number, number, number]): Uint8Array {
  return fillHoles(largestComponent(mask, shape), shape);
}
