/**
 * The paper's networks: finite-difference gradients of PRM, the guide block, the AFM and every
 * loss; PRM's value at initialisation; no tensor leak across training steps; the end-to-end
 * pipeline on the quick profile; resuming gives the uninterrupted result.
 */
import * as tf from "@tensorflow/tfjs-core";
import { assert, assertAlmostEquals, assertEquals, assertRejects, assertThrows } from "@std/assert";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { gradCheck, initBackend, mulberry32 } from "../lib/mod.ts";
import { Init } from "../lib/nn/module.ts";
import { adam } from "../lib/nn/module.ts";
import { DEFAULT_KEEPER, GuideBlock, KnowledgeKeeper, PRM } from "../lib/models/keeper.ts";
import { AFM, type AfmParts, afmVariantLabel, FULL_AFM } from "../lib/models/fusion.ts";
import { ConvBlock } from "../lib/models/blocks.ts";
import {
  adversarialLoss,
  classWeightMap,
  crossEntropy,
  discriminatorLoss,
  distillationLoss,
  l1,
  mse,
  sampleDiceLoss,
  segmentationLoss,
  softDiceLoss,
  weightedCrossEntropy,
} from "../lib/losses.ts";
import { DEFAULT_TEACHER, Teacher } from "../lib/models/teacher.ts";
import { DivergenceError, trainLoop } from "../lib/train/loop.ts";
import { runTraining } from "../scripts/train.ts";
import { segmentFile } from "../scripts/segment.ts";
import { runTable2 } from "../scripts/table2.ts";
import { runTables } from "../scripts/tables.ts";
import { copyCheckpoint } from "../lib/train/state.ts";
import { readNifti, writeNifti } from "../lib/io/nifti.ts";
import { makeVolume, type Volume } from "../lib/volume/volume.ts";
import { UsageError } from "../lib/cli.ts";
import { writeFigures } from "../scripts/figures.ts";
import { chromiumPath, pointCount } from "../lib/viz/plotly.ts";
import { decodePng, isBlank } from "../lib/viz/png.ts";

await initBackend("cpu", { quiet: true });
const TOL = 3e-3;

function randn(shape: number[], seed: number, scale = 1): tf.Tensor {
  const r = mulberry32(seed);
  return tf.tensor(
    Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => (r() * 2 - 1) * scale),
    shape,
  );
}

/** Sets every variable of a module to seeded random values (so no gate sits at its init value). */
function perturb(vars: tf.Variable[], seed: number) {
  vars.forEach((v, i) => v.assign(tf.add(v, randn(v.shape, seed + i, 0.3))));
}

Deno.test("PRM at initialisation is a uniform sigmoid(1) gate", () => {
  const x = randn([1, 3, 4, 5, 6], 1);
  const y = new PRM().apply(x as tf.Tensor5D);
  const ratio = tf.div(y, x).dataSync();
  for (const r of ratio) assertAlmostEquals(r, 1 / (1 + Math.exp(-1)), 1e-5);
});

Deno.test("PRM on a batch: each sample recalibrated on its own, as one by one (values and gradients)", () => {
  const prm = new PRM();
  perturb(prm.parameters(), 40);
  const x = randn([3, 2, 4, 5, 6], 41) as tf.Tensor5D;
  const together = prm.apply(x);
  const alone = tf.concat((tf.split(x, 3, 0) as tf.Tensor5D[]).map((s) => prm.apply(s)), 0);
  const diff = tf.tidy(() => tf.max(tf.abs(tf.sub(together, alone))).dataSync()[0]);
  assert(diff < 1e-5, `batched PRM differs from per-sample PRM by ${diff}`);
  const loss = (f: (x: tf.Tensor5D) => tf.Tensor) => () => tf.sum(tf.square(f(x))) as tf.Scalar;
  const a = tf.variableGrads(loss((v) => prm.apply(v)), prm.parameters()).grads;
  const b = tf.variableGrads(
    loss((v) => tf.concat((tf.split(v, 3, 0) as tf.Tensor5D[]).map((s) => prm.apply(s)), 0)),
    prm.parameters(),
  ).grads;
  for (const v of prm.parameters()) {
    const d = tf.tidy(() => tf.max(tf.abs(tf.sub(a[v.name], b[v.name]))).dataSync()[0]);
    const scale = tf.tidy(() => tf.max(tf.abs(b[v.name])).dataSync()[0]);
    assert(d <= 1e-4 * Math.max(1, scale), `PRM ${v.name}: batched gradient differs by ${d}`);
  }
  tf.dispose([together, alone, ...Object.values(a), ...Object.values(b)]);
});

/** Central differences of a scalar loss with respect to module variables, against autodiff. */
function variableGradCheck(loss: () => tf.Scalar, vars: tf.Variable[], eps = 1e-2): number {
  const { grads } = tf.variableGrads(loss, vars);
  let worst = 0;
  for (const v of vars) {
    const g = grads[v.name].dataSync();
    const base = v.dataSync().slice();
    for (let i = 0; i < Math.min(base.length, 3); i++) {
      const at = (d: number) => {
        const w = base.slice();
        w[i] += d;
        v.assign(tf.tensor(w, v.shape));
        return tf.tidy(() => loss().dataSync()[0]);
      };
      const numeric = (at(eps) - at(-eps)) / (2 * eps);
      v.assign(tf.tensor(base, v.shape));
      worst = Math.max(worst, Math.abs(numeric - g[i]) / Math.max(1, Math.abs(numeric), Math.abs(g[i])));
    }
  }
  tf.dispose(Object.values(grads));
  return worst;
}

