/**
 * Building blocks shared by the paper's networks (channels-last), written once for 2D and 3D.
 *
 * A 2D network (`dims: 2`) works on slices stored as 5D tensors `[batch, 1, H, W, C]`, with every
 * kernel, stride and pooling window flat along depth (1 x k x k): exactly a 2D convolution of each
 * slice, through the same code, checkpoints and kernels as the 3D networks.
 */
import * as tf from "@tensorflow/tfjs-core";
import { Conv, Init, Linear, Module } from "../nn/module.ts";
import { fastPrelu } from "../native/kernels.ts";
import { instanceNormLeakyRelu, maxPoolWithMask, maxUnpool, relu } from "../nn/ops.ts";

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
    const slope = this.activation === "relu" ? 0 : 0.01;
    if (this.norm === "instance") return instanceNormLeakyRelu(this.conv.apply(x), slope);
    return this.conv.applyActivated(x, slope);
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

/** Crops or zero-pads `x` at the end of each spatial axis to `size` (the authors' `match_size`). */
export function matchSize(x: tf.Tensor5D, size: [number, number, number]): tf.Tensor5D {
  const [, d, h, w] = x.shape;
  if (d === size[0] && h === size[1] && w === size[2]) return x;
  const cropped = tf.slice(x, [0, 0, 0, 0, 0], [
    -1,
    Math.min(d, size[0]),
    Math.min(h, size[1]),
    Math.min(w, size[2]),
    -1,
  ]);
  const [, cd, ch, cw] = cropped.shape;
  return tf.pad(cropped, [[0, 0], [0, size[0] - cd], [0, size[1] - ch], [0, size[2] - cw], [
    0,
    0,
  ]]) as tf.Tensor5D;
}

/** Where each 2x pooling window's first maximum was (`maxPoolWithMask`), for max-unpooling. */
export interface PoolPositions {
  /** One 0/1 mask per window position, on the pooled grid (4D for a 2D network). */
  masks: tf.Tensor[];
  /** The pre-pool spatial size [D, H, W], the unpooling's output size. */
  size: [number, number, number];
  dims: Dims;
}

/**
 * 2x max pooling that records the first maximum of each window (PyTorch's `return_indices`), in
 * every axis of a `dims`-D network: a 2D network's slices `[B, 1, H, W, C]` pool height and width
 * only. Odd sizes pool floor(n/2) windows.
 */
export function poolWithPositions(x: tf.Tensor5D, dims: Dims): { pooled: tf.Tensor5D; at: PoolPositions } {
  const size = spatialSize(x);
  if (dims === 3) {
    const p = maxPoolWithMask(x);
    return { pooled: p.pooled, at: { masks: p.masks, size, dims } };
  }
  const [b, d, h, w, c] = x.shape;
  const p = maxPoolWithMask(tf.reshape(x, [b * d, h, w, c]) as tf.Tensor4D);
  const [, ph, pw] = p.pooled.shape;
  const pooled = tf.reshape(p.pooled, [b, d, ph, pw, c]) as tf.Tensor5D;
  return { pooled, at: { masks: p.masks, size, dims } };
}

/**
 * Max-unpooling (PyTorch `MaxUnpool` with the recorded indices and `output_size`): each value of
 * `y` goes back to its window's recorded position, zeros elsewhere, then zero rows at the end
 * restore an odd pre-pool size.
 */
export function unpoolWithPositions(y: tf.Tensor5D, at: PoolPositions): tf.Tensor5D {
  if (at.dims === 3) return matchSize(maxUnpool(y, at.masks as tf.Tensor5D[]), at.size);
  const [b, d, h, w, c] = y.shape;
  const up = maxUnpool(tf.reshape(y, [b * d, h, w, c]) as tf.Tensor4D, at.masks as tf.Tensor4D[]);
  return matchSize(tf.reshape(up, [b, d, 2 * h, 2 * w, c]) as tf.Tensor5D, at.size);
}

