/**
 * The native (oneDNN) and layout-aware kernels against the pure-JavaScript tfjs kernels on
 * random shapes: strides, padding, odd sizes, channel counts. Relative tolerance 1e-4 of the
 * largest magnitude. Skipped, saying why, where Debian's libdnnl2 is not installed.
 */
import * as tf from "@tensorflow/tfjs-core";
import { assert, assertEquals } from "@std/assert";
import { adam, Conv, Init } from "../lib/nn/module.ts";
import { segmentationLoss } from "../lib/losses.ts";
import {
  batchNorm,
  gradCheck,
  initBackend,
  instanceNorm,
  instanceNormLeakyRelu,
  leakyRelu,
  maximum,
  maxPoolWithMask,
  maxUnpool,
  mulberry32,
  resizeLinear,
  upsampleNearest2x,
} from "../lib/mod.ts";
import {
  broadcastBlock,
  fastConvBias,
  fastPrelu,
  fastWceDice,
  nativeImplementations,
  nativeKernelsActive,
  nativeKernelStats,
  setNativeKernels,
} from "../lib/native/kernels.ts";

await initBackend("cpu", { quiet: true });
const ACTIVE = nativeKernelsActive();
if (!ACTIVE) console.warn("native kernels inactive (libdnnl2 missing?): native-vs-JS comparisons skipped");
const TOL = 1e-4;

function randn(shape: number[], seed: number): tf.Tensor {
  const r = mulberry32(seed);
  return tf.tensor(Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => r() * 2 - 1), shape);
}

/** Runs `f` with the JS kernels and with the native ones; asserts agreement and native use. */
function compare(name: string, f: () => tf.Tensor[], kernel: string): void {
  setNativeKernels(false);
  const js = tf.tidy(f).map((t) => {
    const v = t.dataSync().slice();
    t.dispose();
    return v;
  });
  const before = nativeKernelStats.get(kernel)?.native ?? 0;
  setNativeKernels(true);
  const nat = tf.tidy(f).map((t) => {
    const v = t.dataSync().slice();
    t.dispose();
    return v;
  });
  assert((nativeKernelStats.get(kernel)?.native ?? 0) > before, `${name}: ${kernel} did not run natively`);
  js.forEach((a, i) => {
    const b = nat[i];
    assertEquals(a.length, b.length, `${name}: output ${i} size`);
    let scale = 0, err = 0;
    for (let k = 0; k < a.length; k++) {
      scale = Math.max(scale, Math.abs(a[k]));
      err = Math.max(err, Math.abs(a[k] - b[k]));
    }
    assert(scale > 0, `${name}: output ${i} is all zeros`);
    assert(err <= TOL * scale, `${name}: output ${i} differs by ${err} (scale ${scale})`);
  });
}

const CONV3D_CASES: {
  x: number[];
  w: number[];
  s: number | [number, number, number];
  pad: "same" | "valid";
}[] = [
  { x: [1, 9, 10, 11, 3], w: [3, 3, 3, 3, 5], s: 1, pad: "same" },
  { x: [2, 7, 6, 5, 4], w: [3, 3, 3, 4, 6], s: [2, 1, 2], pad: "same" },
  { x: [1, 8, 8, 8, 2], w: [4, 4, 4, 2, 3], s: 2, pad: "same" },
  { x: [1, 9, 7, 8, 5], w: [2, 3, 1, 5, 7], s: 1, pad: "valid" },
  { x: [1, 11, 9, 10, 1], w: [7, 7, 7, 1, 4], s: 1, pad: "same" },
  { x: [1, 6, 6, 6, 16], w: [1, 1, 1, 16, 2], s: 1, pad: "valid" },
];

Deno.test({
  name: "conv3d forward and both gradients: oneDNN matches the JS kernels",
  ignore: !ACTIVE,
  fn() {
    CONV3D_CASES.forEach(({ x, w, s, pad }, i) => {
      const xt = randn(x, 10 + i), wt = randn(w, 20 + i);
      const f = (a: tf.Tensor, b: tf.Tensor) => tf.conv3d(a as tf.Tensor5D, b as tf.Tensor5D, s, pad);
      const name = `conv3d x[${x}] w[${w}] s${s} ${pad}`;
      compare(
        name,
        () => [f(xt, wt), ...tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.sum(tf.square(f(a, b))))([xt, wt])],
        "Conv3D",
      );
      compare(
        name + " (grads)",
        () => tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.sum(tf.square(f(a, b))))([xt, wt]),
        "Conv3DBackpropFilterV2",
      );
      tf.dispose([xt, wt]);
    });
  },
});

