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
