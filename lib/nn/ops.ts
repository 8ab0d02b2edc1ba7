/**
 * Operations the networks need that TensorFlow.js lacks (or defines differently from PyTorch),
 * built from differentiable tfjs ops so their gradients come from autodiff. Each is checked
 * against finite differences in `tests/nn_ops_test.ts`.
 *
 * On the cpu backend with the native kernels installed, the resizes run as typed-array row loops
 * (`fastResample` in `lib/native/kernels.ts`); the tfjs-op versions here are the reference they
 * are tested against. (oneDNN 2.6's resampling primitive crashes intermittently on some shapes.)
 *
 * Tensors are channels-last: 5D `[batch, depth, height, width, channels]`, 4D `[batch, height,
 * width, channels]`. The spatial axes are 1 .. rank-2.
 */
import * as tf from "@tensorflow/tfjs-core";
import {
  fastInstanceNorm,
  fastLeakyRelu,
  fastMaximum,
  fastPoolMasks,
  fastResample,
  fastUnpool,
} from "../native/kernels.ts";

type Spatial = tf.Tensor4D | tf.Tensor5D;

function spatialAxes(x: tf.Tensor): number[] {
  if (x.rank !== 4 && x.rank !== 5) {
    throw new RangeError(`expected a 4D or 5D channels-last tensor, got shape [${x.shape}]`);
  }
  return x.rank === 5 ? [1, 2, 3] : [1, 2];
}

/**
 * Source indices and weights of linear interpolation from `inSize` to `outSize` samples with
 * PyTorch's `align_corners=False`: `src = (dst + 0.5) * inSize / outSize - 0.5`, clamped at 0;
 * `i0 = floor(src)`, `i1 = min(i0 + 1, inSize - 1)`, `w1 = src - i0`.
 */
export function linearWeights(
  inSize: number,
  outSize: number,
): { i0: Int32Array; i1: Int32Array; w1: Float32Array } {
  const scale = inSize / outSize;
  const i0 = new Int32Array(outSize), i1 = new Int32Array(outSize), w1 = new Float32Array(outSize);
  for (let d = 0; d < outSize; d++) {
    const src = Math.max(0, (d + 0.5) * scale - 0.5);
    const lo = Math.min(Math.floor(src), inSize - 1);
    i0[d] = lo;
    i1[d] = Math.min(lo + 1, inSize - 1);
    w1[d] = src - lo;
  }
  return { i0, i1, w1 };
}

function lerpAxis(x: tf.Tensor, axis: number, outSize: number): tf.Tensor {
  const inSize = x.shape[axis];
  if (inSize === outSize) return x;
  const { i0, i1, w1 } = linearWeights(inSize, outSize);
  const wShape = x.shape.map((_, a) => (a === axis ? outSize : 1));
  return tf.tidy(() => {
    const a = tf.gather(x, tf.tensor1d(i0, "int32"), axis);
    const b = tf.gather(x, tf.tensor1d(i1, "int32"), axis);
    const w = tf.tensor(w1, wShape);
    return tf.add(a, tf.mul(tf.sub(b, a), w));
  });
}

/**
 * Linear resize over every spatial axis (trilinear for 5D, bilinear for 4D) to `size`, matching
 * PyTorch `F.interpolate(mode="trilinear"|"bilinear", align_corners=False)`.
 */
export function resizeLinear<T extends Spatial>(x: T, size: number[]): T {
  const axes = spatialAxes(x);
  if (size.length !== axes.length || size.some((s) => !Number.isInteger(s) || s < 1)) {
    throw new RangeError(`resizeLinear: size [${size}] must give ${axes.length} positive integers`);
  }
  if (size.every((s, n) => s === x.shape[axes[n]])) return x.clone() as T;
  const fast = fastResample(x, axes.map((a, n) => linearWeights(x.shape[a], size[n])));
  if (fast) return fast;
  return tf.tidy(() => {
    let y: tf.Tensor = x;
    axes.forEach((axis, n) => (y = lerpAxis(y, axis, size[n])));
    return y as T;
  });
}

/** Trilinear resize of a 5D tensor (PyTorch `align_corners=False`). */
export function resizeTrilinear(x: tf.Tensor5D, size: [number, number, number]): tf.Tensor5D {
  return resizeLinear(x, size);
}

/** x2 upsampling by linear interpolation (PyTorch `scale_factor=2, align_corners=False`). */
export function upsampleLinear2x<T extends Spatial>(x: T): T {
  return resizeLinear(x, spatialAxes(x).map((a) => x.shape[a] * 2));
}

