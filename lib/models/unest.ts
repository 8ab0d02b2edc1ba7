/**
 * UNesT (Yu et al. 2023), the 3D hierarchical transformer of Table 3, as its released code builds
 * it (`../shared/reference/wave2-architectures.md` section 3.4), at any width and depth:
 *
 * - Patch embedding: Conv 4^3 stride 4 to the first stage's width (h0, 1/4 resolution).
 * - T = levels - 2 transformer stages (NesT): stage l works on tokens at 1/(4 * 2^l) resolution,
 *   cut into 2^(T-1-l) blocks per axis (the last stage one block); attention is only within a
 *   block; a learnable positional embedding is added first; between stages a ConvPool (Conv 3^3 ->
 *   LayerNorm -> MaxPool 3, stride 2, padding 1) halves the grid and doubles the width. A layer is
 *   `x + MHSA(LN(x))`, `x + MLP(LN(x))` (LN eps 1e-6, MLP ratio 4, exact GELU, qkv with bias).
 * - Skips (what AFMs attach to, the 3D KKN's five levels at five levels): enc0 = a residual block
 *   on the image (width nf), enc1 = transposed convs from h0 (2 nf, 1/2), enc_k = residual blocks
 *   on the stage outputs (4 nf, 8 nf at 1/4, 1/8), enc_{L-1} = the last stage's output after a
 *   LayerNorm (16 nf at 1/16): widths nf .. 16 nf as the other 3D networks'.
 * - Decoder: Conv 3^3 stride 2 -> PReLU -> InstanceNorm (32 nf at 1/32), then per level a
 *   transposed conv 2 to the level's width, concatenation with the skip and a residual block; a
 *   1x1x1 classifier. Residual blocks (MONAI `UnetResBlock`): conv -> IN -> LeakyReLU -> conv -> IN,
 *   plus a 1x1x1 conv + IN shortcut when the width changes, then LeakyReLU.
 *
 * The released model fixes a 96^3 input (its positional embeddings are one per token of that
 * grid), trains on random crops of it and predicts larger volumes by sliding windows. Here the
 * input edge is `window` (default `REFERENCE_INPUT`): each stage's embedding is learnt on that
 * input's token grid; another input size gets the embeddings resized linearly (any size divisible
 * by 2^levels and by the blocks), but the pipeline trains on `window`^3 crops and predicts by
 * sliding windows (`slidingWindow`), as the released code does. Heads are width / 32 (the released
 * base and small models' ratio), at least 1.
 * Stochastic depth (the released drop-path 0 -> 0.5) is not applied.
 */
import * as tf from "@tensorflow/tfjs-core";
import { Conv, Init, Module } from "../nn/module.ts";
import { gelu, instanceNorm, instanceNormLeakyRelu, leakyRelu, resizeLinear } from "../nn/ops.ts";
import { cat, levelWidths, padSpatial, SharedPReLU, TransposedConv } from "./blocks.ts";
import type { SegmentationNetwork } from "./fusion.ts";

/** The input edge the positional embeddings are learnt for when none is given (the phantom's grid). */
export const REFERENCE_INPUT = 64;

/** Transformer layers per stage: the released base model's, and the small default here. */
export const UNEST_DEPTHS = { paper: [2, 2, 8], small: [1, 1, 2] } as const;

/** LayerNorm over the last axis, with learnable scale (1) and shift (0), PyTorch's defaults. */
export class LayerNorm extends Module {
  readonly gamma: tf.Variable;
  readonly beta: tf.Variable;
  constructor(readonly channels: number, readonly eps = 1e-5) {
    super();
    this.gamma = this.param("gamma", tf.ones([channels]));
    this.beta = this.param("beta", tf.zeros([channels]));
  }
  apply<T extends tf.Tensor>(x: T): T {
    return tf.tidy(() => {
      const { mean, variance } = tf.moments(x, -1, true);
      const y = tf.div(tf.sub(x, mean), tf.sqrt(tf.add(variance, this.eps)));
      return tf.add(tf.mul(y, this.gamma), this.beta) as T;
    });
  }
}