Deno.test({
  name: "conv2d forward and both gradients: oneDNN matches the JS kernels",
  ignore: !ACTIVE,
  fn() {
    const cases: { x: number[]; w: number[]; s: number | [number, number]; pad: "same" | "valid" }[] = [
      { x: [2, 13, 11, 3], w: [3, 3, 3, 8], s: 1, pad: "same" },
      { x: [1, 16, 15, 4], w: [5, 5, 4, 6], s: 2, pad: "same" },
      { x: [3, 9, 10, 2], w: [2, 4, 2, 5], s: [1, 2], pad: "valid" },
    ];
    cases.forEach(({ x, w, s, pad }, i) => {
      const xt = randn(x, 30 + i), wt = randn(w, 40 + i);
      const f = (a: tf.Tensor, b: tf.Tensor) => tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, s, pad);
      const loss = (a: tf.Tensor, b: tf.Tensor) => tf.sum(tf.square(f(a, b)));
      compare(
        `conv2d x[${x}] w[${w}]`,
        () => [f(xt, wt), ...tf.grads(loss)([xt, wt])],
        "Conv2DBackpropInput",
      );
      tf.dispose([xt, wt]);
    });
  },
});

Deno.test({
  name: "max pooling 2D/3D forward and gradient: oneDNN matches the JS kernels",
  ignore: !ACTIVE,
  fn() {
    const x3 = randn([1, 9, 8, 7, 3], 50), x2 = randn([2, 9, 8, 5], 51);
    const p3 = (a: tf.Tensor) => tf.maxPool3d(a as tf.Tensor5D, 2, 2, "same");
    const p2 = (a: tf.Tensor) => tf.maxPool(a as tf.Tensor4D, 3, 2, "valid");
    compare(
      "maxPool3d",
      () => [p3(x3), tf.grad((a: tf.Tensor) => tf.sum(tf.square(p3(a))))(x3)],
      "MaxPool3DGrad",
    );
    compare(
      "maxPool",
      () => [p2(x2), tf.grad((a: tf.Tensor) => tf.sum(tf.square(p2(a))))(x2)],
      "MaxPoolGrad",
    );
    tf.dispose([x3, x2]);
  },
});

Deno.test({
  name: "batch matmul with transposes: oneDNN sgemm matches the JS kernel",
  ignore: !ACTIVE,
  fn() {
    const a = randn([3, 5, 7], 60),
      b = randn([3, 7, 4], 61),
      bt = randn([3, 4, 7], 62),
      at = randn([3, 7, 5], 63);
    compare(
      "matmul",
      () => [tf.matMul(a, b), tf.matMul(a, bt, false, true), tf.matMul(at, b, true, false)],
      "BatchMatMul",
    );
    const m = randn([6, 9], 64), n = randn([9, 2], 65);
    compare(
      "matmul 2D",
      () => [
        tf.matMul(m, n),
        ...tf.grads((p: tf.Tensor, q: tf.Tensor) => tf.sum(tf.matMul(p as tf.Tensor2D, q as tf.Tensor2D)))([
          m,
          n,
        ]),
      ],
      "BatchMatMul",
    );
    tf.dispose([a, b, bt, at, m, n]);
  },
});

