/**
 * Building blocks shared by the paper's networks (3D, channels-last).
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

export interface ConvBlockOptions {
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
    { k = 3, stride = 1, activation = "leaky", norm = "instance" }: ConvBlockOptions = {},
  ) {
    super();
    this.activation = activation;
    this.norm = norm;
    this.conv = this.child("conv", new Conv(init, 3, cin, cout, k, { stride, bias: norm === "none" }));
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

/** 2x2x2 max pooling. */
export function pool(x: tf.Tensor5D): tf.Tensor5D {
  return tf.maxPool3d(x, 2, 2, "valid");
}

/** Channel widths of an L-level encoder with base width nf: nf, 2nf, 4nf, ... */
export function levelWidths(nf: number, levels: number): number[] {
  return Array.from({ length: levels }, (_, i) => nf * 2 ** i);
}