Deno.test("ConvBlock norms: instance is blind to the input's scale, none keeps it (hand value)", () => {
  const x = randn([1, 4, 3, 5, 2], 21);
  const inst = new ConvBlock(new Init(3), 2, 3);
  const same = tf.tidy(() =>
    tf.max(tf.abs(tf.sub(inst.apply(x as tf.Tensor5D), inst.apply(tf.mul(x, 2.5) as tf.Tensor5D))))
      .dataSync()[0]
  );
  assert(same < 1e-4, `instance norm block changed with the input's scale by ${same}`);
  // norm "none", 1x1x1 kernel: y = LeakyReLU(w x + b), slope 0.01, checked by hand
  const plain = new ConvBlock(new Init(3), 1, 1, { k: 1, norm: "none" });
  assertEquals(plain.parameters().length, 2);
  plain.conv.weight.assign(tf.fill([1, 1, 1, 1, 1], 2));
  plain.conv.bias!.assign(tf.tensor1d([-1]));
  const y = tf.tidy(() => plain.apply(tf.tensor5d([0, 0.25, 1, 3], [1, 1, 1, 4, 1])).dataSync());
  [-0.01, -0.005, 1, 5].forEach((v, i) => assertAlmostEquals(y[i], v, 1e-6));
  const r = gradCheck((xi) => plain.apply(xi as tf.Tensor5D), [randn([1, 2, 3, 2, 1], 4)], { samples: 8 });
  assert(r.maxRelError < TOL, `ConvBlock (none) input: ${JSON.stringify(r.worst)}`);
});

Deno.test("finite-difference gradients: PRM (input and every parameter)", () => {
  const prm = new PRM();
  perturb(prm.parameters(), 10);
  // a clear maximum keeps the query position fixed under the finite-difference steps
  const x = tf.add(
    randn([1, 3, 4, 3, 4], 2),
    tf.oneHot(tf.tensor1d([17], "int32"), 36).reshape([1, 3, 4, 3, 1]).mul(8),
  );
  const r = gradCheck((xi) => prm.apply(xi as tf.Tensor5D), [x], { samples: 16, eps: 1e-2 });
  assert(r.maxRelError < TOL, `PRM input: ${JSON.stringify(r.worst)}`);
  const proj = randn([1, 3, 4, 3, 4], 3);
  const worst = variableGradCheck(
    () => tf.sum(tf.mul(prm.apply(x as tf.Tensor5D), proj)) as tf.Scalar,
    prm.parameters(),
  );
  assert(worst < TOL, `PRM parameters: ${worst}`);
});

Deno.test("finite-difference gradients: guide block (Eq. 3-4) and AFM (Eq. 7-9) inputs", () => {
  const init = new Init(3);
  const guide = new GuideBlock(init, 5, 6, 4);
  perturb(guide.prm.parameters(), 20);
  const dense = randn([1, 4, 4, 4, 5], 4), deeper = tf.add(randn([1, 2, 2, 2, 6], 5), 0);
  const rg = gradCheck((a, b) => guide.apply(a as tf.Tensor5D, b as tf.Tensor5D), [dense, deeper], {
    samples: 12,
  });
  assert(rg.maxRelError < TOL, `guide block: ${JSON.stringify(rg.worst)}`);

  const afm = new AFM(new Init(4), [2, 3], 5);
  const k1 = randn([1, 4, 4, 4, 2], 6), k2 = randn([1, 2, 2, 2, 3], 7), fs = randn([1, 4, 4, 4, 5], 8);
  const ra = gradCheck((a, b, c) => afm.apply([a as tf.Tensor5D, b as tf.Tensor5D], c as tf.Tensor5D), [
    k1,
    k2,
    fs,
  ], {
    samples: 12,
  });
  assert(ra.maxRelError < TOL, `AFM: ${JSON.stringify(ra.worst)}`);
});

Deno.test("AFM ablations (Table 5): each part removed changes the right layers; gradients of every variant", () => {
  const variants: [Partial<AfmParts>, string, string[]][] = [
    [{}, "full AFM", ["aggregate1", "aggregate2", "positive", "negative"]],
    [{ aggregation: false }, "w/o aggregation", ["aggregate1", "positive", "negative"]],
    [{ channelRefinement: "one-path" }, "w/o two paths in channel-wise refinement", [
      "aggregate1",
      "aggregate2",
      "channel",
    ]],
    [{ featureCombined: false }, "w/o feature-combined refinement", [
      "aggregate1",
      "aggregate2",
      "positive",
      "negative",
    ]],
    [{ channelRefinement: "none" }, "w/o channel-wise refinement", ["aggregate1", "aggregate2"]],
  ];
  // A step of 1e-3: one aggregated channel from eight voxels makes the instance norms sharply
  // curved (truncation error 0.18 at 1e-2 without aggregation), and with the ReLUs' kinks nearby
  // the tolerance is 5e-3
  const k1 = randn([1, 4, 4, 4, 2], 6), k2 = randn([1, 2, 2, 2, 3], 7), fs = randn([1, 4, 4, 4, 5], 8);
  for (const [change, label, modules] of variants) {
    const parts = { ...FULL_AFM, ...change };
    assertEquals(afmVariantLabel(parts), label);
    // level 1 (0-based): without aggregation it reads only the second 7T-like level (3 channels)
    const afm = new AFM(new Init(4), [2, 3], 5, "none", parts, 1);
    const names = afm.namedParameters().map(([n]) => n);
    const top = [...new Set(names.map((n) => n.split(".")[0]))].filter((n) =>
      !n.startsWith("guidance") && n !== "combine"
    );
    assertEquals(top, modules, label);
    const shapes = Object.fromEntries(afm.namedParameters().map(([n, v]) => [n, v.shape]));
    if (!parts.aggregation) assertEquals(shapes["aggregate1.weight"], [1, 1, 1, 3, 1], label);
    assertEquals(shapes["combine.weight"], [3, 3, 3, parts.featureCombined ? 10 : 5, 5], label);
    if (parts.aggregation) {
      const r = gradCheck((a, b, c) => afm.apply([a as tf.Tensor5D, b as tf.Tensor5D], c as tf.Tensor5D), [
        k1,
        k2,
        fs,
      ], {
        samples: 8,
        eps: 1e-3,
      });
      assert(r.maxRelError < 5e-3, `${label}: ${JSON.stringify(r.worst)}`);
    } else {
      const r = gradCheck((b, c) => afm.apply([k1 as tf.Tensor5D, b as tf.Tensor5D], c as tf.Tensor5D), [
        k2,
        fs,
      ], {
        samples: 8,
        eps: 1e-3,
      });
      assert(r.maxRelError < 5e-3, `${label}: ${JSON.stringify(r.worst)}`);
      // the other 7T-like level does not reach the output
      const y0 = afm.apply([k1 as tf.Tensor5D, k2 as tf.Tensor5D], fs as tf.Tensor5D);
      const y1 = afm.apply([tf.mul(k1, 5) as tf.Tensor5D, k2 as tf.Tensor5D], fs as tf.Tensor5D);
      assertEquals(y1.dataSync(), y0.dataSync(), label);
    }
    if (parts.channelRefinement === "none") {
      // A = D: the assimilable map is the refined one
      const m = afm.applyWithMaps([k1 as tf.Tensor5D, k2 as tf.Tensor5D], fs as tf.Tensor5D);
      assertEquals(m.assimilable, m.refined);
    }
    afm.dispose();
  }
});

