/**
 * QuickNAT (Roy et al. 2019), a whole-brain baseline of Table 3, as its released code builds it
 * (`../shared/reference/wave2-architectures.md` section 3.2), in 2D on slices `[B, 1, H, W, 1]`:
 *
 * - Dense block (pre-activation, one PReLU shared by its three activations, convs with bias):
 *   `o1 = Conv5x5(PReLU(BN(x)))`, `o2 = Conv5x5(PReLU(BN([x, o1])))`,
 *   `out = Conv1x1(PReLU(BN([x, o1, o2])))`, every output `nf` wide.
 * - Encoder levels 1 .. L-1: dense block -> CSSE -> channel dropout (0.2) = the skip F_i, then 2x
 *   max pooling with the first-maximum positions; level L (the bottleneck) a dense block alone.
 * - Decoder: max-unpool with the positions of the level above (to the skip's size), concatenate
 *   [skip, unpooled], dense block -> CSSE -> dropout; a 1x1 classifier with bias.
 *
 * CSSE(x) = max(cSE(x), sSE(x)): channel squeeze-excitation (GAP -> Linear(c, c/2) -> ReLU ->
 * Linear(c/2, c) -> sigmoid, scaling channels) and spatial (Conv1x1(c -> 1) -> sigmoid, scaling
 * positions). AFMs attach to the skips (after CSSE and dropout, before pooling; positions are
 * taken before any fusion) and the bottleneck: every level `nf` wide, as the 2D KKN's levels.
 * Normalisation is `BatchNorm`'s scale and shift over each slice's own statistics, in training and
 * evaluation alike (the released code's BatchNorm uses batch statistics in training and running
 * averages in evaluation; per-slice statistics keep a slice's prediction independent of the slices
 * batched with it, as the 3D baselines' batch-1 statistics are a volume's own).
 */
import * as tf from "@tensorflow/tfjs-core";
import { BatchNorm, Conv, Init, Module } from "../nn/module.ts";
import {
  cat,
  ChannelDropout,
  type Dims,
  kernelOf,
  SharedPReLU,
  SqueezeExcite,
  UnpoolingNetwork,
} from "./blocks.ts";
import type { SegmentationNetwork } from "./fusion.ts";
import { maximum } from "../nn/ops.ts";

/** QuickNAT's kernel size and dropout rate (its `settings.ini`). */
export const QUICKNAT = { kernel: 5, dropout: 0.2 } as const;

/** BN -> PReLU -> conv, the dense block's unit (the PReLU shared with the block's other units). */
class PreActConv extends Module {
  private readonly norm: BatchNorm;
  private readonly conv: Conv;
  constructor(
    init: Init,
    cin: number,
    cout: number,
    k: number,
    dims: Dims,
    private readonly act: SharedPReLU,
  ) {
    super();
    this.norm = this.child("norm", new BatchNorm(init, cin, "sample"));
    this.conv = this.child("conv", new Conv(init, 3, cin, cout, kernelOf(k, dims), { bias: true }));
  }
  apply(x: tf.Tensor5D): tf.Tensor5D {
    return this.conv.apply(this.act.apply(this.norm.apply(x)));
  }
}

/** QuickNAT's dense block: two 5x5 units over growing concatenations, then a 1x1 unit. */
export class DenseBlock extends Module {
  private readonly act: SharedPReLU;
  private readonly u1: PreActConv;
  private readonly u2: PreActConv;
  private readonly u3: PreActConv;
  constructor(init: Init, cin: number, nf: number, dims: Dims, k: number = QUICKNAT.kernel) {
    super();
    this.act = this.child("prelu", new SharedPReLU());
    this.u1 = this.child("conv1", new PreActConv(init, cin, nf, k, dims, this.act));
    this.u2 = this.child("conv2", new PreActConv(init, cin + nf, nf, k, dims, this.act));
    this.u3 = this.child("conv3", new PreActConv(init, cin + 2 * nf, nf, 1, dims, this.act));
  }
  apply(x: tf.Tensor5D): tf.Tensor5D {
    const o1 = this.u1.apply(x);
    const o2 = this.u2.apply(cat([x, o1]));
    return this.u3.apply(cat([x, o1, o2]));
  }
}

/**
 * Concurrent spatial and channel squeeze-and-excitation with the elementwise maximum of the two
 * recalibrations (QuickNAT's `ChannelSpatialSELayer`, max variant).
 */
export class ChannelSpatialSE extends Module {
  private readonly channel: SqueezeExcite;
  private readonly spatial: Conv;
  constructor(init: Init, c: number) {
    super();
    this.channel = this.child("channel", new SqueezeExcite(init, c, "sigmoid"));
    this.spatial = this.child("spatial", new Conv(init, 3, c, 1, 1, { bias: true }));
  }
  apply(x: tf.Tensor5D): tf.Tensor5D {
    const sse = tf.mul(x, tf.sigmoid(this.spatial.apply(x))) as tf.Tensor5D;
    return maximum(this.channel.apply(x), sse);
  }
}

/** Dense block -> CSSE -> channel dropout: an encoder or decoder level of QuickNAT. */
class Level extends Module {
  private readonly dense: DenseBlock;
  private readonly se: ChannelSpatialSE;
  private readonly drop: ChannelDropout;
  constructor(init: Init, cin: number, nf: number, dims: Dims, id: number) {
    super();
    this.dense = this.child("dense", new DenseBlock(init, cin, nf, dims));
    this.se = this.child("csse", new ChannelSpatialSE(init, nf));
    this.drop = this.child("dropout", new ChannelDropout(QUICKNAT.dropout, id));
  }
  apply(x: tf.Tensor5D): tf.Tensor5D {
    return this.drop.apply(this.se.apply(this.dense.apply(x)));
  }
}

export class QuickNAT extends UnpoolingNetwork implements SegmentationNetwork {
  /** `levels` - 1 encoder levels and the bottleneck, every one `nf` wide. */
  constructor(classes: number, nf: number, levels: number, seed: number, dims: Dims = 2) {
    super("QuickNAT", classes, nf, levels, seed, dims, 1, {
      encoder: (init, i, cin) => new Level(init, cin, nf, dims, i),
      bottleneck: (init) => new DenseBlock(init, nf, nf, dims),
      decoder: (init, i) => new Level(init, 2 * nf, nf, dims, levels + i),
    });
  }
  /** [skip, unpooled], concatenated. */
  protected join(unpooled: tf.Tensor5D, skip: tf.Tensor5D): tf.Tensor5D {
    return cat([skip, unpooled]);
  }
}