/** A linear layer on tokens [..., in] with the transformers' init (weights N(0, 0.02), bias 0). */
class TokenLinear extends Module {
  readonly weight: tf.Variable;
  readonly bias: tf.Variable;
  constructor(init: Init, readonly inFeatures: number, readonly outFeatures: number) {
    super();
    this.weight = this.param("weight", init.normal([inFeatures, outFeatures], 0, 0.02));
    this.bias = this.param("bias", tf.zeros([outFeatures]));
  }
  apply(x: tf.Tensor): tf.Tensor {
    const shape = x.shape;
    const flat = tf.reshape(x, [-1, this.inFeatures]) as tf.Tensor2D;
    const y = tf.add(tf.matMul(flat, this.weight as tf.Tensor2D), this.bias);
    return tf.reshape(y, [...shape.slice(0, -1), this.outFeatures]);
  }
}

/** Multi-head self-attention over the tokens of each block: x [blocks, tokens, C]. */
export class Attention extends Module {
  private readonly qkv: TokenLinear;
  private readonly proj: TokenLinear;
  constructor(init: Init, readonly dim: number, readonly heads: number) {
    super();
    if (dim % heads !== 0) throw new RangeError(`attention: width ${dim} not divisible by ${heads} heads`);
    this.qkv = this.child("qkv", new TokenLinear(init, dim, 3 * dim));
    this.proj = this.child("proj", new TokenLinear(init, dim, dim));
  }
  apply(x: tf.Tensor3D): tf.Tensor3D {
    const [b, n, c] = x.shape;
    const d = c / this.heads;
    // [b, n, 3, heads, d] -> [3, b, heads, n, d]
    const qkv = tf.transpose(tf.reshape(this.qkv.apply(x), [b, n, 3, this.heads, d]), [2, 0, 3, 1, 4]);
    const [q, k, v] = tf.unstack(qkv, 0) as tf.Tensor4D[];
    const scores = tf.mul(tf.matMul(q, k, false, true), 1 / Math.sqrt(d));
    const out = tf.matMul(tf.softmax(scores), v); // [b, heads, n, d]
    return this.proj.apply(tf.reshape(tf.transpose(out, [0, 2, 1, 3]), [b, n, c])) as tf.Tensor3D;
  }
}

/** A pre-norm transformer layer: x + MHSA(LN(x)), then x + MLP(LN(x)). */
export class TransformerLayer extends Module {
  private readonly norm1: LayerNorm;
  private readonly attn: Attention;
  private readonly norm2: LayerNorm;
  private readonly fc1: TokenLinear;
  private readonly fc2: TokenLinear;
  constructor(init: Init, dim: number, heads: number, mlpRatio = 4) {
    super();
    this.norm1 = this.child("norm1", new LayerNorm(dim, 1e-6));
    this.attn = this.child("attn", new Attention(init, dim, heads));
    this.norm2 = this.child("norm2", new LayerNorm(dim, 1e-6));
    this.fc1 = this.child("fc1", new TokenLinear(init, dim, mlpRatio * dim));
    this.fc2 = this.child("fc2", new TokenLinear(init, mlpRatio * dim, dim));
  }
  apply(x: tf.Tensor3D): tf.Tensor3D {
    const a = tf.add(x, this.attn.apply(this.norm1.apply(x))) as tf.Tensor3D;
    return tf.add(a, this.fc2.apply(gelu(this.fc1.apply(this.norm2.apply(a))))) as tf.Tensor3D;
  }
}

/**
 * Tokens [B, D, H, W, C] cut into `b` blocks per axis: [B * b^3, tokens per block, C] (blocks in
 * raster order, tokens in raster order within a block); `unblockify` puts them back.
 */
export function blockify(x: tf.Tensor5D, b: number): tf.Tensor3D {
  const [n, d, h, w, c] = x.shape;
  if (d % b || h % b || w % b) {
    throw new RangeError(`blockify: grid ${d}x${h}x${w} into ${b} blocks per axis`);
  }
  const [ed, eh, ew] = [d / b, h / b, w / b];
  const split = tf.reshape(x, [n, b, ed, b, eh, b, ew, c]);
  return tf.reshape(tf.transpose(split, [0, 1, 3, 5, 2, 4, 6, 7]), [n * b ** 3, ed * eh * ew, c]);
}

