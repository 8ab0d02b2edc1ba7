import * as tf from "@tensorflow/tfjs-core";
import { assert, assertAlmostEquals, assertEquals } from "@std/assert";
import {
  batchNorm,
  gradCheck,
  initBackend,
  instanceNorm,
  leakyRelu,
  linearWeights,
  maxPoolWithMask,
  maxUnpool,
  mulberry32,
  resizeLinear,
  resizeTrilinear,
  upsampleLinear2x,
  upsampleNearest2x,
} from "../lib/mod.ts";
import { BatchNorm, Init } from "../lib/nn/module.ts";

await initBackend("cpu", { quiet: true });

function randn(shape: number[], seed: number): tf.Tensor {
  const r = mulberry32(seed);
  return tf.tensor(Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => r() * 2 - 1), shape);
}

function close(actual: ArrayLike<number>, expected: number[], tol = 1e-6) {
  assertEquals(actual.length, expected.length);
  for (let i = 0; i < expected.length; i++) assertAlmostEquals(actual[i], expected[i], tol, `element ${i}`);
}

const GRAD_TOL = 2e-3;

Deno.test("linear resize matches PyTorch align_corners=False (hand-computed)", () => {
  // torch.nn.functional.interpolate(torch.arange(4.)[None,None], 8, mode="linear")
  const up = resizeLinear(tf.tensor4d([0, 1, 2, 3], [1, 1, 4, 1]), [1, 8]);
  close(up.dataSync(), [0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3]);
  // 4 -> 3: src = (d + 0.5) * 4/3 - 0.5 = 1/6, 3/2, 17/6
  const down = resizeLinear(tf.tensor4d([0, 1, 2, 3], [1, 1, 4, 1]), [1, 3]);
  close(down.dataSync(), [1 / 6, 1.5, 17 / 6]);
  const w = linearWeights(2, 4);
  assertEquals(Array.from(w.i0), [0, 0, 0, 1]);
  close(w.w1, [0, 0.25, 0.75, 0.25]); // the last weight multiplies i0 == i1: clamped at the edge
});

Deno.test("trilinear resize is separable: a 2x2x2 cube to 4x4x4", () => {
  const x = tf.tensor5d([0, 1, 2, 3, 4, 5, 6, 7], [1, 2, 2, 2, 1]); // value = 4d + 2h + w
  const y = resizeTrilinear(x, [4, 4, 4]);
  const ramp = [0, 0.25, 0.75, 1]; // 2 -> 4 positions along each axis
  const expected: number[] = [];
  for (const d of ramp) for (const h of ramp) for (const w of ramp) expected.push(4 * d + 2 * h + w);
  close(y.dataSync(), expected, 1e-5);
  assertEquals(upsampleLinear2x(x).shape, [1, 4, 4, 4, 1]);
});

Deno.test("nearest x2 upsampling repeats each voxel (4D and 5D, channels kept apart)", () => {
  const x = tf.tensor4d([1, 10, 2, 20], [1, 1, 2, 2]); // one row, two pixels, two channels
  close(upsampleNearest2x(x).dataSync(), [1, 10, 1, 10, 2, 20, 2, 20, 1, 10, 1, 10, 2, 20, 2, 20]);
  const v = tf.tensor5d([1, 2], [1, 1, 1, 2, 1]);
  const y = upsampleNearest2x(v);
  assertEquals(y.shape, [1, 2, 2, 4, 1]);
  close(y.dataSync(), [1, 1, 2, 2, 1, 1, 2, 2, 1, 1, 2, 2, 1, 1, 2, 2]);
});

