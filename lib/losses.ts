/**
 * Every training objective of the three phases, each with the equation of the paper
 * (`../shared/paper/paper.md`) or the reference it implements. The paper writes its losses as
 * norms; the authors' code (and this module) uses their means (L1 as mean absolute error, L2 as
 * mean squared error), which changes the scale that the lambda weights act on, not the minimiser.
 *
 * - Phase 1, teacher (Eq. 2): `lambda_img * l1(Y, Y~) + sum_i mse(F_i, F~_i)`, assembled by
 *   `Teacher.loss` from `l1` and `mse`, because the feature-reconstruction heads are the teacher's.
 * - Phase 2, KKN (Eq. 6): `distillationLoss` (Eq. 5) + lambda_syn `l1` (L_syn) + lambda_adv
 *   `adversarialLoss` (L_adv); the discriminator is trained with `discriminatorLoss`.
 * - Phase 3, segmentation (Eq. 10 trains "with identical objective functions that were used in each
 *   baseline"): `segmentationLoss`, cross-entropy (the authors' 3D tissue loss) or CE + soft Dice.
 */
import * as tf from "@tensorflow/tfjs-core";
import { fastWceDice } from "./native/kernels.ts";

/** Mean squared error (the paper's ||.||_2 terms, as the authors' code computes them). */
export function mse(a: tf.Tensor, b: tf.Tensor): tf.Scalar {
  return tf.mean(tf.squaredDifference(a, b)) as tf.Scalar;
}

/** Mean absolute error (the paper's ||.||_1 terms: L_img of Eq. 2 and L_syn). */
export function l1(a: tf.Tensor, b: tf.Tensor): tf.Scalar {
  return tf.mean(tf.abs(tf.sub(a, b))) as tf.Scalar;
}

/**
 * Where the mean and standard deviation of Eq. 5 are taken: `"paper"`, channel-wise (over the
 * spatial axes, one value per channel, as the paper and Wang et al. 2021 say); `"code"`, over the
 * channels at each voxel, as the authors' code does.
 */
export type DistributionMatching = "paper" | "code";

/** Per-level distribution statistics for the matching terms of Eq. 5. */
function moments(f: tf.Tensor5D, mode: DistributionMatching): { mean: tf.Tensor; std: tf.Tensor } {
  const axes = mode === "paper" ? [1, 2, 3] : [4];
  const { mean, variance } = tf.moments(f, axes);
  return { mean, std: tf.sqrt(tf.add(variance, 1e-6)) };
}

/**
 * L_distill, Eq. 5: for every level i, feature matching mse(F_i^T, F~_i^K) plus matching of the
 * mean and the standard deviation, mse(mu(F^T), mu(F~^K)) + mse(sigma(F^T), sigma(F~^K)).
 */
export function distillationLoss(
  teacher: tf.Tensor5D[],
  keeper: tf.Tensor5D[],
  mode: DistributionMatching,
): tf.Scalar {
  let total = tf.scalar(0);
  teacher.forEach((t, i) => {
    const a = moments(t, mode), b = moments(keeper[i], mode);
    total = tf.add(total, tf.add(mse(t, keeper[i]), tf.add(mse(a.mean, b.mean), mse(a.std, b.std))));
  });
  return total;
}

/**
 * The least-squares GAN discriminator loss (Mao et al. 2017, Eq. 2 with a = 0, b = 1):
 * 0.5 (mse(D(real), 1) + mse(D(fake), 0)).
 */
export function discriminatorLoss(real: tf.Tensor, fake: tf.Tensor): tf.Scalar {
  return tf.mul(0.5, tf.add(mse(real, tf.onesLike(real)), mse(fake, tf.zerosLike(fake)))) as tf.Scalar;
}

/** L_adv of Eq. 6, the least-squares GAN generator term: mse(D(Y^), 1). */
export function adversarialLoss(fake: tf.Tensor): tf.Scalar {
  return mse(fake, tf.onesLike(fake));
}

