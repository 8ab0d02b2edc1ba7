/**
 * Sliding-window inference (UNesT's fixed input on larger volumes): window origins by hand, the
 * average of overlapping windows by hand, a voxelwise function unchanged by windowing, and UNesT
 * trained on crops (its positional embeddings sized for its window, its crops in the whole-brain
 * context).
 */
import * as tf from "@tensorflow/tfjs-core";
import { assertAlmostEquals, assertEquals, assertThrows } from "@std/assert";
import { initBackend, mulberry32 } from "../lib/mod.ts";
import { slidingWindow, windowStarts } from "../lib/volume/tensor.ts";
import { UNesT } from "../lib/models/unest.ts";
import { profileConfig } from "../lib/train/pipeline.ts";
import { viewContext } from "../lib/train/wholebrain.ts";

await initBackend("cpu", { quiet: true });

Deno.test("windowStarts: by hand, every voxel covered, the last window flush with the end", () => {
  assertEquals(windowStarts(64, 32, 0.5), [0, 16, 32]);
  assertEquals(windowStarts(64, 32, 0), [0, 32]);
  assertEquals(windowStarts(64, 32, 0.25), [0, 24, 32]);
  assertEquals(windowStarts(70, 32, 0), [0, 32, 38]);
  assertEquals(windowStarts(32, 32, 0.5), [0]);
  assertEquals(windowStarts(5, 4, 0.9), [0, 1]);
  assertThrows(() => windowStarts(16, 32, 0.5), RangeError, "smaller than the 32-voxel window");
  assertThrows(() => windowStarts(64, 32, 1), RangeError, "overlap");
  assertThrows(() => windowStarts(64, 0, 0.5), RangeError, "positive integer");
});

Deno.test("slidingWindow: overlapping outputs averaged (hand-computed), a voxelwise function unchanged", () => {
  // f: each window's own depth index (a function of where the voxel sits in its window). On a
  // 6-voxel axis with 4-voxel windows at 0 and 2: z 0 -> 0; 1 -> 1; 2 -> (2 + 0) / 2; 3 -> (3 + 1) / 2;
  // 4 -> 2; 5 -> 3. Along the other axes (windows at 0 and 2 too) the value does not change.
  const x = tf.zeros([1, 6, 6, 6, 1]) as tf.Tensor5D;
  let calls = 0;
  const depthInWindow = (crop: tf.Tensor5D) => {
    calls++;
    const [, d, h, w] = crop.shape;
    const z = tf.reshape(tf.range(0, d), [1, d, 1, 1, 1]);
    return tf.add(z, tf.zeros([1, d, h, w, 2])) as tf.Tensor5D;
  };
  const y = slidingWindow(x, 4, depthInWindow, 0.5);
  assertEquals(calls, 8);
  assertEquals(y.shape, [1, 6, 6, 6, 2]);
  const v = y.dataSync();
  const expected = [0, 1, 1, 2, 2, 3];
  for (let z = 0; z < 6; z++) {
    for (const [h, w, c] of [[0, 0, 0], [3, 2, 1], [5, 5, 0]]) {
      assertAlmostEquals(v[(((z * 6 + h) * 6 + w) * 2) + c], expected[z], 1e-6, `z ${z}`);
    }
  }
  // a voxelwise function (two output channels) gives what it gives on the whole volume
  const r = mulberry32(3);
  const vol = tf.tensor5d(Float32Array.from({ length: 10 * 12 * 8 }, () => r()), [1, 10, 12, 8, 1]);
  const f = (t: tf.Tensor5D) => tf.concat([tf.mul(t, 2), tf.exp(t)], 4) as tf.Tensor5D;
  const whole = f(vol).dataSync();
  const windows = slidingWindow(vol, 8, f, 0.5).dataSync();
  for (let i = 0; i < whole.length; i++) assertAlmostEquals(windows[i], whole[i], 1e-6);
  // a volume the size of the window: f once, as is
  calls = 0;
  slidingWindow(tf.zeros([1, 4, 4, 4, 1]) as tf.Tensor5D, 4, depthInWindow);
  assertEquals(calls, 1);
  assertThrows(() => slidingWindow(tf.zeros([2, 8, 8, 8, 1]) as tf.Tensor5D, 4, f), RangeError, "one volume");
  assertThrows(() => slidingWindow(tf.zeros([1, 8, 8, 3, 1]) as tf.Tensor5D, 4, f), RangeError, "smaller");
});

Deno.test("UNesT with a window: embeddings for its crops; the whole-brain context trains on crops, predicts by windows", () => {
  const net = new UNesT(4, 2, 3, 1, [1], 16);
  // one stage (levels 3): tokens at a quarter of the 16^3 window
  const pos = net.namedParameters().find(([n]) => n.endsWith("pos"))!;
  assertEquals(pos[1].shape, [1, 4, 4, 4, 8]);
  assertThrows(() => new UNesT(4, 2, 3, 1, [1], 20), RangeError, "multiple of 2^3");
  net.dispose();
  const cfg = profileConfig("default");
  const ctx = { cfg, runDir: "/nonexistent", log: async () => {}, reports: [], allowUnconverged: true };
  const unest = viewContext(
    { ...ctx, cfg: { ...cfg, wholebrain: { ...cfg.wholebrain, network: "unest" } } },
    null,
  );
  assertEquals(unest.window, cfg.wholebrain.unestWindow);
  // not augmented (the tissue task's flips would swap hemispheres without swapping their labels)
  assertEquals([cfg.augment, unest.cfg.augment], [true, false]);
  for (const s of [unest.cfg.fusion.baseline, unest.cfg.fusion.fusion]) {
    assertEquals([s.patch, s.wholeFraction], [cfg.wholebrain.unestWindow, 0]);
  }
  // a 2D network's views: whole slices, no windows
  const axial = viewContext(ctx, "axial");
  assertEquals([axial.window, axial.cfg.fusion.baseline.patch], [undefined, 0]);
});