/**
 * Channel dropout (PyTorch `Dropout2d`/`Dropout3d`): in training mode (`Module.train`) each
 * (sample, channel) map is zeroed with probability `rate` and the rest scaled by 1 / (1 - rate);
 * the draw is seeded by the training step and this layer's `id`, so a run is reproducible.
 * Identity otherwise.
 */
export class ChannelDropout extends Module {
  constructor(readonly rate: number, readonly id: number) {
    super();
    if (!(rate >= 0 && rate < 1)) throw new RangeError(`dropout rate ${rate}: must be in [0, 1)`);
  }
  apply(x: tf.Tensor5D): tf.Tensor5D {
    if (!this.training || this.rate === 0) return x;
    const [b, , , , c] = x.shape;
    return tf.dropout(
      x,
      this.rate,
      [b, 1, 1, 1, c],
      (this.stepSeed * 1000003 + this.id) >>> 0,
    ) as tf.Tensor5D;
  }
}

/**
 * PReLU with one learnable slope shared by every channel (PyTorch `nn.PReLU()`, initial slope
 * 0.25); QuickNAT's and FastSurfer-CNN's blocks share one between their 2-3 activations.
 */
export class SharedPReLU extends Module {
  readonly alpha: tf.Variable;
  constructor() {
    super();
    this.alpha = this.param("alpha", tf.fill([1], 0.25));
  }
  apply(x: tf.Tensor5D): tf.Tensor5D {
    return fastPrelu(x, this.alpha) ?? tf.prelu(x, this.alpha as unknown as tf.Tensor5D);
  }
}

/** A network level: one tensor in, one out. */
export type Block = Module & { apply(x: tf.Tensor5D): tf.Tensor5D };

/** The blocks of an `UnpoolingNetwork`, made in this order (so parameters are drawn in it). */
export interface UnpoolingBlocks {
  /** Encoder level `i` (0-based), reading `cin` channels. */
  encoder(init: Init, i: number, cin: number): Block;
  bottleneck(init: Init): Block;
  /** Decoder level `i` (0-based, shallow to deep), reading the join of an unpooled map and a skip. */
  decoder(init: Init, i: number): Block;
}

/**
 * The encoder-decoder QuickNAT and FastSurfer-CNN share: `levels` - 1 encoder levels and a
 * bottleneck, every one `nf` wide (the skips F_i and the bottleneck, where AFMs attach), 2x max
 * pooling recording the first-maximum positions, decoder levels reading the map unpooled at those
 * positions joined with the skip (`join`: QuickNAT concatenates, FastSurfer takes the maximum), and
 * a 1x1 classifier with bias. Parameters are named `enc<i>`, `bottleneck`, `dec<i>`, `head`.
 */
export abstract class UnpoolingNetwork extends Module {
  readonly levelChannels: number[];
  private readonly enc: Block[];
  private readonly bottleneck: Block;
  private readonly dec: Block[];
  private readonly head: Conv;
  /** The pooling positions of the last `encode`, for the next `decode`. */
  private positions: PoolPositions[] | null = null;
  protected constructor(
    /** The network's name in error messages. */
    readonly network: string,
    readonly classes: number,
    nf: number,
    levels: number,
    seed: number,
    readonly dims: Dims,
    inputChannels: number,
    blocks: UnpoolingBlocks,
  ) {
    super();
    if (levels < 2) throw new RangeError(`${network}: needs at least 2 levels, got ${levels}`);
    const init = new Init(seed);
    this.levelChannels = Array<number>(levels).fill(nf);
    this.enc = Array.from(
      { length: levels - 1 },
      (_, i) => this.child(`enc${i + 1}`, blocks.encoder(init, i, i === 0 ? inputChannels : nf)),
    );
    this.bottleneck = this.child("bottleneck", blocks.bottleneck(init));
    this.dec = Array.from(
      { length: levels - 1 },
      (_, i) => this.child(`dec${i + 1}`, blocks.decoder(init, i)),
    );
    this.head = this.child("head", new Conv(init, 3, nf, classes, 1, { bias: true }));
  }
  /** How a decoder level's input joins the unpooled map and the skip. */
  protected abstract join(unpooled: tf.Tensor5D, skip: tf.Tensor5D): tf.Tensor5D;
  encode(x: tf.Tensor5D): tf.Tensor5D[] {
    const features: tf.Tensor5D[] = [];
    const positions: PoolPositions[] = [];
    let h = x;
    for (const level of this.enc) {
      const skip = level.apply(h);
      features.push(skip);
      const p = poolWithPositions(skip, this.dims);
      positions.push(p.at);
      h = p.pooled;
    }
    features.push(this.bottleneck.apply(h));
    this.positions = positions;
    return features;
  }
  decode(features: tf.Tensor5D[]): tf.Tensor5D {
    const L = features.length, positions = this.positions;
    if (!positions || positions.length !== L - 1 || positions[0].masks[0].isDisposed) {
      throw new Error(`${this.network}.decode needs the pooling positions of an encode in the same scope`);
    }
    let y = features[L - 1];
    for (let k = L - 2; k >= 0; k--) {
      y = this.dec[k].apply(this.join(unpoolWithPositions(y, positions[k]), features[k]));
    }
    return this.head.apply(y);
  }
  apply(x: tf.Tensor5D): tf.Tensor5D {
    return this.decode(this.encode(x));
  }
}

