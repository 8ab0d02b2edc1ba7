/**
 * U-SegNet as the authors released it as a tissue baseline (`../shared/reference/wave2-
 * architectures.md` section 1.3):
 *
 * - Encoder: five double-conv blocks `Conv3 -> ReLU -> Norm -> Conv3 -> ReLU -> Norm` (ReLU before
 *   the norm, convs with bias), widths nf .. 16 nf; 2x max pooling with the first-maximum
 *   positions after levels 1-4 (taken before any fusion and reused unchanged).
 * - Decoder: double conv (16nf -> 8nf) on F5; then three times: max-unpool with the positions of
 *   the level below, pad at the end to the skip's size, double conv halving the width; a last
 *   unpool to full size, concatenated with F1 (the only skip), Conv1x1 (2nf -> nf, bias) -> ReLU ->
 *   Norm, Conv1x1 (nf -> classes, no bias).
 *
 * The decoder reads F1 and F5 only; F2-F4 matter through their pooling positions, so AFMs there
 * would get no gradient. `fusedLevels` declares where AFMs attach: levels 1 and 5 (`ends`, the
 * default, an inference: the authors never released the journal wiring) or all five (`all`).
 * Normalisation is `BatchNorm` (batch statistics, learnable scale and shift: affine instance norm at
 * batch 1), as the released code.
 */
import * as tf from "@tensorflow/tfjs-core";
import { BatchNorm, Conv, Init, Module } from "../nn/module.ts";
import { maxPoolWithMask, maxUnpool, relu } from "../nn/ops.ts";
import { cat, levelWidths, matchSize } from "./blocks.ts";
import type { SegmentationNetwork } from "./fusion.ts";

export type USegNetAfmLevels = "ends" | "all";

class DoubleConv extends Module {
  private readonly a: Conv;
  private readonly na: BatchNorm;
  private readonly b: Conv;
  private readonly nb: BatchNorm;
  constructor(init: Init, cin: number, cout: number) {
    super();
    this.a = this.child("a", new Conv(init, 3, cin, cout, 3, { bias: true }));
    this.na = this.child("na", new BatchNorm(init, cout));
    this.b = this.child("b", new Conv(init, 3, cout, cout, 3, { bias: true }));
    this.nb = this.child("nb", new BatchNorm(init, cout));
  }
  apply(x: tf.Tensor5D): tf.Tensor5D {
    return this.nb.apply(relu(this.b.apply(this.na.apply(relu(this.a.apply(x))))));
  }
}

export class USegNet extends Module implements SegmentationNetwork {
  readonly levelChannels: number[];
  readonly fusedLevels: number[];
  private readonly enc: DoubleConv[];
  private readonly dec: DoubleConv[];
  private readonly merge: Conv;
  private readonly mergeNorm: BatchNorm;
  private readonly head: Conv;
  /** Window masks of each pooling in the last `encode`, for the next `decode`. */
  private masks: tf.Tensor5D[][] | null = null;
  constructor(
    readonly classes: number,
    nf: number,
    levels: number,
    seed: number,
    afmLevels: USegNetAfmLevels = "ends",
  ) {
    super();
    const init = new Init(seed);
    const w = levelWidths(nf, levels);
    this.levelChannels = w;
    this.fusedLevels = afmLevels === "all" ? w.map((_, i) => i) : [0, levels - 1];
    this.enc = w.map((c, i) => this.child(`enc${i + 1}`, new DoubleConv(init, i === 0 ? 1 : w[i - 1], c)));
    // dec[L-1] takes F_L from 16nf to 8nf; dec[k] (k = L-2 .. 1) runs at level k's resolution
    // after unpooling and halves the width, w[k] -> w[k-1]
    this.dec = [];
    this.dec[levels - 1] = this.child(`dec${levels}`, new DoubleConv(init, w[levels - 1], w[levels - 2]));
    for (let k = levels - 2; k >= 1; k--) {
      this.dec[k] = this.child(`dec${k + 1}`, new DoubleConv(init, w[k], w[k - 1]));
    }
    this.merge = this.child("merge", new Conv(init, 3, 2 * w[0], w[0], 1, { bias: true }));
    this.mergeNorm = this.child("mergeNorm", new BatchNorm(init, w[0]));
    this.head = this.child("head", new Conv(init, 3, w[0], classes, 1));
  }
  encode(x: tf.Tensor5D): tf.Tensor5D[] {
    const out: tf.Tensor5D[] = [];
    const masks: tf.Tensor5D[][] = [];
    let h = x;
    this.enc.forEach((b, i) => {
      out.push(b.apply(h));
      if (i < this.enc.length - 1) {
        const p = maxPoolWithMask(out[i]);
        masks.push(p.masks);
        h = p.pooled;
      }
    });
    this.masks = masks;
    return out;
  }
  decode(features: tf.Tensor5D[]): tf.Tensor5D {
    const masks = this.masks;
    const L = features.length;
    if (!masks || masks.length !== L - 1 || masks[0][0].isDisposed) {
      throw new Error("USegNet.decode needs the pooling positions of an encode in the same scope");
    }
    const size = (k: number) => features[k].shape.slice(1, 4) as [number, number, number];
    // F_L -> 8nf; then per level: unpool with the positions of that level's pooling, halve the width
    let y = this.dec[L - 1].apply(features[L - 1]);
    for (let k = L - 2; k >= 1; k--) {
      y = this.dec[k].apply(matchSize(maxUnpool(y, masks[k]), size(k)));
    }
    const up = matchSize(maxUnpool(y, masks[0]), size(0));
    const merged = this.mergeNorm.apply(relu(this.merge.apply(cat([up, features[0]]))));
    return this.head.apply(merged);
  }
  apply(x: tf.Tensor5D): tf.Tensor5D {
    return this.decode(this.encode(x));
  }
}