/**
 * x2 nearest-neighbour upsampling (each voxel repeated twice along every spatial axis), as
 * PyTorch `F.interpolate(scale_factor=2, mode="nearest")`. Built from `gather` per axis: tfjs's
 * `tile`/`broadcastTo` have no gradient above rank 5.
 */
export function upsampleNearest2x<T extends Spatial>(x: T): T {
  const axes = spatialAxes(x);
  const fast = fastResample(
    x,
    axes.map((a) => {
      const n = 2 * x.shape[a];
      return {
        i0: Int32Array.from({ length: n }, (_, d) => d >> 1),
        i1: new Int32Array(n),
        w1: new Float32Array(n),
      };
    }),
  );
  if (fast) return fast;
  return tf.tidy(() => {
    let y: tf.Tensor = x;
    for (const axis of axes) {
      const n = y.shape[axis];
      const idx = Int32Array.from({ length: 2 * n }, (_, d) => d >> 1);
      y = tf.gather(y, tf.tensor1d(idx, "int32"), axis);
    }
    return y as T;
  });
}

/**
 * Instance normalisation without affine parameters (PyTorch `InstanceNorm2d/3d` defaults):
 * each (sample, channel) is normalised over its spatial positions with the biased variance,
 * `(x - mean) / sqrt(var + eps)`.
 */
export function instanceNorm<T extends Spatial>(x: T, eps = 1e-5): T {
  const axes = spatialAxes(x);
  const fast = fastInstanceNorm(x, eps, null);
  if (fast) return fast;
  return tf.tidy(() => {
    const { mean, variance } = tf.moments(x, axes, true);
    return tf.div(tf.sub(x, mean), tf.sqrt(tf.add(variance, eps))) as T;
  });
}

/**
 * `instanceNorm` followed by a leaky ReLU of slope `slope` (0: ReLU), the normalised blocks'
 * pattern, as one operation where the native kernels run (`fastInstanceNorm`: two passes each way
 * instead of some twenty kernels); the same composition of tfjs ops elsewhere.
 */
export function instanceNormLeakyRelu<T extends Spatial>(x: T, slope: number, eps = 1e-5): T {
  spatialAxes(x);
  const fast = fastInstanceNorm(x, eps, slope);
  if (fast) return fast;
  return tf.tidy(() => {
    const y = instanceNorm(x, eps);
    return (slope === 0 ? tf.relu(y) : tf.leakyRelu(y, slope)) as T;
  });
}

/**
 * Batch normalisation with batch statistics (PyTorch `BatchNorm2d/3d` in training mode): each
 * channel is normalised over the batch and spatial positions with the biased variance, then
 * scaled by `gamma` and shifted by `beta` (both `[channels]`). With batch 1 the statistics are
 * the instance's, so this is instance normalisation with an affine transform; it is used at
 * evaluation too (no running averages), which keeps training and inference identical. With
 * `perSample` every sample is normalised by its own statistics whatever the batch size.
 */
export function batchNorm<T extends Spatial>(
  x: T,
  gamma: tf.Tensor1D,
  beta: tf.Tensor1D,
  eps = 1e-5,
  perSample = false,
): T {
  // per sample: each sample's own statistics (instance normalisation with an affine transform)
  const axes = perSample ? spatialAxes(x) : [0, ...spatialAxes(x)];
  // batch statistics of channels-last data are one "sample" of every position of the batch
  if (perSample || x.shape[0] === 1) {
    const fast = fastInstanceNorm(x, eps, null, { gamma, beta });
    if (fast) return fast;
  } else {
    const flat = tf.reshape(x, [1, -1, x.shape[x.rank - 1]]);
    const fast = fastInstanceNorm(flat, eps, null, { gamma, beta });
    flat.dispose();
    if (fast) {
      const y = tf.reshape(fast, x.shape) as T;
      fast.dispose();
      return y;
    }
  }
  return tf.tidy(() => {
    const { mean, variance } = tf.moments(x, axes, true);
    const scale = tf.div(gamma, tf.sqrt(tf.add(variance, eps)));
    return tf.add(tf.mul(tf.sub(x, mean), scale), beta) as T;
  });
}

/** GELU, the exact form (PyTorch's default): `0.5 x (1 + erf(x / sqrt 2))`. */
export function gelu<T extends tf.Tensor>(x: T): T {
  return tf.tidy(() => tf.mul(tf.mul(x, 0.5), tf.add(1, tf.erf(tf.div(x, Math.SQRT2)))) as T);
}

/**
 * The elementwise maximum of two same-shaped tensors (maxout, CSSE's max), the gradient to `a`
 * where `a >= b` and to `b` elsewhere, as `tf.maximum` (one pass each way on cpu).
 */
export function maximum<T extends tf.Tensor>(a: T, b: T): T {
  return fastMaximum(a, b) ?? (tf.maximum(a, b) as T);
}