Deno.test({
  name: "elementwise, concat, split, slice and channel sums: fast paths match the JS kernels",
  ignore: !ACTIVE,
  fn() {
    const x = randn([1, 5, 4, 3, 6], 70), y = randn([1, 5, 4, 3, 6], 71), c = randn([6], 72);
    const c5 = randn([1, 1, 1, 1, 6], 73), s = tf.scalar(0.7);
    compare("add", () => [tf.add(x, y), tf.add(x, c), tf.add(c5, x), tf.add(x, s)], "Add");
    compare("sub/mul/div", () => [tf.sub(x, c), tf.mul(c, x), tf.div(x, tf.add(tf.abs(c5), 1))], "Multiply");
    compare(
      "unary",
      () => [
        tf.neg(x),
        tf.exp(x),
        tf.log1p(tf.abs(x)),
        tf.sqrt(tf.abs(x)),
        tf.square(x),
        tf.relu(x),
        tf.sigmoid(x),
      ],
      "Exp",
    );
    compare("concat", () => [tf.concat([x, y], 4), tf.concat([x, y, x], 2), tf.concat([x, y], 0)], "Concat");
    compare("split", () => [...tf.split(x, [2, 4], 4), ...tf.split(x, [1, 3, 1], 1)], "SplitV");
    compare(
      "slice",
      () => [
        tf.slice(x, [0, 0, 0, 0, 2], [-1, -1, -1, -1, 1]), // one channel (a class of logits)
        tf.slice(x, [0, 1, 1, 0, 0], [1, 3, 2, 3, 6]), // a spatial crop, whole rows inside
        tf.slice(x, [0, 2, 0, 1, 3], [1, 2, 4, 2, 3]), // offsets on every axis
        tf.slice(x, [0, 1, 0, 0, 0], [1, 2, 4, 3, 6]), // contiguous: the JS kernel's view
        tf.slice(tf.reshape(x, [20, 18]), [3, 5], [10, 7]),
        // int32 (one-hot labels), compared as floats
        tf.cast(tf.slice(tf.oneHot(tf.tensor1d([0, 3, 1, 2, 3, 1], "int32"), 4), [0, 1], [-1, 3]), "float32"),
      ],
      "Slice",
    );
    compare("sum", () => [tf.sum(x, [0, 1, 2, 3]), tf.sum(x, [1, 2, 3], true)], "Sum");
    compare("mean", () => [tf.mean(x, [1, 2, 3]), tf.mean(x), tf.mean(x, [0, 1, 2, 3], true)], "Mean");
    const gate = randn([1, 5, 4, 3, 1], 75);
    compare(
      "per-voxel gate",
      () => [tf.mul(x, gate), tf.mul(gate, x), tf.div(x, tf.add(tf.abs(gate), 1))],
      "Multiply",
    );
    // per-sample statistics of a batch ([B, 1, 1, 1, C] against [B, D, H, W, C]), row sums
    const xb = randn([2, 5, 4, 3, 6], 76),
      stat = randn([2, 1, 1, 1, 6], 77),
      rows = randn([2, 5, 4, 3, 1], 78);
    compare(
      "per-sample broadcast",
      () => [tf.sub(xb, stat), tf.mul(stat, xb), tf.div(xb, tf.add(tf.abs(stat), 1)), tf.add(xb, rows)],
      "Sub",
    );
    compare(
      "per-sample sums",
      () => [tf.sum(xb, [1, 2, 3], true), tf.mean(xb, [1, 2, 3]), tf.sum(xb, -1), tf.mean(xb, [2, 3], true)],
      "Sum",
    );
    compare("softmax", () => [tf.softmax(xb), tf.softmax(tf.mul(xb, 30))], "Softmax");
    // the softmax keeps the JS kernel's float32 roundings: bit-identical
    setNativeKernels(false);
    const jsSoft = tf.tidy(() => tf.softmax(tf.mul(xb, 7))).dataSync();
    setNativeKernels(true);
    assertEquals(Array.from(tf.tidy(() => tf.softmax(tf.mul(xb, 7))).dataSync()), Array.from(jsSoft));
    tf.dispose([xb, stat, rows]);
    // a broadcast the fast path does not cover falls back to the JS kernel and stays correct
    const odd = randn([1, 5, 1, 3, 1], 74);
    setNativeKernels(true);
    const got = tf.add(x, odd).dataSync();
    setNativeKernels(false);
    const want = tf.add(x, odd).dataSync();
    setNativeKernels(true);
    assertEquals(Array.from(got), Array.from(want));
    tf.dispose([x, y, c, c5, s, odd, gate]);
  },
});

Deno.test({
  name: "fast resampling and leaky ReLU: values and gradients match the tfjs-op versions",
  ignore: !ACTIVE,
  fn() {
    const x = randn([1, 5, 6, 7, 3], 80);
    const ops: [string, (t: tf.Tensor) => tf.Tensor][] = [
      ["trilinear down-up", (t) => resizeLinear(t as tf.Tensor5D, [9, 4, 13])],
      ["nearest x2", (t) => upsampleNearest2x(t as tf.Tensor5D)],
      ["leaky relu", (t) => leakyRelu(t)],
    ];
    for (const [name, f] of ops) {
      const run = () => [f(x), tf.grad((t: tf.Tensor) => tf.sum(tf.mul(f(t), f(t))))(x)];
      setNativeKernels(false);
      const ref = tf.tidy(run).map((t) => t.dataSync().slice());
      setNativeKernels(true);
      const got = tf.tidy(run).map((t) => t.dataSync().slice());
      ref.forEach((r, i) => {
        const err = Array.from(r).reduce(
          (m: number, v: number, k: number) => Math.max(m, Math.abs(v - got[i][k])),
          0,
        );
        assert(err < 1e-5, `${name} output ${i}: max error ${err}`);
      });
      const fd = gradCheck(f, [x], { samples: 12 });
      assert(fd.maxRelError < 2e-3, `${name}: finite differences ${JSON.stringify(fd.worst)}`);
    }
    x.dispose();
  },
});