Deno.test("instance norm: zero mean, unit (biased) variance per sample and channel", () => {
  const x = tf.tensor5d([1, 2, 3, 4, 10, 20, 30, 40], [1, 1, 2, 2, 2]);
  const y = instanceNorm(x);
  // channel 0 values 1, 3, 10, 30; mean 11, biased variance 131.5
  const c0 = [1, 3, 10, 30].map((v) => (v - 11) / Math.sqrt(131.5 + 1e-5));
  const c1 = [2, 4, 20, 40].map((v) => (v - 16.5) / Math.sqrt(232.75 + 1e-5));
  close(y.dataSync(), [c0[0], c1[0], c0[1], c1[1], c0[2], c1[2], c0[3], c1[3]], 1e-5);
  const z = instanceNorm(randn([2, 5, 6, 3], 3) as tf.Tensor4D);
  const { mean, variance } = tf.moments(z, [1, 2]);
  close(mean.dataSync(), new Array(6).fill(0), 1e-5);
  close(variance.dataSync(), new Array(6).fill(1), 1e-3);
});

Deno.test("leakyRelu uses PyTorch's slope 0.01 by default", () => {
  close(leakyRelu(tf.tensor1d([-2, 0, 3])).dataSync(), [-0.02, 0, 3]);
});

Deno.test("finite-difference gradient: trilinear resize (up, down, odd sizes)", () => {
  const x = randn([1, 3, 4, 5, 2], 11);
  for (const size of [[6, 8, 10], [2, 3, 7], [5, 4, 3]] as [number, number, number][]) {
    const r = gradCheck((t) => resizeTrilinear(t as tf.Tensor5D, size), [x]);
    assert(r.maxRelError < GRAD_TOL, `size ${size}: ${JSON.stringify(r)}`);
  }
});

Deno.test("finite-difference gradient: bilinear resize and x2 upsampling (4D and 5D)", () => {
  const x4 = randn([2, 3, 5, 2], 12);
  const x5 = randn([1, 2, 3, 3, 2], 13);
  for (
    const [name, f, x] of [
      ["bilinear", (t: tf.Tensor) => resizeLinear(t as tf.Tensor4D, [7, 4]), x4],
      ["linear2x 4D", (t: tf.Tensor) => upsampleLinear2x(t as tf.Tensor4D), x4],
      ["linear2x 5D", (t: tf.Tensor) => upsampleLinear2x(t as tf.Tensor5D), x5],
      ["nearest2x 4D", (t: tf.Tensor) => upsampleNearest2x(t as tf.Tensor4D), x4],
      ["nearest2x 5D", (t: tf.Tensor) => upsampleNearest2x(t as tf.Tensor5D), x5],
    ] as const
  ) {
    const r = gradCheck(f, [x]);
    assert(r.maxRelError < GRAD_TOL, `${name}: ${JSON.stringify(r)}`);
  }
});

Deno.test("batch norm: per-channel statistics over batch and space, then scale and shift", () => {
  // two samples of one voxel each, two channels: channel 0 values 1, 3 (mean 2, variance 1);
  // channel 1 values 10, 30 (mean 20, variance 100)
  const x = tf.tensor5d([1, 10, 3, 30], [2, 1, 1, 1, 2]);
  const y = batchNorm(x, tf.tensor1d([2, 0.5]), tf.tensor1d([1, -1]));
  const s0 = 2 / Math.sqrt(1 + 1e-5), s1 = 0.5 / Math.sqrt(100 + 1e-5);
  close(y.dataSync(), [-s0 + 1, -10 * s1 - 1, s0 + 1, 10 * s1 - 1], 1e-5);
  // batch 1 with unit scale and zero shift is instance norm
  const z = randn([1, 3, 4, 2, 3], 5) as tf.Tensor5D;
  const ones = tf.ones([3]) as tf.Tensor1D, zeros = tf.zeros([3]) as tf.Tensor1D;
  close(batchNorm(z, ones, zeros).dataSync(), Array.from(instanceNorm(z).dataSync()), 1e-5);
  // the module starts at scale ~ N(1, 0.02), shift 0, and names its two parameters
  const bn = new BatchNorm(new Init(3), 4);
  assertEquals(bn.namedParameters().map(([n]) => n), ["gamma", "beta"]);
  for (const g of bn.gamma.dataSync()) assert(Math.abs(g - 1) < 0.1, `gamma ${g}`);
  close(bn.beta.dataSync(), [0, 0, 0, 0]);
});