export function unblockify(t: tf.Tensor3D, b: number, grid: [number, number, number]): tf.Tensor5D {
  const [d, h, w] = grid;
  const c = t.shape[2];
  const n = t.shape[0] / b ** 3;
  const [ed, eh, ew] = [d / b, h / b, w / b];
  const split = tf.reshape(t, [n, b, b, b, ed, eh, ew, c]);
  return tf.reshape(tf.transpose(split, [0, 1, 4, 2, 5, 3, 6, 7]), [n, d, h, w, c]);
}

/** A NesT stage: positional embedding, then transformer layers within each of b^3 blocks. */
class Stage extends Module {
  private readonly pos: tf.Variable;
  private readonly layers: TransformerLayer[];
  constructor(init: Init, dim: number, depth: number, readonly blocks: number, refGrid: number) {
    super();
    this.pos = this.param("pos", init.normal([1, refGrid, refGrid, refGrid, dim], 0, 0.02));
    const heads = dim % 32 === 0 ? Math.max(1, dim / 32) : 1;
    this.layers = Array.from(
      { length: depth },
      (_, i) => this.child(`layer${i + 1}`, new TransformerLayer(init, dim, heads)),
    );
  }
  apply(x: tf.Tensor5D): tf.Tensor5D {
    const grid = x.shape.slice(1, 4) as [number, number, number];
    const pos = resizeLinear(this.pos as unknown as tf.Tensor5D, grid);
    let t = blockify(tf.add(x, pos) as tf.Tensor5D, this.blocks);
    for (const layer of this.layers) t = layer.apply(t);
    return unblockify(t, this.blocks, grid);
  }
}

/** Conv 3^3 -> LayerNorm over channels -> MaxPool 3, stride 2, padding 1 (NesT's block aggregation). */
class ConvPool extends Module {
  private readonly conv: Conv;
  private readonly norm: LayerNorm;
  constructor(init: Init, cin: number, cout: number) {
    super();
    this.conv = this.child("conv", new Conv(init, 3, cin, cout, 3, { bias: true }));
    this.norm = this.child("norm", new LayerNorm(cout));
  }
  apply(x: tf.Tensor5D): tf.Tensor5D {
    const y = this.norm.apply(this.conv.apply(x));
    // PyTorch's padding 1 on both sides (never chosen by the max), not TF's 'same'
    const padded = tf.pad(y, [[0, 0], [1, 1], [1, 1], [1, 1], [0, 0]], -1e30) as tf.Tensor5D;
    return tf.maxPool3d(padded, 3, 2, "valid");
  }
}

/** MONAI's `UnetResBlock`: conv -> IN -> LeakyReLU -> conv -> IN (+ shortcut) -> LeakyReLU. */
class ResBlock extends Module {
  private readonly a: Conv;
  private readonly b: Conv;
  private readonly shortcut: Conv | null;
  constructor(init: Init, cin: number, cout: number) {
    super();
    this.a = this.child("a", new Conv(init, 3, cin, cout, 3));
    this.b = this.child("b", new Conv(init, 3, cout, cout, 3));
    this.shortcut = cin === cout ? null : this.child("shortcut", new Conv(init, 3, cin, cout, 1));
  }
  apply(x: tf.Tensor5D): tf.Tensor5D {
    const y = instanceNorm(this.b.apply(instanceNormLeakyRelu(this.a.apply(x), 0.01)));
    const r = this.shortcut ? instanceNorm(this.shortcut.apply(x)) : x;
    return leakyRelu(tf.add(y, r) as tf.Tensor5D);
  }
}

