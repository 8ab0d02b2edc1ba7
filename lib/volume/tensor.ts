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
