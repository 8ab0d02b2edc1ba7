/**
 * Phase 1: the teacher U-Net T = (T_E, T_G) that learns 7T representations by reconstructing
 * 7T images (paper section 3.1, Eq. 1-2; widths and heads as in the authors' code).
 *
 * - Encoder T_E: L levels of one ConvBlock each (nf, 2nf, ..., 2^(L-1) nf), max pooling between.
 * - Decoder T_G: a ConvBlock on the bottleneck, then per level: trilinear upsampling to the skip's
 *   size, 1x1x1 conv to the level width, concatenation with the (noisy) skip, ConvBlock; a 1x1x1
 *   head without bias or activation.
 * - Skip noise (training only): `paper` adds Gaussian N(0, sigma^2) to every level's skip (Eq. 1);
 *   `code` adds uniform [0, 1) noise as the released code does.
 * - Feature-level reconstruction heads (Eq. 2): level k+1 upsampled -> 1x1x1 conv -> ConvBlock,
 *   compared with level k by MSE.
 * - `dims`: 3 (volumes) or 2 (slices, the paper's 2D teacher), from the same blocks.
 */
import * as tf from "@tensorflow/tfjs-core";
import { Conv, Init, Module } from "../nn/module.ts";
import { resizeLinear } from "../nn/ops.ts";
import { l1, mse } from "../losses.ts";
import { cat, ConvBlock, type Dims, levelWidths, type Norm, pool, spatialSize } from "./blocks.ts";

export type SkipNoise = "paper" | "code" | "none";
export type NoiseScale = "absolute" | "channel-sd";

export interface TeacherConfig {
  nf: number;
  levels: number;
  skipNoise: SkipNoise;
  /** Standard deviation of the paper's Gaussian skip noise (the paper does not state it). */
  noiseSigma: number;
  /**
   * What `noiseSigma` is relative to: `absolute` (the paper: with instance norm every channel has
   * unit spread) or `channel-sd`, each channel's standard deviation over space in the sample (not
   * differentiated), so the noise keeps its relative size on features without normalisation.
   */
  noiseScale: NoiseScale;
  /** Weight of the image reconstruction loss, lambda_img. */
  lambdaImg: number;
  /** Normalisation in every ConvBlock (the authors' code: `instance`). */
  norm: Norm;
  /** Spatial dimensionality, 3 (volumes; the default when absent) or 2 (slices). */
  dims?: Dims;
}

export const DEFAULT_TEACHER: TeacherConfig = {
  nf: 16,
  levels: 5,
  skipNoise: "paper",
  noiseSigma: 0.1,
  noiseScale: "absolute",
  lambdaImg: 100,
  norm: "instance",
};

export class TeacherEncoder extends Module {
  readonly widths: number[];
  readonly dims: Dims;
  private readonly blocks: ConvBlock[];
  constructor(init: Init, cfg: TeacherConfig) {
    super();
    this.widths = levelWidths(cfg.nf, cfg.levels);
    this.dims = cfg.dims ?? 3;
    this.blocks = this.widths.map((c, i) =>
      this.child(
        `level${i + 1}`,
        new ConvBlock(init, i === 0 ? 1 : this.widths[i - 1], c, { norm: cfg.norm, dims: this.dims }),
      )
    );
  }
  /** Features F^T_1..L of an image [1, D, H, W, 1]. */
  apply(x: tf.Tensor5D): tf.Tensor5D[] {
    const out: tf.Tensor5D[] = [];
    this.blocks.forEach((b, i) => out.push(b.apply(i === 0 ? x : pool(out[i - 1], this.dims))));
    return out;
  }
}

export class TeacherDecoder extends Module {
  private readonly bottleneck: ConvBlock;
  private readonly reduce: Conv[];
  private readonly blocks: ConvBlock[];
  private readonly head: Conv;
  constructor(init: Init, readonly widths: number[], norm: Norm = "instance", dims: Dims = 3) {
    super();
    const L = widths.length;
    this.bottleneck = this.child(
      "bottleneck",
      new ConvBlock(init, widths[L - 1], widths[L - 1], { norm, dims }),
    );
    this.reduce = [];
    this.blocks = [];
    for (let k = L - 2; k >= 0; k--) {
      this.reduce[k] = this.child(`up${k + 1}`, new Conv(init, 3, widths[k + 1], widths[k], 1));
      this.blocks[k] = this.child(
        `level${k + 1}`,
        new ConvBlock(init, 2 * widths[k], widths[k], { norm, dims }),
      );
    }
    this.head = this.child("head", new Conv(init, 3, widths[0], 1, 1));
  }
  /** The image reconstructed from L feature levels (skips already noised if training). */
  apply(features: tf.Tensor5D[]): tf.Tensor5D {
    const L = features.length;
    let y = this.bottleneck.apply(features[L - 1]);
    for (let k = L - 2; k >= 0; k--) {
      const up = this.reduce[k].apply(resizeLinear(y, spatialSize(features[k])));
      y = this.blocks[k].apply(cat([up, features[k]]));
    }
    return this.head.apply(y);
  }
}