/** LeakyReLU with PyTorch's default slope 0.01 (tfjs's own default is 0.2). */
export function leakyRelu<T extends tf.Tensor>(x: T, slope = 0.01): T {
  return fastLeakyRelu(x, slope) ?? tf.leakyRelu(x, slope);
}

/** ReLU (leaky ReLU with slope 0, one pass each way on cpu). */
export function relu<T extends tf.Tensor>(x: T): T {
  return fastLeakyRelu(x, 0) ?? tf.relu(x);
}

/**
 * Max pooling 2x with the position of each window's maximum, for max-unpooling (SegNet-style
 * decoders). Returns the pooled tensor and one 0/1 mask per window position (2^d of them, in
 * raster order over the spatial axes) marking the **first** maximum of each window, the index
 * PyTorch's `MaxPool(return_indices=True)` records: tied windows (constant background) select
 * one position, not all. Odd sizes pool floor(n/2) windows, as PyTorch; the last row is dropped.
 * The masks carry no gradient (they come from a comparison).
 */
export function maxPoolWithMask<T extends Spatial>(x: T): { pooled: T; masks: T[] } {
  const axes = spatialAxes(x);
  // the pooled maximum with the backend's pooling kernel (and its gradient)
  const pooled =
    (axes.length === 3
      ? tf.maxPool3d(x as tf.Tensor5D, 2, 2, "valid")
      : tf.maxPool(x as tf.Tensor4D, 2, 2, "valid")) as T;
  // the masks from a copy of x that is off the gradient tape: a comparison carries no gradient,
  // and the window gathers would otherwise be back-propagated (as zeros) at full resolution
  const masks = fastPoolMasks(x) as T[] | null ?? tf.tidy(() => {
    const detached = tf.tensor(x.dataSync(), x.shape);
    let parts: tf.Tensor[] = [detached];
    for (const a of axes) {
      const n = Math.floor(x.shape[a] / 2);
      const even = tf.tensor1d(Int32Array.from({ length: n }, (_, i) => 2 * i), "int32");
      const odd = tf.tensor1d(Int32Array.from({ length: n }, (_, i) => 2 * i + 1), "int32");
      parts = parts.flatMap((p) => [tf.gather(p, even, a), tf.gather(p, odd, a)]);
    }
    const max = parts.reduce((m, p) => tf.maximum(m, p));
    // first maximum: position k wins where it equals the max and no earlier position did
    const out: tf.Tensor[] = [];
    let taken = tf.zerosLike(max);
    for (const p of parts) {
      const isMax = tf.cast(tf.greaterEqual(p, max), "float32");
      out.push(tf.mul(isMax, tf.sub(1, taken)));
      taken = tf.minimum(1, tf.add(taken, isMax));
    }
    return out as T[];
  });
  return { pooled, masks };
}

/**
 * Max-unpooling 2x: each value of `y` goes back to the window position its mask marks (from
 * `maxPoolWithMask` on the pre-pool tensor), zeros elsewhere; `y` has the pooled tensor's shape.
 * The output has twice the pooled size along every spatial axis (pad with `matchSize`-style
 * zeros to reach an odd original size).
 */
export function maxUnpool<T extends Spatial>(y: T, masks: T[]): T {
  const axes = spatialAxes(y);
  if (masks.length !== 2 ** axes.length) {
    throw new RangeError(`maxUnpool: ${masks.length} masks for ${axes.length} spatial axes`);
  }
  for (const m of masks) {
    if (m.shape.join() !== y.shape.join()) {
      throw new RangeError(`maxUnpool: mask shape [${m.shape}] differs from the input's [${y.shape}]`);
    }
  }
  const fast = fastUnpool(y, masks);
  if (fast) return fast;
  return tf.tidy(() => {
    // the window positions side by side in the channel axis, [.., 2^d * C] in raster order, then
    // each position moved next to its spatial axis: [B, n1, 2, n2, 2, (n3, 2,) C] (one transpose;
    // stacking pairs instead is ~50x slower to differentiate on the cpu backend)
    const d = axes.length, c = y.shape[d + 1];
    const joined = tf.concat(masks.map((m) => tf.mul(m, y)), d + 1);
    const sizes = axes.map((a) => y.shape[a]);
    const b = y.shape[0];
    const split = tf.reshape(joined, [b, ...sizes, ...Array(d).fill(2), c]);
    const perm = [0, ...axes.flatMap((_, i) => [1 + i, 1 + d + i]), 1 + 2 * d];
    const outShape: number[] = [b, ...sizes.map((n) => 2 * n), c];
    return tf.reshape<tf.Rank>(tf.transpose(split, perm), outShape) as unknown as T;
  });
}
