/**
 * Phase 3: adaptive fusion modules (AFM, paper section 3.3, Eq. 7-10) and the segmentation
 * networks they guide.
 *
 * Every baseline implements `SegmentationNetwork`: an encoder returning L feature levels and a
 * decoder consuming them, so that AFMs sit between the two (F^F_i = F^S_i + A_i). The 3D U-Net
 * here follows the journal code: double 3x3x3 conv + norm + ReLU blocks (nf .. 16 nf), the
 * bottleneck block inside the encoder, transposed-conv (k4 s2) upsampling in the decoder.
 * With batch 1 BatchNorm's training statistics are instance statistics; InstanceNorm is used in
 * both training and evaluation so that the two agree.
 */
import * as tf from "@tensorflow/tfjs-core";
import { Conv, Init, Module } from "../nn/module.ts";
import { instanceNorm, instanceNormLeakyRelu, relu, resizeLinear } from "../nn/ops.ts";
import {
  cat,
  ConvBlock,
  type Dims,
  kernelOf,
  levelWidths,
  pool,
  spatialSize,
  SqueezeExcite,
  TransposedConv,
} from "./blocks.ts";

/** The encoder/decoder split every baseline implements. */
export interface SegmentationNetwork extends Module {
  /** Channels of each encoder level, shallow to deep. */
  readonly levelChannels: number[];
  /** The levels (0-based) whose features the decoder reads and AFMs attach to (default: all). */
  readonly fusedLevels?: number[];
  readonly classes: number;
  /** Spatial dimensionality: 3 (the default when absent) or 2 (slices as [batch, 1, H, W, C]). */
  readonly dims?: Dims;
  /**
   * Input channels (default 1): more for a 2D network that reads a slice with its neighbours
   * (FastSurfer-CNN's thick slices), the middle channel being the slice itself.
   */
  readonly inputChannels?: number;
  encode(x: tf.Tensor5D): tf.Tensor5D[];
  /** The network alone: decode(encode(x)). */
  apply(x: tf.Tensor5D): tf.Tensor5D;
  /** Class logits [1, D, H, W, classes] from (possibly guided) encoder features. */
  decode(features: tf.Tensor5D[]): tf.Tensor5D;
  /** Networks with deep supervision: the logits and the auxiliary outputs their loss adds. */
  decodeWithAux?(features: tf.Tensor5D[]): { logits: tf.Tensor5D; aux: tf.Tensor5D[] };
  /** Deep supervision weight: 1 - auxDecay * round (clamped at 0). */
  readonly auxDecay?: number;
}

class DoubleConv extends Module {
  private readonly a: ConvBlock;
  private readonly b: ConvBlock;
  constructor(init: Init, cin: number, cout: number, dims: Dims = 3) {
    super();
    this.a = this.child("a", new ConvBlock(init, cin, cout, { activation: "relu", dims }));
    this.b = this.child("b", new ConvBlock(init, cout, cout, { activation: "relu", dims }));
  }
  apply(x: tf.Tensor5D): tf.Tensor5D {
    return this.b.apply(this.a.apply(x));
  }
}

/** The 3D U-Net's decoder layers over encoder widths `w`: per level below the deepest an upsampling and a double conv, then a 1x1x1 head. */
interface UNetDecoderLayers {
  ups: TransposedConv[];
  dec: DoubleConv[];
  head: Conv;
}

/** Registers the decoder layers as children of `m` (names `up<k>`, `dec<k>`, `head`). */
function unetDecoderLayers(
  m: Module,
  init: Init,
  w: number[],
  classes: number,
  dims: Dims = 3,
): UNetDecoderLayers {
  const ups: TransposedConv[] = [], dec: DoubleConv[] = [];
  for (let k = w.length - 2; k >= 0; k--) {
    ups[k] = m.child(`up${k + 1}`, new TransposedConv(init, w[k + 1], w[k], { k: 4, stride: 2, dims }));
    dec[k] = m.child(`dec${k + 1}`, new DoubleConv(init, 2 * w[k], w[k], dims));
  }
  return { ups, dec, head: m.child("head", new Conv(init, 3, w[0], classes, 1, { bias: true })) };
}

/** Logits from L feature levels: upsample, concatenate the skip, double conv; then the head. */
function unetDecode({ ups, dec, head }: UNetDecoderLayers, features: tf.Tensor5D[]): tf.Tensor5D {
  let y = features[features.length - 1];
  for (let k = features.length - 2; k >= 0; k--) {
    const up = instanceNormLeakyRelu(ups[k].apply(y), 0);
    y = dec[k].apply(cat([up, features[k]]));
  }
  return head.apply(y);
}

