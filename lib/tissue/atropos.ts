/**
 * Three-class (CSF / GM / WM) tissue segmentation of a T1-weighted image inside a brain mask by
 * the method of ANTs Atropos (Avants, Tustison, Wu, Cook & Gee, "An open source multivariate
 * framework for n-tissue segmentation with evaluation on public data", Neuroinformatics
 * 9:381-400, 2011), in its common command-line form
 * `Atropos -i KMeans[3] -m [0.1,1x1x1] -c [5,0]`:
 *
 * 1. **Initialisation** by one-dimensional k-means of the masked intensities. As in Atropos the
 *    centres start evenly spaced over the intensity range, `min + (max - min) (n + 1/2) / K`, and
 *    Lloyd's iterations run to a fixed point (exactly: on the sorted intensities each cluster is a
 *    contiguous run, so an iteration is K binary searches). Should a cluster end empty (a far
 *    outlier stretches the range), k-means restarts from evenly spaced quantiles of the distinct
 *    intensities. Classes are numbered by increasing mean (T1: 1 CSF, 2 GM, 3 WM).
 * 2. **Gaussian mixture EM**: each class has a mean, a variance (floored, so a class cannot
 *    collapse onto one intensity) and a mixing weight, all re-estimated from the posteriors
 *    (soft EM, as Atropos weights its samples by the posteriors). The first estimate comes from
 *    the hard k-means labels.
 * 3. **Potts MRF prior**: the prior of class k at voxel v is proportional to
 *    `exp(beta * sum_u w_uv * n_u(k))` over the in-mask neighbours u of v, where `n_u(k)` is
 *    u's posterior for k (`"mean-field"`, the default here) or the indicator of u's hard label
 *    (`"labels"`, `"icm"`), and `w_uv` is 1 / (distance in mm). beta is Atropos's "smoothing
 *    factor" (`-m [0.1, ...]`). With isotropic unit voxels the six face neighbours weigh 1 (and
 *    in the 26-neighbourhood the edge and corner neighbours 1/sqrt 2 and 1/sqrt 3); `spacing`
 *    makes anisotropic voxels weigh their neighbours by 1/distance.
 * 4. **Iteration**: E-step (posterior proportional to likelihood x MRF prior x mixing weight,
 *    normalised over classes) then M-step, until Atropos's convergence test passes or
 *    `iterations` E-steps have run (`-c [5,0]`: at most 5).
 *
 * Where this differs from (or makes a choice about) the ANTs implementation
 * (`antsAtroposSegmentationImageFilter.hxx`):
 * - Atropos's MRF radius `1x1x1` is the full 3x3x3 box, i.e. 26 neighbours weighted by
 *   1/distance; the default here is the 6 face neighbours (`neighbourhood: 26` matches ANTs).
 * - Atropos's default (synchronous) update counts the neighbours' hard labels from the previous
 *   iteration; that is `mrf: "labels"` here. Its asynchronous `-g` mode is ICM over a colouring
 *   of the grid visited in random order; `mrf: "icm"` here updates the labels in place in raster
 *   order (deterministic), one sweep per EM iteration. The default `"mean-field"` replaces the
 *   neighbours' labels by their posteriors from the previous iteration (all voxels updated at
 *   once).
 * - With k-means initialisation and no prior probability images, ANTs' default "Socrates"
 *   posterior does not multiply by the mixing proportions; `mixingWeights: false` reproduces
 *   that, the default `true` gives the textbook mixture posterior.
 * - ANTs clamps likelihoods and priors below at 1e-10; here the E-step works in the log domain
 *   with no clamp.
 * - Convergence is Atropos's: the mean over the mask of each voxel's largest posterior is
 *   computed after every E-step, and iteration stops once it increases by less than
 *   `tolerance` (so with the default 0, as soon as it fails to increase).
 *   The per-iteration mixture log-likelihood and the fraction of changed labels are reported in
 *   `history` as well.
 *
 * Volumes are flat arrays in C order with shape [D, H, W]: index = (z * H + y) * W + x.
 * @module
 */