/**
 * Channel squeeze-and-excitation: global average pooling -> Linear(c, c/2) -> ReLU -> Linear(c/2,
 * c) -> gate, each channel scaled by its weight. The gate is `relu` in the AFM's channel-wise
 * refinement (paper Eq. 9) and `sigmoid` in QuickNAT's cSE.
 */
export class SqueezeExcite extends Module {
  private readonly fc0: Linear;
  private readonly fc1: Linear;
  constructor(init: Init, c: number, readonly gate: "relu" | "sigmoid") {
    super();
    const mid = Math.max(1, Math.floor(c / 2));
    this.fc0 = this.child("fc0", new Linear(init, c, mid));
    this.fc1 = this.child("fc1", new Linear(init, mid, c));
  }
  apply(x: tf.Tensor5D): tf.Tensor5D {
    const desc = tf.mean(x, [1, 2, 3]) as tf.Tensor2D; // GAP -> [batch, C]
    const h = this.fc1.apply(relu(this.fc0.apply(desc)));
    const w = this.gate === "relu" ? relu(h) : tf.sigmoid(h);
    return tf.mul(x, tf.reshape(w, [x.shape[0], 1, 1, 1, -1])) as tf.Tensor5D;
  }
}

/**
 * A transposed convolution, `'same'`: each spatial size times the stride, over every axis (3D) or
 * height and width only (2D: kernel 1 x k x k, depth kept). Kernel 4, stride 2 is PyTorch's
 * ConvTranspose k4 s2 p1 (the U-Nets); kernel = stride is PyTorch's padding 0 (each voxel becomes a
 * block: VoxResNet, UNesT). Kaiming-initialised weights, optionally a bias.
 */
export class TransposedConv extends Module {
  readonly weight: tf.Variable;
  readonly bias?: tf.Variable;
  readonly stride: number;
  readonly dims: Dims;
  constructor(
    init: Init,
    readonly cin: number,
    readonly cout: number,
    { k, stride = k, dims = 3, bias = false }: { k: number; stride?: number; dims?: Dims; bias?: boolean },
  ) {
    super();
    const kd = dims === 3 ? k : 1;
    const fanIn = cin * kd * k * k;
    this.weight = this.param("weight", init.kaiming([kd, k, k, cout, cin], fanIn));
    if (bias) this.bias = this.param("bias", init.bias(cout, fanIn));
    this.stride = stride;
    this.dims = dims;
  }
  apply(x: tf.Tensor5D): tf.Tensor5D {
    const [n, d, h, w] = x.shape, s = this.stride;
    const sd = this.dims === 3 ? s : 1;
    const y = tf.conv3dTranspose(x, this.weight as tf.Tensor5D, [n, sd * d, s * h, s * w, this.cout], [
      sd,
      s,
      s,
    ], "same");
    return this.bias ? tf.add(y, this.bias) as tf.Tensor5D : y;
  }
}
