import { assert, assertAlmostEquals, assertEquals, assertThrows } from "@std/assert";
import { dicePerClass, featureDistance, pairedTTest, psnr, ssim3d } from "../lib/metrics.ts";
import { mulberry32 } from "../lib/random.ts";

Deno.test("PSNR: hand-computed value and identical images", () => {
  // MSE = (0.1^2 + 0.3^2) / 4 = 0.025 -> 10 log10(1 / 0.025) = 16.0206
  assertAlmostEquals(psnr([0, 0.5, 1, 0.2], [0.1, 0.5, 0.7, 0.2]), 16.0206, 1e-4);
  assertEquals(psnr([0.3, 0.4], [0.3, 0.4]), Infinity);
});

/** SSIM straight from its definition, window by window (independent of the separable filter). */
function ssimBruteForce(a: number[], b: number[], shape: [number, number, number]): number {
  const [nz, ny, nx] = shape, win = 7, h = 3, np = win ** 3;
  const refl = (i: number, n: number) => (i < 0 ? -i - 1 : i >= n ? 2 * n - i - 1 : i);
  let sum = 0, count = 0;
  for (let z = h; z < nz - h; z++) {
    for (let y = h; y < ny - h; y++) {
      for (let x = h; x < nx - h; x++) {
        let sa = 0, sb = 0, saa = 0, sbb = 0, sab = 0;
        for (let dz = -h; dz <= h; dz++) {
          for (let dy = -h; dy <= h; dy++) {
            for (let dx = -h; dx <= h; dx++) {
              const i = (refl(z + dz, nz) * ny + refl(y + dy, ny)) * nx + refl(x + dx, nx);
              sa += a[i], sb += b[i], saa += a[i] ** 2, sbb += b[i] ** 2, sab += a[i] * b[i];
            }
          }
        }
        const ma = sa / np, mb = sb / np;
        const va = (saa - np * ma * ma) / (np - 1), vb = (sbb - np * mb * mb) / (np - 1);
        const cab = (sab - np * ma * mb) / (np - 1);
        const c1 = 0.01 ** 2, c2 = 0.03 ** 2;
        sum += ((2 * ma * mb + c1) * (2 * cab + c2)) / ((ma * ma + mb * mb + c1) * (va + vb + c2));
        count++;
      }
    }
  }
  return sum / count;
}

Deno.test("SSIM 3D matches its windowed definition (scikit-image conventions) and is 1 for identical volumes", () => {
  const r = mulberry32(3);
  const shape: [number, number, number] = [9, 10, 8];
  const a = Array.from({ length: 720 }, () => r());
  const b = a.map((v) => Math.min(1, Math.max(0, v + (r() - 0.5) * 0.3)));
  assertAlmostEquals(ssim3d(a, b, shape), ssimBruteForce(a, b, shape), 1e-10);
  assertAlmostEquals(ssim3d(a, a, shape), 1, 1e-12);
  assert(ssim3d(a, b, shape) < 0.99);
});

Deno.test("Dice per class: the authors' smoothing, absent classes, and the NaN option", () => {
  const pred = [0, 1, 1, 2, 2, 2];
  const truth = [0, 1, 2, 2, 2, 0];
  const d = dicePerClass(pred, truth, 4);
  assertAlmostEquals(d[0], (2 * 1) / (1 + 2), 1e-6);
  assertAlmostEquals(d[1], (2 * 1) / (2 + 1), 1e-6);
  assertAlmostEquals(d[2], (2 * 2) / (3 + 3), 1e-6);
  assertEquals(d[3], 1); // absent from both: (0 + 1e-7) / (0 + 1e-7)
  assert(Number.isNaN(dicePerClass(pred, truth, 4, "nan")[3]));
});

Deno.test("feature distance: channel means, then the L2 norm of their difference", () => {
  // two voxels, two channels: means a = [1.5, 3.5], b = [0.5, 0.5] -> sqrt(1 + 9)
  assertAlmostEquals(featureDistance([1, 2, 3, 4], [0, 1, 1, 0], 2), Math.sqrt(10), 1e-12);
});

Deno.test("paired t-test: t, df and the two-sided p-value", () => {
  const r = pairedTTest([1, 2, 3, 4], [2, 3, 5, 6]);
  assertAlmostEquals(r.t, 5.196152, 1e-5);
  assertEquals(r.df, 3);
  assertAlmostEquals(r.p, 0.013846, 1e-4);
});

Deno.test("feature distance across widths: each map averaged over its own channels", () => {
  // a: two voxels of 2 channels (means 1.5, 3.5); b: two voxels of 3 channels (means 1, 2)
  // -> sqrt(0.5^2 + 1.5^2)
  assertAlmostEquals(featureDistance([1, 2, 3, 4], [0, 1, 2, 1, 2, 3], 2, 3), Math.sqrt(0.25 + 2.25), 1e-12);
  assertThrows(() => featureDistance([1, 2, 3, 4], [0, 1, 2], 2, 3), RangeError, "not the same voxels");
});
