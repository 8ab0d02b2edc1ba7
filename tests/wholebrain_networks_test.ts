/**
 * The whole-brain 2D networks' own pieces: QuickNAT's and FastSurfer-CNN's parameter counts
 * against the reference, max-unpooling of slices with ties (first maximum, as PyTorch records it),
 * maxout, channel-and-spatial squeeze-excitation, the shared PReLU and channel dropout, each by a
 * hand-computed value and finite differences; thick slices by hand.
 */
import * as tf from "@tensorflow/tfjs-core";
import { assert, assertAlmostEquals, assertEquals, assertThrows } from "@std/assert";
import { gradCheck, initBackend, mulberry32 } from "../lib/mod.ts";
import { ChannelDropout, poolWithPositions, SharedPReLU, unpoolWithPositions } from "../lib/models/blocks.ts";
import { ChannelSpatialSE, QuickNAT } from "../lib/models/quicknat.ts";
import { CompetitiveDenseBlock, FastSurferCNN } from "../lib/models/fastsurfer.ts";
import { Init } from "../lib/nn/module.ts";
import { thickSlices } from "../lib/data/views.ts";
import { middleSlice } from "../lib/train/pipeline.ts";

await initBackend("cpu", { quiet: true });

function rand(shape: number[], seed: number): tf.Tensor {
  const r = mulberry32(seed);
  return tf.tensor(Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => r() * 2 - 1), shape);
}

Deno.test("QuickNAT and FastSurfer-CNN at 64 filters, 5 levels: the reference's parameter counts", () => {
  // reference (wave2-architectures.md 3.2, 3.3), 28 classes; QuickNAT without the bottleneck's
  // constructed-but-unused CSSE, FastSurfer-CNN with 7 input channels (also 16 sagittal classes)
  const q = new QuickNAT(28, 64, 5, 1);
  assertEquals(q.parameterCount(), 3551027);
  q.dispose();
  for (const [classes, count] of [[28, 1795891], [16, 1795111]]) {
    const f = new FastSurferCNN(classes, 64, 5, 1);
    assertEquals(f.parameterCount(), count);
    assertEquals(f.inputChannels, 7);
    f.dispose();
  }
});

Deno.test("max-unpooling of slices: the first maximum of a tied window, odd sizes, gradient", () => {
  // one 2D slice [1, 1, 3, 4, 1]: windows of rows 0-1 (row 2 is dropped, as PyTorch)
  const x = tf.tensor5d(
    [
      [1, 1, 0, 2],
      [0, 1, 2, 2],
      [9, 9, 9, 9],
    ].flat(),
    [1, 1, 3, 4, 1],
  );
  const { pooled, at } = poolWithPositions(x, 2);
  assertEquals(pooled.shape, [1, 1, 1, 2, 1]);
  assertEquals(Array.from(pooled.dataSync()), [1, 2]);
  const up = unpoolWithPositions(tf.tensor5d([10, 20], [1, 1, 1, 2, 1]), at);
  // back to [3, 4]: the first maximum of each window (raster order) gets the value; the tie
  // 1,1,-,1 goes to (0, 0), the tie 2,2,2 to (0, 3); the dropped row comes back as zeros
  assertEquals(up.shape, [1, 1, 3, 4, 1]);
  assertEquals(Array.from(up.dataSync()), [10, 0, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0]);
  // depth is not pooled: two slices in a batch keep their own positions
  const two = tf.concat([x, tf.reverse(x, 3)], 0) as tf.Tensor5D;
  const p2 = poolWithPositions(two, 2);
  assertEquals(p2.pooled.shape, [2, 1, 1, 2, 1]);
  const u2 = unpoolWithPositions(p2.pooled, p2.at);
  // (the reversed slice: rows [2, 0, 1, 1], [2, 2, 1, 0]: maxima 2 at (0, 0), 1 first at (0, 2))
  assertEquals(Array.from(u2.dataSync()).slice(12, 16), [2, 0, 1, 0]);
  // the gradient flows to the unpooled values (positions are constants): finite differences
  const r = gradCheck((y) => unpoolWithPositions(y as tf.Tensor5D, at), [
    tf.tensor5d([0.3, -0.7], [1, 1, 1, 2, 1]),
  ]);
  assert(r.maxRelError < 1e-3, JSON.stringify(r.worst));
  // and through pooling and unpooling together, away from ties
  const g = gradCheck((t) => {
    const p = poolWithPositions(t as tf.Tensor5D, 2);
    return unpoolWithPositions(p.pooled, p.at);
  }, [rand([2, 1, 5, 6, 3], 3)]);
  assert(g.maxRelError < 1e-2, JSON.stringify(g.worst));
  tf.dispose([x, pooled, up, two, p2.pooled, u2, ...at.masks, ...p2.at.masks]);
});

Deno.test("maxout (competitive dense block): the elementwise maximum, its gradient to the first argument on ties", () => {
  const a = tf.tensor1d([1, 5, 2]), b = tf.tensor1d([3, 5, 1]);
  assertEquals(Array.from(tf.maximum(a, b).dataSync()), [3, 5, 2]);
  const [ga, gb] = tf.grads((p: tf.Tensor, q: tf.Tensor) => tf.sum(tf.maximum(p, q)))([a, b]);
  assertEquals(Array.from(ga.dataSync()), [0, 1, 1]);
  assertEquals(Array.from(gb.dataSync()), [1, 0, 0]);
  // a whole competitive block: finite differences through its maxouts, PReLU and batch statistics
  const block = new CompetitiveDenseBlock(new Init(2), 3, 3, 2, false, 3);
  const r = gradCheck((x) => block.apply(x as tf.Tensor5D), [rand([2, 1, 4, 4, 3], 5)], { eps: 1e-3 });
  assert(r.maxRelError < 2e-2, JSON.stringify(r.worst));
  block.dispose();
});

