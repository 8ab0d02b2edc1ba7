/**
 * Statistics for paired comparisons of per-subject scores (Dice, PSNR): the paired t-test
 * (`pairedTTest` in `metrics.ts`), the Wilcoxon signed-rank test and a bootstrap confidence
 * interval of the mean difference, gathered by `comparePaired` so every table reports the three
 * side by side.
 *
 * Differences are always `b - a` (the second method minus the first).
 */
import { pairedTTest } from "./metrics.ts";
import { mulberry32 } from "./random.ts";

export interface WilcoxonResult {
  /** Non-zero differences ranked (zeros are dropped, Wilcoxon's convention). */
  n: number;
  /** Sum of the ranks of the positive differences. */
  wPlus: number;
  /** Sum of the ranks of the negative differences. */
  wMinus: number;
  /** Two-sided p-value. */
  p: number;
  /** `exact` (no ties, n <= 25: the permutation distribution) or `normal` (tie-corrected). */
  method: "exact" | "normal";
}

/**
 * Wilcoxon signed-rank test of the paired differences `b - a` (two-sided). Zero differences are
 * dropped; tied absolute differences get their average rank. Without ties and with at most 25
 * pairs the p-value is exact (the distribution of W+ over all 2^n sign assignments); otherwise
 * it is the normal approximation with the tie correction of the variance and no continuity
 * correction (SciPy's `wilcoxon(..., method="approx", correction=False)`).
 */
export function wilcoxonSignedRank(a: number[], b: number[]): WilcoxonResult {
  if (a.length !== b.length) throw new RangeError(`wilcoxon: ${a.length} vs ${b.length} paired values`);
  const d = a.map((v, i) => b[i] - v).filter((v) => Number.isFinite(v) && v !== 0);
  const n = d.length;
  if (n === 0) return { n, wPlus: 0, wMinus: 0, p: NaN, method: "exact" };
  const order = d.map((v, i) => [Math.abs(v), i] as const).sort((x, y) => x[0] - y[0]);
  const ranks = new Array<number>(n);
  const tieSizes: number[] = [];
  for (let i = 0; i < n;) {
    let j = i;
    while (j + 1 < n && order[j + 1][0] === order[i][0]) j++;
    for (let k = i; k <= j; k++) ranks[order[k][1]] = (i + j) / 2 + 1;
    tieSizes.push(j - i + 1);
    i = j + 1;
  }
  let wPlus = 0;
  for (let i = 0; i < n; i++) if (d[i] > 0) wPlus += ranks[i];
  const total = (n * (n + 1)) / 2;
  const wMinus = total - wPlus;
  const ties = tieSizes.some((t) => t > 1);
  if (!ties && n <= 25) {
    // counts[s] = number of subsets of {1..n} whose rank sum is s
    const counts = new Float64Array(total + 1);
    counts[0] = 1;
    for (let r = 1; r <= n; r++) for (let s = total; s >= r; s--) counts[s] += counts[s - r];
    const w = Math.min(wPlus, wMinus);
    let tail = 0;
    for (let s = 0; s <= w; s++) tail += counts[s];
    return { n, wPlus, wMinus, p: Math.min(1, (2 * tail) / 2 ** n), method: "exact" };
  }
  const mean = total / 2;
  const variance = (n * (n + 1) * (2 * n + 1)) / 24 - tieSizes.reduce((s, t) => s + (t ** 3 - t), 0) / 48;
  const z = (wPlus - mean) / Math.sqrt(variance);
  return { n, wPlus, wMinus, p: 2 * (1 - normalCdf(Math.abs(z))), method: "normal" };
}

/** Standard normal CDF (Abramowitz and Stegun 7.1.26 via erf; absolute error below 1.5e-7). */
export function normalCdf(z: number): number {
  const x = Math.abs(z) / Math.SQRT2;
  const t = 1 / (1 + 0.3275911 * x);
  const poly = t *
    (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
  const erf = 1 - poly * Math.exp(-x * x);
  return z >= 0 ? 0.5 * (1 + erf) : 0.5 * (1 - erf);
}

export interface BootstrapOptions {
  /** Resamples (default 10000). */
  resamples?: number;
  /** Coverage of the interval (default 0.95). */
  level?: number;
  seed?: number;
}

/**
 * Percentile bootstrap confidence interval of the mean paired difference `b - a`: the pairs are
 * resampled with replacement (seeded), and the interval is the (1 - level) / 2 and (1 + level) / 2
 * quantiles of the resampled means (linear interpolation between order statistics).
 */
export function bootstrapMeanDiff(
  a: number[],
  b: number[],
  { resamples = 10000, level = 0.95, seed = 0 }: BootstrapOptions = {},
): { mean: number; low: number; high: number } {
  if (a.length !== b.length) throw new RangeError(`bootstrap: ${a.length} vs ${b.length} paired values`);
  const d = a.map((v, i) => b[i] - v).filter((v) => Number.isFinite(v));
  const n = d.length;
  const mean = d.reduce((s, v) => s + v, 0) / n;
  if (n === 0) return { mean: NaN, low: NaN, high: NaN };
  const rand = mulberry32(seed);
  const means = new Float64Array(resamples);
  for (let r = 0; r < resamples; r++) {
    let s = 0;
    for (let i = 0; i < n; i++) s += d[Math.floor(rand() * n)];
    means[r] = s / n;
  }
  means.sort();
  return { mean, low: quantile(means, (1 - level) / 2), high: quantile(means, (1 + level) / 2) };
}

/** Quantile of sorted values with linear interpolation (NumPy's default). */
export function quantile(sorted: ArrayLike<number>, q: number): number {
  const pos = q * (sorted.length - 1);
  const lo = Math.floor(pos), hi = Math.ceil(pos);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

export interface PairedComparison {
  n: number;
  meanA: number;
  meanB: number;
  /** Mean of `b - a`. */
  meanDiff: number;
  sdA: number;
  sdB: number;
  /** Paired t-test p-value (two-sided). */
  pT: number;
  /** Wilcoxon signed-rank p-value (two-sided). */
  pWilcoxon: number;
  /** Bootstrap 95% interval of the mean difference. */
  ciLow: number;
  ciHigh: number;
}

/** Arithmetic mean. */
export const meanOf = (v: number[]): number => v.reduce((s, x) => s + x, 0) / v.length;
/** Sample standard deviation (n - 1; 0 for one value). */
export const sdOf = (v: number[]): number => {
  const m = meanOf(v);
  return v.length > 1 ? Math.sqrt(v.reduce((s, x) => s + (x - m) ** 2, 0) / (v.length - 1)) : 0;
};

/** Means, standard deviations (n - 1), both tests and the bootstrap interval of `b - a`. */
export function comparePaired(a: number[], b: number[], seed = 0): PairedComparison {
  const boot = bootstrapMeanDiff(a, b, { seed });
  return {
    n: a.length,
    meanA: meanOf(a),
    meanB: meanOf(b),
    meanDiff: boot.mean,
    sdA: sdOf(a),
    sdB: sdOf(b),
    pT: a.length > 1 ? pairedTTest(a, b).p : NaN,
    pWilcoxon: wilcoxonSignedRank(a, b).p,
    ciLow: boot.low,
    ciHigh: boot.high,
  };
}
