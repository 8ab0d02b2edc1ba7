/**
 * One-dimensional Gaussian mixture fitted by expectation-maximisation on a histogram, used to
 * choose tissue thresholds from the data rather than by eye.
 */

export interface Gaussian1D {
  weight: number;
  mean: number;
  sd: number;
}

/**
 * Fits `k` Gaussians to `values` (binned in `bins` equal bins between min and max) by EM.
 * Components are initialised at evenly spaced quantiles and returned sorted by mean.
 */
export function fitGaussianMixture(
  values: ArrayLike<number>,
  k: number,
  { bins = 256, iterations = 200 } = {},
): Gaussian1D[] {
  let lo = Infinity, hi = -Infinity;
  for (let i = 0; i < values.length; i++) {
    if (values[i] < lo) lo = values[i];
    if (values[i] > hi) hi = values[i];
  }
  if (!(hi > lo)) throw new RangeError("fitGaussianMixture: values are constant or empty");
  const width = (hi - lo) / bins;
  const count = new Float64Array(bins);
  for (let i = 0; i < values.length; i++) count[Math.min(bins - 1, Math.floor((values[i] - lo) / width))]++;
  const centre = Float64Array.from({ length: bins }, (_, b) => lo + (b + 0.5) * width);
  const total = values.length;

  // Initialise at quantiles 1/(2k), 3/(2k), ...
  const comps: Gaussian1D[] = [];
  let cum = 0, q = 0;
  for (let b = 0; b < bins && q < k; b++) {
    cum += count[b];
    while (q < k && cum >= ((2 * q + 1) / (2 * k)) * total) {
      comps.push({ weight: 1 / k, mean: centre[b], sd: (hi - lo) / (4 * k) });
      q++;
    }
  }
  const resp = new Float64Array(bins * k);
  for (let it = 0; it < iterations; it++) {
    for (let b = 0; b < bins; b++) {
      let s = 0;
      for (let c = 0; c < k; c++) {
        const { weight, mean, sd } = comps[c];
        const z = (centre[b] - mean) / sd;
        const p = (weight / sd) * Math.exp(-0.5 * z * z);
        resp[b * k + c] = p;
        s += p;
      }
      for (let c = 0; c < k; c++) resp[b * k + c] = s > 0 ? resp[b * k + c] / s : 1 / k;
    }
    for (let c = 0; c < k; c++) {
      let n = 0, m = 0, v = 0;
      for (let b = 0; b < bins; b++) {
        const w = count[b] * resp[b * k + c];
        n += w;
        m += w * centre[b];
      }
      m /= n || 1;
      for (let b = 0; b < bins; b++) v += count[b] * resp[b * k + c] * (centre[b] - m) ** 2;
      comps[c] = { weight: n / total, mean: m, sd: Math.max(Math.sqrt(v / (n || 1)), width / 2) };
    }
  }
  return comps.sort((a, b) => a.mean - b.mean);
}

/** The value between the means of `a` and `b` where their weighted densities are equal. */
export function equalPosteriorThreshold(a: Gaussian1D, b: Gaussian1D): number {
  const dens = (g: Gaussian1D, x: number) => (g.weight / g.sd) * Math.exp(-0.5 * ((x - g.mean) / g.sd) ** 2);
  let lo = Math.min(a.mean, b.mean), hi = Math.max(a.mean, b.mean);
  const [left, right] = a.mean <= b.mean ? [a, b] : [b, a];
  for (let i = 0; i < 100; i++) {
    const mid = (lo + hi) / 2;
    if (dens(left, mid) > dens(right, mid)) lo = mid;
    else hi = mid;
  }
  return (lo + hi) / 2;
}

/**
 * Otsu's threshold (Otsu, IEEE Trans Syst Man Cybern 9:62-66, 1979): of integer-rounded `values`
 * clamped to [0, `levels` - 1], the level t that maximises the between-class variance
 * w0 w1 (m0 - m1)^2 of {v <= t} and {v > t}. Parameter-free, it does not assume either class is
 * Gaussian (the mixture fit does, and a narrow WM peak in an averaged template pulls its
 * equal-posterior point deep into the WM tail).
 */
export function otsuThreshold(values: ArrayLike<number>, levels = 256): number {
  const h = new Float64Array(levels);
  for (let i = 0; i < values.length; i++) h[Math.min(levels - 1, Math.max(0, Math.round(values[i])))]++;
  let n = 0, total = 0;
  for (let t = 0; t < levels; t++) {
    n += h[t];
    total += t * h[t];
  }
  let best = -1, threshold = 0, w0 = 0, s0 = 0;
  for (let t = 0; t < levels; t++) {
    w0 += h[t];
    s0 += t * h[t];
    const w1 = n - w0;
    if (w0 === 0 || w1 === 0) continue;
    const between = w0 * w1 * (s0 / w0 - (total - s0) / w1) ** 2;
    if (between > best) {
      best = between;
      threshold = t;
    }
  }
  return threshold;
}
