/**
 * Preprocessing of the data contract, shared by every source of images (the phantom generator,
 * a user's dataset, `deno task segment`), as the paper describes it (section 4.1): resampling to
 * a common grid, intensities to [0, 1], histogram matching of 3T to 7T.
 */
import { type Affine, matmul4, type Vec3 } from "../volume/affine.ts";
import { gridForSpacing } from "../volume/geometry.ts";
import { makeVolume, type Volume } from "../volume/volume.ts";

/** The common grid: a reference volume's field of view at `spacing`, padded (centred) to multiples of 16. */
export function commonGrid(reference: Volume, spacing: number): { shape: Vec3; affine: Affine } {
  const g = gridForSpacing(reference, [spacing, spacing, spacing]);
  const shape = g.shape.map((s) => Math.ceil(s / 16) * 16) as Vec3;
  const shift: Affine = [
    [1, 0, 0, -Math.floor((shape[0] - g.shape[0]) / 2)],
    [0, 1, 0, -Math.floor((shape[1] - g.shape[1]) / 2)],
    [0, 0, 1, -Math.floor((shape[2] - g.shape[2]) / 2)],
    [0, 0, 0, 1],
  ];
  return { shape, affine: matmul4(g.affine, shift) };
}

/** Intensities to [0, 1]: divided by the 99.5th percentile of the non-zero voxels, clipped. */
export function normalizeIntensity(v: Volume<Float32Array>): Volume<Float32Array> {
  const nz = Array.from(v.data).filter((x) => x > 0).sort((a, b) => a - b);
  const top = nz.length ? nz[Math.min(nz.length - 1, Math.floor(0.995 * nz.length))] : 1;
  return makeVolume(
    Float32Array.from(v.data, (x) => Math.min(1, Math.max(0, x / (top || 1)))),
    v.shape,
    v.affine,
  );
}

/**
 * What `deno task segment` measures of an input's intensities, on its own grid. The background
 * is the value most of the field-of-view border holds (0 in a skull-stripped scan, the minimum in
 * a z-scored one), `null` when no value covers half the border (a noisy, not skull-stripped scan).
 */
export interface IntensityProfile {
  /** The constant background value, or null when there is none. */
  background: number | null;
  /** Voxels other than the background (0 where there is none) / all voxels. */
  foregroundFraction: number;
  /** 0.5th and 99.5th percentiles of the foreground (the voxels other than the background). */
  low: number;
  high: number;
  /** Foreground voxels below 0 / foreground voxels. */
  negativeFraction: number;
  /** Border voxels brighter than background + 20 % of (high - background) / border voxels. */
  brightBorderFraction: number;
  /**
   * Foreground voxels within 5 % of (high - background) of the background / foreground voxels:
   * the noisy air of a scan that is not skull-stripped (a zero-padded one's too), nearly none
   * in a skull-stripped brain.
   */
  darkFraction: number;
  /** Voxel size (mm). */
  spacing: Vec3;
}

/** Percentile (0..1) of a sorted array, as `normalizeIntensity` takes it. */
function percentile(sorted: Float32Array, q: number): number {
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] : 0;
}

/** The voxels on the six faces of the field of view. */
function borderValues(v: Volume): Float32Array {
  const [nx, ny, nz] = v.shape;
  const out: number[] = [];
  for (let k = 0; k < nz; k++) {
    for (let j = 0; j < ny; j++) {
      const edge = k === 0 || k === nz - 1 || j === 0 || j === ny - 1;
      for (let i = 0; i < nx; i += edge ? 1 : Math.max(1, nx - 1)) out.push(v.data[i + nx * (j + ny * k)]);
    }
  }
  return Float32Array.from(out);
}