export class UNet3D extends Module implements SegmentationNetwork {
  readonly levelChannels: number[];
  private readonly enc: DoubleConv[];
  private readonly bottleneck: DoubleConv | null;
  private readonly decoder: UNetDecoderLayers;
  /**
   * The 3D U-Net (widths nf .. 2^(L-1) nf, an extra double conv at the bottleneck), or with
   * `dims: 2` the whole-brain 2D U-Net of the released code: every level `nf` wide, no extra
   * bottleneck block (`lib/models/networks.ts` registers both).
   */
  constructor(
    readonly classes: number,
    nf: number,
    levels: number,
    seed: number,
    readonly dims: Dims = 3,
  ) {
    super();
    const init = new Init(seed);
    const w = dims === 3 ? levelWidths(nf, levels) : Array<number>(levels).fill(nf);
    this.levelChannels = w;
    this.enc = w.map((c, i) =>
      this.child(`enc${i + 1}`, new DoubleConv(init, i === 0 ? 1 : w[i - 1], c, dims))
    );
    this.bottleneck = dims === 3
      ? this.child("bottleneck", new DoubleConv(init, w[levels - 1], w[levels - 1]))
      : null;
    this.decoder = unetDecoderLayers(this, init, w, classes, dims);
  }
  /** The baseline alone: decode(encode(x)). */
  apply(x: tf.Tensor5D): tf.Tensor5D {
    return this.decode(this.encode(x));
  }
  encode(x: tf.Tensor5D): tf.Tensor5D[] {
    const out: tf.Tensor5D[] = [];
    this.enc.forEach((b, i) => out.push(b.apply(i === 0 ? x : pool(out[i - 1], this.dims))));
    if (this.bottleneck) out[out.length - 1] = this.bottleneck.apply(out[out.length - 1]);
    return out;
  }
  decode(features: tf.Tensor5D[]): tf.Tensor5D {
    return unetDecode(this.decoder, features);
  }
}

/**
 * The 3D U-Net's decoder alone, over given feature widths: Table 1 (d) trains it on the frozen
 * KKN's 7T-like features (the KKN as the encoder), with the layers and initialisation of the
 * U-Net's own decoder.
 */
export class UNetDecoder extends Module {
  private readonly layers: UNetDecoderLayers;
  constructor(readonly classes: number, readonly widths: number[], seed: number) {
    super();
    this.layers = unetDecoderLayers(this, new Init(seed), widths, classes);
  }
  /** Class logits [1, D, H, W, classes] from one feature map per width. */
  decode(features: tf.Tensor5D[]): tf.Tensor5D {
    if (features.length !== this.widths.length) {
      throw new RangeError(
        `U-Net decoder: ${this.widths.length} feature levels expected, got ${features.length}`,
      );
    }
    return unetDecode(this.layers, features);
  }
}

/** Intermediate maps of one AFM (Fig. C.1). */
export interface AfmMaps {
  guidance: tf.Tensor5D;
  refined: tf.Tensor5D;
  assimilable: tf.Tensor5D;
  fused: tf.Tensor5D;
}

/**
 * How an AFM's assimilable features join the segmentation features: `none` is the paper's
 * F^F = F^S + A (Eq. 10); `zero` scales A by a learnable scalar that starts at 0 (as in
 * ReZero, Bachlechner et al. 2021), so that a pretrained baseline starts the fine-tuning unchanged.
 */
export type AfmGate = "none" | "zero";

/**
 * The AFM's parts, each of which Table 5 removes in turn. The defaults are the full AFM.
 *
 * - `aggregation` (Eq. 7): every 7T-like level, resized and projected, makes the descriptor;
 *   without it only the same level's 7T-like feature does (Table 5a).
 * - `featureCombined` (Eq. 8): D = IN(conv([G, F^S])); without it D = IN(conv(G)), the guidance
 *   never sees the low-field features it adjusts (Table 5c).
 * - `channelRefinement` (Eq. 9): `two-path` weighs D+ and D- with separate squeeze-and-excitation
 *   branches; `one-path` weighs D with one branch (Table 5b); `none` takes A = D (Table 5d).
 */
export interface AfmParts {
  aggregation: boolean;
  featureCombined: boolean;
  channelRefinement: "two-path" | "one-path" | "none";
}

export const FULL_AFM: AfmParts = { aggregation: true, featureCombined: true, channelRefinement: "two-path" };

/** The paper's name of an AFM variant (Table 5's rows). */
export function afmVariantLabel(p: AfmParts): string {
  const missing = [
    p.aggregation ? null : "aggregation",
    p.channelRefinement === "one-path" ? "two paths in channel-wise refinement" : null,
    p.featureCombined ? null : "feature-combined refinement",
    p.channelRefinement === "none" ? "channel-wise refinement" : null,
  ].filter((m) => m !== null);
  return missing.length === 0 ? "full AFM" : `w/o ${missing.join(", w/o ")}`;
}