Deno.test("conv3dTranspose is trainable: its gradients match finite differences", () => {
  const dy = randn([1, 3, 4, 3, 4], 90), w = randn([4, 4, 4, 2, 4], 91);
  const f = (a: tf.Tensor, b: tf.Tensor) =>
    tf.conv3dTranspose(a as tf.Tensor5D, b as tf.Tensor5D, [1, 6, 8, 6, 2], 2, "same");
  const r = gradCheck(f, [dy, w], { samples: 16 });
  assert(r.maxRelError < 2e-3, `conv3dTranspose gradient: ${JSON.stringify(r.worst)}`);
  tf.dispose([dy, w]);
});

Deno.test("broadcastBlock: the output as [outer, mid, inner] around one block of broadcast axes", () => {
  assertEquals(broadcastBlock([6], [1, 5, 4, 3, 6]), { outer: 1, mid: 60, inner: 6 });
  assertEquals(broadcastBlock([2, 1, 1, 1, 6], [2, 5, 4, 3, 6]), { outer: 2, mid: 60, inner: 6 });
  assertEquals(broadcastBlock([2, 5, 4, 3, 1], [2, 5, 4, 3, 6]), { outer: 120, mid: 6, inner: 1 });
  assertEquals(broadcastBlock([1, 1, 4, 1, 6], [1, 5, 4, 3, 6]), null); // two blocks
  assertEquals(broadcastBlock([1, 5, 4, 3, 6], [1, 5, 4, 3, 6]), null); // no broadcast
  assertEquals(broadcastBlock([3, 1], [3, 4]), { outer: 3, mid: 4, inner: 1 });
});

Deno.test({
  name: "FusedAdam: the fused loop and its tensor fallback match tf.train.adam, and resume from its state",
  ignore: !ACTIVE,
  async fn() {
    const shapes = [[3, 3, 3, 2, 4], [4], [5, 7]];
    const run = async (make: () => tf.Optimizer, native: boolean, resumeFrom?: tf.Optimizer) => {
      setNativeKernels(native);
      const vars = shapes.map((s, i) => tf.variable(randn(s, 40 + i)));
      const opt = make();
      if (resumeFrom) {
        const w = await resumeFrom.getWeights();
        // the resumed optimizer continues from the other's state, with this run's own variables
        await opt.setWeights(w.map((e) => ({ name: e.name, tensor: e.tensor.clone() })));
      }
      const start = resumeFrom ? 3 : 0;
      for (let step = start; step < start + 3; step++) {
        const grads = shapes.map((s, i) => randn(s, 100 * step + i));
        opt.applyGradients(vars.map((v, i) => ({ name: v.name, tensor: grads[i] })));
        tf.dispose(grads);
      }
      const out = vars.map((v) => Float32Array.from(v.dataSync()));
      tf.dispose(vars);
      setNativeKernels(true);
      return { out, opt };
    };
    const close = (a: Float32Array[], b: Float32Array[], what: string) =>
      a.forEach((x, i) =>
        x.forEach((v, k) =>
          assert(
            Math.abs(v - b[i][k]) <= 1e-6 * Math.max(1, Math.abs(v)),
            `${what}: ${i}[${k}] ${v} vs ${b[i][k]}`,
          )
        )
      );
    const ref = await run(() => tf.train.adam(0.01, 0.9, 0.999, 1e-8), false);
    const fused = await run(() => adam(0.01), true);
    const fallback = await run(() => adam(0.01), false);
    close(ref.out, fused.out, "fused vs tfjs");
    close(ref.out, fallback.out, "fallback vs tfjs");
    const initial = tf.tidy(() => randn(shapes[0], 40).dataSync().slice());
    assert(ref.out[0].some((v, k) => Math.abs(v - initial[k]) > 1e-3), "the variables moved");
    // state saved by tfjs's Adam after 3 steps resumes in the fused one, and the other way round
    const refMore = await run(() => tf.train.adam(0.01, 0.9, 0.999, 1e-8), false, ref.opt);
    const fusedFromRef = await run(() => adam(0.01), true, ref.opt);
    close(refMore.out, fusedFromRef.out, "fused resumed from tfjs state");
    const refFromFused = await run(() => tf.train.adam(0.01, 0.9, 0.999, 1e-8), false, fused.opt);
    close(refMore.out, refFromFused.out, "tfjs resumed from fused state");
    // a clone, or a slice that views the parameter's buffer, taken before a step keeps its values
    const param = tf.variable(randn([6], 120));
    const snapshot = param.clone(), before = snapshot.dataSync().slice();
    const view = tf.slice(param, [0], [3]), viewBefore = view.dataSync().slice();
    const opt = adam(0.1);
    const g = randn([6], 121);
    opt.applyGradients([{ name: param.name, tensor: g }]);
    assertEquals(Array.from(snapshot.dataSync()), Array.from(before));
    assertEquals(Array.from(view.dataSync()), Array.from(viewBefore));
    view.dispose();
    assert(param.dataSync().every((v, k) => v !== before[k]), "the parameter moved");
    tf.dispose([param, snapshot, g]);
    opt.dispose();
    const layout = (ws: { name: string }[]) => ws.map((w, i) => i === 0 ? w.name : w.name.slice(-2));
    assertEquals(layout(await fused.opt.getWeights()), layout(await ref.opt.getWeights()));
    [ref, fused, fallback, refMore, fusedFromRef, refFromFused].forEach((r) => r.opt.dispose());
  },
});