/** Feature-level reconstruction head for level k (predicts F_k from F_{k+1}). */
class FeatureHead extends Module {
  private readonly reduce: Conv;
  private readonly block: ConvBlock;
  constructor(init: Init, cDeep: number, c: number, norm: Norm, dims: Dims) {
    super();
    this.reduce = this.child("reduce", new Conv(init, 3, cDeep, c, 1));
    this.block = this.child("block", new ConvBlock(init, c, c, { norm, dims }));
  }
  apply(deeper: tf.Tensor5D, size: number[]): tf.Tensor5D {
    return this.block.apply(this.reduce.apply(resizeLinear(deeper, size)));
  }
}

export class Teacher extends Module {
  readonly encoder: TeacherEncoder;
  readonly decoder: TeacherDecoder;
  private readonly heads: FeatureHead[];
  constructor(readonly cfg: TeacherConfig, seed: number) {
    super();
    const init = new Init(seed);
    this.encoder = this.child("encoder", new TeacherEncoder(init, cfg));
    this.decoder = this.child(
      "decoder",
      new TeacherDecoder(init, this.encoder.widths, cfg.norm, this.encoder.dims),
    );
    const w = this.encoder.widths;
    this.heads = w.slice(0, -1).map((c, k) =>
      this.child(`featureHead${k + 1}`, new FeatureHead(init, w[k + 1], c, cfg.norm, this.encoder.dims))
    );
  }

  /** Skip noise of Eq. 1 for one training step (seeded by `noiseSeed`). */
  addSkipNoise(features: tf.Tensor5D[], noiseSeed: number): tf.Tensor5D[] {
    const { skipNoise, noiseSigma } = this.cfg;
    if (skipNoise === "none") return features;
    // runs written before `noiseScale` existed used the paper's absolute noise
    const relative = (this.cfg.noiseScale ?? "absolute") === "channel-sd";
    // tfjs treats a seed of 0 as "unseeded" (Math.random): keep every seed positive
    const seed = (i: number) => (noiseSeed >>> 0) * 8 + i + 1;
    return features.map((f, i) => {
      const noise = skipNoise === "paper"
        ? tf.randomNormal(f.shape, 0, noiseSigma, "float32", seed(i))
        : tf.randomUniform(f.shape, 0, 1, "float32", seed(i));
      if (!relative) return tf.add(f, noise) as tf.Tensor5D;
      // the spread as constants, read back, so no gradient flows through it
      const v = tf.tidy(() => tf.sqrt(tf.moments(f, [1, 2, 3], true).variance));
      const sd = tf.tensor(v.dataSync(), v.shape);
      v.dispose();
      return tf.add(f, tf.mul(noise, sd)) as tf.Tensor5D;
    });
  }

  /** Reconstruction without noise (evaluation). */
  reconstruct(y7: tf.Tensor5D): tf.Tensor5D {
    return this.decoder.apply(this.encoder.apply(y7));
  }

  /** Phase-1 loss: lambda_img * L1(Y, T_G(T_E(Y) + noise)) + sum_k MSE(F_k, head_k(F_{k+1})). */
  loss(y7: tf.Tensor5D, noiseSeed: number): { total: tf.Scalar; image: tf.Scalar; feature: tf.Scalar } {
    const f = this.encoder.apply(y7);
    const recon = this.decoder.apply(this.addSkipNoise(f, noiseSeed));
    const image = l1(y7, recon);
    let feature = tf.scalar(0);
    this.heads.forEach((
      h,
      k,
    ) => (feature = tf.add(feature, mse(f[k], h.apply(f[k + 1], spatialSize(f[k]))))));
    return { total: tf.add(tf.mul(image, this.cfg.lambdaImg), feature) as tf.Scalar, image, feature };
  }
}