/** Each voxel's log-likelihood of its label, sum_c g_c log softmax(logits)_c, [voxels]. */
function voxelLogLikelihood(logits: tf.Tensor5D, labels: tf.Tensor): tf.Tensor1D {
  const classes = logits.shape[4];
  const flat = tf.reshape(logits, [-1, classes]) as tf.Tensor2D;
  const onehot = tf.oneHot(tf.reshape(labels, [-1]) as tf.Tensor1D, classes);
  return tf.sum(tf.mul(onehot, tf.logSoftmax(flat)), 1) as tf.Tensor1D;
}

/** Cross-entropy of logits against integer labels (mean over voxels). */
export function crossEntropy(logits: tf.Tensor5D, labels: tf.Tensor): tf.Scalar {
  return tf.neg(tf.mean(voxelLogLikelihood(logits, labels))) as tf.Scalar;
}

/**
 * Soft Dice loss over the foreground classes 1..C-1 (Milletari et al., 3DV 2016, Eq. 1 with
 * p, g not squared in the denominator, as in nnU-Net): 1 - mean_c (2 sum p_c g_c + eps) /
 * (sum p_c + sum g_c + eps), p = softmax(logits), g one-hot labels.
 */
export function softDiceLoss(logits: tf.Tensor5D, labels: tf.Tensor, eps = 1e-5): tf.Scalar {
  return tf.tidy(() => {
    const classes = logits.shape[4];
    const p = tf.softmax(tf.reshape(logits, [-1, classes]) as tf.Tensor2D);
    const g = tf.oneHot(tf.reshape(labels, [-1]) as tf.Tensor1D, classes);
    // per-class sums over every class, then the foreground's: slicing the [C] sums instead of the
    // [N, C] maps spares a pad of the whole map in the gradient (the sums are per column, so equal)
    const inter = tf.sum(tf.mul(p, g), 0);
    const denom = tf.add(tf.sum(p, 0), tf.sum(g, 0));
    const dice = tf.div(tf.add(tf.mul(2, inter), eps), tf.add(denom, eps));
    return tf.sub(1, tf.mean(tf.slice(dice, [1], [classes - 1]))) as tf.Scalar;
  });
}

/** The whole-brain Dice term's smoothing (the released code's `SegLoss`). */
export const SAMPLE_DICE_SMOOTH = 1e-7;

/**
 * The released whole-brain code's Dice term (`SegLoss`): 1 - soft Dice per sample (a slice, or a
 * volume for a 3D network) and class, background included, averaged over both, with smoothing
 * `smooth` (1e-7 there): 1 - mean_{b,c} (2 sum p g + s) / (sum p + sum g + s). A class absent from a
 * sample adds about 1 whatever the prediction. Counting the background is what makes a network
 * label an empty (all-air) slice as background when the weighted CE gives the background almost no
 * weight.
 */
export function sampleDiceLoss(
  logits: tf.Tensor5D,
  labels: tf.Tensor,
  smooth = SAMPLE_DICE_SMOOTH,
): tf.Scalar {
  return tf.tidy(() => {
    const [b, , , , classes] = logits.shape;
    const p = tf.reshape(tf.softmax(tf.reshape(logits, [-1, classes])), [b, -1, classes]);
    const g = tf.reshape(tf.oneHot(tf.reshape(labels, [-1]) as tf.Tensor1D, classes), [b, -1, classes]);
    const inter = tf.sum(tf.mul(p, g), 1);
    const denom = tf.add(tf.sum(p, 1), tf.sum(g, 1));
    return tf.sub(1, tf.mean(tf.div(tf.add(tf.mul(2, inter), smooth), tf.add(denom, smooth)))) as tf.Scalar;
  });
}

/**
 * Cross-entropy with a weight per voxel, mean over voxels of `w * CE` (the released whole-brain
 * code's `mean(CE * w)`; the weights are not normalised, so their scale multiplies the loss).
 */
export function weightedCrossEntropy(logits: tf.Tensor5D, labels: tf.Tensor, weights: tf.Tensor): tf.Scalar {
  return tf.tidy(() => {
    const ce = tf.neg(voxelLogLikelihood(logits, labels));
    return tf.mean(tf.mul(ce, tf.reshape(weights, [-1]))) as tf.Scalar;
  });
}

/** Largest class weight and the weight added at label edges (FastSurfer's `max_weight`, `max_edge_weight`). */
export const CLASS_WEIGHT_CAP = 5;
export const EDGE_WEIGHT = 5;

