/**
 * RP-Net as the authors released it as a tissue baseline (`../shared/reference/wave2-
 * architectures.md` section 1.4; Wang et al. 2019):
 *
 * - Recursive residual block RRB(cin, cout), all convs 3^3 without bias: x0 = Conv(ReLU(Norm(x)));
 *   o = B1(x0) + x0; o = B2(o) + x0; o = B3(o) + x0, each B_j = Norm-ReLU-Conv-Norm-ReLU-Conv with
 *   its own weights (the residual always adds x0). The first block normalises the raw image.
 * - Encoder: RRB(1 -> nf), RRB(nf -> 2nf), RRB(2nf -> 4nf), RRB(4nf -> 8nf) with 2x max pooling
 *   between and after; F5 = (Conv3 -> Norm -> ReLU) x 2, 8nf -> 16nf, at 1/16.
 * - Decoder: four up-merges: trilinear resize to the skip's size, Conv1x1 (C -> C/2), add the skip,
 *   RRB(C/2 -> C/2). Pyramid pooling on the last (nf channels): for 1, 4, 8, 16 bins per axis,
 *   zero-pad to a multiple (floor before, ceil after) and max-pool with kernel = stride =
 *   ceil(n / bins), Conv1x1 (nf -> classes), trilinear back; concatenated with the features; a
 *   Conv1x1 (nf + 4 classes -> classes) gives the logits.
 * - Deep supervision: each up-merge output upsampled to full size, then Conv1x1 to the classes;
 *   loss = CE(logits) + the sum of the four auxiliary CEs, weight 1, constant.
 *
 * Normalisation is `BatchNorm` (batch statistics with a learnable scale and shift, which at batch
 * 1 is affine instance norm). The shift is what lets the first block's ReLU keep the image's dark
 * half (CSF, grey matter); an affine-free instance norm there discards everything below the mean.
 */
import * as tf from "@tensorflow/tfjs-core";
import { BatchNorm, Conv, Init, Module } from "../nn/module.ts";
import { relu, resizeLinear } from "../nn/ops.ts";
import { cat, levelWidths, pool, spatialSize } from "./blocks.ts";
import type { SegmentationNetwork } from "./fusion.ts";

/** Recursive residual block. */
class RRB extends Module {
  private readonly entryNorm: BatchNorm;
  private readonly entry: Conv;
  private readonly units: { na: BatchNorm; a: Conv; nb: BatchNorm; b: Conv }[];
  constructor(init: Init, cin: number, cout: number) {
    super();
    this.entryNorm = this.child("entryNorm", new BatchNorm(init, cin));
    this.entry = this.child("entry", new Conv(init, 3, cin, cout, 3));
    this.units = [1, 2, 3].map((j) => ({
      na: this.child(`b${j}na`, new BatchNorm(init, cout)),
      a: this.child(`b${j}a`, new Conv(init, 3, cout, cout, 3)),
      nb: this.child(`b${j}nb`, new BatchNorm(init, cout)),
      b: this.child(`b${j}b`, new Conv(init, 3, cout, cout, 3)),
    }));
  }
  apply(x: tf.Tensor5D): tf.Tensor5D {
    const x0 = this.entry.apply(relu(this.entryNorm.apply(x)));
    let o = x0;
    for (const u of this.units) {
      o = tf.add(u.b.apply(relu(u.nb.apply(u.a.apply(relu(u.na.apply(o)))))), x0) as tf.Tensor5D;
    }
    return o;
  }
}

/** Trilinear resize to the skip's size, Conv1x1 halving the width, add the skip, RRB. */
class UpMerge extends Module {
  private readonly reduce: Conv;
  private readonly rrb: RRB;
  constructor(init: Init, c: number) {
    super();
    this.reduce = this.child("reduce", new Conv(init, 3, c, c / 2, 1));
    this.rrb = this.child("rrb", new RRB(init, c / 2, c / 2));
  }
  apply(x: tf.Tensor5D, skip: tf.Tensor5D): tf.Tensor5D {
    const up = this.reduce.apply(resizeLinear(x, spatialSize(skip)));
    return this.rrb.apply(tf.add(up, skip) as tf.Tensor5D);
  }
}

/**
 * One pyramid level: zero-pad each axis to a multiple of k = ceil(n / bins) (floor before, ceil
 * after), max-pool k / k. Zero padding can win the maximum where features are negative, as in the
 * authors' code.
 */
