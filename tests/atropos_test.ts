import { assert, assertAlmostEquals, assertEquals, assertLess, assertThrows } from "@std/assert";
import { atropos, type AtroposResult } from "../lib/tissue/atropos.ts";
import { gaussian, mulberry32 } from "../lib/random.ts";

const N32: [number, number, number] = [32, 32, 32];

/**
 * 32^3 nested-sphere phantom inside a ball of radius 15 (the mask): CSF (label 1, mean 30) for
 * r < 8, WM (label 3, mean 110) for 8 <= r < 12, GM (label 2, mean 70) for 12 <= r <= 15, i.e.
 * about 15 % / 36 % / 49 % of the mask, plus N(0, sd^2) noise. With sd 15 the classes are 1.33 sd
 * from each decision boundary, so even the true mixture misclassifies about 13 % without a prior.
 */
function spherePhantom(sd: number, seed: number) {
  const rand = mulberry32(seed);
  const n = 32, total = n ** 3, c = (n - 1) / 2;
  const image = new Float64Array(total), mask = new Uint8Array(total), truth = new Uint8Array(total);
  const means = [0, 30, 70, 110];
  for (let z = 0; z < n; z++) {
    for (let y = 0; y < n; y++) {
      for (let x = 0; x < n; x++) {
        const v = (z * n + y) * n + x, r = Math.hypot(z - c, y - c, x - c);
        if (r > 15) continue;
        const t = r < 8 ? 1 : r < 12 ? 3 : 2;
        mask[v] = 1;
        truth[v] = t;
        image[v] = means[t] + sd * gaussian(rand);
      }
    }
  }
  return { image, mask, truth };
}

function errorRate(labels: Uint8Array, truth: Uint8Array, mask: Uint8Array): number {
  let wrong = 0, n = 0;
  for (let v = 0; v < labels.length; v++) {
    if (!mask[v]) continue;
    n++;
    if (labels[v] !== truth[v]) wrong++;
  }
  return wrong / n;
}

const logistic = (t: number) => 1 / (1 + Math.exp(-t));

Deno.test("hand-computed: six voxels, three clusters -> means 11/51/91, sd 1, labels 1 1 2 2 3 3", () => {
  // K-means from range midpoints 23.67, 51, 78.33 splits {10,12} {50,52} {90,92}; the classes are
  // 38 sd apart, so EM keeps those means, ML variances ((-1)^2 + 1^2) / 2 = 1 and weights 1/3.
  const image = [10, 12, 50, 52, 90, 92];
  const r = atropos(image, [1, 1, 6], [1, 1, 1, 1, 1, 1], { tolerance: 1e-9 });
  assertEquals(Array.from(r.labels), [1, 1, 2, 2, 3, 3]);
  assertEquals(r.initialMeans, [11, 51, 91]);
  [11, 51, 91].forEach((m, k) => {
    assertAlmostEquals(r.classes[k].mean, m, 1e-12);
    assertAlmostEquals(r.classes[k].sd, 1, 1e-12);
    assertAlmostEquals(r.classes[k].weight, 1 / 3, 1e-12);
  });
  // The mean maximum posterior does not increase from the first to the second E-step (both ~1).
  assertEquals(r.iterations, 2);
  assert(r.converged);
  for (let v = 0; v < 6; v++) assertAlmostEquals(r.posteriors[r.labels[v] - 1][v], 1, 1e-6);
});

Deno.test("hand-computed: first E-step posteriors with the Potts prior on a 4-voxel chain", () => {
  // [0, 2, 3, 5], K = 2: k-means {0, 2} {3, 5} -> means 1, 4; variances 1; weights 1/2.
  // Voxel 0: data log-odds (class 1 vs 2) = -0.5 - (-8) = 7.5; its only neighbour (voxel 1) has
  // k-means label 1, so the prior adds beta * 1. Voxel 1: log-odds 1.5, neighbours of both labels
  // cancel. Voxels 2, 3 mirror 1, 0.
  const beta = 1;
  const r = atropos([0, 2, 3, 5], [1, 1, 4], [1, 1, 1, 1], { classes: 2, beta, iterations: 1 });
  assertEquals(r.classes.map((c) => [c.mean, c.sd, c.weight]), [[1, 1, 0.5], [4, 1, 0.5]]);
  const p0 = logistic(7.5 + beta), p1 = logistic(1.5);
  const expected = [p0, p1, 1 - p1, 1 - p0];
  for (let v = 0; v < 4; v++) {
    assertAlmostEquals(r.posteriors[0][v], expected[v], 1e-6);
    assertAlmostEquals(r.posteriors[1][v], 1 - expected[v], 1e-6);
  }
  assertEquals(Array.from(r.labels), [1, 1, 2, 2]);
  assertAlmostEquals(r.history[0].meanMaxPosterior, (p0 + p1) / 2, 1e-12);
  // Without the prior, voxel 0 has log-odds 7.5 only.
  const flat = atropos([0, 2, 3, 5], [1, 1, 4], [1, 1, 1, 1], { classes: 2, beta: 0, iterations: 1 });
  assertAlmostEquals(flat.posteriors[0][0], logistic(7.5), 1e-6);
});

