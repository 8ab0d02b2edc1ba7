/**
 * VoxResNet as the authors released it as a tissue baseline (a 5-level, nf-wide variant of Chen
 * et al., NeuroImage 2018; `../shared/reference/wave2-architectures.md` section 1.2):
 *
 * - Encoder, pre-activation: F1 = Conv[1x3x3](ReLU(Norm(Conv3(x)))); level k > 1: Norm-ReLU-Conv3
 *   stride 2 (PyTorch padding 1 on both sides), then two VoxRes modules
 *   VoxRes(c): x + Conv3(ReLU(Norm(Conv[1x3x3](ReLU(Norm(x)))))). Every conv has a bias.
 * - Decoder: per level k, a transposed conv with kernel = stride = 2^(k-1) then a 1x1x1 conv to
 *   the classes (`released`), or, since both are linear with nothing between them, one transposed
 *   conv straight to the classes (`compact`: the same family of functions, with 1/64 of level 5's
 *   268 M parameters at nf 16); each u_k cropped or zero-padded at the end of each axis to u1's
 *   size; logits = u1 + ... + uL.
 * - Deep supervision: CE on u1 .. u(L-1) (not uL) beside the loss on the sum, weighted by a weight
 *   that starts at 1 and falls by 0.001 a round (an epoch in the authors' code).
 *
 * Normalisation is `BatchNorm` (batch statistics, learnable scale and shift: affine instance norm at
 * batch 1), as the released code.
 */
import * as tf from "@tensorflow/tfjs-core";
import { BatchNorm, Conv, Init, Module } from "../nn/module.ts";
import { relu } from "../nn/ops.ts";
import { levelWidths, matchSize, TransposedConv } from "./blocks.ts";

export { matchSize };
import type { SegmentationNetwork } from "./fusion.ts";

export type VoxResDeconv = "compact" | "released";

class VoxRes extends Module {
  private readonly na: BatchNorm;
  private readonly a: Conv;
  private readonly nb: BatchNorm;
  private readonly b: Conv;
  constructor(init: Init, c: number) {
    super();
    this.na = this.child("na", new BatchNorm(init, c));
    this.a = this.child("a", new Conv(init, 3, c, c, [1, 3, 3], { bias: true }));
    this.nb = this.child("nb", new BatchNorm(init, c));
    this.b = this.child("b", new Conv(init, 3, c, c, 3, { bias: true }));
  }
  apply(x: tf.Tensor5D): tf.Tensor5D {
    return tf.add(x, this.b.apply(relu(this.nb.apply(this.a.apply(relu(this.na.apply(x))))))) as tf.Tensor5D;
  }
}

/** Norm-ReLU-Conv3 stride 2 with one voxel of zero padding on both sides (PyTorch's `padding=1`). */
class Down extends Module {
  private readonly norm: BatchNorm;
  private readonly conv: Conv;
  constructor(init: Init, cin: number, cout: number) {
    super();
    this.norm = this.child("norm", new BatchNorm(init, cin));
    this.conv = this.child(
      "conv",
      new Conv(init, 3, cin, cout, 3, { stride: 2, padding: "valid", bias: true }),
    );
  }
  apply(x: tf.Tensor5D): tf.Tensor5D {
    const p = tf.pad(relu(this.norm.apply(x)), [[0, 0], [1, 1], [1, 1], [1, 1], [0, 0]]) as tf.Tensor5D;
    return this.conv.apply(p);
  }
}

export class VoxResNet extends Module implements SegmentationNetwork {
  readonly levelChannels: number[];
  /** The deep-supervision weight falls by 0.001 a round (an epoch in the authors' code). */
  readonly auxDecay = 0.001;
  private readonly stem: Conv;
  private readonly stemNorm: BatchNorm;
  private readonly stem2: Conv;
  private readonly downs: Down[] = [];
  private readonly res: VoxRes[][] = [];
  private readonly ups: TransposedConv[] = [];
  private readonly heads: (Conv | null)[] = [];
  constructor(
    readonly classes: number,
    nf: number,
    levels: number,
    seed: number,
    readonly deconv: VoxResDeconv = "compact",
  ) {
    super();
    const init = new Init(seed);
    const w = levelWidths(nf, levels);
    this.levelChannels = w;
    this.stem = this.child("conv1a", new Conv(init, 3, 1, w[0], 3, { bias: true }));
    this.stemNorm = this.child("conv1n", new BatchNorm(init, w[0]));
    this.stem2 = this.child("conv1b", new Conv(init, 3, w[0], w[0], [1, 3, 3], { bias: true }));
    for (let k = 1; k < levels; k++) {
      this.downs[k] = this.child(`down${k + 1}`, new Down(init, w[k - 1], w[k]));
      this.res[k] = [0, 1].map((j) =>
        this.child(`vrm${k + 1}${j === 0 ? "a" : "b"}`, new VoxRes(init, w[k]))
      );
    }
    w.forEach((c, k) => {
      const released = deconv === "released";
      this.ups[k] = this.child(
        `up${k + 1}`,
        new TransposedConv(init, c, released ? c : classes, { k: 2 ** k, bias: true }),
      );
      this.heads[k] = released
        ? this.child(`head${k + 1}`, new Conv(init, 3, c, classes, 1, { bias: true }))
        : null;
    });
  }
  encode(x: tf.Tensor5D): tf.Tensor5D[] {
    const out = [this.stem2.apply(relu(this.stemNorm.apply(this.stem.apply(x))))];
    for (let k = 1; k < this.levelChannels.length; k++) {
      out.push(this.res[k].reduce((h, r) => r.apply(h), this.downs[k].apply(out[k - 1])));
    }
    return out;
  }
  /** Per-level outputs u_1..u_L on u_1's grid. */
  private levelOutputs(features: tf.Tensor5D[]): tf.Tensor5D[] {
    const u = features.map((f, k) => {
      const up = this.ups[k].apply(f);
      return this.heads[k] ? this.heads[k]!.apply(up) : up;
    });
    const size = u[0].shape.slice(1, 4) as [number, number, number];
    return u.map((t) => matchSize(t, size));
  }
  decode(features: tf.Tensor5D[]): tf.Tensor5D {
    return tf.addN(this.levelOutputs(features)) as tf.Tensor5D;
  }
  /** Logits and the deep-supervision outputs u_1..u_(L-1). */
  decodeWithAux(features: tf.Tensor5D[]): { logits: tf.Tensor5D; aux: tf.Tensor5D[] } {
    const u = this.levelOutputs(features);
    return { logits: tf.addN(u) as tf.Tensor5D, aux: u.slice(0, -1) };
  }
  apply(x: tf.Tensor5D): tf.Tensor5D {
    return this.decode(this.encode(x));
  }
}
