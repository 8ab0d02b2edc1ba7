/**
 * The registry of segmentation networks. Each is built from a small serialisable `NetworkSpec`,
 * which every segmentation checkpoint carries in its metadata, so a model can be rebuilt from its
 * checkpoint alone (`deno task segment`, the figures, the notebooks).
 *
 * A new network needs one file implementing `SegmentationNetwork` (encode to L levels of known
 * widths; decode from possibly AFM-guided features; optionally `decodeWithAux` for deep
 * supervision) and one entry in `NETWORKS` below; its name then is a `NetworkName`, a choice of
 * `fusion.network` and a row of Table 2.
 */
import type * as tf from "@tensorflow/tfjs-core";
import { type SegmentationNetwork, UNet3D } from "./fusion.ts";
import { type VoxResDeconv, VoxResNet } from "./voxresnet.ts";
import { USegNet, type USegNetAfmLevels } from "./usegnet.ts";
import { RPNet } from "./rpnet.ts";
import { QuickNAT } from "./quicknat.ts";
import { REFERENCE_INPUT, UNesT, UNEST_DEPTHS } from "./unest.ts";
import { FastSurferCNN, THICK_SLICES } from "./fastsurfer.ts";

export interface NetworkSpec {
  network: NetworkName;
  classes: number;
  nf: number;
  levels: number;
  /** VoxResNet's per-level decoder (`compact` or the authors' `released` form). */
  voxresnetDeconv?: VoxResDeconv;
  /** U-SegNet's AFM levels: `ends` (1 and 5, the features its decoder reads) or `all`. */
  usegnetAfmLevels?: USegNetAfmLevels;
  /** UNesT's transformer layers per stage (default: the small model's). */
  unestDepths?: number[];
  /**
   * The input edge of a network with a fixed input (UNesT): trained on crops of `window`^3 voxels,
   * larger volumes predicted by sliding windows of it. Absent: the network takes whole volumes.
   */
  window?: number;
}

interface NetworkEntry {
  /** Display name used in tables, figures and phase labels. */
  label: string;
  /** 3: volumes and 3D patches; 2: slices, trained per view (the whole-brain task). */
  dims: 2 | 3;
  /** A 2D network reading each slice with this many neighbours on each side (its input channels). */
  thick?: number;
  build(spec: Omit<NetworkSpec, "network">, seed: number): SegmentationNetwork;
}

export const NETWORKS = {
  unet3d: { label: "3D U-Net", dims: 3, build: (s, seed) => new UNet3D(s.classes, s.nf, s.levels, seed) },
  unet2d: { label: "2D U-Net", dims: 2, build: (s, seed) => new UNet3D(s.classes, s.nf, s.levels, seed, 2) },
  voxresnet: {
    label: "VoxResNet",
    dims: 3,
    build: (s, seed) => new VoxResNet(s.classes, s.nf, s.levels, seed, s.voxresnetDeconv ?? "compact"),
  },
  usegnet: {
    label: "U-SegNet",
    dims: 3,
    build: (s, seed) => new USegNet(s.classes, s.nf, s.levels, seed, s.usegnetAfmLevels ?? "ends"),
  },
  rpnet: { label: "RP-Net", dims: 3, build: (s, seed) => new RPNet(s.classes, s.nf, s.levels, seed) },
  quicknat: { label: "QuickNAT", dims: 2, build: (s, seed) => new QuickNAT(s.classes, s.nf, s.levels, seed) },
  unest: {
    label: "UNesT",
    dims: 3,
    build: (s, seed) =>
      new UNesT(
        s.classes,
        s.nf,
        s.levels,
        seed,
        s.unestDepths ?? UNEST_DEPTHS.small,
        s.window ?? REFERENCE_INPUT,
      ),
  },
  fastsurfer: {
    label: "FastSurfer-CNN",
    dims: 2,
    thick: THICK_SLICES,
    build: (s, seed) => new FastSurferCNN(s.classes, s.nf, s.levels, seed),
  },
} satisfies Record<string, NetworkEntry>;

/** The registered networks' names. */
export type NetworkName = keyof typeof NETWORKS;

/** Builds a registered network; an unknown name is named with the registered ones. */
export function buildNetwork(spec: NetworkSpec, seed: number): SegmentationNetwork {
  const entry = NETWORKS[spec.network];
  if (!entry) {
    throw new RangeError(
      `unknown segmentation network "${spec.network}" (registered: ${Object.keys(NETWORKS).join(", ")})`,
    );
  }
  return entry.build(spec, seed);
}

/** The neighbouring slices on each side a registered 2D network reads with each slice (0: none). */
export function thickSlicesOf(network: NetworkName): number {
  return (NETWORKS[network] as NetworkEntry | undefined)?.thick ?? 0;
}

export function networkLabel(spec: NetworkSpec): string {
  return NETWORKS[spec.network]?.label ?? spec.network;
}

/** Logits and deep-supervision outputs (none for networks without them) from encoder features. */
export function decodeAll(
  net: SegmentationNetwork,
  features: tf.Tensor5D[],
): { logits: tf.Tensor5D; aux: tf.Tensor5D[] } {
  return net.decodeWithAux ? net.decodeWithAux(features) : { logits: net.decode(features), aux: [] };
}