/** Measures a volume's background, foreground and border (see `IntensityProfile`). */
export function intensityProfile(v: Volume): IntensityProfile {
  const border = borderValues(v);
  const counts = new Map<number, number>();
  for (const x of border) counts.set(x, (counts.get(x) ?? 0) + 1);
  let mode = 0, best = 0;
  for (const [x, n] of counts) if (n > best) [mode, best] = [x, n];
  const background = best >= border.length / 2 ? mode : null;
  const isForeground = foregroundTest(v, background ?? 0);
  const fg: number[] = [];
  let negative = 0;
  for (const x of v.data) {
    if (isForeground(x)) {
      fg.push(x);
      if (x < 0) negative++;
    }
  }
  const sorted = Float32Array.from(fg).sort();
  const low = percentile(sorted, 0.005), high = percentile(sorted, 0.995);
  const base = background ?? 0;
  const bright = base + 0.2 * (high - base);
  const brightBorder = border.reduce((n, x) => n + (x > bright ? 1 : 0), 0);
  const dark = base + 0.05 * (high - base);
  const darkCount = fg.reduce((n, x) => n + (x < dark ? 1 : 0), 0);
  return {
    background,
    foregroundFraction: fg.length / v.data.length,
    low,
    high,
    negativeFraction: fg.length ? negative / fg.length : 0,
    brightBorderFraction: brightBorder / border.length,
    darkFraction: fg.length ? darkCount / fg.length : 0,
    spacing: [...v.spacing] as Vec3,
  };
}

/** Whether a voxel is foreground: any value but the background (to 1e-6 of the largest magnitude). */
function foregroundTest(v: Volume, background: number): (x: number) => boolean {
  let scale = 0;
  for (const x of v.data) if (Math.abs(x) > scale) scale = Math.abs(x);
  const tol = 1e-6 * (scale || 1);
  return (x) => Math.abs(x - background) > tol;
}

/**
 * The foreground's 0.5th percentile as a fraction of its 99.5th after `normalizeIntensity` in
 * the default phantom cohort's 1.5T scans (0.116 to 0.131 measured); used when the run's own
 * cohort is not at hand.
 */
export const DEFAULT_FOREGROUND_FLOOR = 0.12;

/**
 * Inference-side intensities: an input brought to what `normalizeIntensity` expects (a zero
 * background, brain above 0), and the brain mask used.
 *
 * - `as-training`: a zero (or no constant) background and at most 1 % of the foreground below 0
 *   (a skull-stripped scan in any positive unit, 16-bit integers, floats with outliers): the
 *   image is returned unchanged, so segment's resampling and `normalizeIntensity` treat it
 *   exactly as training treated the cohort; the mask is the voxels above 0.
 * - `rescaled`: a non-zero background or a foreground reaching below 0 (z-scored, shifted): the
 *   foreground's [0.5th, 99.5th] percentiles are mapped linearly to [`floor`, 1] (the cohort's
 *   ratio of the two), values below clipped at 0, the background set to 0. For a positive scan
 *   shifted and scaled by any a > 0, b this gives exactly `normalizeIntensity` of the scan when
 *   `floor` is its own ratio; the mask is the voxels that are not background.
 */
export function intensitiesForInference(
  v: Volume<Float32Array>,
  floor = DEFAULT_FOREGROUND_FLOOR,
  profile: IntensityProfile = intensityProfile(v),
): { volume: Volume<Float32Array>; mask: Volume<Uint8Array>; mode: "as-training" | "rescaled" } {
  const { background, low, high } = profile;
  if ((background === null || background === 0) && profile.negativeFraction <= 0.01) {
    const mask = Uint8Array.from(v.data, (x) => (x > 0 ? 1 : 0));
    return { volume: v, mask: makeVolume(mask, v.shape, v.affine), mode: "as-training" };
  }
  const isForeground = foregroundTest(v, background ?? 0);
  const span = high - low || 1;
  const mask = new Uint8Array(v.data.length);
  const out = new Float32Array(v.data.length);
  v.data.forEach((x, n) => {
    if (!isForeground(x)) return;
    mask[n] = 1;
    out[n] = Math.max(0, floor + (1 - floor) * (x - low) / span);
  });
  return {
    volume: makeVolume(out, v.shape, v.affine),
    mask: makeVolume(mask, v.shape, v.affine),
    mode: "rescaled",
  };
}

/** The foreground's 0.5th percentile / its 99.5th (voxels above 0), as `CohortIntensity.floor`. */
export function foregroundFloor(v: Volume): number {
  const fg = Float32Array.from(Array.from(v.data).filter((x) => x > 0)).sort();
  const high = percentile(fg, 0.995);
  return high > 0 ? percentile(fg, 0.005) / high : 0;
}

/** What a run's cohort looked like to its models (means over its training scans). */
export interface CohortIntensity {
  foregroundFraction: number;
  /** Foreground 0.5th / 99.5th percentile. */
  floor: number;
  spacing: number;
}