/**
 * The first E-step recomputed independently: k-means labels are the nearest returned mean (the
 * classes after one iteration are the k-means clusters' statistics), the prior sums 1/distance over
 * in-mask neighbours of each label, and the posterior is the normalised
 * weight x Gaussian x exp(beta x sum).
 */
function firstStepPosteriors(
  image: Float64Array,
  mask: Uint8Array,
  shape: [number, number, number],
  r: AtroposResult,
  beta: number,
  connectivity: 6 | 26,
  spacing: [number, number, number],
): Float64Array[] {
  const [D, H, W] = shape, K = r.classes.length;
  const kmeansLabel = (x: number) => {
    let best = 0;
    for (let k = 1; k < K; k++) {
      if (Math.abs(x - r.classes[k].mean) < Math.abs(x - r.classes[best].mean)) best = k;
    }
    return best;
  };
  const out = Array.from({ length: K }, () => new Float64Array(image.length));
  for (let z = 0; z < D; z++) {
    for (let y = 0; y < H; y++) {
      for (let x = 0; x < W; x++) {
        const v = (z * H + y) * W + x;
        if (!mask[v]) continue;
        const sums = new Array<number>(K).fill(0);
        for (let dz = -1; dz <= 1; dz++) {
          for (let dy = -1; dy <= 1; dy++) {
            for (let dx = -1; dx <= 1; dx++) {
              const steps = Math.abs(dz) + Math.abs(dy) + Math.abs(dx);
              if (steps === 0 || (connectivity === 6 && steps > 1)) continue;
              const zz = z + dz, yy = y + dy, xx = x + dx;
              if (zz < 0 || zz >= D || yy < 0 || yy >= H || xx < 0 || xx >= W) continue;
              const u = (zz * H + yy) * W + xx;
              if (!mask[u]) continue;
              sums[kmeansLabel(image[u])] += 1 /
                Math.hypot(dz * spacing[0], dy * spacing[1], dx * spacing[2]);
            }
          }
        }
        const un = r.classes.map(({ mean, sd, weight }, k) =>
          weight / sd * Math.exp(-0.5 * ((image[v] - mean) / sd) ** 2 + beta * sums[k])
        );
        const total = un.reduce((s, t) => s + t, 0);
        for (let k = 0; k < K; k++) out[k][v] = un[k] / total;
      }
    }
  }
  return out;
}

Deno.test("first E-step matches an independent Potts computation (6/26 neighbours, anisotropic spacing)", () => {
  const shape: [number, number, number] = [5, 6, 7];
  const rand = mulberry32(7);
  const total = 5 * 6 * 7;
  const image = new Float64Array(total), mask = new Uint8Array(total);
  for (let v = 0; v < total; v++) {
    const x = v % 7;
    image[v] = (x < 3 ? 20 : x < 5 ? 50 : 80) + 12 * gaussian(rand);
    mask[v] = rand() < 0.85 ? 1 : 0; // holes: out-of-mask neighbours must not count
  }
  for (
    const [connectivity, spacing, mrf] of [
      [6, [1, 1, 1], "mean-field"],
      [26, [1, 1, 1], "labels"],
      [26, [2, 1, 1.5], "mean-field"],
      [6, [0.5, 1, 3], "labels"],
    ] as [6 | 26, [number, number, number], "mean-field" | "labels"][]
  ) {
    const beta = 0.7;
    const r = atropos(image, shape, mask, { beta, iterations: 1, neighbourhood: connectivity, spacing, mrf });
    const expected = firstStepPosteriors(image, mask, shape, r, beta, connectivity, spacing);
    let maxDiff = 0;
    for (let k = 0; k < 3; k++) {
      for (let v = 0; v < total; v++) {
        maxDiff = Math.max(maxDiff, Math.abs(r.posteriors[k][v] - expected[k][v]));
      }
    }
    assertLess(maxDiff, 1e-6, `${connectivity}-neighbourhood, spacing ${spacing}: max |diff| ${maxDiff}`);
  }
});