Deno.test("KKN ablations (Table 4): without guide blocks one ConvBlock per level and no PRM; same output shapes", () => {
  const x = randn([1, 8, 8, 8, 1], 3) as tf.Tensor5D;
  const full = new KnowledgeKeeper({ ...DEFAULT_KEEPER, nf: 4, levels: 3 }, 2);
  const plain = new KnowledgeKeeper({ ...DEFAULT_KEEPER, nf: 4, levels: 3, guideBlocks: false }, 2);
  assertEquals(plain.apply(x).map((f) => f.shape), full.apply(x).map((f) => f.shape));
  const names = plain.namedParameters().map(([n]) => n);
  assert(!names.some((n) => /prm|attention/.test(n)), names.join(" "));
  assertEquals([...new Set(names.filter((n) => n.startsWith("project")).map((n) => n.split(".")[0]))], [
    "project2",
    "project1",
  ]);
  // every parameter of the ablated KKN gets a gradient
  const { grads } = tf.variableGrads(() =>
    tf.addN(plain.apply(x).map((f) => tf.mean(tf.square(f)))) as tf.Scalar
  );
  for (const [n] of plain.namedParameters()) {
    assert(grads[plain.namedParameters().find(([m]) => m === n)![1].name], n);
  }
  tf.dispose(Object.values(grads));
  full.dispose();
  plain.dispose();
});

Deno.test("AFM zero gate: the segmentation features pass unchanged at init; the gate's gradient is sum(A * dL/dF)", () => {
  const afm = new AFM(new Init(4), [2, 3], 5, "zero");
  const k1 = randn([1, 4, 4, 4, 2], 6), k2 = randn([1, 2, 2, 2, 3], 7), fs = randn([1, 4, 4, 4, 5], 8);
  const maps = afm.applyWithMaps([k1 as tf.Tensor5D, k2 as tf.Tensor5D], fs as tf.Tensor5D);
  assertEquals(maps.fused.dataSync(), fs.dataSync());
  // L = sum(F^F * P): dL/dgate = sum(A * P) at any gate value (F^F = F^S + gate * A)
  const proj = randn([1, 4, 4, 4, 5], 9);
  const loss = () =>
    tf.sum(tf.mul(afm.apply([k1 as tf.Tensor5D, k2 as tf.Tensor5D], fs as tf.Tensor5D), proj)) as tf.Scalar;
  const { grads } = tf.variableGrads(loss, [afm.gate!]);
  const hand = tf.sum(tf.mul(maps.assimilable, proj)).dataSync()[0];
  assertAlmostEquals(grads[afm.gate!.name].dataSync()[0], hand, 1e-3 * Math.max(1, Math.abs(hand)));
  // with the gate moved off zero, every parameter's gradient matches finite differences
  afm.gate!.assign(tf.tensor1d([0.7]));
  const worst = variableGradCheck(loss, afm.parameters(), 1e-3);
  assert(worst < TOL, `AFM parameters: ${worst}`);
  // the paper's AFM has no gate and adds A as it is
  assertEquals(new AFM(new Init(4), [2, 3], 5).gate, null);
});