/** Options of {@link atropos}; every field is optional. */
export interface AtroposOptions {
  /** Number of tissue classes K (2..255). Default 3 (CSF, GM, WM). */
  classes?: number;
  /** MRF smoothing factor beta (Atropos `-m [beta, ...]`); 0 turns the MRF off. Default 0.1. */
  beta?: number;
  /** Maximum number of EM iterations, i.e. E-steps (Atropos `-c [iterations, ...]`). Default 5. */
  iterations?: number;
  /**
   * Convergence threshold (Atropos `-c [..., tolerance]`): stop once the mean maximum posterior
   * increases by less than this between iterations. Default 0 (stop as soon as it fails to
   * increase); `-Infinity` always runs all `iterations`.
   */
  tolerance?: number;
  /**
   * How the neighbours enter the Potts prior: `"mean-field"` (their posteriors from the previous
   * iteration; default), `"labels"` (their hard labels from the previous iteration, Atropos's
   * synchronous update) or `"icm"` (iterated conditional modes: hard labels updated in place in
   * raster order).
   */
  mrf?: "mean-field" | "labels" | "icm";
  /** 6 (face neighbours; default) or 26 (the 3x3x3 box, as Atropos's radius 1x1x1). */
  neighbourhood?: 6 | 26;
  /** Voxel size in mm along [z, y, x] (the order of `shape`); neighbours weigh 1/distance. Default [1, 1, 1]. */
  spacing?: [number, number, number];
  /** Multiply the posterior by the class mixing weights (see the module notes). Default true. */
  mixingWeights?: boolean;
  /**
   * Lower bound on each class variance as a fraction of the variance of all masked intensities
   * (a class's sd cannot fall below sqrt(varianceFloor) times the overall sd). Default 1e-4.
   */
  varianceFloor?: number;
}

/** One Gaussian class of the fitted mixture. */
export interface AtroposClass {
  /** Mean intensity. */
  mean: number;
  /** Standard deviation (after the variance floor). */
  sd: number;
  /** Mixing weight (proportion of the posterior mass); the weights sum to 1. */
  weight: number;
}

/** Diagnostics of one EM iteration (one E-step). */
export interface AtroposIteration {
  /** Mean over the mask of each voxel's largest posterior (Atropos's convergence measure). */
  meanMaxPosterior: number;
  /** Log-likelihood of the masked intensities under the mixture used in this E-step (no MRF term). */
  logLikelihood: number;
  /** Fraction of masked voxels whose hard label changed in this E-step. */
  changed: number;
}

/** Output of {@link atropos}. */
export interface AtroposResult {
  /** Hard labels: 0 outside the mask, 1..K inside, numbered by increasing class mean. */
  labels: Uint8Array;
  /** Posterior of each class (index k for label k + 1), full volume, 0 outside the mask. */
  posteriors: Float32Array[];
  /** The class parameters used in the final E-step, by increasing mean. */
  classes: AtroposClass[];
  /** EM iterations (E-steps) run. */
  iterations: number;
  /** Whether the convergence test stopped the iteration before the `iterations` limit. */
  converged: boolean;
  /** The k-means centres the EM started from, increasing. */
  initialMeans: number[];
  /** Per-iteration diagnostics, in order. */
  history: AtroposIteration[];
}

const LOG_2PI = Math.log(2 * Math.PI);

/**
 * Segments the masked voxels of `image` into `classes` tissue classes by k-means-initialised
 * Gaussian mixture EM with a Potts MRF prior (Atropos; see the module comment for the details and
 * the differences from ANTs). `mask` selects voxels where it is non-zero. Deterministic.
 * Throws RangeError on inconsistent lengths, an empty mask, non-finite values inside the mask,
 * fewer distinct masked intensities than classes, or invalid options.
 */
