/**
 * Volumes to tensors and back. A volume's NIfTI voxel order (i fastest) read row-major is
 * `[k, j, i]`, so the tensor is `[batch=1, depth=k, height=j, width=i, channels=1]`.
 */
import * as tf from "@tensorflow/tfjs-core";
import { makeVolume, type Volume } from "./volume.ts";

/** `[1, nk, nj, ni, 1]` float32 tensor of a volume. */
export function volumeToTensor(vol: Volume): tf.Tensor5D {
  const [ni, nj, nk] = vol.shape;
  const data = vol.data instanceof Float32Array ? vol.data : Float32Array.from(vol.data);
  return tf.tensor5d(data, [1, nk, nj, ni, 1], "float32");
}

/** The first sample and channel of a `[b, k, j, i, c]` tensor as a volume on `like`'s grid. */
export async function tensorToVolume(
  t: tf.Tensor5D,
  like: Volume,
  channel = 0,
): Promise<Volume<Float32Array>> {
  const [, nk, nj, ni] = t.shape;
  if (ni !== like.shape[0] || nj !== like.shape[1] || nk !== like.shape[2]) {
    throw new RangeError(`tensor [${t.shape}] does not fit the ${like.shape.join("x")} grid`);
  }
  const slice = tf.tidy(() => t.slice([0, 0, 0, 0, channel], [1, nk, nj, ni, 1]));
  const data = (await slice.data()) as Float32Array;
  slice.dispose();
  return makeVolume(new Float32Array(data), like.shape, like.affine);
}

/**
 * Window origins along an axis of `size` voxels for windows of `window` voxels overlapping by
 * `overlap` (a fraction in [0, 1)): every `window * (1 - overlap)` voxels (rounded down, at least
 * 1), the last window flush with the end, so every voxel is covered.
 */
export function windowStarts(size: number, window: number, overlap: number): number[] {
  if (!Number.isInteger(window) || window < 1) {
    throw new RangeError(`window ${window}: must be a positive integer`);
  }
  if (!(overlap >= 0 && overlap < 1)) throw new RangeError(`window overlap ${overlap}: must be in [0, 1)`);
  if (size < window) throw new RangeError(`a ${size}-voxel axis is smaller than the ${window}-voxel window`);
  const stride = Math.max(1, Math.floor(window * (1 - overlap)));
  const starts: number[] = [];
  for (let s = 0; s + window < size; s += stride) starts.push(s);
  starts.push(size - window);
  return starts;
}

/**
 * Sliding-window inference (MONAI's `sliding_window_inference` with constant weights): `f` on
 * every `window`^3 crop of `x` [1, D, H, W, C] (origins `windowStarts`), its outputs
 * [1, window, window, window, K] averaged where windows overlap. A network with a fixed input (UNesT)
 * predicts a larger volume this way. Synchronous, for use inside `tf.tidy`; the sum is kept on the
 * host, so memory holds one window's tensors and one output volume.
 */
export function slidingWindow(
  x: tf.Tensor5D,
  window: number,
  f: (crop: tf.Tensor5D) => tf.Tensor5D,
  overlap = 0.5,
): tf.Tensor5D {
  const [n, d, h, w, c] = x.shape;
  if (n !== 1) throw new RangeError(`slidingWindow: one volume at a time, got a batch of ${n}`);
  if (d === window && h === window && w === window) return f(x);
  const [zs, ys, xs] = [d, h, w].map((size) => windowStarts(size, window, overlap));
  let sum: Float32Array | null = null;
  let k = 0;
  const count = new Uint16Array(d * h * w);
  for (const z of zs) {
    for (const y of ys) {
      for (const x0 of xs) {
        const out = tf.tidy(() => f(tf.slice(x, [0, z, y, x0, 0], [1, window, window, window, c])));
        const v = out.dataSync() as Float32Array;
        k = out.shape[4];
        out.dispose();
        if (v.length !== window ** 3 * k) {
          throw new RangeError(
            `slidingWindow: the window's output has ${v.length} values, not ${window}^3 x ${k}`,
          );
        }
        sum ??= new Float32Array(d * h * w * k);
        for (let a = 0; a < window; a++) {
          for (let b = 0; b < window; b++) {
            const row = ((z + a) * h + y + b) * w + x0;
            const src = (a * window + b) * window * k;
            const dst = row * k;
            for (let i = 0; i < window * k; i++) sum[dst + i] += v[src + i];
            for (let i = 0; i < window; i++) count[row + i]++;
          }
        }
      }
    }
  }
  const out = sum!;
  for (let i = 0; i < count.length; i++) {
    const inv = 1 / count[i];
    for (let j = 0; j < k; j++) out[i * k + j] *= inv;
  }
  return tf.tensor5d(out, [1, d, h, w, k]);
}