Deno.test("losses: hand-computed values and finite-difference gradients", () => {
  const a = tf.tensor([0, 1, 2, 3]), b = tf.tensor([1, 1, 0, 3]);
  assertAlmostEquals(l1(a, b).dataSync()[0], 0.75, 1e-6);
  assertAlmostEquals(mse(a, b).dataSync()[0], 1.25, 1e-6);
  // LSGAN: 0.5 * (mean((r-1)^2) + mean(f^2))
  assertAlmostEquals(
    discriminatorLoss(tf.tensor([1, 0]), tf.tensor([0.5, 1])).dataSync()[0],
    0.5 * (0.5 + 0.625),
    1e-6,
  );
  assertAlmostEquals(adversarialLoss(tf.tensor([0, 1])).dataSync()[0], 0.5, 1e-6);
  // CE of uniform logits over 4 classes = log 4
  assertAlmostEquals(
    crossEntropy(tf.zeros([1, 1, 1, 2, 4]) as tf.Tensor5D, tf.tensor([1, 3], [2], "int32")).dataSync()[0],
    Math.log(4),
    1e-6,
  );
  // soft Dice over the foreground: logits [0, 0] on 2 voxels of 2 classes -> p = 0.5 each;
  // labels [1, 0]: class 1 has sum p g = 0.5, sum p = 1, sum g = 1 -> Dice 0.5, loss 0.5
  assertAlmostEquals(
    softDiceLoss(tf.zeros([1, 1, 1, 2, 2]) as tf.Tensor5D, tf.tensor([1, 0], [2], "int32"), 0).dataSync()[0],
    0.5,
    1e-6,
  );
  // a confident correct prediction gives a loss near 0
  assertAlmostEquals(
    softDiceLoss(
      tf.tensor([20, -20, -20, 20], [1, 1, 1, 2, 2]) as tf.Tensor5D,
      tf.tensor([0, 1], [2], "int32"),
    ).dataSync()[0],
    0,
    1e-5,
  );
  // weighted CE of uniform logits over 4 classes: mean(w) * log 4
  const uniform = tf.zeros([1, 1, 1, 2, 4]) as tf.Tensor5D, twoLabels = tf.tensor([1, 3], [2], "int32");
  assertAlmostEquals(
    weightedCrossEntropy(uniform, twoLabels, tf.tensor([1, 3])).dataSync()[0],
    2 * Math.log(4),
    1e-6,
  );
  // per-sample Dice with background: logits [0, 0] (p = 0.5 each) on 2 samples of 2 voxels,
  // labels [0, 1 | 1, 1]: sample 1 classes 0 and 1 each (2*0.5)/(1+1) = 0.5; sample 2 class 0
  // absent, (0 + s)/(1 + 0 + s) ~ 0, class 1 (2*1)/(1+2) = 2/3 -> loss 1 - (0.5+0.5+0+2/3)/4
  assertAlmostEquals(
    sampleDiceLoss(tf.zeros([2, 1, 1, 2, 2]) as tf.Tensor5D, tf.tensor([0, 1, 1, 1], [4], "int32"), 0)
      .dataSync()[0],
    1 - (0.5 + 0.5 + 0 + 2 / 3) / 4,
    1e-6,
  );
  // an all-background (empty) sample confidently predicted background: its background Dice is 1,
  // and so is the absent class's, whose probability (e^-60) is below the smoothing -> loss ~0
  assertAlmostEquals(
    sampleDiceLoss(
      tf.tensor([30, -30, 30, -30], [1, 1, 1, 2, 2]) as tf.Tensor5D,
      tf.tensor([0, 0], [2], "int32"),
    )
      .dataSync()[0],
    0,
    1e-4,
  );
  // wce+dice is the two terms' sum, and refuses to run without weights
  assertAlmostEquals(
    segmentationLoss("wce+dice", uniform, twoLabels, tf.tensor([1, 3])).dataSync()[0],
    2 * Math.log(4) + sampleDiceLoss(uniform, twoLabels).dataSync()[0],
    1e-6,
  );
  assertThrows(() => segmentationLoss("wce+dice", uniform, twoLabels), Error, "no voxel weights");
  // distillation: identical features give 0 in both modes
  const f = [randn([1, 2, 2, 2, 3], 9) as tf.Tensor5D];
  for (const mode of ["paper", "code"] as const) {
    assertAlmostEquals(distillationLoss(f, f, mode).dataSync()[0], 0, 1e-6);
  }

  const t = randn([1, 2, 3, 2, 3], 11), k = randn([1, 2, 3, 2, 3], 12);
  const checks: [string, (...xs: tf.Tensor[]) => tf.Tensor, tf.Tensor[]][] = [
    ["distill (paper)", (x, y) => distillationLoss([x as tf.Tensor5D], [y as tf.Tensor5D], "paper"), [t, k]],
    ["distill (code)", (x, y) => distillationLoss([x as tf.Tensor5D], [y as tf.Tensor5D], "code"), [t, k]],
    ["L1", (x, y) => l1(x, y), [t, tf.add(k, 0.05)]],
    ["LSGAN D", (x, y) => discriminatorLoss(x, y), [t, k]],
    ["LSGAN G", (x) => adversarialLoss(x), [t]],
    [
      "cross-entropy",
      (x) =>
        crossEntropy(
          x as tf.Tensor5D,
          tf.tensor(Int32Array.from({ length: 12 }, (_, i) => i % 3), [12], "int32"),
        ),
      [t],
    ],
    [
      "weighted cross-entropy",
      (x) =>
        weightedCrossEntropy(
          x as tf.Tensor5D,
          tf.tensor(Int32Array.from({ length: 12 }, (_, i) => (i * 5) % 3), [12], "int32"),
          tf.tensor(Float32Array.from({ length: 12 }, (_, i) => 0.5 + (i % 4) * 1.5)),
        ),
      [t],
    ],
    [
      "per-sample Dice with background",
      (x) =>
        sampleDiceLoss(
          x as tf.Tensor5D,
          tf.tensor(Int32Array.from({ length: 12 }, (_, i) => (i * 7) % 3), [12], "int32"),
          1e-3,
        ),
      [t],
    ],
    [
      "soft Dice",
      (x) =>
        softDiceLoss(
          x as tf.Tensor5D,
          tf.tensor(Int32Array.from({ length: 12 }, (_, i) => (i * 7) % 3), [12], "int32"),
        ),
      [t],
    ],
  ];
  for (const [name, fn, xs] of checks) {
    const r = gradCheck(fn, xs, { samples: 12 });
    assert(r.maxRelError < TOL, `${name}: ${JSON.stringify(r.worst)}`);
  }
});

Deno.test("loss weights: median-frequency balancing capped at 5, plus 5 where np.gradient is non-zero", () => {
  // one row [0 0 0 1]: counts [3, 1], median 2 -> weights 2/3 and 2; np.gradient along x:
  // x0 (one-sided) 0-0, x1 0-0 (its neighbours), x2 1-0, x3 (one-sided) 1-0 -> edges at x2, x3
  assertEquals(
    Array.from(classWeightMap([0, 0, 0, 1], [1, 1, 4]), (v) => +v.toFixed(5)),
    [2 / 3, 2 / 3, 2 / 3 + 5, 2 + 5].map((v) => +v.toFixed(5)),
  );
  // a label absent below the largest counts 0: counts [2, 0, 4], median 2 -> 1 and 0.5 (along z:
  // edges at z1 and z2, whose neighbours differ)
  assertEquals(Array.from(classWeightMap([0, 0, 2, 2, 2, 2], [6, 1, 1])), [1, 6, 5.5, 0.5, 0.5, 0.5]);
  // the cap: counts [20, 1], median 10.5 -> class 1 weighs 5, not 10.5
  const capped = classWeightMap([...new Array(20).fill(0), 1], [1, 1, 21]);
  assertAlmostEquals(capped[20], 5 + 5, 1e-6);
  assertAlmostEquals(capped[0], 10.5 / 20, 1e-6);
  // 2x2x2 with one voxel of class 1 at (z, y, x) = (1, 1, 1): counts [7, 1], median 4; every axis
  // has length 2, so both voxels of a line through it are edges
  const cube = classWeightMap([0, 0, 0, 0, 0, 0, 0, 1], [2, 2, 2]);
  const bg = 4 / 7;
  assertEquals(
    Array.from(cube, (v) => +v.toFixed(5)),
    [bg, bg, bg, bg + 5, bg, bg + 5, bg + 5, 4 + 5].map((v) => +v.toFixed(5)),
  );
  assertThrows(() => classWeightMap([0, 1], [1, 1, 3]), RangeError, "2 labels for a 1x1x3 grid");
  assertThrows(() => classWeightMap([0, -1], [1, 1, 2]), RangeError, "not a class index");
});

