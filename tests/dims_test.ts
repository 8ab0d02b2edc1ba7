/**
 * Blocks written once for 2D and 3D: a `dims: 2` network works on slices stored as
 * [batch, 1, H, W, C] with every kernel, stride and pooling window flat along depth, which must be
 * exactly the 2D operation on each slice (checked against tf.conv2d / tf.maxPool), must keep the
 * slices of a batch independent, and must carry gradients to every parameter.
 */
import * as tf from "@tensorflow/tfjs-core";
import { assert, assertEquals } from "@std/assert";
import { initBackend, mulberry32 } from "../lib/mod.ts";
import { ConvBlock, kernelOf, pool } from "../lib/models/blocks.ts";
import { DEFAULT_TEACHER, Teacher } from "../lib/models/teacher.ts";
import { DEFAULT_KEEPER, KnowledgeKeeper, PatchDiscriminator } from "../lib/models/keeper.ts";
import { AFM, FULL_AFM } from "../lib/models/fusion.ts";
import { Conv, Init, type Module } from "../lib/nn/module.ts";
import { instanceNorm, leakyRelu } from "../lib/nn/ops.ts";

await initBackend("cpu", { quiet: true });

function randn(shape: number[], seed: number): tf.Tensor {
  const r = mulberry32(seed);
  return tf.tensor(Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => r() * 2 - 1), shape);
}

function maxAbsDiff(a: tf.Tensor, b: tf.Tensor): number {
  return tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]);
}

/**
 * Every parameter of `m` gets a non-zero gradient from `loss`, once the parameters are moved off
 * their initial values (PRM's position term starts with weight 0, so its theta has no gradient at
 * initialisation, and a squeeze-excitation branch of few units can start with every ReLU dead).
 */
function assertGradientsReachEvery(m: Module, loss: () => tf.Scalar, label: string) {
  const named = m.namedParameters();
  named.forEach(([, v], i) =>
    v.assign(tf.tidy(() =>
      // weights perturbed; biases and scalars moved positive so that no ReLU starts dead
      v.rank > 1 ? tf.add(v, tf.mul(0.3, randn(v.shape, 100 + i))) : tf.add(tf.abs(v), 0.5)
    ))
  );
  const { grads } = tf.variableGrads(loss, named.map(([, v]) => v));
  for (const [name, v] of named) {
    const g = grads[v.name];
    assert(g, `${label}: no gradient for ${name}`);
    assert(tf.tidy(() => tf.max(tf.abs(g)).dataSync()[0]) > 0, `${label}: zero gradient for ${name}`);
  }
  tf.dispose(Object.values(grads));
}

Deno.test("2D blocks: a 1 x k x k conv, stride and pooling on [B, 1, H, W, C] equal tf.conv2d and tf.maxPool per slice", () => {
  const x = randn([3, 1, 10, 12, 2], 1) as tf.Tensor5D;
  const x2 = tf.reshape(x, [3, 10, 12, 2]) as tf.Tensor4D;
  // conv k3 (same) and k4 stride 2 (same) as 2D convolutions with the same weights
  for (const [k, stride] of [[3, 1], [4, 2]]) {
    const block = new ConvBlock(new Init(5), 2, 4, { dims: 2, k, stride });
    assertEquals(block.conv.weight.shape, [1, k, k, 2, 4]);
    const w2 = tf.reshape(block.conv.weight, [k, k, 2, 4]) as tf.Tensor4D;
    const want = leakyRelu(instanceNorm(tf.conv2d(x2, w2, stride, "same")));
    const got = block.apply(x);
    assertEquals(got.shape, [3, 1, ...want.shape.slice(1, 3), 4]);
    assert(maxAbsDiff(tf.reshape(got, want.shape), want) < 1e-5, `ConvBlock k${k} s${stride}`);
  }
  const p = pool(x, 2);
  assertEquals(p.shape, [3, 1, 5, 6, 2]);
  assert(maxAbsDiff(tf.reshape(p, [3, 5, 6, 2]), tf.maxPool(x2, 2, 2, "valid")) === 0);
  // 3D is unchanged: a k3 block has a 3x3x3 kernel
  assertEquals(new ConvBlock(new Init(5), 2, 4).conv.weight.shape, [3, 3, 3, 2, 4]);
  assertEquals(kernelOf(7, 2), [1, 7, 7]);
  assertEquals(kernelOf(7, 3), 7);
});