Deno.test("finite-difference gradient: batch norm in its input, scale and shift", () => {
  const x = tf.mul(randn([2, 3, 2, 3, 2], 31), 3);
  const r = gradCheck(
    (t, g, b) => batchNorm(t as tf.Tensor5D, g as tf.Tensor1D, b as tf.Tensor1D),
    [x, tf.tensor1d([1.3, -0.7]), tf.tensor1d([0.2, -0.4])],
    { eps: 1e-2 },
  );
  assert(r.maxRelError < 5e-3, `batchNorm: ${JSON.stringify(r)}`);
});

Deno.test("finite-difference gradient: instance norm (4D and 5D) and leakyRelu", () => {
  // Larger spread keeps the normalisation well conditioned in float32.
  const x5 = tf.mul(randn([1, 3, 3, 4, 2], 21), 3);
  const x4 = tf.mul(randn([2, 4, 5, 3], 22), 3);
  for (const [name, x] of [["5D", x5], ["4D", x4]] as const) {
    const r = gradCheck((t) => instanceNorm(t as tf.Tensor5D), [x], { eps: 1e-2 });
    assert(r.maxRelError < 5e-3, `instanceNorm ${name}: ${JSON.stringify(r)}`);
  }
  // Keep inputs away from the kink at 0.
  const y = tf.add(randn([3, 4], 23), tf.tensor2d([[1, -1, 1, -1]]).mul(1.5));
  const r = gradCheck((t) => leakyRelu(t), [y]);
  assert(r.maxRelError < GRAD_TOL, `leakyRelu: ${JSON.stringify(r)}`);
});

Deno.test("gradCheck detects a wrong gradient (the check can fail)", () => {
  const wrong = tf.customGrad(
    ((x: tf.Tensor) => ({
      value: tf.square(x),
      gradFunc: (dy: tf.Tensor) => tf.mul(dy, x), // true gradient is 2x
    })) as unknown as Parameters<typeof tf.customGrad>[0],
  );
  const r = gradCheck((t) => wrong(t) as tf.Tensor, [tf.tensor1d([1, 2, -3])]);
  assert(r.maxRelError > 0.3, JSON.stringify(r));
});

Deno.test("ops release their intermediates (no tensor leak)", () => {
  const x = randn([1, 4, 4, 4, 2], 31) as tf.Tensor5D;
  const before = tf.memory().numTensors;
  const y = tf.tidy(() => instanceNorm(upsampleNearest2x(resizeTrilinear(x, [3, 5, 6]))));
  assertEquals(tf.memory().numTensors, before + 1);
  y.dispose();
});

/**
 * PyTorch's max-unpooling semantics by direct loops (channels-last, batch 1, 3D): each window's
 * index is its first maximum in raster order (a strict ">" scan); the unpooled value goes there.
 */
function referencePoolUnpool3d(
  x: Float32Array,
  [d, h, w, c]: number[],
  y: Float32Array,
): { pooled: number[]; unpooled: number[] } {
  const [pd, ph, pw] = [d >> 1, h >> 1, w >> 1];
  const pooled: number[] = [], unpooled = new Array(d * h * w * c).fill(0);
  const at = (z: number, yy: number, xx: number, ch: number) => ((z * h + yy) * w + xx) * c + ch;
  for (let z = 0; z < pd; z++) {
    for (let yy = 0; yy < ph; yy++) {
      for (let xx = 0; xx < pw; xx++) {
        for (let ch = 0; ch < c; ch++) {
          let best = -Infinity, arg = -1;
          for (let dz = 0; dz < 2; dz++) {
            for (let dy = 0; dy < 2; dy++) {
              for (let dx = 0; dx < 2; dx++) {
                const i = at(2 * z + dz, 2 * yy + dy, 2 * xx + dx, ch);
                if (x[i] > best) [best, arg] = [x[i], i];
              }
            }
          }
          const p = ((z * ph + yy) * pw + xx) * c + ch;
          pooled[p] = best;
          unpooled[arg] = y[p];
        }
      }
    }
  }
  return { pooled, unpooled };
}

