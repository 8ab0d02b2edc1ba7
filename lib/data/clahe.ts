/**
 * Contrast-limited adaptive histogram equalisation (CLAHE) of a 3D volume, as the paper applies
 * it to every IBSR sample: the released code calls scikit-image's
 * `equalize_adapthist(volume, kernel_size = shape // 5, clip_limit = 0.2)` (nbins 256, output in
 * [0, 1]).
 *
 * The algorithm (Zuiderveld, "Contrast limited adaptive histogram equalization", Graphics Gems
 * IV, 1994; in N dimensions as scikit-image does it):
 *
 * 1. intensities are rescaled to [0, 1] by the volume's minimum and maximum and quantised into
 *    `nbins` bins;
 * 2. the volume is tiled into contextual regions of `kernelSize` voxels (the last region along an
 *    axis holds what is left); each region gets its histogram;
 * 3. each bin is clipped at `clipLimit` times the region's voxel count (at least 1 voxel), and the
 *    clipped excess is spread evenly over all bins;
 * 4. a region's mapping is its clipped histogram's cumulative sum over its voxel count (bin b maps
 *    to the fraction of the region at or below b);
 * 5. every voxel's value is the multilinear interpolation of the mappings of the 2^3 regions
 *    whose centres surround it (beyond the outermost centres: the nearest region's mapping);
 * 6. the result is rescaled to [0, 1] by its minimum and maximum (scikit-image's last step).
 *
 * Departures from scikit-image, both at the edges of the method: border regions are partial
 * instead of reflect-padded to whole tiles, and the excess is spread as real numbers in one pass
 * (scikit-image spreads integer counts and loops over the remainder).
 */
import type { Vec3 } from "../volume/affine.ts";

/** CLAHE settings. */
export interface ClaheOptions {
  /**
   * Contextual region size in voxels along [i, j, k]; default `shape // tiles` per axis (at
   * least 1), the released code's `kernel_size = shape // 5`.
   */
  kernelSize?: Vec3;
  /** Regions per axis when `kernelSize` is absent (default 5, the released code's). */
  tiles?: number;
  /**
   * Largest share of a region's voxels one bin may hold (scikit-image's `clip_limit`); 0.2 in
   * the released code; 1 or more: no clipping (plain adaptive histogram equalisation).
   */
  clipLimit?: number;
  /** Grey-level bins (default 256, scikit-image's). */
  nbins?: number;
  /** Rescale the result to [0, 1] by its minimum and maximum (default true, as scikit-image). */
  rescale?: boolean;
}

/** The paper's settings (UHF:data.py `clahe`): 5 regions per axis, clip limit 0.2, 256 bins. */
export const PAPER_CLAHE = { tiles: 5, clipLimit: 0.2, nbins: 256 } as const;

/**
 * CLAHE of a volume stored with i fastest (`shape` = [ni, nj, nk], the NIfTI voxel order of
 * `Volume`). Returns a new array with values in [0, 1].
 */
