/**
 * Phase 2: the knowledge keeper network (KKN, paper section 3.2, Eq. 3-6) and the patch
 * discriminator.
 *
 * - Dense feature extractor: per level three ConvBlocks with kernel 7 (`kernel`), each fed
 *   everything before it; growth g * 2^(k-1) with g = nf/4 (`growth`); stride-2 k4 ConvBlock
 *   transitions between levels, to g * 2^(k-1) channels.
 * - Guide block B_L: ConvBlock k7 (`kernel`) to the teacher's width, then PRM. B_k (k < L): the deeper
 *   7T-like feature is upsampled trilinearly and projected by a 1x1x1 conv (U); the dense features
 *   go through a ConvBlock k7 (T); M = sigmoid(conv1x1([T, U])) gives two maps (Eq. 3);
 *   out = PRM(M0 * T + M1 * U) (Eq. 4).
 * - PRM (Ma & Fu 2020), implementing the intent of the released code: query = the feature vector
 *   at the argmax of the channel-sum map; similarity to the query weighted by a Gaussian of the
 *   per-axis (learnable theta) distance to the query position times a learnable scale, and
 *   similarity to the global average; mixed by learnable scalars (0, 1), z-normalised over space,
 *   affine (0, 1), sigmoid gate. At initialisation the gate is uniformly sigmoid(1). Each sample
 *   of a batch is recalibrated on its own.
 * - `dims`: 3 (volumes) or 2 (slices, the paper's 2D KKN), from the same blocks.
 */
import * as tf from "@tensorflow/tfjs-core";
import { Conv, Init, Module } from "../nn/module.ts";
import { resizeLinear } from "../nn/ops.ts";
import type { DistributionMatching } from "../losses.ts";
import {
  cat,
  ConvBlock,
  type Dims,
  kernelOf,
  levelWidths,
  type Norm,
  padSpatial,
  spatialSize,
} from "./blocks.ts";

export interface KeeperConfig {
  nf: number;
  levels: number;
  /** `paper`: channel-wise mean/std over space (per channel); `code`: mean/std across channels per voxel. */
  distribution: DistributionMatching;
  lambdaSyn: number;
  lambdaAdv: number;
  /** Normalisation in the extractor's and guide blocks' ConvBlocks (the authors' code: `instance`). */
  norm: Norm;
  /** Kernel size of the dense extractor's and the guide blocks' ConvBlocks (the authors' code: 7). */
  kernel: number;
  /**
   * Channels each dense ConvBlock adds at level 1, doubling per level; also the width of the
   * transition out of level 1 (the authors' code: nf / 4, `null`).
   */
  growth: number | null;
  /**
   * `true`: the guide blocks (attention over the 3T and deeper 7T-like features, then PRM) make
   * the 7T-like features; `false` (Table 4a): each level's dense features go through one
   * ConvBlock to the teacher's width, with no attention, PRM or top-down path.
   */
  guideBlocks: boolean;
  /**
   * `true`: feature and distribution matching against the teacher encoder (Eq. 5) join the
   * synthesis and adversarial losses; `false` (Table 4b): the KKN learns only through the frozen
   * teacher decoder's synthesis and the discriminator.
   */
  distillation: boolean;
  /** Spatial dimensionality, 3 (volumes; the default when absent) or 2 (slices). */
  dims?: Dims;
}

export const DEFAULT_KEEPER: KeeperConfig = {
  nf: 16,
  levels: 5,
  distribution: "paper",
  lambdaSyn: 100,
  lambdaAdv: 0.5,
  norm: "instance",
  kernel: 7,
  growth: null,
  guideBlocks: true,
  distillation: true,
};

export class PRM extends Module {
  readonly theta: tf.Variable;
  readonly scale: tf.Variable;
  readonly zero: tf.Variable;
  readonly one: tf.Variable;
  readonly weight: tf.Variable;
  readonly bias: tf.Variable;
  constructor() {
    super();
    this.theta = this.param("theta", tf.ones([3]));
    this.scale = this.param("scale", tf.ones([1]));
    this.zero = this.param("zero", tf.zeros([1]));
    this.one = this.param("one", tf.ones([1]));
    this.weight = this.param("weight", tf.zeros([1]));
    this.bias = this.param("bias", tf.ones([1]));
  }

