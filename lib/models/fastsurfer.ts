/**
 * FastSurfer-CNN (Henschel et al. 2020), a whole-brain baseline of Table 3, as its released code
 * builds it (`../shared/reference/wave2-architectures.md` section 3.3), in 2D on thick slices:
 * the input is a slice with its `THICK_SLICES` neighbours on each side as channels
 * (`[B, 1, H, W, 2t + 1]`). Competitive dense blocks replace concatenation by maxout, the
 * elementwise maximum of two tensors (`maximum`, whose gradient goes to the first argument on
 * ties: the new branch, listed first as FastSurfer stacks it):
 *
 * - Input block: `b = BN(x)`, `a1 = BN(Conv5x5(b))`, `a2 = BN(Conv5x5(PReLU(a1)))`,
 *   `out = BN(Conv1x1(PReLU(max(a2, a1))))`.
 * - Competitive dense block: `a1 = BN(Conv5x5(PReLU(x)))`, `m1 = max(a1, x)`,
 *   `a2 = BN(Conv5x5(PReLU(m1)))`, `m2 = max(a2, m1)`, `out = BN(Conv1x1(PReLU(m2)))`.
 * - Encoder: levels 1 .. L-1 give the skips F_i (the block outputs), then 2x max pooling with the
 *   first-maximum positions; the bottleneck (level L) is a competitive dense block.
 * - Decoder: max-unpool with the positions, `max(unpooled, skip)` (zeros left by the unpooling
 *   compete with the skip), a competitive dense block; a 1x1 classifier with bias.
 *
 * One PReLU (slope 0.25) is shared within a block; convs have biases; every level is `nf` wide,
 * as the 2D KKN's levels, and AFMs attach to the skips and the bottleneck. BN normalises each
 * slice by its own statistics, as in `QuickNAT` (lib/models/quicknat.ts says why).
 */
import * as tf from "@tensorflow/tfjs-core";
import { BatchNorm, Conv, Init, Module } from "../nn/module.ts";
import { type Dims, kernelOf, SharedPReLU, UnpoolingNetwork } from "./blocks.ts";
import type { SegmentationNetwork } from "./fusion.ts";
import { maximum } from "../nn/ops.ts";

/** Neighbouring slices on each side of the input slice (FastSurfer's 7-slice input: 3). */
export const THICK_SLICES = 3;

/** conv -> BN (FastSurfer's units normalise after the convolution). */
class ConvNorm extends Module {
  private readonly conv: Conv;
  private readonly norm: BatchNorm;
  constructor(init: Init, cin: number, cout: number, k: number, dims: Dims) {
    super();
    this.conv = this.child("conv", new Conv(init, 3, cin, cout, kernelOf(k, dims), { bias: true }));
    this.norm = this.child("norm", new BatchNorm(init, cout, "sample"));
  }
  apply(x: tf.Tensor5D): tf.Tensor5D {
    return this.norm.apply(this.conv.apply(x));
  }
}

/**
 * A competitive dense block (`input: false`) or FastSurfer's input block (`input: true`, which
 * normalises the raw slices first and competes its two 5x5 outputs with each other).
 */
export class CompetitiveDenseBlock extends Module {
  private readonly inputNorm: BatchNorm | null;
  private readonly act: SharedPReLU;
  private readonly c1: ConvNorm;
  private readonly c2: ConvNorm;
  private readonly c3: ConvNorm;
  constructor(init: Init, cin: number, nf: number, dims: Dims, readonly input = false, k = 5) {
    super();
    if (!input && cin !== nf) {
      throw new RangeError(`competitive dense block: input width ${cin} must equal its width ${nf}`);
    }
    this.inputNorm = input ? this.child("inputNorm", new BatchNorm(init, cin, "sample")) : null;
    this.act = this.child("prelu", new SharedPReLU());
    this.c1 = this.child("conv1", new ConvNorm(init, cin, nf, k, dims));
    this.c2 = this.child("conv2", new ConvNorm(init, nf, nf, k, dims));
    this.c3 = this.child("conv3", new ConvNorm(init, nf, nf, 1, dims));
  }
  apply(x: tf.Tensor5D): tf.Tensor5D {
    const p = (t: tf.Tensor5D) => this.act.apply(t);
    if (this.inputNorm) {
      const a1 = this.c1.apply(this.inputNorm.apply(x));
      const a2 = this.c2.apply(p(a1));
      return this.c3.apply(p(maximum(a2, a1)));
    }
    const m1 = maximum(this.c1.apply(p(x)), x);
    const m2 = maximum(this.c2.apply(p(m1)), m1);
    return this.c3.apply(p(m2));
  }
}

/** FastSurfer-CNN's input channels: a slice and its neighbours. */
const INPUT_CHANNELS = 2 * THICK_SLICES + 1;

export class FastSurferCNN extends UnpoolingNetwork implements SegmentationNetwork {
  /** Input channels: the slice and its neighbours. */
  readonly inputChannels = INPUT_CHANNELS;
  /** `levels` - 1 encoder levels and the bottleneck, every one `nf` wide. */
  constructor(classes: number, nf: number, levels: number, seed: number, dims: Dims = 2) {
    super("FastSurfer-CNN", classes, nf, levels, seed, dims, INPUT_CHANNELS, {
      encoder: (init, i, cin) => new CompetitiveDenseBlock(init, cin, nf, dims, i === 0),
      bottleneck: (init) => new CompetitiveDenseBlock(init, nf, nf, dims),
      decoder: (init) => new CompetitiveDenseBlock(init, nf, nf, dims),
    });
  }
  override encode(x: tf.Tensor5D): tf.Tensor5D[] {
    if (x.shape[4] !== this.inputChannels) {
      throw new RangeError(
        `FastSurfer-CNN reads ${this.inputChannels} channels (a slice and ${THICK_SLICES} neighbours each side), got ${
          x.shape[4]
        }`,
      );
    }
    return super.encode(x);
  }
  /** max(unpooled, skip): the zeros the unpooling leaves compete with the skip. */
  protected join(unpooled: tf.Tensor5D, skip: tf.Tensor5D): tf.Tensor5D {
    return maximum(unpooled, skip);
  }
}