Deno.test("max-unpooling with first-maximum indices equals PyTorch's semantics, ties included", () => {
  // 6x4x5 (an odd width: the last column is not pooled), 2 channels; a constant region and
  // quantised values make whole windows tie
  const shape = [6, 4, 5, 2];
  const r = mulberry32(3);
  const x = Float32Array.from({ length: 6 * 4 * 5 * 2 }, (_, i) => (i < 60 ? 0 : Math.round(r() * 3)));
  const xt = tf.tensor5d(x, [1, 6, 4, 5, 2]);
  const { pooled, masks } = maxPoolWithMask(xt);
  assertEquals(pooled.shape, [1, 3, 2, 2, 2]);
  const y = Float32Array.from({ length: pooled.size }, (_, i) => i + 1);
  const ref = referencePoolUnpool3d(x, shape, y);
  close(pooled.dataSync(), ref.pooled);
  // every window marks exactly one position
  const total = tf.tidy(() => tf.addN(masks).dataSync());
  assert(Array.from(total).every((v) => v === 1), "one position per window");
  const un = maxUnpool(tf.tensor(y, pooled.shape) as tf.Tensor5D, masks);
  assertEquals(un.shape, [1, 6, 4, 4, 2]);
  // compare on the pooled extent (the reference keeps the odd last column at zero)
  const got = un.arraySync() as number[][][][][];
  for (let z = 0; z < 6; z++) {
    for (let yy = 0; yy < 4; yy++) {
      for (let xx = 0; xx < 4; xx++) {
        for (let ch = 0; ch < 2; ch++) {
          assertEquals(
            got[0][z][yy][xx][ch],
            ref.unpooled[((z * 4 + yy) * 5 + xx) * 2 + ch],
            `${z},${yy},${xx},${ch}`,
          );
        }
      }
    }
  }
  // 2D: a constant 2x2 window picks its first position only
  const flat = maxPoolWithMask(tf.zeros([1, 2, 2, 1]) as tf.Tensor4D);
  close(maxUnpool(tf.ones([1, 1, 1, 1]) as tf.Tensor4D, flat.masks).dataSync(), [1, 0, 0, 0]);
  // a batch: each sample unpools to its own maximum (the 4th position of sample 1, the 2nd of sample 2)
  const two = maxPoolWithMask(tf.tensor4d([0, 1, 2, 5, 0, 7, 3, 1], [2, 2, 2, 1]));
  close(maxUnpool(tf.tensor4d([10, 20], [2, 1, 1, 1]), two.masks).dataSync(), [0, 0, 0, 10, 0, 20, 0, 0]);
});

Deno.test("max-unpooling and the pooled maximum: gradients match finite differences", () => {
  const x = randn([1, 4, 4, 2, 3], 11) as tf.Tensor5D;
  const { masks } = maxPoolWithMask(x);
  const r1 = gradCheck((y) => maxUnpool(y as tf.Tensor5D, masks), [randn([1, 2, 2, 1, 3], 12)]);
  assert(r1.maxRelError < GRAD_TOL, `unpool: ${JSON.stringify(r1.worst)}`);
  // distinct values: the maximum is differentiable at the sample
  const r2 = gradCheck((t) => maxPoolWithMask(t as tf.Tensor5D).pooled, [x], { eps: 1e-3 });
  assert(r2.maxRelError < GRAD_TOL, `pool: ${JSON.stringify(r2.worst)}`);
});