  /** Recalibrates each sample of a batch on its own (query, context and statistics per sample). */
  apply(x: tf.Tensor5D): tf.Tensor5D {
    return x.shape[0] === 1 ? this.applyOne(x) : this.applyBatch(x);
  }

  /**
   * `applyOne` for every sample of a batch at once (batched matrix products, per-sample
   * statistics): the same values, without a graph of small per-sample ops to differentiate.
   */
  private applyBatch(x: tf.Tensor5D): tf.Tensor5D {
    const [b, d, h, w, c] = x.shape, v = d * h * w;
    const flat = tf.reshape(x, [b, v, c]) as tf.Tensor3D;
    const pos = tf.tidy(() => Array.from(tf.argMax(tf.sum(flat, 2), 1).dataSync()));
    // each sample's query row picked by a one-hot mask (a gather's gradient is a slow scatter on cpu)
    const pick = new Float32Array(b * v);
    pos.forEach((p, n) => (pick[n * v + p] = 1));
    const query = tf.sum(tf.mul(flat, tf.tensor3d(pick, [b, v, 1])), 1, true) as tf.Tensor3D;
    const simMax = tf.matMul(flat, query, false, true); // [B, V, 1]
    // squared per-axis distances to each sample's query, normalised by the axis length
    const axis = (len: number, at: (p: number) => number, shape: number[]) =>
      tf.tensor(
        Float32Array.from({ length: b * len }, (_, k) =>
          ((k % len) - at(pos[Math.floor(k / len)])) ** 2 / len ** 2),
        shape,
      );
    const dz = axis(d, (p) => Math.floor(p / (h * w)), [b, d, 1, 1]);
    const dy = axis(h, (p) => Math.floor(p / w) % h, [b, 1, h, 1]);
    const dx = axis(w, (p) => p % w, [b, 1, 1, w]);
    const [tz, ty, tx] = tf.split(tf.square(this.theta), 3);
    const dist = tf.add(tf.add(tf.mul(dz, tz), tf.mul(dy, ty)), tf.mul(dx, tx));
    return this.recalibrate(x, flat, simMax, tf.reshape(dist, [b, v, 1]), 1);
  }

  private applyOne(x: tf.Tensor5D): tf.Tensor5D {
    const [, d, h, w, c] = x.shape;
    const flat = tf.reshape(x, [d * h * w, c]) as tf.Tensor2D;
    // query position: argmax of the channel-sum map (not differentiated, as in the original)
    const pos = tf.tidy(() => tf.argMax(tf.sum(flat, 1)).dataSync()[0]);
    const [pz, py, px] = [Math.floor(pos / (h * w)), Math.floor(pos / w) % h, pos % w];
    const query = tf.slice(flat, [pos, 0], [1, c]);
    const simMax = tf.matMul(flat, query, false, true); // [V, 1]
    // squared per-axis distances to the query, normalised by the axis length
    const axis = (len: number, p: number) =>
      tf.tensor1d(Float32Array.from({ length: len }, (_, i) => (i - p) / len));
    const dz = tf.reshape(tf.square(axis(d, pz)), [d, 1, 1]);
    const dy = tf.reshape(tf.square(axis(h, py)), [1, h, 1]);
    const dx = tf.reshape(tf.square(axis(w, px)), [1, 1, w]);
    const th = tf.square(this.theta);
    const [tz, ty, tx] = tf.split(th, 3);
    const dist = tf.add(tf.add(tf.mul(dz, tz), tf.mul(dy, ty)), tf.mul(dx, tx));
    return this.recalibrate(x, flat, simMax, tf.reshape(dist, [d * h * w, 1]), 0);
  }

