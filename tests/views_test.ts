/**
 * The three-view geometry: slicing and its inverse, the sagittal left/right merge, and both view
 * aggregations on constructed probability maps with hand-computed answers.
 */
import { assert, assertEquals, assertThrows } from "@std/assert";
import {
  aggregateViews,
  fromSlices,
  meanOfViews,
  mergeLabels,
  mergeLeftRight,
  sliceShape,
  toSlices,
  unmergeScores,
  VIEWS,
} from "../lib/data/views.ts";
import { SAGITTAL_LABELS } from "../lib/train/wholebrain.ts";
import * as tf from "@tensorflow/tfjs-core";
import { initBackend } from "../lib/backend.ts";
import { diceOf } from "../lib/train/pipeline.ts";
import type { Subject } from "../lib/data/cohort.ts";
import { LEFT_RIGHT_PAIRS, STRUCTURES } from "../lib/phantom/labels.ts";

await initBackend("cpu", { quiet: true });

const SHAPE: [number, number, number] = [3, 4, 5]; // [nk, nj, ni]
const volume = Float32Array.from({ length: 60 }, (_, p) => p);

Deno.test("views: each view slices along its axis (axial k, coronal j, sagittal i)", () => {
  assertEquals(sliceShape(SHAPE, "axial"), [3, 4, 5]);
  assertEquals(sliceShape(SHAPE, "coronal"), [4, 3, 5]);
  assertEquals(sliceShape(SHAPE, "sagittal"), [5, 3, 4]);
  const at = (k: number, j: number, i: number) => (k * 4 + j) * 5 + i;
  // axial slice 2, row j = 1, column i = 3
  assertEquals(toSlices(volume, SHAPE, "axial")[(2 * 4 + 1) * 5 + 3], at(2, 1, 3));
  // coronal slice j = 1, row k = 2, column i = 3
  assertEquals(toSlices(volume, SHAPE, "coronal")[(1 * 3 + 2) * 5 + 3], at(2, 1, 3));
  // sagittal slice i = 3, row k = 2, column j = 1
  assertEquals(toSlices(volume, SHAPE, "sagittal")[(3 * 3 + 2) * 4 + 1], at(2, 1, 3));
});

Deno.test("views: slicing and un-slicing round-trip exactly, with one or several channels", () => {
  for (const view of VIEWS) {
    assertEquals(fromSlices(toSlices(volume, SHAPE, view), SHAPE, view), volume);
    const two = Float32Array.from({ length: 120 }, (_, p) => p * 0.5 - 7);
    assertEquals(fromSlices(toSlices(two, SHAPE, view, 2), SHAPE, view, 2), two);
    // a channel stays with its voxel
    const sliced = toSlices(two, SHAPE, view, 2);
    const plain = toSlices(Float32Array.from({ length: 60 }, (_, p) => two[2 * p + 1]), SHAPE, view);
    assertEquals(Float32Array.from({ length: 60 }, (_, p) => sliced[2 * p + 1]), plain);
  }
  assertThrows(() => toSlices(new Float32Array(59), SHAPE, "axial"), RangeError, "59 values for a 3x4x5");
  assertThrows(() => sliceShape(SHAPE, "oblique" as never), RangeError, "oblique");
});

Deno.test("sagittal labels: left/right pairs merged into 16 classes as the released code numbers them", () => {
  // [0, 3, 4, 12, 13, 14, 18, ..., 27] -> 0..15 after left -> right (wave 2 reference, section 4.1)
  assertEquals(SAGITTAL_LABELS.split.length, 16);
  const kept = [0, 3, 4, 12, 13, 14, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27];
  kept.forEach((label, c) => assertEquals(SAGITTAL_LABELS.merge[label], c));
  for (const [left, right] of LEFT_RIGHT_PAIRS) {
    assertEquals(SAGITTAL_LABELS.merge[left], SAGITTAL_LABELS.merge[right]);
    assertEquals(SAGITTAL_LABELS.split[SAGITTAL_LABELS.merge[left]], [left, right]);
  }
  assertEquals(SAGITTAL_LABELS.split[3], [12]); // 3rd ventricle: midline, alone
  assertEquals(STRUCTURES[SAGITTAL_LABELS.split[1][1]], "Right-Cerebral-White-Matter");
  assertEquals(
    mergeLabels(Float32Array.from([0, 1, 3, 13, 17, 27]), SAGITTAL_LABELS),
    Float32Array.from([0, 1, 1, 4, 15, 15]),
  );
  assertThrows(() => mergeLeftRight(4, [[1, 4]]), RangeError, "(1, 4)");
});

Deno.test("sagittal scores spread back: each merged class's score on both of its labels", () => {
  const merged = mergeLeftRight(4, [[1, 2]]); // classes: 0, {1, 2}, 3
  assertEquals(merged.split, [[0], [1, 2], [3]]);
  const scores = Float32Array.from([0.1, 0.7, 0.2, /* voxel 2 */ 0.5, 0.25, 0.25]);
  assertEquals(
    unmergeScores(scores, merged, 4),
    Float32Array.from([0.1, 0.7, 0.7, 0.2, 0.5, 0.25, 0.25, 0.25]),
  );
});