/**
 * The per-voxel weights of the released whole-brain loss (FastSurfer's `create_weight_mask`, which
 * the authors' `create_weight_mask` follows), computed on a whole label volume before it is sliced:
 *
 * - median-frequency balancing: class c weighs median(n) / n_c, capped at `CLASS_WEIGHT_CAP`, with
 *   n the voxel counts of the labels 0..max (a label absent below the largest counts 0, as in the
 *   authors' loader, so it lowers the median);
 * - plus `EDGE_WEIGHT` where the label volume's gradient is non-zero, the gradient as NumPy's
 *   `np.gradient` takes it (central differences inside, one-sided at the borders), so a voxel counts
 *   as an edge when its two neighbours along an axis differ (not when only the voxel itself differs
 *   from both).
 *
 * `labels` in volume order (x fastest, then y, z) of shape `[d, h, w]` (z, y, x).
 */
export function classWeightMap(
  labels: ArrayLike<number>,
  shape: readonly [number, number, number],
): Float32Array {
  const [d, h, w] = shape;
  if (labels.length !== d * h * w) {
    throw new RangeError(`classWeightMap: ${labels.length} labels for a ${shape.join("x")} grid`);
  }
  let max = 0;
  for (let i = 0; i < labels.length; i++) {
    const l = labels[i];
    if (!Number.isInteger(l) || l < 0) {
      throw new RangeError(`classWeightMap: label ${l} is not a class index`);
    }
    if (l > max) max = l;
  }
  const counts = new Float64Array(max + 1);
  for (let i = 0; i < labels.length; i++) counts[labels[i]]++;
  const sorted = Array.from(counts).sort((a, b) => a - b);
  const m = sorted.length;
  const median = m % 2 ? sorted[(m - 1) / 2] : (sorted[m / 2 - 1] + sorted[m / 2]) / 2;
  const classWeight = Array.from(
    counts,
    (n) => Math.min(CLASS_WEIGHT_CAP, n ? median / n : CLASS_WEIGHT_CAP),
  );
  const out = new Float32Array(labels.length);
  // does np.gradient differ from zero along an axis of length `n` with stride `s` at index `i`?
  const differs = (o: number, i: number, n: number, s: number) => {
    if (n < 2) return false;
    const lo = i === 0 ? o : o - s, hi = i === n - 1 ? o : o + s;
    return labels[lo] !== labels[hi];
  };
  for (let z = 0, o = 0; z < d; z++) {
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++, o++) {
        const edge = differs(o, x, w, 1) || differs(o, y, h, w) || differs(o, z, d, w * h);
        out[o] = classWeight[labels[o]] + (edge ? EDGE_WEIGHT : 0);
      }
    }
  }
  return out;
}

/**
 * Segmentation objectives: `ce`, the authors' 3D tissue loss; `ce+dice`, plus soft Dice over the
 * foreground; `wce+dice`, the released whole-brain loss: CE weighted per voxel by `classWeightMap`
 * plus `sampleDiceLoss` (per sample and class, background included), one fused pass each way on the
 * cpu backend (`fastWceDice`).
 */
export type SegmentationLoss = "ce" | "ce+dice" | "wce+dice";
export const SEGMENTATION_LOSSES: readonly SegmentationLoss[] = ["ce", "ce+dice", "wce+dice"];

/** The segmentation objective; `weights` (per voxel, as `labels`) are required by `wce+dice`. */
export function segmentationLoss(
  kind: SegmentationLoss,
  logits: tf.Tensor5D,
  labels: tf.Tensor,
  weights?: tf.Tensor,
): tf.Scalar {
  if (kind === "ce") return crossEntropy(logits, labels);
  if (kind === "ce+dice") {
    return tf.add(crossEntropy(logits, labels), softDiceLoss(logits, labels)) as tf.Scalar;
  }
  if (!weights) throw new Error("segmentation loss wce+dice: no voxel weights given");
  const fast = fastWceDice(logits, labels, weights, SAMPLE_DICE_SMOOTH);
  if (fast) return fast;
  return tf.add(weightedCrossEntropy(logits, labels, weights), sampleDiceLoss(logits, labels)) as tf.Scalar;
}
