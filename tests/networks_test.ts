/**
 * The contract every registered segmentation network keeps (output shape, gradients reaching
 * every parameter, an AFM at every level, rebuilt from its checkpoint alone with identical
 * outputs), and VoxResNet's own pieces checked by hand.
 */
import * as tf from "@tensorflow/tfjs-core";
import { assert, assertAlmostEquals, assertEquals } from "@std/assert";
import { join } from "node:path";
import { gradCheck, initBackend, mulberry32 } from "../lib/mod.ts";
import {
  buildNetwork,
  decodeAll,
  type NetworkName,
  NETWORKS,
  type NetworkSpec,
} from "../lib/models/networks.ts";
import { GuidedSegmenter } from "../lib/models/fusion.ts";
import { matchSize, VoxResNet } from "../lib/models/voxresnet.ts";
import { USegNet } from "../lib/models/usegnet.ts";
import { PYRAMID_BINS, pyramidPool, RPNet } from "../lib/models/rpnet.ts";
import { loadSegmenter, profileConfig } from "../lib/train/pipeline.ts";
import { saveCheckpoint } from "../lib/train/state.ts";

await initBackend("cpu");

function rand(shape: number[], seed: number): tf.Tensor {
  const r = mulberry32(seed);
  return tf.tensor(Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => r() * 2 - 1), shape);
}

const KEEPER_WIDTHS = [4, 8, 16];