Deno.test("view aggregation: the paper's average of probabilities, computed by hand", () => {
  // 2 voxels, 3 classes
  const axial = Float32Array.from([0.5, 0.3, 0.2, 0.1, 0.45, 0.45]);
  const coronal = Float32Array.from([0.2, 0.6, 0.2, 0.1, 0.5, 0.4]);
  const sagittal = Float32Array.from([0.3, 0.3, 0.4, 0.1, 0.3, 0.6]);
  // voxel 1: means (1/3)(1.0, 1.2, 0.8) -> class 1; voxel 2: (0.3, 1.25, 1.45) / 3 -> class 2
  assertEquals(aggregateViews({ axial, coronal, sagittal }, 3, "average"), Float32Array.from([1, 2]));
  // one view alone: its argmax, ties to the lowest label (voxel 2: 0.45 = 0.45 -> 1)
  assertEquals(aggregateViews({ axial }, 3, "average"), Float32Array.from([0, 1]));
});

Deno.test("view aggregation: the released code's 0.4 / 0.4 / 0.2 one-hot vote, computed by hand", () => {
  const onehot = (labels: number[], classes = 3) =>
    Float32Array.from(
      labels.flatMap((l) => Array.from({ length: classes }, (_, c) => (c === l ? 0.9 : 0.05))),
    );
  // voxel 1: axial 0, coronal 1, sagittal 1 -> 1 (0.6 against 0.4)
  // voxel 2: axial 2, coronal 2, sagittal 0 -> 2 (agreement of axial and coronal always wins)
  // voxel 3: axial 2, coronal 1, sagittal 0 -> 1 (0.4 = 0.4: the lowest label)
  const votes = aggregateViews(
    { axial: onehot([0, 2, 2]), coronal: onehot([1, 2, 1]), sagittal: onehot([1, 0, 0]) },
    3,
    "weighted-vote",
  );
  assertEquals(votes, Float32Array.from([1, 2, 1]));
  // the vote ignores confidence: where averaging follows a confident sagittal view, the vote does not
  const axial = Float32Array.from([0.4, 0.6, 0]), coronal = Float32Array.from([0.4, 0.6, 0]);
  const sagittal = Float32Array.from([1, 0, 0]);
  assertEquals(aggregateViews({ axial, coronal, sagittal }, 3, "weighted-vote"), Float32Array.from([1]));
  assertEquals(aggregateViews({ axial, coronal, sagittal }, 3, "average"), Float32Array.from([0]));
  // a spread-back sagittal vote counts for both labels of a pair: axial 1, coronal 2, sagittal {1, 2}
  const merged = mergeLeftRight(3, [[1, 2]]);
  const sag = unmergeScores(Float32Array.from([0.1, 0.9]), merged, 3);
  assertEquals(
    aggregateViews({ axial: onehot([1]), coronal: onehot([2]), sagittal: sag }, 3, "weighted-vote"),
    Float32Array.from([1]),
  );
  assertThrows(() => aggregateViews({ axial: onehot([1]) }, 3, "median" as never), RangeError, "median");
  assertThrows(() => aggregateViews({}, 3, "average"), RangeError, "no view");
});

Deno.test("reconstructions of the views: their mean", () => {
  assertEquals(
    meanOfViews([Float32Array.from([1, 2]), Float32Array.from([3, 5]), Float32Array.from([2, 2])]),
    Float32Array.from([2, 3]),
  );
});

Deno.test("whole-brain Dice counts air as background where the task says so (validation = test scoring)", async () => {
  // 2x2x2 scan: the first four voxels are air (input 0, label 0), the rest label 1; a network that
  // labels everything 1 scores background Dice 0 unmasked, 1 with air as background
  const input = Float32Array.of(0, 0, 0, 0, 0.5, 0.7, 0.2, 0.9);
  const truth = Float32Array.of(0, 0, 0, 0, 1, 1, 1, 1);
  const subject = {
    id: "s",
    split: "test",
    shape: [2, 2, 2],
    arrays: { "3T": input, structures: truth },
    reference: null,
  } as unknown as Subject;
  const allOne = (x: tf.Tensor5D) => tf.concat([tf.zerosLike(x), tf.onesLike(x)], 4) as tf.Tensor5D;
  const plain = await diceOf([subject], { input: "low-field", labels: "structures" }, 2, allOne);
  const masked = await diceOf(
    [subject],
    { input: "low-field", labels: "structures", airIsBackground: true },
    2,
    allOne,
  );
  const near = (a: number, b: number) => Math.abs(a - b) < 1e-6;
  assert(near(plain[0][1], 2 * 4 / (8 + 4)) && near(plain[0][0], 0), `unmasked ${plain[0]}`);
  assert(near(masked[0][0], 1) && near(masked[0][1], 1), `masked ${masked[0]}`);
});