export function atropos(
  image: ArrayLike<number>,
  shape: [number, number, number],
  mask: ArrayLike<number>,
  opts: AtroposOptions = {},
): AtroposResult {
  const K = opts.classes ?? 3;
  const beta = opts.beta ?? 0.1;
  const maxIterations = opts.iterations ?? 5;
  const tolerance = opts.tolerance ?? 0;
  const mode = opts.mrf ?? "mean-field";
  const connectivity = opts.neighbourhood ?? 6;
  const spacing = opts.spacing ?? [1, 1, 1];
  const useWeights = opts.mixingWeights ?? true;
  const varianceFloor = opts.varianceFloor ?? 1e-4;

  // ---- validation ----
  if (
    !Array.isArray(shape) || shape.length !== 3 || !shape.every((s) => Number.isInteger(s) && s > 0)
  ) {
    throw new RangeError(
      `atropos: shape must be three positive integers [D, H, W], got ${JSON.stringify(shape)}`,
    );
  }
  const [D, H, W] = shape;
  const total = D * H * W;
  if (image.length !== total) {
    throw new RangeError(`atropos: image has ${image.length} values but shape [${shape}] needs ${total}`);
  }
  if (mask.length !== total) {
    throw new RangeError(`atropos: mask has ${mask.length} values but shape [${shape}] needs ${total}`);
  }
  if (!Number.isInteger(K) || K < 2 || K > 255) {
    throw new RangeError(`atropos: classes must be an integer in [2, 255], got ${K}`);
  }
  if (!(Number.isFinite(beta) && beta >= 0)) {
    throw new RangeError(`atropos: beta (MRF smoothing factor) must be a finite number >= 0, got ${beta}`);
  }
  if (!Number.isInteger(maxIterations) || maxIterations < 1) {
    throw new RangeError(`atropos: iterations must be a positive integer, got ${maxIterations}`);
  }
  if (typeof tolerance !== "number" || Number.isNaN(tolerance)) {
    throw new RangeError(`atropos: tolerance must be a number, got ${tolerance}`);
  }
  if (mode !== "mean-field" && mode !== "labels" && mode !== "icm") {
    throw new RangeError(`atropos: mrf must be "mean-field", "labels" or "icm", got ${JSON.stringify(mode)}`);
  }
  if (connectivity !== 6 && connectivity !== 26) {
    throw new RangeError(`atropos: neighbourhood must be 6 or 26, got ${connectivity}`);
  }
  if (
    !Array.isArray(spacing) || spacing.length !== 3 || !spacing.every((s) => Number.isFinite(s) && s > 0)
  ) {
    throw new RangeError(
      `atropos: spacing must be three positive finite numbers [z, y, x], got ${JSON.stringify(spacing)}`,
    );
  }
  if (!(Number.isFinite(varianceFloor) && varianceFloor > 0 && varianceFloor < 1)) {
    throw new RangeError(`atropos: varianceFloor must be in (0, 1), got ${varianceFloor}`);
  }

  // ---- gather the masked voxels (compact index = raster order among masked voxels) ----
  const compact = new Int32Array(total);
  let N = 0;
  for (let v = 0; v < total; v++) {
    const m = mask[v];
    if (!Number.isFinite(m)) throw new RangeError(`atropos: mask value at ${where(v, H, W)} is ${m}`);
    if (m !== 0) {
      const x = image[v];
      if (!Number.isFinite(x)) {
        throw new RangeError(`atropos: image value at ${where(v, H, W)} inside the mask is ${x}`);
      }
      compact[v] = N++;
    } else compact[v] = -1;
  }
  if (N === 0) throw new RangeError("atropos: the mask is empty (no non-zero mask values)");
  const x = new Float64Array(N);
  for (let v = 0; v < total; v++) if (compact[v] >= 0) x[compact[v]] = image[v];

  const sorted = Float64Array.from(x).sort();
  let distinct = 1;
  for (let i = 1; i < N; i++) if (sorted[i] !== sorted[i - 1]) distinct++;
  if (distinct < K) {
    throw new RangeError(
      `atropos: only ${distinct} distinct intensit${distinct === 1 ? "y" : "ies"} inside the mask ` +
        `but ${K} classes requested`,
    );
  }
  let overallMean = 0;
  for (let i = 0; i < N; i++) overallMean += x[i];
  overallMean /= N;
  let overallVar = 0;
  for (let i = 0; i < N; i++) overallVar += (x[i] - overallMean) ** 2;
  overallVar /= N;
  const minVar = Math.max(varianceFloor * overallVar, Number.MIN_VALUE);

  // ---- 1. k-means initialisation ----
  const centres = kmeansInit(sorted, K);
  const mids = new Float64Array(K - 1);
  for (let k = 0; k < K - 1; k++) mids[k] = (centres[k] + centres[k + 1]) / 2;
  // Labels are kept per class index 0..K-1 on the compact voxels.
  let lab = new Uint8Array(N);
  for (let i = 0; i < N; i++) {
    let k = 0;
    while (k < K - 1 && x[i] > mids[k]) k++;
    lab[i] = k;
  }
  let q = new Float64Array(N * K); // posteriors of the current iteration, voxel-major
  for (let i = 0; i < N; i++) q[i * K + lab[i]] = 1;

  const mean = new Float64Array(K), variance = new Float64Array(K), weight = new Float64Array(K);
  mStep(x, q, K, mean, variance, weight, minVar);

  // ---- neighbour offsets and weights ----
  const oz: number[] = [], oy: number[] = [], ox: number[] = [], ow: number[] = [];
  for (let dz = -1; dz <= 1; dz++) {
    for (let dy = -1; dy <= 1; dy++) {
      for (let dx = -1; dx <= 1; dx++) {
        const order = Math.abs(dz) + Math.abs(dy) + Math.abs(dx);
        if (order === 0 || (connectivity === 6 && order > 1)) continue;
        oz.push(dz);
        oy.push(dy);
        ox.push(dx);
        ow.push(1 / Math.hypot(dz * spacing[0], dy * spacing[1], dx * spacing[2]));
      }
    }
  }
  const J = ow.length;
  const offZ = Int32Array.from(oz), offY = Int32Array.from(oy), offX = Int32Array.from(ox);
  const offW = Float64Array.from(ow);
  const offFlat = Int32Array.from(oz.map((dz, j) => (dz * H + oy[j]) * W + ox[j]));

  // ---- 2-4. EM with the MRF prior ----
  let qNext = new Float64Array(N * K);
  let labNext = mode === "icm" ? lab : new Uint8Array(N);
  const s = new Float64Array(K), a = new Float64Array(K), dk = new Float64Array(K);
  const meanField = mode === "mean-field";
  const logW = new Float64Array(K), c0 = new Float64Array(K), half = new Float64Array(K);
  const history: AtroposIteration[] = [];
  let previousMeasure = -Infinity;
  let converged = false;
  let iterations = 0;
  const usedMean = new Float64Array(K), usedVar = new Float64Array(K), usedWeight = new Float64Array(K);

  while (iterations < maxIterations) {
    iterations++;
    usedMean.set(mean);
    usedVar.set(variance);
    usedWeight.set(weight);
    for (let k = 0; k < K; k++) {
      logW[k] = useWeights ? Math.log(weight[k]) : -Math.log(K);
      c0[k] = -0.5 * (LOG_2PI + Math.log(variance[k]));
      half[k] = 0.5 / variance[k];
    }
    let sumMax = 0, logLik = 0, changed = 0;
    for (let z = 0; z < D; z++) {
      for (let y = 0; y < H; y++) {
        for (let xx = 0; xx < W; xx++) {
          const v = (z * H + y) * W + xx;
          const i = compact[v];
          if (i < 0) continue;
          s.fill(0);
          if (beta > 0) {
            for (let j = 0; j < J; j++) {
              const zz = z + offZ[j], yy = y + offY[j], xn = xx + offX[j];
              if (zz < 0 || zz >= D || yy < 0 || yy >= H || xn < 0 || xn >= W) continue;
              const u = compact[v + offFlat[j]];
              if (u < 0) continue;
              const w = offW[j];
              if (meanField) {
                const base = u * K;
                for (let k = 0; k < K; k++) s[k] += w * q[base + k];
              } else {
                // "labels": previous iteration's labels; "icm": labNext === lab, updated in place
                s[lab[u]] += w;
              }
            }
          }
          const xi = x[i];
          let dMax = -Infinity, aMax = -Infinity, best = 0;
          for (let k = 0; k < K; k++) {
            const d = logW[k] + c0[k] - (xi - mean[k]) ** 2 * half[k];
            dk[k] = d;
            a[k] = d + beta * s[k];
            if (d > dMax) dMax = d;
            if (a[k] > aMax) {
              aMax = a[k];
              best = k;
            }
          }
          let dSum = 0, aSum = 0;
          for (let k = 0; k < K; k++) {
            dSum += Math.exp(dk[k] - dMax);
            a[k] = Math.exp(a[k] - aMax);
            aSum += a[k];
          }
          logLik += dMax + Math.log(dSum);
          const base = i * K;
          for (let k = 0; k < K; k++) qNext[base + k] = a[k] / aSum;
          sumMax += 1 / aSum;
          if (lab[i] !== best) changed++;
          labNext[i] = best;
        }
      }
    }
    [q, qNext] = [qNext, q];
    if (mode !== "icm") [lab, labNext] = [labNext, lab];
    const measure = sumMax / N;
    history.push({ meanMaxPosterior: measure, logLikelihood: logLik, changed: changed / N });
    if (measure - previousMeasure < tolerance) {
      converged = true;
      break;
    }
    previousMeasure = measure;
    if (iterations < maxIterations) mStep(x, q, K, mean, variance, weight, minVar);
  }

  // ---- output, classes renumbered by increasing mean ----
  const order = Array.from({ length: K }, (_, k) => k).sort((p, r) => usedMean[p] - usedMean[r] || p - r);
  const rank = new Uint8Array(K);
  order.forEach((k, r) => (rank[k] = r));
  const labels = new Uint8Array(total);
  const posteriors = Array.from({ length: K }, () => new Float32Array(total));
  for (let v = 0; v < total; v++) {
    const i = compact[v];
    if (i < 0) continue;
    labels[v] = rank[lab[i]] + 1;
    for (let k = 0; k < K; k++) posteriors[rank[k]][v] = q[i * K + k];
  }
  return {
    labels,
    posteriors,
    classes: order.map((k) => ({ mean: usedMean[k], sd: Math.sqrt(usedVar[k]), weight: usedWeight[k] })),
    iterations,
    converged,
    initialMeans: Array.from(centres),
    history,
  };
}

