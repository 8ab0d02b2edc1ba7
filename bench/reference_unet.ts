/**
 * The reference network of the benchmark (identical to `reference_unet.py` for PyTorch):
 * a 3D U-Net with 2 pooling levels, two 3x3x3 conv + ReLU per block, base width 8, nearest x2
 * upsampling, concatenated skips, a 1x1x1 sigmoid head; trained with BCE and Adam 1e-3, batch 1.
 * 88,513 parameters.
 */
import * as tf from "@tensorflow/tfjs-core";
import { Conv, Init, Module } from "../lib/nn/module.ts";
import { upsampleNearest2x } from "../lib/nn/ops.ts";

class Block extends Module {
  private readonly a: Conv;
  private readonly b: Conv;
  constructor(init: Init, cin: number, cout: number) {
    super();
    this.a = this.child("a", new Conv(init, 3, cin, cout, 3, { bias: true }));
    this.b = this.child("b", new Conv(init, 3, cout, cout, 3, { bias: true }));
  }
  apply(x: tf.Tensor5D): tf.Tensor5D {
    return this.b.applyActivated(this.a.applyActivated(x, 0), 0);
  }
}

export class ReferenceUNet extends Module {
  private readonly enc1: Block;
  private readonly enc2: Block;
  private readonly mid: Block;
  private readonly dec2: Block;
  private readonly dec1: Block;
  private readonly head: Conv;
  constructor(seed = 0, base = 8) {
    super();
    const init = new Init(seed);
    this.enc1 = this.child("enc1", new Block(init, 1, base));
    this.enc2 = this.child("enc2", new Block(init, base, 2 * base));
    this.mid = this.child("mid", new Block(init, 2 * base, 4 * base));
    this.dec2 = this.child("dec2", new Block(init, 6 * base, 2 * base));
    this.dec1 = this.child("dec1", new Block(init, 3 * base, base));
    this.head = this.child("head", new Conv(init, 3, base, 1, 1, { bias: true }));
  }
  /** Logits (the sigmoid is folded into the loss). */
  apply(x: tf.Tensor5D): tf.Tensor5D {
    const e1 = this.enc1.apply(x);
    const e2 = this.enc2.apply(tf.maxPool3d(e1, 2, 2, "valid"));
    const m = this.mid.apply(tf.maxPool3d(e2, 2, 2, "valid"));
    const d2 = this.dec2.apply(tf.concat([upsampleNearest2x(m), e2], 4));
    const d1 = this.dec1.apply(tf.concat([upsampleNearest2x(d2), e1], 4));
    return this.head.apply(d1);
  }
}

/** Binary cross-entropy on logits, mean over voxels (PyTorch `BCEWithLogitsLoss`). */
export function bceWithLogits(logits: tf.Tensor, target: tf.Tensor): tf.Scalar {
  // max(z, 0) - z*t + log(1 + exp(-|z|)), flattened (webgpu lacks rank-5 `where`)
  const z = logits.reshape([-1]), t = target.reshape([-1]);
  return tf.mean(tf.add(tf.sub(tf.relu(z), tf.mul(z, t)), tf.log1p(tf.exp(tf.neg(tf.abs(z)))))) as tf.Scalar;
}
