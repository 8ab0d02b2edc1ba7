/**
 * Evaluation metrics as the authors computed them (see tests/metrics_test.ts for hand-computed
 * values and the scikit-image reference).
 */

/** PSNR = 10 log10(R^2 / MSE), data range R = 1 by default. Infinity for identical images. */
export function psnr(a: ArrayLike<number>, b: ArrayLike<number>, dataRange = 1): number {
  if (a.length !== b.length) throw new RangeError(`psnr: sizes differ (${a.length} vs ${b.length})`);
  let se = 0;
  for (let i = 0; i < a.length; i++) se += (a[i] - b[i]) ** 2;
  const mse = se / a.length;
  return mse === 0 ? Infinity : 10 * Math.log10((dataRange * dataRange) / mse);
}

/** Index into a reflected ("half-sample symmetric", scipy's `reflect`) axis. */
function reflect(i: number, n: number): number {
  const period = 2 * n;
  let j = ((i % period) + period) % period;
  if (j >= n) j = period - 1 - j;
  return j;
}

/** Mean over a `win`-wide window along one axis of a [nz, ny, nx] array, reflect padding. */
function boxAxis(
  src: Float64Array,
  shape: [number, number, number],
  axis: 0 | 1 | 2,
  win: number,
): Float64Array {
  const [nz, ny, nx] = shape;
  const out = new Float64Array(src.length);
  const n = shape[axis];
  const stride = axis === 0 ? ny * nx : axis === 1 ? nx : 1;
  const half = Math.floor(win / 2);
  const lines = src.length / n;
  for (let line = 0; line < lines; line++) {
    // base index of this line
    let base: number;
    if (axis === 2) base = line * nx;
    else if (axis === 1) base = Math.floor(line / nx) * ny * nx + (line % nx);
    else base = line;
    void nz;
    for (let i = 0; i < n; i++) {
      let s = 0;
      for (let o = -half; o <= half; o++) s += src[base + reflect(i + o, n) * stride];
      out[base + i * stride] = s / win;
    }
  }
  return out;
}

function uniformFilter(x: Float64Array, shape: [number, number, number], win: number): Float64Array {
  return boxAxis(boxAxis(boxAxis(x, shape, 0, win), shape, 1, win), shape, 2, win);
}

/**
 * SSIM of two 3D volumes ([nz, ny, nx], row-major), as scikit-image's `structural_similarity`
 * with its defaults for 3D: uniform 7^3 window, K1 = 0.01, K2 = 0.03, sample covariance
 * (N / (N - 1)), reflect padding, and (win - 1) / 2 voxels cropped from every border before the
 * mean. `dataRange` is 1 for [0, 1] images as in the paper.
 */
export function ssim3d(
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  shape: [number, number, number],
  { dataRange = 1, win = 7, k1 = 0.01, k2 = 0.03 } = {},
): number {
  const n = shape[0] * shape[1] * shape[2];
  if (a.length !== n || b.length !== n) throw new RangeError(`ssim3d: arrays do not match shape [${shape}]`);
  if (shape.some((s) => s < win)) throw new RangeError(`ssim3d: every side must be >= the window (${win})`);
  const x = Float64Array.from(a), y = Float64Array.from(b);
  const xx = x.map((v) => v * v), yy = y.map((v) => v * v), xy = x.map((v, i) => v * y[i]);
  const [ux, uy, uxx, uyy, uxy] = [x, y, xx, yy, xy].map((t) => uniformFilter(t, shape, win));
  const np = win ** 3;
  const covNorm = np / (np - 1);
  const c1 = (k1 * dataRange) ** 2, c2 = (k2 * dataRange) ** 2;
  const pad = (win - 1) / 2;
  const [nz, ny, nx] = shape;
  let sum = 0, count = 0;
  for (let z = pad; z < nz - pad; z++) {
    for (let yy_ = pad; yy_ < ny - pad; yy_++) {
      for (let xx_ = pad; xx_ < nx - pad; xx_++) {
        const i = (z * ny + yy_) * nx + xx_;
        const vx = covNorm * (uxx[i] - ux[i] * ux[i]);
        const vy = covNorm * (uyy[i] - uy[i] * uy[i]);
        const vxy = covNorm * (uxy[i] - ux[i] * uy[i]);
        const s = ((2 * ux[i] * uy[i] + c1) * (2 * vxy + c2)) /
          ((ux[i] ** 2 + uy[i] ** 2 + c1) * (vx + vy + c2));
        sum += s;
        count++;
      }
    }
  }
  return sum / count;
}

/**
 * Dice per class 0..classes-1 (background included) between integer label maps. `absent`:
 * `"one"` is the authors' convention ((2|P∩G| + 1e-7) / (|P| + |G| + 1e-7), so a class absent
 * from both scores 1); `"nan"` returns NaN for such a class.
 */