/** "voxel 17 (z=0, y=2, x=5)" for error messages. */
function where(v: number, H: number, W: number): string {
  const x = v % W, y = Math.floor(v / W) % H, z = Math.floor(v / (W * H));
  return `voxel ${v} (z=${z}, y=${y}, x=${x})`;
}

/**
 * M-step: posterior-weighted mean, variance (floored at `minVar`) and mixing weight of each class.
 * A class with no posterior mass keeps its mean and variance and gets weight 0.
 */
function mStep(
  x: Float64Array,
  q: Float64Array,
  K: number,
  mean: Float64Array,
  variance: Float64Array,
  weight: Float64Array,
  minVar: number,
): void {
  const N = x.length;
  const mass = new Float64Array(K), sum = new Float64Array(K), sq = new Float64Array(K);
  for (let i = 0; i < N; i++) {
    const base = i * K;
    for (let k = 0; k < K; k++) {
      const p = q[base + k];
      mass[k] += p;
      sum[k] += p * x[i];
    }
  }
  for (let k = 0; k < K; k++) if (mass[k] > 0) mean[k] = sum[k] / mass[k];
  for (let i = 0; i < N; i++) {
    const base = i * K;
    for (let k = 0; k < K; k++) sq[k] += q[base + k] * (x[i] - mean[k]) ** 2;
  }
  for (let k = 0; k < K; k++) {
    if (mass[k] > 0) variance[k] = Math.max(sq[k] / mass[k], minVar);
    weight[k] = mass[k] / N;
  }
}