  /**
   * The gate shared by both forms: the query similarity weighted by the Gaussian of the squared
   * distances `dist`, plus the global-context similarity, standardised over the positions (`axis`
   * of `flat`, one sample's voxels) and squashed; `flat` scaled by it, in `x`'s shape.
   */
  private recalibrate<T extends tf.Tensor2D | tf.Tensor3D>(
    x: tf.Tensor5D,
    flat: T,
    simMax: tf.Tensor,
    dist: tf.Tensor,
    axis: 0 | 1,
  ): tf.Tensor5D {
    const gauss = tf.mul(this.scale, tf.exp(tf.neg(dist)));
    const gap = tf.mean(flat, axis, true); // [(B,) 1, C]
    const simGap = tf.matMul(flat, gap as T, false, true);
    const sim = tf.add(tf.mul(this.zero, tf.mul(simMax, gauss)), tf.mul(this.one, simGap));
    const { mean, variance } = tf.moments(sim, axis, true);
    const z = tf.div(tf.sub(sim, mean), tf.add(tf.sqrt(variance), 1e-5));
    const gate = tf.sigmoid(tf.add(tf.mul(z, this.weight), this.bias));
    return tf.reshape(tf.mul(flat, gate), x.shape) as tf.Tensor5D;
  }
}

/** Guide block B_k for k < L (Eq. 3-4 then PRM). */
export class GuideBlock extends Module {
  readonly project: Conv;
  readonly local: ConvBlock;
  readonly attention: Conv;
  readonly prm: PRM;
  constructor(
    init: Init,
    denseC: number,
    deeperC: number,
    c: number,
    norm: Norm = "instance",
    k = 7,
    dims: Dims = 3,
  ) {
    super();
    this.project = this.child("project", new Conv(init, 3, deeperC, c, 1));
    this.local = this.child("local", new ConvBlock(init, denseC, c, { k, norm, dims }));
    this.attention = this.child("attention", new Conv(init, 3, 2 * c, 2, 1));
    this.prm = this.child("prm", new PRM());
  }
  /** Also returns the attention maps M (for figures). */
  applyWithMaps(dense: tf.Tensor5D, deeper: tf.Tensor5D): { out: tf.Tensor5D; maps: tf.Tensor5D } {
    const u = this.project.apply(resizeLinear(deeper, spatialSize(dense)));
    const t = this.local.apply(dense);
    const maps = tf.sigmoid(this.attention.apply(cat([t, u]))) as tf.Tensor5D;
    const [m0, m1] = tf.split(maps, 2, 4) as tf.Tensor5D[];
    return { out: this.prm.apply(tf.add(tf.mul(m0, t), tf.mul(m1, u)) as tf.Tensor5D), maps };
  }
  apply(dense: tf.Tensor5D, deeper: tf.Tensor5D): tf.Tensor5D {
    return this.applyWithMaps(dense, deeper).out;
  }
}

class DenseLevel extends Module {
  private readonly convs: ConvBlock[];
  constructor(init: Init, cin: number, growth: number, norm: Norm, k: number, dims: Dims) {
    super();
    this.convs = [0, 1, 2].map((i) =>
      this.child(`conv${i + 1}`, new ConvBlock(init, cin + i * growth, growth, { k, norm, dims }))
    );
  }
  apply(x: tf.Tensor5D): tf.Tensor5D {
    const parts = [x];
    for (const c of this.convs) parts.push(c.apply(parts.length === 1 ? x : cat(parts)));
    return cat(parts);
  }
}