/** One adaptive fusion module for an encoder level with `c` channels. */
export class AFM extends Module {
  private readonly aggregate: Conv[];
  private readonly g0: Conv;
  private readonly g1: Conv;
  private readonly combine: Conv;
  private readonly positive: SqueezeExcite | null;
  private readonly negative: SqueezeExcite | null;
  /** The learnable scale of A (`gate: "zero"`), or null (the paper's plain sum). */
  readonly gate: tf.Variable | null;
  /**
   * `level` is this AFM's level (0-based), the one 7T-like feature it reads without aggregation.
   */
  constructor(
    init: Init,
    keeperWidths: number[],
    readonly c: number,
    gate: AfmGate = "none",
    readonly parts: AfmParts = FULL_AFM,
    readonly level = 0,
    dims: Dims = 3,
  ) {
    super();
    if (!parts.aggregation && !(level < keeperWidths.length)) {
      throw new RangeError(
        `AFM without aggregation at level ${level + 1}: the KKN has ${keeperWidths.length} levels`,
      );
    }
    const middle = Math.max(1, Math.floor(c / 5));
    const read = parts.aggregation ? keeperWidths : [keeperWidths[level]];
    this.aggregate = read.map((kc, j) => this.child(`aggregate${j + 1}`, new Conv(init, 3, kc, middle, 1)));
    const k3 = kernelOf(3, dims);
    this.g0 = this.child("guidance0", new Conv(init, 3, middle * read.length, c, k3));
    this.g1 = this.child("guidance1", new Conv(init, 3, c, c, k3));
    this.combine = this.child("combine", new Conv(init, 3, parts.featureCombined ? 2 * c : c, c, k3));
    const r = parts.channelRefinement;
    this.positive = r === "none"
      ? null
      : this.child(r === "two-path" ? "positive" : "channel", new SqueezeExcite(init, c, "relu"));
    this.negative = r === "two-path" ? this.child("negative", new SqueezeExcite(init, c, "relu")) : null;
    this.gate = gate === "zero" ? this.param("gate", tf.zeros([1])) : null;
  }
  applyWithMaps(keeperFeatures: tf.Tensor5D[], fs: tf.Tensor5D): AfmMaps {
    const size = spatialSize(fs);
    // Eq. 7: aggregation of every 7T-like level to this level's resolution
    const read = this.parts.aggregation ? keeperFeatures : [keeperFeatures[this.level]];
    const desc = cat(read.map((f, j) => resizeLinear(this.aggregate[j].apply(f), size)));
    const guidance = this.g1.apply(instanceNormLeakyRelu(this.g0.apply(desc), 0));
    // Eq. 8: feature-combined refinement
    const refined = instanceNorm(
      this.combine.apply(this.parts.featureCombined ? cat([guidance, fs]) : guidance),
    );
    // Eq. 9: two-path channel-wise refinement
    let assimilable = refined;
    if (this.negative) {
      const dPos = relu(refined);
      const dNeg = tf.sub(refined, dPos) as tf.Tensor5D;
      assimilable = tf.add(this.positive!.apply(dPos), this.negative.apply(dNeg)) as tf.Tensor5D;
    } else if (this.positive) {
      assimilable = this.positive.apply(refined);
    }
    const added = this.gate ? tf.mul(this.gate, assimilable) : assimilable;
    return { guidance, refined, assimilable, fused: tf.add(fs, added) as tf.Tensor5D };
  }
  apply(keeperFeatures: tf.Tensor5D[], fs: tf.Tensor5D): tf.Tensor5D {
    return this.applyWithMaps(keeperFeatures, fs).fused;
  }
}

/**
 * A segmentation network with one AFM per encoder level it declares (`fusedLevels`, every level
 * unless the network says otherwise) (Eq. 10); other levels pass through unchanged.
 */
export class GuidedSegmenter extends Module {
  /** AFM of each level, or null where the network declares none. */
  readonly afms: (AFM | null)[];
  constructor(
    readonly net: SegmentationNetwork,
    keeperWidths: number[],
    seed: number,
    gate: AfmGate = "none",
    parts: AfmParts = FULL_AFM,
  ) {
    super();
    this.child("net", net);
    const init = new Init(seed);
    const fused = new Set(net.fusedLevels ?? net.levelChannels.map((_, i) => i));
    this.afms = net.levelChannels.map((c, i) =>
      fused.has(i)
        ? this.child(`afm${i + 1}`, new AFM(init, keeperWidths, c, gate, parts, i, net.dims ?? 3))
        : null
    );
  }
  private guidedFeatures(x: tf.Tensor5D, keeperFeatures: tf.Tensor5D[]): tf.Tensor5D[] {
    return this.net.encode(x).map((f, i) => this.afms[i]?.apply(keeperFeatures, f) ?? f);
  }
  /** Logits from the low-field image and the (frozen) KKN's 7T-like features. */
  apply(x: tf.Tensor5D, keeperFeatures: tf.Tensor5D[]): tf.Tensor5D {
    return this.net.decode(this.guidedFeatures(x, keeperFeatures));
  }
  /** Logits and deep-supervision outputs (training). */
  forward(x: tf.Tensor5D, keeperFeatures: tf.Tensor5D[]): { logits: tf.Tensor5D; aux: tf.Tensor5D[] } {
    const f = this.guidedFeatures(x, keeperFeatures);
    return this.net.decodeWithAux ? this.net.decodeWithAux(f) : { logits: this.net.decode(f), aux: [] };
  }
}