Deno.test({
  name: "fast instance norm (+ leaky ReLU): values and gradients match the tfjs-op composition",
  ignore: !ACTIVE,
  fn() {
    // hand-computed: one channel [1, 2, 3, 4] -> (x - 2.5) / sqrt(1.25 + 1e-5); the other constant -> 0
    const hand = tf.tensor4d([1, 7, 2, 7, 3, 7, 4, 7], [1, 2, 2, 2]);
    const want = [1, 2, 3, 4].map((v) => (v - 2.5) / Math.sqrt(1.25 + 1e-5));
    const got = instanceNorm(hand).dataSync();
    want.forEach((w, i) => {
      assert(Math.abs(got[2 * i] - w) < 1e-6, `hand value ${i}: ${got[2 * i]} vs ${w}`);
      assertEquals(got[2 * i + 1], 0);
    });
    const leaky = instanceNormLeakyRelu(hand, 0.01).dataSync();
    assert(Math.abs(leaky[0] - 0.01 * want[0]) < 1e-7 && Math.abs(leaky[6] - want[3]) < 1e-6, "hand leaky");
    hand.dispose();
    const cases: [string, tf.Tensor, (t: tf.Tensor) => tf.Tensor][] = [
      ["instance norm 3D, batch 2", randn([2, 4, 5, 3, 3], 95), (t) => instanceNorm(t as tf.Tensor5D)],
      ["+ leaky ReLU", randn([1, 5, 4, 3, 4], 96), (t) => instanceNormLeakyRelu(t as tf.Tensor5D, 0.01)],
      ["+ ReLU, 2D slices", randn([3, 1, 6, 5, 2], 97), (t) => instanceNormLeakyRelu(t as tf.Tensor5D, 0)],
      ["4D", tf.add(randn([2, 6, 7, 3], 98), 5), (t) => instanceNormLeakyRelu(t as tf.Tensor4D, 0.2)],
    ];
    for (const [name, x, f] of cases) {
      const r = randn(x.shape, 99);
      compare(
        name,
        () => [f(x), tf.grad((t: tf.Tensor) => tf.sum(tf.mul(f(t), r)))(x)],
        "InstanceNorm",
      );
      const fd = gradCheck(f, [x], { samples: 16, eps: 1e-3 });
      assert(fd.maxRelError < 5e-3, `${name}: finite differences ${JSON.stringify(fd.worst)}`);
      tf.dispose([x, r]);
    }
  },
});