export class KnowledgeKeeper extends Module {
  readonly widths: number[];
  private readonly dense: DenseLevel[];
  private readonly transitions: ConvBlock[];
  private readonly top: ConvBlock;
  private readonly topPrm: PRM | null;
  private readonly guides: GuideBlock[];
  /** Without guide blocks: one ConvBlock per level below the top (`guideBlocks: false`). */
  private readonly projections: ConvBlock[];
  constructor(readonly cfg: KeeperConfig, seed: number) {
    super();
    const init = new Init(seed);
    // runs written before `kernel` existed used the paper's 7
    const kernel = cfg.kernel ?? 7;
    const dims = cfg.dims ?? 3;
    this.widths = levelWidths(cfg.nf, cfg.levels);
    // runs written before `growth` existed used the authors' nf / 4
    const nfDown = cfg.growth ?? Math.max(1, Math.floor(cfg.nf / 4));
    if (!Number.isInteger(nfDown) || nfDown < 1) {
      throw new RangeError(`keeper.growth must be a positive integer, got ${cfg.growth}`);
    }
    const growth = this.widths.map((_, k) => nfDown * 2 ** k);
    const inC = growth.map((_, k) => (k === 0 ? 1 : growth[k - 1]));
    const denseC = inC.map((c, k) => c + 3 * growth[k]);
    this.dense = growth.map((g, k) =>
      this.child(`dense${k + 1}`, new DenseLevel(init, inC[k], g, cfg.norm, kernel, dims))
    );
    this.transitions = growth.slice(0, -1).map((g, k) =>
      this.child(
        `transition${k + 1}`,
        new ConvBlock(init, denseC[k], g, { k: 4, stride: 2, norm: cfg.norm, dims }),
      )
    );
    const L = cfg.levels;
    this.top = this.child(
      `guide${L}`,
      new ConvBlock(init, denseC[L - 1], this.widths[L - 1], { k: kernel, norm: cfg.norm, dims }),
    );
    // runs written before `guideBlocks` existed had them
    const guided = cfg.guideBlocks ?? true;
    this.topPrm = guided ? this.child(`guide${L}prm`, new PRM()) : null;
    this.guides = [];
    this.projections = [];
    for (let k = L - 2; k >= 0; k--) {
      if (guided) {
        this.guides[k] = this.child(
          `guide${k + 1}`,
          new GuideBlock(init, denseC[k], this.widths[k + 1], this.widths[k], cfg.norm, kernel, dims),
        );
      } else {
        this.projections[k] = this.child(
          `project${k + 1}`,
          new ConvBlock(init, denseC[k], this.widths[k], { k: kernel, norm: cfg.norm, dims }),
        );
      }
    }
  }

  /** 3T features of the dense extractor, per level. */
  extract(x: tf.Tensor5D): tf.Tensor5D[] {
    const out: tf.Tensor5D[] = [];
    let h = x;
    this.dense.forEach((d, k) => {
      out.push(d.apply(h));
      if (k < this.transitions.length) h = this.transitions[k].apply(out[k]);
    });
    return out;
  }

  /** 7T-like features F~^K_1..L from a low-field image. */
  apply(x: tf.Tensor5D): tf.Tensor5D[] {
    return this.guide(this.extract(x));
  }

  /** 7T-like features from the extractor's 3T features (`extract`), through the guide blocks. */
  guide(dense: tf.Tensor5D[]): tf.Tensor5D[] {
    const L = dense.length;
    const top = this.top.apply(dense[L - 1]);
    if (!this.topPrm) return [...dense.slice(0, -1).map((d, k) => this.projections[k].apply(d)), top];
    const out: tf.Tensor5D[] = new Array(L);
    out[L - 1] = this.topPrm.apply(top);
    for (let k = L - 2; k >= 0; k--) out[k] = this.guides[k].apply(dense[k], out[k + 1]);
    return out;
  }
}

/** Patch discriminator: four k4 s2 ConvBlocks (nf, 2nf, 4nf, 8nf) then a k4 conv to one channel. */
export class PatchDiscriminator extends Module {
  private readonly blocks: ConvBlock[];
  private readonly out: Conv;
  constructor(nf: number, seed: number, readonly dims: Dims = 3) {
    super();
    const init = new Init(seed);
    const w = levelWidths(nf, 4);
    this.blocks = w.map((c, i) =>
      this.child(
        `block${i + 1}`,
        new ConvBlock(init, i === 0 ? 1 : w[i - 1], c, { k: 4, stride: 2, dims }),
      )
    );
    this.out = this.child(
      "out",
      new Conv(init, 3, w[3], 1, kernelOf(4, dims), { padding: "valid", bias: true }),
    );
  }
  apply(x: tf.Tensor5D): tf.Tensor5D {
    let h = x;
    for (const b of this.blocks) h = b.apply(h);
    // PyTorch padding=1 around a k4 stride-1 conv
    return this.out.apply(padSpatial(h, 1, this.dims));
  }
}