Deno.test("beta 0 on a well-separated mixture gives the Bayes (maximum posterior) labelling", () => {
  // 4096 spatially unstructured voxels from weights .2/.5/.3, means 20/60/100, sd 4/5/6.
  const rand = mulberry32(11);
  const n = 16 ** 3;
  const image = new Float64Array(n), truth = new Uint8Array(n);
  const comps = [{ w: 0.2, m: 20, s: 4 }, { w: 0.5, m: 60, s: 5 }, { w: 0.3, m: 100, s: 6 }];
  for (let v = 0; v < n; v++) {
    const u = rand();
    const k = u < 0.2 ? 0 : u < 0.7 ? 1 : 2;
    truth[v] = k + 1;
    image[v] = comps[k].m + comps[k].s * gaussian(rand);
  }
  const mask = new Uint8Array(n).fill(1);
  const r = atropos(image, [16, 16, 16], mask, { beta: 0, iterations: 50 });
  comps.forEach((c, k) => {
    assertAlmostEquals(r.classes[k].mean, c.m, 0.5);
    assertAlmostEquals(r.classes[k].sd, c.s, 0.5);
    assertAlmostEquals(r.classes[k].weight, c.w, 0.03);
  });
  let disagree = 0;
  for (let v = 0; v < n; v++) {
    let best = 0, bestP = -Infinity;
    r.classes.forEach(({ mean, sd, weight }, k) => {
      const p = Math.log(weight / sd) - 0.5 * ((image[v] - mean) / sd) ** 2;
      if (p > bestP) [best, bestP] = [k, p];
    });
    if (r.labels[v] !== best + 1) disagree++;
  }
  assertEquals(disagree, 0);
  assertLess(errorRate(r.labels, truth, mask), 0.01);
});

Deno.test("noisy phantom: accuracy above threshold and the Potts prior strictly reduces the error", () => {
  const { image, mask, truth } = spherePhantom(15, 1);
  const flat = errorRate(atropos(image, N32, mask, { beta: 0 }).labels, truth, mask);
  const defaults = errorRate(atropos(image, N32, mask).labels, truth, mask); // beta 0.1, 6 neighbours
  const box = errorRate(atropos(image, N32, mask, { neighbourhood: 26 }).labels, truth, mask);
  const strong = errorRate(atropos(image, N32, mask, { beta: 0.3, neighbourhood: 26 }).labels, truth, mask);
  // Measured: 0.139, 0.114, 0.075, 0.011.
  assert(flat > 0.1 && flat < 0.15, `beta 0 error ${flat}`);
  assertLess(defaults, flat);
  assertLess(defaults, 0.125);
  assertLess(box, defaults);
  assertLess(strong, 0.02);
});

Deno.test("ICM, synchronous-label and mean-field MRFs all beat beta 0 on the noisy phantom", () => {
  const { image, mask, truth } = spherePhantom(15, 1);
  const flat = errorRate(atropos(image, N32, mask, { beta: 0 }).labels, truth, mask);
  for (const mrf of ["mean-field", "labels", "icm"] as const) {
    for (const beta of [0.1, 0.5]) {
      const err = errorRate(atropos(image, N32, mask, { beta, mrf }).labels, truth, mask);
      assertLess(err, flat, `${mrf}, beta ${beta}: ${err} vs ${flat}`);
      if (beta === 0.5) assertLess(err, 0.05, `${mrf}, beta ${beta}`);
    }
  }
});

Deno.test("mask, normalisation, ordering by mean and determinism", () => {
  const { image, mask } = spherePhantom(15, 2);
  const a = atropos(image, N32, mask, { mrf: "icm", beta: 0.2 });
  const b = atropos(image, N32, mask, { mrf: "icm", beta: 0.2 });
  assertEquals(a, b);
  for (let v = 0; v < mask.length; v++) {
    if (!mask[v]) {
      assertEquals(a.labels[v], 0);
      for (const p of a.posteriors) assertEquals(p[v], 0);
      continue;
    }
    assert(a.labels[v] >= 1 && a.labels[v] <= 3);
    const sum = a.posteriors.reduce((s, p) => s + p[v], 0);
    assertAlmostEquals(sum, 1, 1e-5);
    let best = 0;
    for (let k = 1; k < 3; k++) if (a.posteriors[k][v] > a.posteriors[best][v]) best = k;
    assertEquals(a.labels[v], best + 1);
  }
  assert(a.classes[0].mean < a.classes[1].mean && a.classes[1].mean < a.classes[2].mean);
  assertAlmostEquals(a.classes.reduce((s, c) => s + c.weight, 0), 1, 1e-9);
  // Negating the image reverses the class order: label k becomes 4 - k.
  const neg = atropos(image.map((x) => -x), N32, mask, { mrf: "icm", beta: 0.2 });
  for (let v = 0; v < mask.length; v++) {
    assertEquals(neg.labels[v], mask[v] ? 4 - a.labels[v] : 0);
    if (mask[v]) assertAlmostEquals(neg.posteriors[0][v], a.posteriors[2][v], 1e-6);
  }
  assertAlmostEquals(neg.classes[0].mean, -a.classes[2].mean, 1e-9);
});