export function pyramidPool(x: tf.Tensor5D, bins: number): tf.Tensor5D {
  const size = spatialSize(x);
  const k = size.map((n) => Math.ceil(n / bins));
  const pads = size.map((n, a) => {
    const total = Math.ceil(n / k[a]) * k[a] - n;
    return [Math.floor(total / 2), Math.ceil(total / 2)] as [number, number];
  });
  const padded = pads.some(([a, b]) => a + b > 0) ? tf.pad(x, [[0, 0], ...pads, [0, 0]]) as tf.Tensor5D : x;
  return tf.maxPool3d(padded, k as [number, number, number], k as [number, number, number], "valid");
}

export const PYRAMID_BINS = [1, 4, 8, 16];

export class RPNet extends Module implements SegmentationNetwork {
  readonly levelChannels: number[];
  /** Deep supervision weight stays 1 (no decay). */
  readonly auxDecay = 0;
  private readonly rrbs: RRB[];
  private readonly bottom: [Conv, BatchNorm, Conv, BatchNorm];
  private readonly ups: UpMerge[];
  private readonly pyramid: Conv[];
  private readonly out: Conv;
  private readonly aux: Conv[];
  constructor(readonly classes: number, nf: number, levels: number, seed: number) {
    super();
    const init = new Init(seed);
    const w = levelWidths(nf, levels);
    this.levelChannels = w;
    this.rrbs = w.slice(0, -1).map((c, i) =>
      this.child(`conv${i + 1}`, new RRB(init, i === 0 ? 1 : w[i - 1], c))
    );
    const L = levels;
    this.bottom = [
      this.child(`conv${L}a`, new Conv(init, 3, w[L - 2], w[L - 1], 3)),
      this.child(`conv${L}na`, new BatchNorm(init, w[L - 1])),
      this.child(`conv${L}b`, new Conv(init, 3, w[L - 1], w[L - 1], 3)),
      this.child(`conv${L}nb`, new BatchNorm(init, w[L - 1])),
    ];
    // ups[k] brings level k+1 (width w[k+1]) to level k (width w[k])
    this.ups = [];
    for (let k = L - 2; k >= 0; k--) this.ups[k] = this.child(`up${L - 1 - k}`, new UpMerge(init, w[k + 1]));
    this.pyramid = PYRAMID_BINS.map((b) => this.child(`pp${b}`, new Conv(init, 3, w[0], classes, 1)));
    // the features and one map per pyramid level (nf + 4 classes: 32 at nf 16 with 4 classes)
    this.out = this.child("out", new Conv(init, 3, w[0] + PYRAMID_BINS.length * classes, classes, 1));
    this.aux = w.slice(0, -1).map((c, k) => this.child(`aux${k + 1}`, new Conv(init, 3, c, classes, 1)));
  }
  encode(x: tf.Tensor5D): tf.Tensor5D[] {
    const out: tf.Tensor5D[] = [];
    let h = x;
    for (const r of this.rrbs) {
      out.push(r.apply(h));
      h = pool(out[out.length - 1]);
    }
    const [a, na, b, nb] = this.bottom;
    out.push(relu(nb.apply(b.apply(relu(na.apply(a.apply(h)))))));
    return out;
  }
  /** The decoder's level outputs, deepest merge first, and the logits. */
  private run(features: tf.Tensor5D[]): { logits: tf.Tensor5D; merged: tf.Tensor5D[] } {
    const merged: tf.Tensor5D[] = [];
    let y = features[features.length - 1];
    for (let k = features.length - 2; k >= 0; k--) {
      y = this.ups[k].apply(y, features[k]);
      merged[k] = y;
    }
    const size = spatialSize(y);
    const pyramid = PYRAMID_BINS.map((b, i) => resizeLinear(this.pyramid[i].apply(pyramidPool(y, b)), size));
    return { logits: this.out.apply(cat([y, ...pyramid])), merged };
  }
  decode(features: tf.Tensor5D[]): tf.Tensor5D {
    return this.run(features).logits;
  }
  /** Logits and the auxiliary outputs of the four up-merges (upsampled to full size first). */
  decodeWithAux(features: tf.Tensor5D[]): { logits: tf.Tensor5D; aux: tf.Tensor5D[] } {
    const { logits, merged } = this.run(features);
    const size = spatialSize(logits);
    return { logits, aux: merged.map((m, k) => this.aux[k].apply(resizeLinear(m, size))) };
  }
  apply(x: tf.Tensor5D): tf.Tensor5D {
    return this.decode(this.encode(x));
  }
}