Deno.test({
  name: "large concatenations and splits (oneDNN concat and sub-memory reorders) match the JS kernels",
  ignore: !ACTIVE,
  fn() {
    const a = randn([2, 12, 10, 9, 5], 110),
      b = randn([2, 12, 10, 9, 3], 111),
      c = randn([2, 12, 10, 9, 8], 112);
    const r = randn([2, 12, 10, 9, 16], 113);
    const cat = (...xs: tf.Tensor[]) => tf.concat(xs, 4);
    compare(
      "channel concat of three",
      () => [
        cat(a, b, c),
        ...tf.grads((x: tf.Tensor, y: tf.Tensor, z: tf.Tensor) => tf.sum(tf.mul(cat(x, y, z), r)))([a, b, c]),
      ],
      "Concat",
    );
    compare("concat on an inner axis", () => [tf.concat([a, a], 2), ...tf.split(r, [4, 7, 5], 4)], "SplitV");
    const used = nativeImplementations().map((e) => e.kernel);
    assert(used.some((k) => k.startsWith("concat|") && k !== "concat|"), `oneDNN concat not used: ${used}`);
    assert(used.some((k) => k.startsWith("split|")), `oneDNN split not used: ${used}`);
    tf.dispose([a, b, c, r]);
  },
});

Deno.test({
  name: "convolution + bias (+ leaky ReLU) fused in oneDNN: values and all three gradients match tfjs ops",
  ignore: !ACTIVE,
  fn() {
    const cases: {
      x: number[];
      w: number[];
      s: number | number[];
      pad: "same" | "valid";
      slope: number | null;
    }[] = [
      { x: [1, 7, 6, 5, 3], w: [3, 3, 3, 3, 4], s: 1, pad: "same", slope: 0 },
      { x: [2, 8, 7, 6, 2], w: [4, 4, 4, 2, 5], s: 2, pad: "same", slope: 0.01 },
      { x: [1, 6, 6, 6, 4], w: [1, 1, 1, 4, 2], s: 1, pad: "valid", slope: null },
      { x: [3, 9, 8, 3], w: [3, 3, 3, 6], s: [1, 2], pad: "same", slope: 0.2 },
    ];
    cases.forEach(({ x, w, s, pad, slope }, i) => {
      const xt = randn(x, 130 + i), wt = randn(w, 140 + i), bt = randn([w[w.length - 1]], 150 + i);
      const fast = (a: tf.Tensor, b: tf.Tensor, c: tf.Tensor) =>
        fastConvBias(a as tf.Tensor5D, b, c as tf.Tensor1D, s, pad, slope)!;
      const ref = (a: tf.Tensor, b: tf.Tensor, c: tf.Tensor) => {
        const z = tf.add(
          a.rank === 5
            ? tf.conv3d(a as tf.Tensor5D, b as tf.Tensor5D, s as number, pad)
            : tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, s as [number, number], pad),
          c,
        );
        return slope === null ? z : tf.leakyRelu(z, slope);
      };
      const r = tf.tidy(() => tf.onesLike(ref(xt, wt, bt)).mul(randn(ref(xt, wt, bt).shape, 160 + i)));
      const run = (
        f: typeof ref,
      ) => [f(xt, wt, bt), ...tf.grads((a, b, c) => tf.sum(tf.mul(f(a, b, c), r)))([xt, wt, bt])];
      const want = tf.tidy(() => run(ref).map((t) => Float32Array.from(t.dataSync())));
      const got = tf.tidy(() => run(fast).map((t) => Float32Array.from(t.dataSync())));
      const name = `case ${i} x[${x}] w[${w}] s${s} ${pad} slope ${slope}`;
      want.forEach((a, k) => {
        const scale = a.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
        const err = a.reduce((m, v, j) => Math.max(m, Math.abs(v - got[k][j])), 0);
        assert(scale > 0 && err <= TOL * scale, `${name}: output ${k} differs by ${err} (scale ${scale})`);
      });
      const fd = gradCheck(fast, [xt, wt, bt], { samples: 12, eps: 1e-3 });
      assert(fd.maxRelError < 5e-3, `${name}: finite differences ${JSON.stringify(fd.worst)}`);
      tf.dispose([xt, wt, bt, r]);
    });
    // the module path: Conv.applyActivated fuses when the native kernels are on, composes when off
    const conv = new Conv(new Init(3), 3, 2, 3, 3, { bias: true });
    const xin = randn([1, 5, 5, 5, 2], 170);
    const before = nativeKernelStats.get("ConvBias")?.native ?? 0;
    const on = conv.applyActivated(xin as tf.Tensor5D, 0.01).dataSync().slice();
    assert((nativeKernelStats.get("ConvBias")?.native ?? 0) > before, "Conv.applyActivated did not fuse");
    setNativeKernels(false);
    const off = conv.applyActivated(xin as tf.Tensor5D, 0.01).dataSync().slice();
    setNativeKernels(true);
    assert(on.every((v, k) => Math.abs(v - off[k]) < 1e-5), "fused and composed Conv differ");
    conv.dispose();
    xin.dispose();
  },
});