Deno.test("KKN kernel option: every extractor and guide conv takes it (paper 7), transitions keep k4", () => {
  const sizes = (kernel: number) => {
    const kkn = new KnowledgeKeeper({ ...DEFAULT_KEEPER, nf: 4, levels: 3, kernel }, 2);
    const k = new Map<string, number>();
    for (const [name, v] of kkn.namedParameters()) {
      if (name.endsWith("weight") && v.shape.length === 5) k.set(name, v.shape[0]);
    }
    // output shapes do not depend on the kernel
    const out = kkn.apply(randn([1, 8, 8, 8, 1], 3) as tf.Tensor5D);
    assertEquals(out.map((f) => f.shape), [[1, 8, 8, 8, 4], [1, 4, 4, 4, 8], [1, 2, 2, 2, 16]]);
    return k;
  };
  assertEquals(DEFAULT_KEEPER.kernel, 7);
  for (const kernel of [7, 3]) {
    for (const [name, k] of sizes(kernel)) {
      const want = name.includes("transition") ? 4 : /project|attention/.test(name) ? 1 : kernel;
      assertEquals(k, want, name);
    }
  }
});

Deno.test("KKN growth option: dense levels widen by 3 growth channels, transitions carry the growth", () => {
  const channels = (growth: number | null) => {
    const kkn = new KnowledgeKeeper({ ...DEFAULT_KEEPER, nf: 8, levels: 3, kernel: 3, growth }, 2);
    const x = randn([1, 8, 8, 8, 1], 3) as tf.Tensor5D;
    const dense = kkn.extract(x);
    const out = dense.map((f) => f.shape[4]);
    // 7T-like outputs keep the teacher's widths whatever the growth
    const like = kkn.apply(x);
    assertEquals(like.map((f) => f.shape[4]), [8, 16, 32]);
    tf.dispose([x, ...dense, ...like]);
    return out;
  };
  // the authors' nf / 4 = 2: level 1 = 1 + 3 * 2; level k > 1 = g_{k-1} + 3 g_k
  assertEquals(channels(null), [7, 2 + 12, 4 + 24]);
  assertEquals(channels(4), [13, 4 + 24, 8 + 48]);
  let err: unknown;
  try {
    channels(0);
  } catch (e) {
    err = e;
  }
  assert(err instanceof RangeError && err.message.includes("keeper.growth"), String(err));
});

Deno.test("teacher skip noise: absolute sigma (paper) or sigma times each channel's spread", () => {
  // uniform values in [-50, 50] and [-0.5, 0.5] (SD 50 / sqrt 3, 0.5 / sqrt 3); the noise added is
  // what noised - clean leaves
  const f = tf.tidy(() => tf.mul(randn([1, 16, 16, 16, 2], 21), tf.tensor1d([50, 0.5]))) as tf.Tensor5D;
  const spread = (scale: "absolute" | "channel-sd") => {
    const t = new Teacher({ ...DEFAULT_TEACHER, nf: 2, levels: 1, noiseSigma: 0.2, noiseScale: scale }, 1);
    return tf.tidy(() => {
      const [noised] = t.addSkipNoise([f], 7);
      return Array.from(tf.sqrt(tf.moments(tf.sub(noised, f), [0, 1, 2, 3]).variance).dataSync());
    });
  };
  assertEquals(DEFAULT_TEACHER.noiseScale, "absolute");
  const [a0, a1] = spread("absolute");
  assertAlmostEquals(a0, 0.2, 0.01);
  assertAlmostEquals(a1, 0.2, 0.01);
  const [r0, r1] = spread("channel-sd");
  assertAlmostEquals(r0, 0.2 * 50 / Math.sqrt(3), 0.3);
  assertAlmostEquals(r1, 0.2 * 0.5 / Math.sqrt(3), 0.003);
  f.dispose();
});

Deno.test("training steps leak no tensors (teacher and knowledge keeper)", () => {
  const teacher = new Teacher({ ...DEFAULT_TEACHER, nf: 4, levels: 3 }, 1);
  const kkn = new KnowledgeKeeper(
    { ...DEFAULT_KEEPER, nf: 4, levels: 3 },
    2,
  );
  const opt = adam(2e-4), optK = adam(2e-4);
  const y = randn([1, 8, 8, 8, 1], 13) as tf.Tensor5D, x = randn([1, 8, 8, 8, 1], 14) as tf.Tensor5D;
  const step = (i: number) => {
    tf.dispose(opt.minimize(() => teacher.loss(y, i).total, true, teacher.parameters())!);
    tf.dispose(
      optK.minimize(
        () => {
          const target = teacher.encoder.apply(y);
          return distillationLoss(target, kkn.apply(x), "paper");
        },
        true,
        kkn.parameters(),
      )!,
    );
  };
  step(0); // optimizers create their moments on the first step
  const before = tf.memory().numTensors;
  for (let i = 1; i < 4; i++) step(i);
  assertEquals(tf.memory().numTensors, before);
});