export function clahe(data: Float32Array, shape: Vec3, options: ClaheOptions = {}): Float32Array {
  const { tiles = PAPER_CLAHE.tiles, clipLimit = PAPER_CLAHE.clipLimit, nbins = PAPER_CLAHE.nbins } = options;
  const n = shape[0] * shape[1] * shape[2];
  if (data.length !== n) throw new RangeError(`clahe: ${data.length} voxels for a ${shape.join("x")} grid`);
  if (!(tiles >= 1) || !(nbins >= 2) || !(clipLimit >= 0)) {
    throw new RangeError(`clahe: tiles ${tiles}, nbins ${nbins}, clipLimit ${clipLimit} out of range`);
  }
  const kernel = (options.kernelSize ?? shape.map((s) => Math.floor(s / tiles)) as Vec3)
    .map((k, d) => Math.min(shape[d], Math.max(1, Math.floor(k)))) as Vec3;
  let lo = Infinity, hi = -Infinity;
  for (let p = 0; p < n; p++) {
    if (data[p] < lo) lo = data[p];
    if (data[p] > hi) hi = data[p];
  }
  if (!(hi > lo)) return new Float32Array(n); // a constant volume has no contrast to equalise
  const bins = new Uint16Array(n);
  for (let p = 0; p < n; p++) bins[p] = Math.min(nbins - 1, Math.floor(((data[p] - lo) / (hi - lo)) * nbins));

  // regions: count per axis, start and size of each along each axis
  const regions = shape.map((s, d) => Math.ceil(s / kernel[d])) as Vec3;
  const regionOf = (d: number, x: number) => Math.floor(x / kernel[d]);
  const nRegions = regions[0] * regions[1] * regions[2];
  const hist = new Float64Array(nRegions * nbins);
  const count = new Float64Array(nRegions);
  let p = 0;
  for (let k = 0; k < shape[2]; k++) {
    const rk = regionOf(2, k);
    for (let j = 0; j < shape[1]; j++) {
      const rjk = regions[0] * (regionOf(1, j) + regions[1] * rk);
      for (let i = 0; i < shape[0]; i++, p++) {
        const r = regionOf(0, i) + rjk;
        hist[r * nbins + bins[p]]++;
        count[r]++;
      }
    }
  }
  // clip, spread the excess, cumulative mapping
  const map = new Float32Array(nRegions * nbins);
  for (let r = 0; r < nRegions; r++) {
    const h = hist.subarray(r * nbins, (r + 1) * nbins);
    if (clipLimit < 1) {
      const limit = Math.max(1, clipLimit * count[r]);
      let excess = 0;
      for (let b = 0; b < nbins; b++) {
        if (h[b] > limit) {
          excess += h[b] - limit;
          h[b] = limit;
        }
      }
      for (let b = 0; b < nbins; b++) h[b] += excess / nbins;
    }
    let sum = 0;
    for (let b = 0; b < nbins; b++) {
      sum += h[b];
      map[r * nbins + b] = sum / count[r];
    }
  }
  // per axis and position: the two surrounding regions and the weight of the second
  const interp = shape.map((s, d) => {
    const centre = (r: number) => r * kernel[d] + (Math.min(s, (r + 1) * kernel[d]) - r * kernel[d] - 1) / 2;
    const r0 = new Int32Array(s), r1 = new Int32Array(s), w = new Float32Array(s);
    for (let x = 0; x < s; x++) {
      let a = regionOf(d, x);
      if (x < centre(a)) a--;
      if (a < 0) {
        r0[x] = r1[x] = 0;
      } else if (a >= regions[d] - 1) {
        r0[x] = r1[x] = regions[d] - 1;
      } else {
        r0[x] = a;
        r1[x] = a + 1;
        w[x] = (x - centre(a)) / (centre(a + 1) - centre(a));
      }
    }
    return { r0, r1, w };
  });
  const out = new Float32Array(n);
  const [ix, jx, kx] = interp;
  p = 0;
  for (let k = 0; k < shape[2]; k++) {
    for (let j = 0; j < shape[1]; j++) {
      for (let i = 0; i < shape[0]; i++, p++) {
        let v = 0;
        for (let c = 0; c < 8; c++) {
          const wi = c & 1 ? ix.w[i] : 1 - ix.w[i];
          const wj = c & 2 ? jx.w[j] : 1 - jx.w[j];
          const wk = c & 4 ? kx.w[k] : 1 - kx.w[k];
          const weight = wi * wj * wk;
          if (weight === 0) continue;
          const r = (c & 1 ? ix.r1[i] : ix.r0[i]) +
            regions[0] * ((c & 2 ? jx.r1[j] : jx.r0[j]) + regions[1] * (c & 4 ? kx.r1[k] : kx.r0[k]));
          v += weight * map[r * nbins + bins[p]];
        }
        out[p] = v;
      }
    }
  }
  if (options.rescale ?? true) {
    let a = Infinity, b = -Infinity;
    for (let q = 0; q < n; q++) {
      if (out[q] < a) a = out[q];
      if (out[q] > b) b = out[q];
    }
    if (b > a) { for (let q = 0; q < n; q++) out[q] = (out[q] - a) / (b - a); }
  }
  return out;
}