Deno.test({
  name: "fast PReLU with one shared slope: values and both gradients match tf.prelu",
  ignore: !ACTIVE,
  fn() {
    const x = randn([2, 1, 6, 5, 3], 180), alpha = tf.tensor1d([0.25]), r = randn([2, 1, 6, 5, 3], 181);
    const fast = (a: tf.Tensor, b: tf.Tensor) => fastPrelu(a, b)!;
    const ref = (a: tf.Tensor, b: tf.Tensor) => tf.prelu(a, b);
    const run = (f: typeof ref) =>
      tf.tidy(() =>
        [f(x, alpha), ...tf.grads((a, b) => tf.sum(tf.mul(f(a, b), r)))([x, alpha])].map((t) =>
          Float32Array.from(t.dataSync())
        )
      );
    const want = run(ref), got = run(fast);
    want.forEach((a, k) => {
      const err = a.reduce((m, v, j) => Math.max(m, Math.abs(v - got[k][j])), 0);
      assert(err <= 1e-5 * Math.max(1, Math.abs(a[0])), `output ${k} differs by ${err}`);
    });
    const fd = gradCheck(fast, [x, alpha], { samples: 12, eps: 1e-3 });
    assert(fd.maxRelError < 5e-3, `finite differences ${JSON.stringify(fd.worst)}`);
    // a per-channel slope is not this path's: the caller falls back to tf.prelu
    const perChannel = tf.tensor1d([0.1, 0.2, 0.3]);
    assertEquals(fastPrelu(x, perChannel), null);
    tf.dispose([x, alpha, r, perChannel]);
  },
});

Deno.test({
  name:
    "fast batch norm (per-sample and batch statistics, affine): values and all three gradients match tfjs ops",
  ignore: !ACTIVE,
  fn() {
    // hand-computed: one channel [1, 2, 3, 4] -> gamma (x - 2.5) / sqrt(1.25 + 1e-5) + beta
    const hand = tf.tensor4d([1, 2, 3, 4], [1, 2, 2, 1]);
    const got = batchNorm(hand, tf.tensor1d([2]), tf.tensor1d([0.5]), 1e-5, true).dataSync();
    [1, 2, 3, 4].forEach((v, i) => {
      const want = (2 * (v - 2.5)) / Math.sqrt(1.25 + 1e-5) + 0.5;
      assert(Math.abs(got[i] - want) < 1e-6, `hand value ${i}: ${got[i]} vs ${want}`);
    });
    hand.dispose();
    const cases: [string, number[], boolean][] = [
      ["per sample, 2D slices", [3, 1, 6, 5, 4], true],
      ["batch statistics, batch 2", [2, 4, 5, 3, 3], false],
      ["batch statistics, batch 1, 4D", [1, 6, 7, 2], false],
    ];
    cases.forEach(([name, shape, perSample], i) => {
      const c = shape[shape.length - 1];
      const x = tf.add(randn(shape, 200 + i), 3), r = randn(shape, 210 + i);
      const gamma = tf.add(randn([c], 220 + i), 1), beta = randn([c], 230 + i);
      const f = (t: tf.Tensor, g: tf.Tensor, b: tf.Tensor) =>
        batchNorm(t as tf.Tensor5D, g as tf.Tensor1D, b as tf.Tensor1D, 1e-5, perSample);
      compare(
        name,
        () => [f(x, gamma, beta), ...tf.grads((t, g, b) => tf.sum(tf.mul(f(t, g, b), r)))([x, gamma, beta])],
        "InstanceNorm",
      );
      const fd = gradCheck(f, [x, gamma, beta], { samples: 16, eps: 1e-3 });
      assert(fd.maxRelError < 5e-3, `${name}: finite differences ${JSON.stringify(fd.worst)}`);
      tf.dispose([x, r, gamma, beta]);
    });
  },
});