export class UNesT extends Module implements SegmentationNetwork {
  readonly levelChannels: number[];
  private readonly enc0: ResBlock;
  private readonly embed: Conv;
  private readonly stages: Stage[] = [];
  private readonly pools: ConvPool[] = [];
  private readonly up1a: TransposedConv;
  private readonly up1b: TransposedConv;
  private readonly encRes: ResBlock[] = [];
  private readonly finalNorm: LayerNorm;
  private readonly bottom: Conv;
  private readonly bottomAct: SharedPReLU;
  private readonly ups: TransposedConv[] = [];
  private readonly dec: ResBlock[] = [];
  private readonly head: Conv;
  /**
   * `levels` skips (widths nf .. 2^(L-1) nf) over `levels` - 2 transformer stages of `depths[l]`
   * layers each (default: the small model's depths, the last repeated as needed), for inputs of
   * `window`^3 voxels.
   */
  constructor(
    readonly classes: number,
    nf: number,
    levels: number,
    seed: number,
    depths: readonly number[] = UNEST_DEPTHS.small,
    readonly window: number = REFERENCE_INPUT,
  ) {
    super();
    if (levels < 3) throw new RangeError(`UNesT: needs at least 3 levels, got ${levels}`);
    if (!Number.isInteger(window) || window % 2 ** levels !== 0) {
      throw new RangeError(
        `UNesT: input edge ${window} must be a multiple of 2^${levels} (its ${levels} levels)`,
      );
    }
    const init = new Init(seed);
    const w = levelWidths(nf, levels);
    this.levelChannels = w;
    const T = levels - 2;
    this.enc0 = this.child("enc0", new ResBlock(init, 1, w[0]));
    this.embed = this.child(
      "embed",
      new Conv(init, 3, 1, w[2], 4, { stride: 4, padding: "valid", bias: true }),
    );
    for (let l = 0; l < T; l++) {
      if (l > 0) this.pools[l] = this.child(`pool${l + 1}`, new ConvPool(init, w[l + 1], w[l + 2]));
      const depth = depths[Math.min(l, depths.length - 1)];
      const blocks = 2 ** (T - 1 - l);
      this.stages.push(
        this.child(`stage${l + 1}`, new Stage(init, w[l + 2], depth, blocks, window / (4 * 2 ** l))),
      );
    }
    this.up1a = this.child("enc1a", new TransposedConv(init, w[2], w[1], { k: 2 }));
    this.up1b = this.child("enc1b", new TransposedConv(init, w[1], w[1], { k: 1 }));
    for (let k = 2; k < levels - 1; k++) {
      this.encRes[k] = this.child(`enc${k}`, new ResBlock(init, w[k], w[k]));
    }
    this.finalNorm = this.child("norm", new LayerNorm(w[levels - 1], 1e-6));
    const top = 2 * w[levels - 1];
    this.bottom = this.child(
      "bottom",
      new Conv(init, 3, w[levels - 1], top, 3, { stride: 2, padding: "valid", bias: true }),
    );
    this.bottomAct = this.child("bottomAct", new SharedPReLU());
    for (let k = levels - 1; k >= 0; k--) {
      this.ups[k] = this.child(
        `up${k}`,
        new TransposedConv(init, k === levels - 1 ? top : w[k + 1], w[k], { k: 2 }),
      );
      this.dec[k] = this.child(`dec${k}`, new ResBlock(init, 2 * w[k], w[k]));
    }
    this.head = this.child("head", new Conv(init, 3, w[0], classes, 1, { bias: true }));
  }
  encode(x: tf.Tensor5D): tf.Tensor5D[] {
    const L = this.levelChannels.length;
    const size = x.shape.slice(1, 4);
    if (size.some((n) => n % 2 ** L !== 0)) {
      throw new RangeError(`UNesT: input ${size.join("x")} must be divisible by 2^${L} along every axis`);
    }
    const h0 = this.embed.apply(x);
    const hs: tf.Tensor5D[] = [];
    let h = h0;
    this.stages.forEach((stage, l) => {
      if (l > 0) h = this.pools[l].apply(h);
      h = stage.apply(h);
      hs.push(h);
    });
    const out = [this.enc0.apply(x), this.up1b.apply(this.up1a.apply(h0))];
    for (let k = 2; k < L - 1; k++) out.push(this.encRes[k].apply(hs[k - 2]));
    out.push(this.finalNorm.apply(hs[hs.length - 1]));
    return out;
  }
  decode(features: tf.Tensor5D[]): tf.Tensor5D {
    const L = features.length;
    const padded = padSpatial(features[L - 1], 1, 3);
    let y = instanceNorm(this.bottomAct.apply(this.bottom.apply(padded)));
    for (let k = L - 1; k >= 0; k--) y = this.dec[k].apply(cat([this.ups[k].apply(y), features[k]]));
    return this.head.apply(y);
  }
  apply(x: tf.Tensor5D): tf.Tensor5D {
    return this.decode(this.encode(x));
  }
}