export function dicePerClass(
  pred: ArrayLike<number>,
  truth: ArrayLike<number>,
  classes: number,
  absent: "one" | "nan" = "one",
): number[] {
  if (pred.length !== truth.length) {
    throw new RangeError(`dice: sizes differ (${pred.length} vs ${truth.length})`);
  }
  const inter = new Float64Array(classes), p = new Float64Array(classes), g = new Float64Array(classes);
  for (let i = 0; i < pred.length; i++) {
    const a = pred[i], b = truth[i];
    p[a]++;
    g[b]++;
    if (a === b) inter[a]++;
  }
  return Array.from({ length: classes }, (_, c) => {
    if (absent === "nan" && p[c] + g[c] === 0) return NaN;
    return (2 * inter[c] + 1e-7) / (p[c] + g[c] + 1e-7);
  });
}

/**
 * Table A.1's feature distance: both feature maps ([V, C] channels-last, flattened) averaged over
 * channels, then the L2 norm of the difference of the two maps. The maps may come from networks
 * of different widths (`channelsB`, default `channels`) as long as they share the V voxels.
 */
export function featureDistance(
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  channels: number,
  channelsB = channels,
): number {
  const voxels = a.length / channels;
  if (!Number.isInteger(voxels) || b.length !== voxels * channelsB) {
    throw new RangeError(
      `featureDistance: ${a.length} values in ${channels} channels and ${b.length} in ${channelsB} are not the same voxels`,
    );
  }
  let s = 0;
  for (let v = 0; v < voxels; v++) {
    let ma = 0, mb = 0;
    for (let c = 0; c < channels; c++) ma += a[v * channels + c];
    for (let c = 0; c < channelsB; c++) mb += b[v * channelsB + c];
    s += (ma / channels - mb / channelsB) ** 2;
  }
  return Math.sqrt(s);
}

/** Paired two-sided t-test (differences b - a): t statistic, degrees of freedom, p-value. */
export function pairedTTest(
  a: number[],
  b: number[],
): { t: number; df: number; p: number; meanDiff: number } {
  const d = a.map((v, i) => b[i] - v).filter((v) => Number.isFinite(v));
  const n = d.length;
  const mean = d.reduce((s, v) => s + v, 0) / n;
  const sd = Math.sqrt(d.reduce((s, v) => s + (v - mean) ** 2, 0) / (n - 1));
  const t = mean / (sd / Math.sqrt(n));
  const df = n - 1;
  if (!Number.isFinite(t)) return { t, df, p: NaN, meanDiff: mean };
  return { t, df, p: 2 * (1 - studentCdf(Math.abs(t), df)), meanDiff: mean };
}

/** CDF of Student's t via the regularised incomplete beta function. */
function studentCdf(t: number, df: number): number {
  const x = df / (df + t * t);
  return 1 - 0.5 * incompleteBeta(x, df / 2, 0.5);
}

function logGamma(z: number): number {
  const g = [
    676.5203681218851,
    -1259.1392167224028,
    771.32342877765313,
    -176.61502916214059,
    12.507343278686905,
    -0.13857109526572012,
    9.9843695780195716e-6,
    1.5056327351493116e-7,
  ];
  if (z < 0.5) return Math.log(Math.PI / Math.sin(Math.PI * z)) - logGamma(1 - z);
  z -= 1;
  let x = 0.99999999999980993;
  for (let i = 0; i < g.length; i++) x += g[i] / (z + i + 1);
  const t = z + g.length - 0.5;
  return 0.5 * Math.log(2 * Math.PI) + (z + 0.5) * Math.log(t) - t + Math.log(x);
}

/** Regularised incomplete beta I_x(a, b) by Lentz's continued fraction. */
function incompleteBeta(x: number, a: number, b: number): number {
  if (x <= 0) return 0;
  if (x >= 1) return 1;
  const front = Math.exp(logGamma(a + b) - logGamma(a) - logGamma(b) + a * Math.log(x) + b * Math.log(1 - x));
  if (x > (a + 1) / (a + b + 2)) return 1 - incompleteBeta(1 - x, b, a);
  let f = 1, c = 1, d = 0;
  for (let i = 0; i <= 400; i++) {
    const m = Math.floor(i / 2);
    let num: number;
    if (i === 0) num = 1;
    else if (i % 2 === 0) num = (m * (b - m) * x) / ((a + 2 * m - 1) * (a + 2 * m));
    else num = -((a + m) * (a + b + m) * x) / ((a + 2 * m) * (a + 2 * m + 1));
    d = 1 + num * d;
    if (Math.abs(d) < 1e-30) d = 1e-30;
    d = 1 / d;
    c = 1 + num / c;
    if (Math.abs(c) < 1e-30) c = 1e-30;
    const cd = c * d;
    f *= cd;
    if (Math.abs(1 - cd) < 1e-12) break;
  }
  return (front * (f - 1)) / a;
}