for (const name of Object.keys(NETWORKS) as NetworkName[]) {
  const spec: NetworkSpec = { network: name, classes: 4, nf: 4, levels: 3 };
  Deno.test(`network contract, ${name}: shapes, gradients to every parameter, AFMs at every level, rebuilt from its checkpoint`, async () => {
    const net = buildNetwork(spec, 7);
    // a 3D network reads a volume [1, D, H, W, 1]; a 2D one a batch of slices [B, 1, H, W, 1]
    const dims = net.dims ?? 3;
    const shapeAt = (size: number): [number, number, number, number] =>
      dims === 3 ? [1, size, size, size] : [3, 1, size, size];
    // (a thick-slice network reads a slice and its neighbours as channels)
    const cin = net.inputChannels ?? 1;
    const x = rand([...shapeAt(16), cin], 1) as tf.Tensor5D;
    const features = tf.tidy(() => net.encode(x));
    assertEquals(features.map((f) => f.shape[4]), net.levelChannels, "encoder widths");
    assertEquals(net.levelChannels.length, spec.levels);
    const logits = tf.tidy(() => net.decode(net.encode(x)));
    assertEquals(logits.shape, [...shapeAt(16), 4]);
    if (dims === 2) {
      // every slice on its own: a slice's logits do not depend on the other slices of the batch
      const one = tf.tidy(() => net.apply(tf.slice(x, [1, 0, 0, 0, 0], [1, 1, 16, 16, cin])));
      const inBatch = tf.tidy(() => tf.slice(logits, [1, 0, 0, 0, 0], [1, 1, 16, 16, 4]));
      const diff = tf.tidy(() => tf.max(tf.abs(tf.sub(one, inBatch))).dataSync()[0]);
      assert(diff < 1e-5, `${name}: slice 2's logits change with the other slices of its batch (${diff})`);
      tf.dispose([one, inBatch]);
    }
    // every parameter gets a gradient from the training loss (with deep supervision where declared)
    const voxels = logits.size / 4;
    const labels = tf.tensor(Int32Array.from({ length: voxels }, (_, i) => i % 4), [voxels], "int32");
    const params = net.namedParameters();
    const { grads } = tf.variableGrads(() => {
      const out = decodeAll(net, net.encode(x));
      const all = [out.logits, ...out.aux].map((l) =>
        tf.losses.softmaxCrossEntropy(tf.oneHot(labels, 4), tf.reshape(l, [-1, 4]))
      );
      return tf.addN(all) as tf.Scalar;
    }, params.map(([, v]) => v));
    for (const [pname, v] of params) {
      const g = grads[v.name];
      assert(g, `${name}: no gradient for ${pname}`);
      // (a squeeze-excitation's hidden ReLU may be inactive for this input at initialisation: its
      // layers are connected, and its second layer's bias gets a gradient through the gate)
      if (/\.fc0\.(weight|bias)$|\.fc1\.weight$/.test(pname)) continue;
      assert(tf.tidy(() => tf.max(tf.abs(g)).dataSync()[0]) > 0, `${name}: zero gradient for ${pname}`);
    }
    tf.dispose(Object.values(grads));
    // an AFM at every level the network declares (all unless it says otherwise), none elsewhere;
    // the guided network keeps the output shape and every AFM gets a gradient
    const keeper = KEEPER_WIDTHS.map((c, i) => rand([...shapeAt(16 >> i), c], 10 + i) as tf.Tensor5D);
    const guided = new GuidedSegmenter(net, KEEPER_WIDTHS, 3);
    const declared = net.fusedLevels ?? net.levelChannels.map((_, i) => i);
    assertEquals(guided.afms.map((a, i) => (a ? i : -1)).filter((i) => i >= 0), declared);
    for (const i of declared) assertEquals(guided.afms[i]!.c, net.levelChannels[i]);
    const g = tf.tidy(() => guided.apply(x, keeper));
    assertEquals(g.shape, logits.shape);
    // (per AFM, not per parameter: a squeeze-excitation ReLU may be inactive at initialisation)
    const afmGrads = tf.variableGrads(
      () => tf.sum(tf.square(guided.apply(x, keeper))) as tf.Scalar,
      guided.afms.flatMap((a) => (a ? a.parameters() : [])),
    ).grads;
    for (const i of declared) {
      const total = guided.afms[i]!.parameters().reduce(
        (sum, v) => sum + tf.tidy(() => tf.sum(tf.abs(afmGrads[v.name])).dataSync()[0]),
        0,
      );
      assert(total > 0, `${name}: no gradient reaches the AFM of level ${i + 1}`);
    }
    tf.dispose(Object.values(afmGrads));
    // a checkpoint carries the spec: the network is rebuilt from it alone
    const dir = await Deno.makeTempDir();
    try {
      await saveCheckpoint(join(dir, "net"), net, {}, { spec });
      // a configuration naming another network: the checkpoint's spec wins
      const cfg = profileConfig("quick");
      const rebuilt = await loadSegmenter(cfg, join(dir, "net"));
      const again = tf.tidy(() => rebuilt.decode(rebuilt.encode(x)));
      assertEquals(Array.from(again.dataSync()), Array.from(logits.dataSync()));
      tf.dispose([again]);
      rebuilt.dispose();
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
    tf.dispose([x, labels, logits, g, ...features, ...keeper]);
    guided.dispose();
  });
}

Deno.test("VoxResNet: parameter counts of the compact and released decoders, checked by hand", () => {
  // nf 4, 3 levels, 4 classes. Encoder: conv1a 27*4+4, conv1b (1x3x3) 9*16+4; level 2 down
  // 27*4*8+8 and two VoxRes (9*64+8 + 27*64+8); level 3 down 27*8*16+16 and two VoxRes
  // (9*256+16 + 27*256+16) = 27740; BatchNorm scale and shift (2 per channel) after conv1a (4), before
  // each down (4, 8) and twice in each VoxRes (2 * 8, 2 * 16) = 224.
  const bn = 2 * 4 + 2 * 4 + 2 * (2 * 2 * 8) + 2 * 8 + 2 * (2 * 2 * 16);
  const encoder = 112 + 148 + 872 + 2 * 2320 + 3472 + 2 * 9248 + bn;
  // compact: transposed convs straight to the 4 classes, kernel = stride = 1, 2, 4
  const compact = encoder + (4 * 4 + 4) + (8 * 8 * 4 + 4) + (64 * 16 * 4 + 4);
  // released: transposed convs c -> c, then 1x1x1 convs to the classes
  const released = encoder + (16 + 4) + (16 + 4) + (8 * 64 + 8) + (32 + 4) + (64 * 256 + 16) + (64 + 4);
  assertEquals(new VoxResNet(4, 4, 3, 1, "compact").parameterCount(), compact);
  assertEquals(new VoxResNet(4, 4, 3, 1, "released").parameterCount(), released);
  assertEquals([bn, compact, released], [224, 32344, 45028]);
});

Deno.test("VoxResNet: 1x3x3 kernels where the authors have them; deep supervision on u1 .. u(L-1)", () => {
  const net = new VoxResNet(4, 4, 3, 2);
  const kernels = new Map(net.namedParameters().map(([n, v]) => [n, v.shape.slice(0, 3)]));
  assertEquals(kernels.get("conv1b.weight"), [1, 3, 3]);
  assertEquals(kernels.get("conv1a.weight"), [3, 3, 3]);
  for (const level of [2, 3]) {
    for (const j of ["a", "b"]) {
      assertEquals(kernels.get(`vrm${level}${j}.a.weight`), [1, 3, 3]);
      assertEquals(kernels.get(`vrm${level}${j}.b.weight`), [3, 3, 3]);
    }
  }
  const x = rand([1, 16, 16, 16, 1], 5) as tf.Tensor5D;
  const out = tf.tidy(() => decodeAll(net, net.encode(x)));
  // deep supervision on u1 .. u(L-1)
  assertEquals(out.aux.length, 2);
  for (const a of out.aux) assertEquals(a.shape, [1, 16, 16, 16, 4]);
  // logits are the sum of every level's output (u_L included)
  tf.dispose([out.logits, ...out.aux]);
  x.dispose();
});

Deno.test("matchSize crops or zero-pads at the end of each axis; its gradient matches finite differences", () => {
  const x = tf.tensor(Float32Array.from({ length: 2 * 3 * 4 }, (_, i) => i + 1), [
    1,
    2,
    3,
    4,
    1,
  ]) as tf.Tensor5D;
  const y = matchSize(x, [3, 2, 4]);
  assertEquals(y.shape, [1, 3, 2, 4, 1]);
  const v = y.arraySync() as number[][][][][];
  assertEquals(v[0][0][1][3][0], 8); // x[0][1][3] = 1*4 + 3 + 1
  assertEquals(v[0][2][0][0][0], 0); // padded depth
  assertEquals(matchSize(x, [2, 3, 4]), x); // already the size: unchanged
  const r = gradCheck((t) => matchSize(t as tf.Tensor5D, [3, 2, 5]), [rand([1, 2, 3, 4, 2], 9)]);
  assertAlmostEquals(r.maxRelError, 0, 1e-2);
});

Deno.test("U-SegNet at nf 16: the reference's parameter count", () => {
  // reference (wave2-architectures.md 1.3): encoder 3,535,440, decoder 1,764,624, with BatchNorm
  // weight and bias (2 per channel, twice per double conv; once after the 1x1 merge)
  const net = new USegNet(4, 16, 5, 1);
  assertEquals(net.parameterCount(), 3535440 + 1764624);
  assertEquals(net.fusedLevels, [0, 4]);
  assertEquals(new USegNet(4, 4, 3, 1, "all").fusedLevels, [0, 1, 2]);
  net.dispose();
});

Deno.test("RP-Net at nf 16: the reference's parameter counts", () => {
  // reference (wave2-architectures.md 1.4): encoder 6,474,194, decoder 4,159,904, classifier 960,
  // with BatchNorm weight and bias: RRB(cin, cout) has 2 (cin + 6 cout), the bottleneck 2 * 2 * 256
  const net = new RPNet(4, 16, 5, 1);
  assertEquals(net.parameterCount(), 6474194 + 4159904 + 960);
  assertEquals(net.auxDecay, 0);
  net.dispose();
});

Deno.test("pyramid pooling: zero padding split floor/ceil, kernel = stride = ceil(n / bins); gradient", () => {
  // one axis of 5 voxels in 2 bins: k = 3, padded by 1 (0 before, 1 after): windows [0..2], [3, 4, pad]
  const x = tf.tensor5d([1, -5, 3, -2, -4], [1, 1, 1, 5, 1]);
  const p = pyramidPool(x, 2);
  // the depth and height axes have one voxel: k = 1 there
  assertEquals(p.shape, [1, 1, 1, 2, 1]);
  assertEquals(Array.from(p.dataSync()), [3, 0]); // the zero padding wins the second window
  // 7 voxels, 2 bins: k = 4, padded by 1 before and 0 after... total 1 -> floor 0 before, ceil 1 after
  const y = tf.tensor5d([9, 1, 1, 1, 5, 1, 1], [1, 1, 1, 7, 1]);
  assertEquals(Array.from(pyramidPool(y, 2).dataSync()), [9, 5]);
  const r = gradCheck((t) => pyramidPool(t as tf.Tensor5D, 4), [rand([1, 6, 5, 7, 2], 4)], { eps: 1e-3 });
  assert(r.maxRelError < 2e-3, JSON.stringify(r.worst));
  assertEquals(PYRAMID_BINS, [1, 4, 8, 16]);
});