Deno.test({
  name: "fast pooling masks and max-unpooling (ties, odd sizes, 2D and 3D) and maxout match the tfjs ops",
  ignore: !ACTIVE,
  fn() {
    // a constant first third (whole windows tie), distinct values after; odd sizes drop the last row
    const tied = (shape: number[], seed: number) => {
      const r = mulberry32(seed), n = shape.reduce((a, b) => a * b, 1);
      return tf.tensor(Float32Array.from({ length: n }, (_, i) => (i < n / 3 ? 0 : r() * 2 - 1)), shape);
    };
    const quantised = (shape: number[], seed: number) => {
      const r = mulberry32(seed);
      return tf.tensor(
        Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => Math.round(r() * 2)),
        shape,
      );
    };
    const cases: number[][] = [[2, 6, 7, 3], [1, 5, 4, 6, 2], [3, 8, 8, 1]];
    cases.forEach((shape, i) => {
      const x = tied(shape, 240 + i);
      const pooledShape = maxPoolWithMask(x as tf.Tensor4D).pooled.shape;
      const y = randn(pooledShape, 250 + i);
      const r = randn(
        pooledShape.map((n, a) => (a === 0 || a === pooledShape.length - 1 ? n : 2 * n)),
        260 + i,
      );
      compare(
        `masks and unpooling [${shape}]`,
        () => {
          const { masks } = maxPoolWithMask(x as tf.Tensor4D);
          const f = (t: tf.Tensor) => maxUnpool(t as tf.Tensor4D, masks as tf.Tensor4D[]);
          return [...masks, f(y), tf.grad((t: tf.Tensor) => tf.sum(tf.mul(f(t), r)))(y)];
        },
        "Unpool",
      );
      const { masks } = maxPoolWithMask(x as tf.Tensor4D);
      const fd = gradCheck((t: tf.Tensor) => maxUnpool(t as tf.Tensor4D, masks as tf.Tensor4D[]), [y], {
        samples: 12,
        eps: 1e-3,
      });
      assert(fd.maxRelError < 5e-3, `unpooling [${shape}]: finite differences ${JSON.stringify(fd.worst)}`);
      tf.dispose([x, y, r, ...masks]);
    });
    // maxout: ties send the gradient to the first argument, as tf.maximum
    const a = quantised([2, 5, 4, 3], 270), b = quantised([2, 5, 4, 3], 271), r = randn([2, 5, 4, 3], 272);
    compare(
      "maximum with ties",
      () => [
        maximum(a, b),
        ...tf.grads((p: tf.Tensor, q: tf.Tensor) => tf.sum(tf.mul(maximum(p, q), r)))([a, b]),
      ],
      "Maximum",
    );
    const u = randn([2, 5, 4, 3], 273), v = randn([2, 5, 4, 3], 274);
    const fd = gradCheck((p: tf.Tensor, q: tf.Tensor) => maximum(p, q), [u, v], { samples: 12, eps: 1e-3 });
    assert(fd.maxRelError < 5e-3, `maximum: finite differences ${JSON.stringify(fd.worst)}`);
    tf.dispose([a, b, r, u, v]);
  },
});

Deno.test({
  name:
    "fused whole-brain loss (weighted CE + per-sample Dice): value and gradient match the tfjs-op composition",
  ignore: !ACTIVE,
  fn() {
    const shape: [number, number, number, number, number] = [3, 1, 5, 4, 6];
    const n = 3 * 5 * 4, r = mulberry32(280);
    const logits = tf.mul(randn(shape, 281), 3) as tf.Tensor5D;
    // a class absent from every sample (5), one present in only one sample (4)
    const labels = tf.tensor1d(
      Int32Array.from({ length: n }, (_, i) => (i === 7 ? 4 : Math.floor(r() * 4))),
      "int32",
    );
    const weights = tf.tensor1d(Float32Array.from({ length: n }, () => 0.5 + 5 * r()));
    const f = (z: tf.Tensor) => segmentationLoss("wce+dice", z as tf.Tensor5D, labels, weights);
    compare("wce+dice", () => [f(logits), tf.grad(f)(logits)], "WceDice");
    const fd = gradCheck(f, [logits], { samples: 16, eps: 1e-3 });
    assert(fd.maxRelError < 5e-3, `finite differences ${JSON.stringify(fd.worst)}`);
    // a label outside the classes is left to the composed loss
    const bad = tf.tensor1d(Int32Array.from({ length: n }, (_, i) => (i === 0 ? 6 : 0)), "int32");
    assertEquals(fastWceDice(logits, bad, weights, 1e-7), null);
    tf.dispose([logits, labels, weights, bad]);
  },
});