Deno.test("resuming from the last checkpoint gives the uninterrupted result", async () => {
  const dir = await Deno.makeTempDir();
  const y = randn([1, 8, 8, 8, 1], 15) as tf.Tensor5D;
  const run = async (name: string, epochs: number) => {
    const teacher = new Teacher({ ...DEFAULT_TEACHER, nf: 2, levels: 3 }, 7);
    const opt = adam(2e-4);
    await trainLoop({
      label: name,
      checkpoint: join(dir, name),
      epochs,
      items: [0, 1],
      module: teacher,
      optimizers: { teacher: opt },
      progress: false,
      step: (_s, epoch, i) => {
        tf.dispose(opt.minimize(() => teacher.loss(y, epoch * 10 + i).total, true, teacher.parameters())!);
        return Promise.resolve({});
      },
      validate: () => Promise.resolve({ psnr: 0, ssim: 0 }),
      better: () => true,
      log: () => Promise.resolve(),
    });
    return teacher.parameters().map((p) => Array.from(p.dataSync()));
  };
  const full = await run("full", 3);
  await run("split", 1); // "interrupted" after one epoch
  const resumed = await run("split", 3);
  // equal up to float32 rounding: tfjs restores Adam's bias-correction power as beta^(t+1) in one
  // pow() instead of t repeated products (differences of a few ulp)
  let worst = 0;
  full.forEach((p, i) =>
    p.forEach((v, j) => (worst = Math.max(worst, Math.abs(v - resumed[i][j]) / Math.max(1e-3, Math.abs(v)))))
  );
  assert(worst < 1e-5, `resumed parameters differ by ${worst} (relative)`);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("end to end on the quick profile: all phases, artifacts, falling losses", async () => {
  const out = await Deno.makeTempDir();
  const runDir = await runTraining({
    profile: "quick",
    seed: 0,
    out,
    name: "e2e",
    phase: "all",
    epochs: 4,
    progress: false,
  });
  for (
    const f of [
      "config.json",
      "metrics.json",
      "metrics.csv",
      "log.jsonl",
      "checkpoints/teacher-fold1-best.json",
      "checkpoints/guided-best.json",
    ]
  ) {
    assert(existsSync(join(runDir, f)), `missing ${f}`);
  }
  // every checkpoint index names its data file, which is there
  const guidedIndex = JSON.parse(await Deno.readTextFile(join(runDir, "checkpoints", "guided-best.json")));
  assert(existsSync(join(runDir, "checkpoints", guidedIndex.data)), `missing ${guidedIndex.data}`);
  const metrics = JSON.parse(await Deno.readTextFile(join(runDir, "metrics.json")));
  assertEquals(metrics.folds.length, 1);
  assertEquals(metrics.folds[0].featureDistance.length, 5);
  assertEquals(metrics.fusion.subjects[0].baseline.length, 4);
  const lines = (await Deno.readTextFile(join(runDir, "log.jsonl"))).trim().split("\n").map((l) =>
    JSON.parse(l)
  );
  const log = lines.filter((l) => l.train); // one line per round
  // one convergence verdict per phase (the quick profile reports them, it does not enforce them)
  const verdicts = lines.filter((l) => l.convergence).map((l) => l.phase);
  assertEquals(verdicts.length, 6, `${verdicts}`); // teacher, KKN, baseline, control, guided, brain mask
  for (const phase of ["teacher fold 1", "keeper fold 1", "baseline 3D U-Net"]) {
    const losses = log.filter((l) => l.phase === phase).map((l) => l.train.loss);
    assertEquals(losses.length, 4, phase);
    assert(losses[3] < losses[0], `${phase}: loss did not fall (${losses})`);
  }
  // the real training steps of every phase leak no tensors (optimizer state appears in epoch 1)
  for (const phase of new Set(log.map((l) => l.phase))) {
    const counts = log.filter((l) => l.phase === phase).map((l) => l.tensors).slice(1);
    assertEquals(new Set(counts).size, 1, `${phase}: tensor count changes across epochs (${counts})`);
  }
  const csv = await Deno.readTextFile(join(runDir, "metrics.csv"));
  assert(csv.startsWith("phase,task,network,variant,fold,subject,metric,unit,value\n"));
  const csvRows = csv.trim().split("\n").slice(1).map((l) => l.split(","));
  assert(
    csvRows.every((r) => r.length === 9 && Number.isFinite(Number(r[8]))),
    "every row: 9 fields, a number",
  );
  assertEquals(
    new Set(csvRows.filter((r) => r[0] === "segmentation").map((r) => r[3])),
    new Set(["baseline", "control", "afm"]),
  );
  // inference on a new scan: labels on the input's own grid and affine
  const input = "data/generated/quick/tissue/sub-03_1.5T.nii.gz";
  const output = join(out, "labels.nii.gz");
  await segmentFile(input, output, runDir);
  const [a, b] = [await readNifti(input), await readNifti(output)];
  assertEquals(b.shape, a.shape);
  assertEquals(b.affine, a.affine);
  const labels = new Set(Array.from(b.data));
  assert([...labels].every((l) => l >= 0 && l <= 3) && labels.size > 1, `labels ${[...labels]}`);
  // outputs are checked before anything runs: never the input, never an existing file unless forced
  const refused = async (o: string, opts: { force?: boolean }, text: string) => {
    const err = await assertRejects(() => segmentFile(input, o, runDir, undefined, opts), UsageError);
    assert(err.message.includes(text), err.message);
  };
  await refused(input, { force: true }, "is the input image");
  await refused(output, {}, "exists; pass --force");
  await refused(join(out, "nowhere", "l.nii.gz"), {}, "does not exist");
  await refused(join(out, "labels.png"), {}, "must end in .nii or .nii.gz");
  // an input with NaN voxels (as SPM writes outside the brain): read as 0, with a warning
  const withNan = await readNifti(input);
  const nanData = Float32Array.from(withNan.data, (v) => (v === 0 ? Number.NaN : v));
  const nanInput = join(out, "nan.nii.gz");
  await writeNifti(nanInput, makeVolume(nanData, withNan.shape, withNan.affine));
  await segmentFile(nanInput, output, runDir, undefined, { force: true });
  assertEquals(Array.from((await readNifti(output)).data), Array.from(b.data));
  // inputs the model grid cannot hold, named before inference: an empty image, a spacing that
  // leaves a few voxels, a header whose voxel size makes the grid enormous, a damaged run folder
  const bad = async (name: string, vol: Volume, spacing: number | undefined, text: string) => {
    const p = join(out, name);
    await writeNifti(p, vol);
    const err = await assertRejects(() => segmentFile(p, join(out, "never.nii.gz"), runDir, spacing));
    assert(err.message.startsWith(p) && err.message.includes(text), err.message);
  };
  const blank = makeVolume(new Float32Array(a.data.length), a.shape, a.affine);
  await bad("blank.nii.gz", blank, undefined, "has no voxel above 0");
  await bad("wide.nii.gz", a as Volume, 1e6, "fewer than 8 voxels across at --spacing 1000000");
  const huge = makeVolume(
    Float32Array.from(a.data),
    a.shape,
    a.affine.map((r, i) => r.map((v, j) => (i < 3 && j < 3 ? v * 1e5 : v))),
  );
  await bad("huge.nii.gz", huge, undefined, "more than the");
  assert(!existsSync(join(out, "never.nii.gz")));
  const damaged = join(out, "damaged-run");
  await Deno.mkdir(join(damaged, "checkpoints"), { recursive: true });
  for (const f of ["keeper-fold1-best.json", "guided-best.json"]) {
    await Deno.writeTextFile(join(damaged, "checkpoints", f), "{}");
  }
  await Deno.writeTextFile(join(damaged, "config.json"), '{"fusion": {"netw');
  const torn = await assertRejects(() => segmentFile(input, join(out, "never.nii.gz"), damaged));
  assert(
    torn.message.startsWith(join(damaged, "config.json")) && torn.message.includes("not valid JSON"),
    torn.message,
  );
  // the other registered networks through the same pipeline: each baseline trains, its spec is in
  // the checkpoint, its phase is labelled with its name
  for (const [network, label] of [["voxresnet", "VoxResNet"], ["usegnet", "U-SegNet"], ["rpnet", "RP-Net"]]) {
    const cfgPath = join(out, `${network}.json`);
    await Deno.writeTextFile(cfgPath, JSON.stringify({ fusion: { network } }));
    const dir = await runTraining({
      profile: "quick",
      seed: 0,
      out,
      name: network,
      phase: "baseline",
      epochs: 2,
      progress: false,
      config: cfgPath,
    });
    const m = JSON.parse(await Deno.readTextFile(join(dir, "metrics.json")));
    assertEquals(m.baseline.classes.length, 4);
    const meta = JSON.parse(await Deno.readTextFile(join(dir, "checkpoints", "baseline-best.json"))).meta;
    assertEquals(meta.spec.network, network);
    const log = (await Deno.readTextFile(join(dir, "log.jsonl"))).trim().split("\n").map((l) =>
      JSON.parse(l)
    );
    assert(log.some((l) => l.phase === `baseline ${label}` && l.train), `${label} phase label`);
  }
  // Table 2 from the run's KKN: the 3D U-Net taken from the run, RP-Net trained on it
  const tableDir = join(out, "table2");
  const t2runs = await runTable2({
    from: runDir,
    networks: "unet3d,rpnet",
    name: "t2",
    out: tableDir,
    runs: out,
    progress: false,
  });
  assertEquals(t2runs, [runDir, join(out, "t2-rpnet")]);
  const t2 = await Deno.readTextFile(join(tableDir, "table2.md"));
  assert(t2.includes("| 3D U-Net |") && t2.includes("| RP-Net |") && t2.includes("paper average"), t2);
  // the random-KKN control: the guided network trains on an untrained KKN, saved and named in its
  // checkpoint, so the figures and `deno task segment` load the same one
  const rk = join(out, "rk");
  await Deno.mkdir(join(rk, "checkpoints"), { recursive: true });
  for (const ck of ["teacher-fold1-best", "keeper-fold1-best"]) {
    await copyCheckpoint(join(runDir, "checkpoints", ck), join(rk, "checkpoints", ck));
  }
  const rkConfig = join(out, "rk.json");
  await Deno.writeTextFile(rkConfig, JSON.stringify({ fusion: { keeper: "random" } }));
  await runTraining({
    profile: "quick",
    seed: 0,
    out,
    name: "rk",
    phase: "fusion",
    epochs: 2,
    progress: false,
    config: rkConfig,
  });
  const rkMeta = JSON.parse(await Deno.readTextFile(join(rk, "checkpoints", "guided-best.json"))).meta;
  assertEquals(rkMeta.keeperCheckpoint, "keeper-random");
  assert(existsSync(join(rk, "checkpoints", "keeper-random.json")));
  await segmentFile(input, join(out, "rk-labels.nii.gz"), rk);
  // Tables 1, 5, 4 and B.1 as plans of runs from the run: every row measured (or marked pending),
  // the AFM-ablation rows fine-tune the host baseline they copied, results.csv long format
  const tablesDir = join(out, "tables");
  // Table 1 (c) reads a whole-brain run's 2D KKNs (trained on the same paired cohort's fold 1)
  await runTraining({ profile: "quick", seed: 0, out, name: "wb", phase: "wholebrain", progress: false });
  const specs = await runTables({
    from: runDir,
    wholebrain: join(out, "wb"),
    tables: "1,5,4,B1",
    host: "unet3d",
    name: "tb",
    out: tablesDir,
    runs: out,
    progress: false,
  });
  assertEquals(specs.map((t) => t.id), ["table1", "table5", "table4", "tableB1"]);
  for (const id of ["table1", "table5", "table4", "tableB1"]) {
    const md = await Deno.readTextFile(join(tablesDir, `${id}.md`));
    assert(md.includes("paper average") && md.includes("p (Wilcoxon)") && md.includes("Protocol:"), md);
  }
  const t1 = specs[0];
  assertEquals(t1.rows.filter((r) => r.pending).map((r) => r.key), ["a", "e"]);
  assertEquals(t1.rows.find((r) => r.key === "b")!.subjects.length, 1);
  const rowC = t1.rows.find((r) => r.key === "c")!;
  assertEquals(rowC.subjects.map((s) => s.id), t1.rows.find((r) => r.key === "b")!.subjects.map((s) => s.id));
  assert(rowC.subjects.every((s) => s.dice.length === 4 && s.dice.every((d) => d >= 0 && d <= 1)));
  // row (d): the decoder on the frozen KKN, scored on Table 1's test subjects; its checkpoint
  // holds only decoder weights (the KKN stays frozen and separate)
  const rowD = t1.rows.find((r) => r.key === "d")!;
  assertEquals(rowD.subjects.map((s) => s.id), t1.rows.find((r) => r.key === "b")!.subjects.map((s) => s.id));
  assert(rowD.subjects.every((s) => s.dice.length === 4 && s.dice.every((d) => d >= 0 && d <= 1)));
  const decMeta = JSON.parse(
    await Deno.readTextFile(join(out, "tb-decoder", "checkpoints", "decoder-fold1-best.json")),
  );
  assertEquals(decMeta.meta.keeperCheckpoint, "keeper-fold1-best");
  const decNames = (decMeta.index as { name: string }[]).map((e) => e.name);
  assert(
    decNames.includes("head.weight") && !decNames.some((n) => n.startsWith("keeper.") || n.startsWith("enc")),
  );
  const decCsv = await Deno.readTextFile(join(out, "tb-decoder", "metrics.csv"));
  assert(decCsv.includes("kkn+unet-decoder") && decCsv.includes("unet3d,paired 3T"), decCsv);
  assertEquals(t1.rows.find((r) => r.key === "3T network")!.subjects.length, rowD.subjects.length);
  // the ablated guided models start from the host's baseline: identical baseline weights
  const hostBase = JSON.parse(
    await Deno.readTextFile(join(out, "tb-host", "checkpoints", "baseline-best.json")),
  );
  const armBase = JSON.parse(
    await Deno.readTextFile(join(out, "tb-afm-a", "checkpoints", "baseline-best.json")),
  );
  assert(typeof hostBase.sha256 === "string");
  assertEquals(armBase.sha256, hostBase.sha256);
  const afmMeta =
    JSON.parse(await Deno.readTextFile(join(out, "tb-afm-a", "checkpoints", "guided-best.json"))).meta;
  assertEquals(afmMeta.afm.aggregation, false);
  const kknCfg = JSON.parse(await Deno.readTextFile(join(out, "tb-kkn-a", "config.json")));
  assertEquals(kknCfg.keeper.guideBlocks, false);
  const results = (await Deno.readTextFile(join(tablesDir, "results.csv"))).trim().split("\n");
  // one line per subject, class and row of every table (+ synthesis scores of Table 4) + header
  assert(results.length > 1 && results[0].includes("measure"), results[0]);
  // figures regenerated from the run: no blank image, no plot without data
  if (chromiumPath()) {
    const figDir = join(out, "figures");
    const files = await writeFigures(runDir, figDir);
    for (const f of files.filter((n) => n.endsWith(".png"))) {
      assert(!isBlank(await decodePng(await Deno.readFile(join(figDir, f)))), `${f} is blank`);
    }
    for (const f of files.filter((n) => n.endsWith(".json"))) {
      assert(pointCount(JSON.parse(await Deno.readTextFile(join(figDir, f)))) > 0, `${f}: plot without data`);
    }
    assert(
      files.includes("feature-distances.md") && files.includes("dice.csv") && files.includes("README.md"),
    );
  }
  await Deno.remove(out, { recursive: true });
});

Deno.test("a non-finite loss stops the phase with DivergenceError, keeping the finished round", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const teacher = new Teacher({ ...DEFAULT_TEACHER, nf: 2, levels: 2 }, 3);
    const losses = [0.5, 0.4, Number.NaN];
    let calls = 0;
    const err = await assertRejects(
      () =>
        trainLoop({
          label: "teacher fold 9",
          checkpoint: join(dir, "t"),
          epochs: 2,
          items: [0, 1],
          module: teacher,
          optimizers: {},
          progress: false,
          step: () => Promise.resolve({ image: losses[calls++] }),
          validate: () => Promise.resolve({ psnr: 1 }),
          better: () => true,
          log: () => Promise.resolve(),
        }),
      DivergenceError,
    );
    assert(err.message.includes('loss "image" is NaN at step 3 (round 2)'), err.message);
    assert(existsSync(join(dir, "t-last.json")), "the first round's checkpoint is kept");
    const meta = JSON.parse(await Deno.readTextFile(join(dir, "t-last.json"))).meta;
    assertEquals(meta.epoch, 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("weights that overflow after a finite loss stop the phase before validation or any checkpoint", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const teacher = new Teacher({ ...DEFAULT_TEACHER, nf: 2, levels: 2 }, 3);
    let validated = 0;
    const err = await assertRejects(
      () =>
        trainLoop({
          label: "baseline 3D U-Net",
          checkpoint: join(dir, "b"),
          epochs: 3,
          items: [0],
          module: teacher,
          optimizers: {},
          progress: false,
          // the loss is finite, but in round 2 the step leaves one weight infinite (an lr of 1e39)
          step: (_item, epoch) => {
            if (epoch === 1) {
              const [, v] = teacher.namedParameters()[2];
              v.assign(tf.mul(v, Infinity));
            }
            return Promise.resolve({ loss: 0.5 });
          },
          validate: () => Promise.resolve({ dice: 0.1 * ++validated }),
          better: () => true,
          log: () => Promise.resolve(),
        }),
      DivergenceError,
    );
    const name = teacher.namedParameters()[2][0];
    assert(
      err.message.includes(`baseline 3D U-Net: parameter "${name}" is not finite after round 2`),
      err.message,
    );
    assertEquals(validated, 1, "the broken weights are never validated");
    for (const f of ["b-best.json", "b-last.json"]) {
      const meta = JSON.parse(await Deno.readTextFile(join(dir, f))).meta;
      assertEquals(meta.epoch, 0, `${f} keeps the finished first round`);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a non-finite validation score stops the phase and never becomes a checkpoint", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const teacher = new Teacher({ ...DEFAULT_TEACHER, nf: 2, levels: 2 }, 3);
    const scores = [20, Number.NaN];
    let round = 0;
    const err = await assertRejects(
      () =>
        trainLoop({
          label: "keeper fold 2",
          checkpoint: join(dir, "k"),
          epochs: 3,
          items: [0, 1],
          module: teacher,
          optimizers: {},
          progress: false,
          step: () => Promise.resolve({ loss: 0.1 }),
          validate: () => Promise.resolve({ psnr: scores[round++], ssim: 0.5 }),
          better: () => true,
          log: () => Promise.resolve(),
        }),
      DivergenceError,
    );
    assert(err.message.includes("keeper fold 2: validation psnr is NaN after round 2 (step 4)"), err.message);
    for (const f of ["k-best.json", "k-last.json"]) {
      const meta = JSON.parse(await Deno.readTextFile(join(dir, f))).meta;
      assertEquals(meta.epoch, 0, `${f} keeps the finished first round`);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