Deno.test("a constant class is held at the variance floor, and NaN outside the mask is ignored", () => {
  const rand = mulberry32(5);
  const image = new Float64Array(64), mask = new Uint8Array(64).fill(1);
  for (let i = 0; i < 60; i++) {
    image[i] = i < 20 ? 0 : i < 40 ? 50 + 5 * gaussian(rand) : 100 + 5 * gaussian(rand);
  }
  for (let i = 60; i < 64; i++) {
    image[i] = NaN;
    mask[i] = 0;
  }
  const r = atropos(image, [1, 8, 8], mask, { iterations: 20, varianceFloor: 1e-4 });
  let m = 0, s = 0;
  for (let i = 0; i < 60; i++) m += image[i] / 60;
  for (let i = 0; i < 60; i++) s += (image[i] - m) ** 2 / 60;
  assertAlmostEquals(r.classes[0].mean, 0, 1e-9);
  assertAlmostEquals(r.classes[0].sd, Math.sqrt(1e-4 * s), 1e-9);
  for (let i = 0; i < 60; i++) assertEquals(r.labels[i], i < 20 ? 1 : i < 40 ? 2 : 3);
  assertEquals(Array.from(r.labels.subarray(60)), [0, 0, 0, 0]);
});

Deno.test("bad inputs are refused with a message naming the problem", () => {
  const img = [1, 2, 3, 4, 5, 6], ones = [1, 1, 1, 1, 1, 1], s: [number, number, number] = [1, 2, 3];
  const cases: [() => unknown, string][] = [
    [() => atropos(img.slice(1), s, ones), "image has 5 values but shape [1,2,3] needs 6"],
    [() => atropos(img, s, [1, 1, 1]), "mask has 3 values but shape [1,2,3] needs 6"],
    [
      () => atropos(img, [1, 2, 0] as [number, number, number], ones),
      "shape must be three positive integers",
    ],
    [() => atropos(img, s, [0, 0, 0, 0, 0, 0]), "the mask is empty"],
    [() => atropos([1, 1, 2, 2, 2, 1], s, ones), "only 2 distinct intensities inside the mask but 3 classes"],
    [
      () => atropos([1, 2, NaN, 4, 5, 6], s, ones),
      "image value at voxel 2 (z=0, y=0, x=2) inside the mask is NaN",
    ],
    [
      () => atropos([1, 2, 3, 4, Infinity, 6], s, ones),
      "voxel 4 (z=0, y=1, x=1) inside the mask is Infinity",
    ],
    [() => atropos(img, s, [1, 1, NaN, 1, 1, 1]), "mask value at voxel 2 (z=0, y=0, x=2) is NaN"],
    [() => atropos(img, s, ones, { classes: 1 }), "classes must be an integer in [2, 255]"],
    [() => atropos(img, s, ones, { beta: -0.1 }), "beta (MRF smoothing factor) must be a finite number >= 0"],
    [() => atropos(img, s, ones, { iterations: 0 }), "iterations must be a positive integer"],
    [() => atropos(img, s, ones, { tolerance: NaN }), "tolerance must be a number"],
    [() => atropos(img, s, ones, { mrf: "gibbs" as "icm" }), 'mrf must be "mean-field", "labels" or "icm"'],
    [() => atropos(img, s, ones, { neighbourhood: 18 as 6 }), "neighbourhood must be 6 or 26"],
    [() => atropos(img, s, ones, { spacing: [1, 0, 1] }), "spacing must be three positive finite numbers"],
    [() => atropos(img, s, ones, { varianceFloor: 0 }), "varianceFloor must be in (0, 1)"],
  ];
  for (const [fn, message] of cases) assertThrows(fn, RangeError, message);
});
