import { assert, assertAlmostEquals, assertEquals } from "@std/assert";
import { bootstrapMeanDiff, comparePaired, normalCdf, quantile, wilcoxonSignedRank } from "../lib/stats.ts";

const zeros = (n: number) => new Array(n).fill(0);

Deno.test("wilcoxon: exact p by hand (8 pairs, no ties)", () => {
  // differences 1, 2, -3, 4..8: W- = 3; subsets of ranks {1..8} with sum <= 3 are {}, {1}, {2},
  // {3}, {1, 2}: p = 2 * 5 / 256 (SciPy 1.10.1 `wilcoxon` gives 0.0390625)
  const r = wilcoxonSignedRank(zeros(8), [1, 2, -3, 4, 5, 6, 7, 8]);
  assertEquals([r.n, r.wPlus, r.wMinus, r.method], [8, 33, 3, "exact"]);
  assertAlmostEquals(r.p, 10 / 256, 1e-12);
  // all eight the same sign: the smallest p eight pairs can give
  assertAlmostEquals(wilcoxonSignedRank(zeros(8), [1, 2, 3, 4, 5, 6, 7, 8]).p, 2 / 256, 1e-12);
  // the direction does not change a two-sided p
  assertAlmostEquals(wilcoxonSignedRank([1, 2, -3, 4, 5, 6, 7, 8], zeros(8)).p, 10 / 256, 1e-12);
});

Deno.test("wilcoxon: matches SciPy 1.10.1 (ties and zeros; exact with 20 pairs)", () => {
  // wilcoxon(d, method="approx", correction=False): zero dropped, ties averaged -> 0.02139756869691903
  const d2 = [0.5, -1.5, 1.5, 2, 2, 3, -0.25, 4, 0, 6, 1.5];
  const r2 = wilcoxonSignedRank(zeros(d2.length), d2);
  assertEquals([r2.n, r2.method, Math.min(r2.wPlus, r2.wMinus)], [10, "normal", 5]);
  assertAlmostEquals(r2.p, 0.02139756869691903, 1e-6);
  const d3 = [
    2.0641,
    0.7002,
    1.2787,
    2.5409,
    2.1676,
    -0.6773,
    1.2501,
    0.1486,
    0.1968,
    0.7106,
    0.444,
    1.7543,
    1.061,
    0.4217,
    0.7439,
    0.6337,
    1.7941,
    0.0948,
    0.6131,
    -0.5541,
  ];
  const r3 = wilcoxonSignedRank(zeros(20), d3); // method="exact": 0.0002613067626953125, W = 15
  assertEquals([r3.method, r3.wMinus], ["exact", 15]);
  assertAlmostEquals(r3.p, 0.0002613067626953125, 1e-12);
  // 30 pairs: normal approximation, SciPy 0.0011138009078172067 (W = 74)
  const d4 = [
    ...d3,
    -2.253,
    0.9536,
    1.1644,
    -0.4422,
    2.5698,
    -1.1544,
    0.3458,
    0.1128,
    1.8328,
    1.7694,
  ];
  const r4 = wilcoxonSignedRank(zeros(30), d4);
  assertEquals([r4.method, r4.wMinus], ["normal", 74]);
  assertAlmostEquals(r4.p, 0.0011138009078172067, 1e-6);
  assert(Number.isNaN(wilcoxonSignedRank([1, 2], [1, 2]).p), "no non-zero difference: no test");
});

Deno.test("normal CDF and quantiles", () => {
  assertAlmostEquals(normalCdf(0), 0.5, 1e-7);
  assertAlmostEquals(normalCdf(1.959963985), 0.975, 1e-6);
  assertAlmostEquals(normalCdf(-1), 0.15865525393145707, 1e-6);
  // NumPy: quantile([1, 2, 4, 8], 0.5) = 3, 0.9 -> 6.8
  assertAlmostEquals(quantile([1, 2, 4, 8], 0.5), 3, 1e-12);
  assertAlmostEquals(quantile([1, 2, 4, 8], 0.9), 6.8, 1e-12);
});

Deno.test("bootstrap interval: covers the mean difference, collapses for a constant shift, seeded", () => {
  const a = [0.5, 0.6, 0.7, 0.8, 0.55, 0.65];
  const constant = bootstrapMeanDiff(a, a.map((v) => v + 0.1));
  assertAlmostEquals(constant.mean, 0.1, 1e-12);
  assertAlmostEquals(constant.low, 0.1, 1e-12);
  assertAlmostEquals(constant.high, 0.1, 1e-12);
  const b = [0.52, 0.58, 0.75, 0.86, 0.5, 0.7];
  const r = bootstrapMeanDiff(a, b, { seed: 3 });
  assert(r.low < r.mean && r.mean < r.high, JSON.stringify(r));
  // the interval lies within the smallest and largest difference
  const d = a.map((v, i) => b[i] - v);
  assert(r.low >= Math.min(...d) && r.high <= Math.max(...d), JSON.stringify(r));
  assertEquals(bootstrapMeanDiff(a, b, { seed: 3 }), r);
  const c = comparePaired(a, b);
  assertAlmostEquals(c.meanDiff, d.reduce((s, v) => s + v, 0) / 6, 1e-12);
  assertEquals(c.n, 6);
  assert(c.pT > 0 && c.pT < 1 && c.pWilcoxon > 0 && c.pWilcoxon <= 1, JSON.stringify(c));
});
