/**
 * Building blocks shared by the paper's networks (3D, channels-last).
 */
import * as tf from "@tensorflow/tfjs-core";
import { Conv, Init, Module } from "../nn/module.ts";
import { instanceNorm, leakyRelu, relu } from "../nn/ops.ts";

/** conv (no bias) -> InstanceNorm (no affine) -> LeakyReLU(0.01), as the authors' ConvBlock. */
export class ConvBlock extends Module {
  readonly conv: Conv;
  constructor(
    init: Init,
    cin: number,
    cout: number,
    k = 3,
    stride = 1,
    readonly activation: "leaky" | "relu" = "leaky",
  ) {
    super();
    this.conv = this.child("conv", new Conv(init, 3, cin, cout, k, { stride }));
  }
  apply(x: tf.Tensor5D): tf.Tensor5D {
    const y = instanceNorm(this.conv.apply(x));
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

/** Mean squared error. */
export function mse(a: tf.Tensor, b: tf.Tensor): tf.Scalar {
  return tf.mean(tf.squaredDifference(a, b)) as tf.Scalar;
}

/** Mean absolute error. */
export function l1(a: tf.Tensor, b: tf.Tensor): tf.Scalar {
  return tf.mean(tf.abs(tf.sub(a, b))) as tf.Scalar;
}

/** Channel widths of an L-level encoder with base width nf: nf, 2nf, 4nf, ... */
export function levelWidths(nf: number, levels: number): number[] {
  return Array.from({ length: levels }, (_, i) => nf * 2 ** i);
}
