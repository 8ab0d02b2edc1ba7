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

/** Cross-entropy of logits against integer labels (mean over voxels). */
export function crossEntropy(logits: tf.Tensor5D, labels: tf.Tensor): tf.Scalar {
  const classes = logits.shape[4];
  const flat = tf.reshape(logits, [-1, classes]) as tf.Tensor2D;
  const onehot = tf.oneHot(tf.reshape(labels, [-1]) as tf.Tensor1D, classes);
  return tf.neg(tf.mean(tf.sum(tf.mul(onehot, tf.logSoftmax(flat)), 1))) as tf.Scalar;
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
    const fg = (t: tf.Tensor) => tf.slice(t as tf.Tensor2D, [0, 1], [-1, classes - 1]);
    const inter = tf.sum(tf.mul(fg(p), fg(g)), 0);
    const denom = tf.add(tf.sum(fg(p), 0), tf.sum(fg(g), 0));
    const dice = tf.div(tf.add(tf.mul(2, inter), eps), tf.add(denom, eps));
    return tf.sub(1, tf.mean(dice)) as tf.Scalar;
  });
}

export type SegmentationLoss = "ce" | "ce+dice";

/** The segmentation objective: cross-entropy (the authors' 3D tissue loss) or CE + soft Dice. */
export function segmentationLoss(kind: SegmentationLoss, logits: tf.Tensor5D, labels: tf.Tensor): tf.Scalar {
  const ce = crossEntropy(logits, labels);
  return kind === "ce" ? ce : tf.add(ce, softDiceLoss(logits, labels)) as tf.Scalar;
}
