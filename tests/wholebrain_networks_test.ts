/**
 * The whole-brain networks' own pieces: QuickNAT's and FastSurfer-CNN's parameter counts against
 * the reference, max-unpooling of slices with ties (first maximum, as PyTorch records it), maxout,
 * channel-and-spatial squeeze-excitation, the shared PReLU and channel dropout; UNesT's GELU,
 * LayerNorm, attention and blocks; each by a hand-computed value and finite differences; thick
 * slices by hand.
 */
import * as tf from "@tensorflow/tfjs-core";
import { assert, assertAlmostEquals, assertEquals, assertThrows } from "@std/assert";
import { gradCheck, initBackend, mulberry32 } from "../lib/mod.ts";
import { ChannelDropout, poolWithPositions, SharedPReLU, unpoolWithPositions } from "../lib/models/blocks.ts";
import { ChannelSpatialSE, QuickNAT } from "../lib/models/quicknat.ts";
import { CompetitiveDenseBlock, FastSurferCNN } from "../lib/models/fastsurfer.ts";
import { Init } from "../lib/nn/module.ts";
import { gelu } from "../lib/nn/ops.ts";
import { Attention, blockify, LayerNorm, TransformerLayer, unblockify } from "../lib/models/unest.ts";
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
  const hidden = Math.max(
    0,
    mean[0] * p["channel.fc0.weight"][0] + mean[1] * p["channel.fc0.weight"][1] + p["channel.fc0.bias"][0],
  );
  const gate = [0, 1].map((c) => sig(hidden * p["channel.fc1.weight"][c] + p["channel.fc1.bias"][c]));
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

Deno.test("GELU and LayerNorm: hand-computed values and finite differences", () => {
  // GELU(x) = x Phi(x): Phi(1) = 0.841345, Phi(-1) = 0.158655
  assertEquals(
    Array.from(gelu(tf.tensor1d([1, -1, 0])).dataSync()).map((v) => +v.toFixed(5)),
    [0.84134, -0.15866, 0],
  );
  const ln = new LayerNorm(3);
  // [1, 2, 3]: mean 2, biased variance 2/3 -> (x - 2) / sqrt(2/3 + 1e-5)
  const y = ln.apply(tf.tensor2d([[1, 2, 3]])).dataSync();
  const s = Math.sqrt(2 / 3 + 1e-5);
  [-1 / s, 0, 1 / s].forEach((v, i) => assertAlmostEquals(y[i], v, 1e-5));
  for (const f of [(t: tf.Tensor) => gelu(t), (t: tf.Tensor) => ln.apply(t)]) {
    const r = gradCheck(f, [rand([4, 3], 12)], { eps: 1e-3 });
    assert(r.maxRelError < 1e-2, JSON.stringify(r.worst));
  }
  ln.dispose();
});

Deno.test("attention: softmax(q k^T / sqrt(d)) v by hand with identity projections; gradient", () => {
  const att = new Attention(new Init(1), 2, 1);
  // qkv = [x, x, x], proj = identity: out = softmax(x x^T / sqrt 2) x
  const params = Object.fromEntries(att.namedParameters());
  params["qkv.weight"].assign(tf.tensor2d([[1, 0, 1, 0, 1, 0], [0, 1, 0, 1, 0, 1]]));
  params["proj.weight"].assign(tf.tensor2d([[1, 0], [0, 1]]));
  const xs = [[1, 0], [0.5, 2]];
  const out = att.apply(tf.tensor3d([xs])).dataSync();
  for (let i = 0; i < 2; i++) {
    const e = xs.map((xj) => Math.exp((xs[i][0] * xj[0] + xs[i][1] * xj[1]) / Math.SQRT2));
    const z = e[0] + e[1];
    for (let c = 0; c < 2; c++) {
      assertAlmostEquals(out[2 * i + c], (e[0] * xs[0][c] + e[1] * xs[1][c]) / z, 1e-5);
    }
  }
  const two = new Attention(new Init(2), 4, 2);
  const r = gradCheck((t) => two.apply(t as tf.Tensor3D), [rand([2, 3, 4], 13)], { eps: 1e-3 });
  assert(r.maxRelError < 1e-2, JSON.stringify(r.worst));
  att.dispose();
  two.dispose();
});

Deno.test("UNesT blocks: blockify by hand, unblockify undoes it, attention never crosses blocks", () => {
  // a 2 x 2 x 4 grid of one channel in 2 blocks per axis (blocks of 1 x 1 x 2 tokens)
  const x = tf.tensor5d(Float32Array.from({ length: 16 }, (_, i) => i), [1, 2, 2, 4, 1]);
  const b = blockify(x, 2);
  assertEquals(b.shape, [8, 2, 1]);
  // block (0, 0, 0) holds (0, 0, 0..1); block (0, 0, 1) holds (0, 0, 2..3); block (1, 1, 1) (1, 1, 2..3)
  const v = b.arraySync() as number[][][];
  assertEquals(v[0].flat(), [0, 1]);
  assertEquals(v[1].flat(), [2, 3]);
  assertEquals(v[7].flat(), [14, 15]);
  assertEquals(Array.from(unblockify(b, 2, [2, 2, 4]).dataSync()), Array.from(x.dataSync()));
  // a transformer layer over 2 blocks per axis: a change inside one block changes that block only
  const layer = new TransformerLayer(new Init(3), 4, 1);
  const tokens = rand([1, 4, 4, 4, 4], 14) as tf.Tensor5D;
  const run = (t: tf.Tensor5D) => unblockify(layer.apply(blockify(t, 2)), 2, [4, 4, 4]);
  const base = run(tokens);
  const bumped = run(tf.add(tokens, tf.scatterND([[0, 0, 0, 0, 0]], [1], tokens.shape)) as tf.Tensor5D);
  const diff = tf.abs(tf.sub(bumped, base)).arraySync() as number[][][][][];
  for (let d = 0; d < 4; d++) {
    for (let h = 0; h < 4; h++) {
      for (let w = 0; w < 4; w++) {
        const changed = diff[0][d][h][w].some((c) => c > 1e-6);
        assertEquals(changed, d < 2 && h < 2 && w < 2, `token (${d}, ${h}, ${w})`);
      }
    }
  }
  layer.dispose();
});