Deno.test("channel and spatial squeeze-excitation: max of the two recalibrations, by hand; gradient", () => {
  const se = new ChannelSpatialSE(new Init(4), 2);
  const x = tf.tensor5d([1, -2, 3, 0.5, -1, 4, 2, 2], [1, 1, 2, 2, 2]);
  const y = se.apply(x).dataSync();
  // by hand from the module's weights: channel gates from the per-channel means, spatial gates
  // from a 1x1 conv over the channels
  const p = Object.fromEntries(se.namedParameters().map(([n, v]) => [n, Array.from(v.dataSync())]));
  const xs = Array.from(x.dataSync());
  const sig = (v: number) => 1 / (1 + Math.exp(-v));
  const mean = [0, 1].map((c) => (xs[c] + xs[2 + c] + xs[4 + c] + xs[6 + c]) / 4);
  const hidden = Math.max(0, mean[0] * p["fc0.weight"][0] + mean[1] * p["fc0.weight"][1] + p["fc0.bias"][0]);
  const gate = [0, 1].map((c) => sig(hidden * p["fc1.weight"][c] + p["fc1.bias"][c]));
  for (let pos = 0; pos < 4; pos++) {
    const s = sig(
      xs[2 * pos] * p["spatial.weight"][0] + xs[2 * pos + 1] * p["spatial.weight"][1] + p["spatial.bias"][0],
    );
    for (let c = 0; c < 2; c++) {
      const v = xs[2 * pos + c];
      assertAlmostEquals(y[2 * pos + c], Math.max(v * gate[c], v * s), 1e-6);
    }
  }
  const r = gradCheck((t) => se.apply(t as tf.Tensor5D), [rand([2, 1, 3, 3, 2], 6)], { eps: 1e-3 });
  assert(r.maxRelError < 1e-2, JSON.stringify(r.worst));
  se.dispose();
});

Deno.test("shared PReLU: slope 0.25 at first, one parameter, gradients to the input and the slope", () => {
  const act = new SharedPReLU();
  assertEquals(act.parameterCount(), 1);
  const x = tf.tensor5d([-2, -0.5, 1, 3], [1, 1, 2, 2, 1]);
  assertEquals(Array.from(act.apply(x).dataSync()), [-0.5, -0.125, 1, 3]);
  const r = gradCheck((t, a) => tf.prelu(t, a), [rand([1, 1, 3, 3, 2], 8), tf.tensor1d([0.3])], {
    eps: 1e-3,
  });
  assert(r.maxRelError < 1e-2, JSON.stringify(r.worst));
  act.dispose();
});

Deno.test("channel dropout: identity unless training; whole channel maps dropped, the rest scaled; seeded", () => {
  const drop = new ChannelDropout(0.5, 3);
  const x = tf.ones([2, 1, 3, 3, 8]) as tf.Tensor5D;
  assertEquals(drop.apply(x), x);
  drop.train(true, 11);
  const y = drop.apply(x).arraySync() as number[][][][][];
  let dropped = 0;
  for (let b = 0; b < 2; b++) {
    for (let c = 0; c < 8; c++) {
      const v = y[b][0][0][0][c];
      assert(v === 0 || v === 2, `kept maps are scaled by 1 / (1 - 0.5): ${v}`);
      if (v === 0) dropped++;
      for (let i = 0; i < 3; i++) for (let j = 0; j < 3; j++) assertEquals(y[b][0][i][j][c], v);
    }
  }
  assert(dropped > 0 && dropped < 16, `some maps dropped, not all: ${dropped}`);
  // the same step draws the same maps; another step others
  assertEquals(drop.apply(x).arraySync(), y);
  drop.train(true, 12);
  assert(JSON.stringify(drop.apply(x).arraySync()) !== JSON.stringify(y));
  drop.train(false);
  assertEquals(drop.apply(x), x);
  assertThrows(() => new ChannelDropout(1, 0), RangeError);
});

Deno.test("thick slices: each slice with its neighbours as channels, edges repeated; the middle is the slice", () => {
  // a stack of 3 slices of 1 x 2: slice s holds [10 s, 10 s + 1]
  const stack = Float32Array.from([0, 1, 10, 11, 20, 21]);
  const t = thickSlices(stack, [3, 1, 2], [0, 2], 1);
  // [2 picks, 1, 2, 3 channels]: pick 0 reads slices (0, 0, 1), pick 2 reads (1, 2, 2)
  assertEquals(Array.from(t), [0, 0, 10, 1, 1, 11, 10, 20, 20, 11, 21, 21]);
  const x = tf.tensor5d(t, [2, 1, 1, 2, 3]);
  assertEquals(Array.from(middleSlice(x).dataSync()), [0, 1, 20, 21]);
  assertThrows(() => thickSlices(stack, [3, 1, 2], [3], 1), RangeError, "outside");
});