/**
 * Warning lines for an input outside what the models saw: a foreground fraction, a foreground
 * range (0.5th / 99.5th percentile) or a voxel size 3x (size: 2x) away from the cohort's; a
 * field-of-view border that is bright over more than 2 % of it, or has no constant background
 * (not skull-stripped); negative voxels; a rescaled (z-scored or shifted) input. `modelFloor`:
 * the foreground range measured where the models see it (on the model grid, normalised), which a
 * resampled scan's soft brain edge does not shift as it does on a finer input grid.
 */
export function intensityWarnings(
  p: IntensityProfile,
  mode: "as-training" | "rescaled",
  cohort: CohortIntensity | null,
  modelFloor?: number,
): string[] {
  const out: string[] = [];
  const pct = (x: number) => `${(100 * x).toFixed(1)} %`;
  if (p.background === null) {
    out.push(
      "no constant background (no one value covers half the field-of-view border): the scan looks not " +
        "skull-stripped or has a noisy background; the models saw skull-stripped brains on a zero background",
    );
  } else if (p.brightBorderFraction > 0.02) {
    out.push(
      `${pct(p.brightBorderFraction)} of the field-of-view border is bright (above a fifth of the brain's ` +
        `range): the scan looks not skull-stripped (scalp, neck); the models saw skull-stripped brains only`,
    );
  }
  if (mode === "rescaled") {
    out.push(
      `intensities are not a positive scan on a zero background (background ${p.background ?? "none"}, ` +
        `${
          pct(p.negativeFraction)
        } of the brain below 0: z-scored or shifted?): the brain's 0.5th to 99.5th ` +
        `percentiles (${p.low.toPrecision(4)} to ${p.high.toPrecision(4)}) were mapped linearly onto the ` +
        `cohort's range`,
    );
  } else if (p.negativeFraction > 0) {
    out.push(`${pct(p.negativeFraction)} of the non-zero voxels are below 0 and read as background`);
  }
  if (!cohort) return out;
  const far = (a: number, b: number, f: number) => a > b * f || a < b / f;
  if (far(p.foregroundFraction, cohort.foregroundFraction, 3)) {
    out.push(
      `the brain (non-background voxels) fills ${
        pct(p.foregroundFraction)
      } of the field of view, the run's ` +
        `cohort ${pct(cohort.foregroundFraction)}`,
    );
  }
  const floor = modelFloor ??
    (mode === "rescaled" ? cohort.floor : p.high > 0 ? Math.max(0, p.low) / p.high : 0);
  if (far(Math.max(floor, 1e-6), cohort.floor, 3)) {
    out.push(
      `the brain's 0.5th percentile is ${pct(floor)} of its 99.5th, the run's cohort's ${
        pct(cohort.floor)
      } (a dark tail or an unusual contrast)`,
    );
  }
  if (p.spacing.some((s) => far(s, cohort.spacing, 2))) {
    out.push(
      `voxels of ${
        p.spacing.map((s) => s.toPrecision(3)).join(" x ")
      } mm; the run's cohort has ${cohort.spacing} ` +
        `mm voxels (the input is resampled to the model's grid, and back)`,
    );
  }
  return out;
}

/**
 * Histogram matching of the non-zero voxels of `source` to those of `reference` by piecewise
 * linear mapping of `quantiles` quantiles (zeros stay zero).
 */
export function histogramMatch(
  source: Volume<Float32Array>,
  reference: Volume<Float32Array>,
  quantiles = 256,
): Volume<Float32Array> {
  const q = (v: Float32Array) => {
    const s = Array.from(v).filter((x) => x > 0).sort((a, b) => a - b);
    return Float64Array.from(
      { length: quantiles },
      (_, t) => s[Math.min(s.length - 1, Math.round((t / (quantiles - 1)) * (s.length - 1)))] ?? 0,
    );
  };
  const qs = q(source.data), qr = q(reference.data);
  const out = Float32Array.from(source.data, (x) => {
    if (x <= 0) return 0;
    let lo = 0, hi = quantiles - 1;
    while (hi - lo > 1) {
      const mid = (lo + hi) >> 1;
      if (qs[mid] <= x) lo = mid;
      else hi = mid;
    }
    const span = qs[hi] - qs[lo];
    const f = span > 0 ? Math.min(1, Math.max(0, (x - qs[lo]) / span)) : 0;
    return qr[lo] + f * (qr[hi] - qr[lo]);
  });
  return makeVolume(out, source.shape, source.affine);
}