Deno.test("2D teacher, KKN, discriminator and AFM: slice-shaped outputs, slices independent, gradients to every parameter", () => {
  const cfg = { ...DEFAULT_TEACHER, nf: 4, levels: 3, dims: 2 as const };
  const teacher = new Teacher(cfg, 2);
  const keeper = new KnowledgeKeeper({ ...DEFAULT_KEEPER, nf: 4, levels: 3, dims: 2 }, 3);
  const x = tf.abs(randn([2, 1, 16, 16, 1], 4)) as tf.Tensor5D;

  const ft = teacher.encoder.apply(x);
  const fk = keeper.apply(x);
  assertEquals(ft.map((f) => f.shape), [[2, 1, 16, 16, 4], [2, 1, 8, 8, 8], [2, 1, 4, 4, 16]]);
  assertEquals(fk.map((f) => f.shape), ft.map((f) => f.shape));
  assertEquals(teacher.reconstruct(x).shape, [2, 1, 16, 16, 1]);
  // every kernel of the 2D networks is flat along depth
  for (const m of [teacher, keeper]) {
    for (const [name, v] of m.namedParameters()) {
      if (v.rank === 5) assertEquals(v.shape[0], 1, `${name} ${v.shape}`);
    }
  }

  // a slice's result does not depend on the other slices of the batch
  const first = tf.slice(x, [0, 0, 0, 0, 0], [1, -1, -1, -1, -1]) as tf.Tensor5D;
  assert(
    maxAbsDiff(
      tf.slice(teacher.reconstruct(x), [0, 0, 0, 0, 0], [1, -1, -1, -1, -1]),
      teacher.reconstruct(first),
    ) < 1e-5,
  );
  const fk1 = keeper.apply(first);
  fk.forEach((f, i) =>
    assert(maxAbsDiff(tf.slice(f, [0, 0, 0, 0, 0], [1, -1, -1, -1, -1]), fk1[i]) < 1e-5, `KKN level ${i + 1}`)
  );

  const disc = new PatchDiscriminator(4, 6, 2);
  const d = disc.apply(tf.abs(randn([1, 1, 64, 64, 1], 7)) as tf.Tensor5D);
  assertEquals(d.shape, [1, 1, 3, 3, 1]);

  const afm = new AFM(new Init(8), keeper.widths, 8, "none", FULL_AFM, 1, 2);
  const fs = randn([2, 1, 8, 8, 8], 9) as tf.Tensor5D;
  assertEquals(afm.apply(fk, fs).shape, [2, 1, 8, 8, 8]);

  assertGradientsReachEvery(teacher, () => teacher.loss(x, 11).total, "2D teacher");
  assertGradientsReachEvery(
    keeper,
    () => tf.mean(tf.addN(keeper.apply(x).map((f) => tf.mean(tf.square(f))))) as tf.Scalar,
    "2D KKN",
  );
  assertGradientsReachEvery(
    afm,
    () => tf.mean(tf.square(afm.apply(fk.map((f) => tf.keep(f)), fs))) as tf.Scalar,
    "2D AFM",
  );
  assertGradientsReachEvery(
    disc,
    () => tf.mean(tf.square(disc.apply(tf.abs(randn([1, 1, 64, 64, 1], 7)) as tf.Tensor5D))) as tf.Scalar,
    "2D discriminator",
  );
  const conv = new Conv(new Init(1), 3, 1, 1, kernelOf(3, 2));
  assertEquals(conv.weight.shape, [1, 3, 3, 1, 1]);
});