/**
 * K-means centres of `sorted` (ascending, at least K distinct values): Atropos's start at the
 * midpoints of K equal parts of the range, or, if that leaves a cluster empty, evenly spaced
 * quantiles of the distinct values. Throws if both leave a cluster empty.
 */
function kmeansInit(sorted: Float64Array, K: number): Float64Array {
  const N = sorted.length;
  const lo = sorted[0], hi = sorted[N - 1];
  const start = new Float64Array(K);
  for (let k = 0; k < K; k++) start[k] = lo + ((hi - lo) * (k + 0.5)) / K;
  const prefix = new Float64Array(N + 1);
  for (let i = 0; i < N; i++) prefix[i + 1] = prefix[i] + sorted[i];
  let fit = lloyd1d(sorted, prefix, start);
  if (fit.empty < 0) return fit.centres;
  const uniq: number[] = [sorted[0]];
  for (let i = 1; i < N; i++) if (sorted[i] !== sorted[i - 1]) uniq.push(sorted[i]);
  for (let k = 0; k < K; k++) start[k] = uniq[Math.floor(((2 * k + 1) * uniq.length) / (2 * K))];
  fit = lloyd1d(sorted, prefix, start);
  if (fit.empty >= 0) {
    throw new RangeError(`atropos: k-means initialisation left class ${fit.empty + 1} empty`);
  }
  return fit.centres;
}

/**
 * Lloyd's k-means on sorted 1D data from increasing `start` centres, to a fixed point of the
 * assignment (ties go to the lower centre) or 1000 iterations. Returns the centres and the index
 * of an empty cluster (-1 if none).
 */
function lloyd1d(
  sorted: Float64Array,
  prefix: Float64Array,
  start: Float64Array,
): { centres: Float64Array; empty: number } {
  const K = start.length, N = sorted.length;
  const c = Float64Array.from(start);
  const bounds = new Int32Array(K + 1), previous = new Int32Array(K + 1).fill(-1);
  bounds[K] = N;
  for (let it = 0; it < 1000; it++) {
    for (let k = 1; k < K; k++) bounds[k] = upperBound(sorted, (c[k - 1] + c[k]) / 2);
    let same = true;
    for (let k = 0; k <= K; k++) if (bounds[k] !== previous[k]) same = false;
    if (same) break;
    previous.set(bounds);
    for (let k = 0; k < K; k++) {
      const n = bounds[k + 1] - bounds[k];
      if (n > 0) c[k] = (prefix[bounds[k + 1]] - prefix[bounds[k]]) / n;
    }
  }
  let empty = -1;
  for (let k = 0; k < K && empty < 0; k++) if (bounds[k + 1] === bounds[k]) empty = k;
  return { centres: c, empty };
}

/** Index of the first element of ascending `a` greater than `t` (a.length if none). */
function upperBound(a: Float64Array, t: number): number {
  let lo = 0, hi = a.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (a[mid] <= t) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
