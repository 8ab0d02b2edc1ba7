/**
 * Building blocks shared by the paper's networks (channels-last), written once for 2D and 3D.
 *
 * A 2D network (`dims: 2`) works on slices stored as 5D tensors `[batch, 1, H, W, C]`, with every
 * kernel, stride and pooling window flat along depth (1 x k x k): exactly a 2D convolution of each
 * slice, through the same code, checkpoints and kernels as the 3D networks.
 */
import * as tf from "@tensorflow/tfjs-core";
import { Conv, Init, Module } from "../nn/module.ts";
import { instanceNorm, leakyRelu, relu } from "../nn/ops.ts";

/**
 * Normalisation inside a ConvBlock. `instance` (the authors' code): InstanceNorm without affine
 * parameters after a bias-free conv. It makes a block exactly invariant to a positive scaling of
 * its input, so a network built from such blocks cannot see absolute intensity and has to infer
 * it from context, with statistics that differ between a patch and a whole volume. `none`: a conv
 * with bias and no normalisation, which keeps intensity (for the networks that regress images).
 */
export type Norm = "instance" | "none";

/** Spatial dimensionality of a network (see the module comment). */
export type Dims = 2 | 3;

/** A kernel of size k in every axis of a `dims`-D network: k (3D) or [1, k, k] (2D). */
export function kernelOf(k: number, dims: Dims): number | number[] {
  return dims === 3 ? k : [1, k, k];
}

/** A stride s in every axis of a `dims`-D network: s (3D) or [1, s, s] (2D). */
export function strideOf(s: number, dims: Dims): number | number[] {
  return dims === 3 ? s : [1, s, s];
}

/** Zero padding of p before and after every spatial axis of a `dims`-D network. */
export function padSpatial(x: tf.Tensor5D, p: number, dims: Dims): tf.Tensor5D {
  const d: [number, number] = dims === 3 ? [p, p] : [0, 0];
  return tf.pad(x, [[0, 0], d, [p, p], [p, p], [0, 0]]) as tf.Tensor5D;
}

export interface ConvBlockOptions {
  /** Spatial dimensionality (default 3). */
  dims?: Dims;
  /** Kernel size (default 3). */
  k?: number;
  stride?: number;
  activation?: "leaky" | "relu";
  norm?: Norm;
}

/** conv -> InstanceNorm (no affine) -> LeakyReLU(0.01), as the authors' ConvBlock; see `Norm`. */
export class ConvBlock extends Module {
  readonly conv: Conv;
  readonly activation: "leaky" | "relu";
  readonly norm: Norm;
  constructor(
    init: Init,
    cin: number,
    cout: number,
    { dims = 3, k = 3, stride = 1, activation = "leaky", norm = "instance" }: ConvBlockOptions = {},
  ) {
    super();
    this.activation = activation;
    this.norm = norm;
    this.conv = this.child(
      "conv",
      new Conv(init, 3, cin, cout, kernelOf(k, dims), {
        stride: strideOf(stride, dims),
        bias: norm === "none",
      }),
    );
  }
  apply(x: tf.Tensor5D): tf.Tensor5D {
    const c = this.conv.apply(x);
    const y = this.norm === "instance" ? instanceNorm(c) : c;
    return this.activation === "relu" ? relu(y) : leakyRelu(y);
  }
}

/** Spatial size [D, H, W] of a channels-last 5D tensor. */
export function spatialSize(x: tf.Tensor5D): [number, number, number] {
  return [x.shape[1], x.shape[2], x.shape[3]];
}

/** Channel-wise concatenation. */
export function cat(xs: tf.Tensor5D[]): tf.Tensor5D {
  return tf.concat(xs, 4);
}

/** 2x max pooling in every axis of a `dims`-D network (2x2x2, or 1x2x2 for 2D). */
export function pool(x: tf.Tensor5D, dims: Dims = 3): tf.Tensor5D {
  const k = (dims === 3 ? 2 : [1, 2, 2]) as [number, number, number];
  return tf.maxPool3d(x, k, k, "valid");
}

/** Channel widths of an L-level encoder with base width nf: nf, 2nf, 4nf, ... */
export function levelWidths(nf: number, levels: number): number[] {
  return Array.from({ length: levels }, (_, i) => nf * 2 ** i);
}
