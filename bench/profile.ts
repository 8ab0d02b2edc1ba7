/**
 * Where a training step's time goes: the default profile's teacher, KKN (through the frozen teacher
 * decoder, with the adversarial term), patch discriminator and 3D U-Net steps on one 32^3 patch, as
 * the main job trains them, the whole-brain 2D U-Net's, QuickNAT's and FastSurfer-CNN's steps on a
 * batch of 64 x 64 slices and UNesT's on one 64^3 volume (28 classes, their loss), each profiled with `tf.profile` after a
 * warm-up step. Per kernel name: calls and milliseconds (the native oneDNN kernels' time includes
 * their layout reorders); everything outside kernels (JavaScript, the gradient tape, the fused
 * operations' gradients, Adam, allocation) is the step's wall time minus the kernels' sum.
 */
import * as tf from "@tensorflow/tfjs-core";
import { adam, type Module } from "../lib/nn/module.ts";
import { Teacher } from "../lib/models/teacher.ts";
import { KnowledgeKeeper, PatchDiscriminator } from "../lib/models/keeper.ts";
import { UNet3D } from "../lib/models/fusion.ts";
import { buildNetwork, NETWORKS, thickSlicesOf } from "../lib/models/networks.ts";
import {
  adversarialLoss,
  classWeightMap,
  discriminatorLoss,
  distillationLoss,
  l1,
  segmentationLoss,
} from "../lib/losses.ts";
import { profileConfig } from "../lib/train/pipeline.ts";
import { medianSeconds } from "./timing.ts";

export interface KernelTime {
  kernel: string;
  calls: number;
  ms: number;
}

export interface StepProfile {
  network: string;
  /** Median wall seconds of an unprofiled step. */
  step_s: number;
  /** Milliseconds inside kernels, by kernel name, largest first. */
  kernels: KernelTime[];
  kernel_ms: number;
  /** Wall time of the profiled step minus its kernels' time. */
  outside_ms: number;
  new_tensors: number;
  peak_mib: number;
}

const PATCH: [number, number, number] = [32, 32, 32];

/** Profiles `loss`'s optimisation step over `module`'s parameters. */
export async function profileStep(
  network: string,
  module: Module,
  loss: () => tf.Scalar,
  steps: number,
): Promise<StepProfile> {
  const opt = adam(1e-3);
  const step = () => {
    const cost = opt.minimize(loss, true, module.parameters())!;
    cost.dataSync();
    cost.dispose();
  };
  step(); // warm-up: kernel setup, Adam's moments
  const stepS = await medianSeconds(step, steps);
  const t0 = performance.now();
  const prof = await tf.profile(step);
  const wallMs = performance.now() - t0;
  opt.dispose();
  const byName = new Map<string, KernelTime>();
  for (const k of prof.kernels) {
    const e = byName.get(k.name) ?? { kernel: k.name, calls: 0, ms: 0 };
    e.calls++;
    e.ms += Number(k.kernelTimeMs) || 0;
    byName.set(k.name, e);
  }
  const kernels = [...byName.values()].sort((a, b) => b.ms - a.ms);
  const kernelMs = kernels.reduce((s, k) => s + k.ms, 0);
  return {
    network,
    step_s: stepS,
    kernels,
    kernel_ms: kernelMs,
    outside_ms: wallMs - kernelMs,
    new_tensors: prof.newTensors,
    peak_mib: prof.peakBytes / 2 ** 20,
  };
}

/** The whole-brain task's slice size on the default profile's 3 mm grid. */
const SLICE: [number, number] = [64, 64];

/** The four default-profile steps, profiled. */
export async function profileDefaultSteps(steps: number): Promise<StepProfile[]> {
  const cfg = profileConfig("default");
  const x = tf.randomUniform([1, ...PATCH, 1], 0, 1, "float32", 1) as tf.Tensor5D;
  const y = tf.randomUniform([1, ...PATCH, 1], 0, 1, "float32", 2) as tf.Tensor5D;
  const out: StepProfile[] = [];
  const teacher = new Teacher(cfg.teacher, 0);
  let i = 0;
  out.push(await profileStep("teacher", teacher, () => teacher.loss(y, ++i).total, steps));
  // the KKN's step as phase 2 trains it: distillation, synthesis through the frozen teacher decoder
  // and the adversarial term, then the patch discriminator's own step on real and synthesised images
  const kkn = new KnowledgeKeeper(cfg.keeper, 1);
  const disc = new PatchDiscriminator(cfg.keeper.discriminatorNf, 2);
  const target = tf.tidy(() => teacher.encoder.apply(y));
  const { lambdaSyn, lambdaAdv } = cfg.keeper;
  out.push(
    await profileStep("KKN", kkn, () => {
      const f = kkn.apply(x);
      const syn = teacher.decoder.apply(f);
      return tf.add(
        distillationLoss(target, f, cfg.keeper.distribution),
        tf.add(tf.mul(lambdaSyn, l1(syn, y)), tf.mul(lambdaAdv, adversarialLoss(disc.apply(syn)))),
      ) as tf.Scalar;
    }, steps),
  );
  const fake = tf.tidy(() => teacher.decoder.apply(kkn.apply(x)));
  out.push(
    await profileStep(
      "KKN discriminator",
      disc,
      () => discriminatorLoss(disc.apply(y), disc.apply(fake)),
      steps,
    ),
  );
  const unet = new UNet3D(4, cfg.fusion.nf, cfg.fusion.levels, 2);
  const labels = tf.tidy(() => tf.cast(tf.floor(tf.mul(tf.reshape(x, [-1]), 3.999)), "int32"));
  out.push(
    await profileStep(
      "3D U-Net",
      unet,
      () => segmentationLoss(cfg.fusion.loss, unet.apply(x), labels),
      steps,
    ),
  );
  // whole brain: `wholebrain.batch` slices, every level `wholebrain.nf` wide, 28 classes
  const wb = cfg.wholebrain, classes = 28;
  const unet2d = new UNet3D(classes, wb.nf, wb.levels, 3, 2);
  const shape2d: [number, number, number, number, number] = [wb.batch, 1, ...SLICE, 1];
  const slices = tf.randomUniform(shape2d, 0, 1, "float32", 4) as tf.Tensor5D;
  const structures = Int32Array.from(slices.dataSync(), (v) => Math.floor(v * (classes - 0.001)));
  const labels2d = tf.tensor(structures, [structures.length], "int32");
  const weights = tf.tensor(classWeightMap(structures, [wb.batch, ...SLICE]));
  out.push(
    await profileStep(
      "2D U-Net (whole brain)",
      unet2d,
      () => segmentationLoss(wb.loss, unet2d.apply(slices), labels2d, weights),
      steps,
    ),
  );
  // the other whole-brain 2D networks at the same width, batch and loss (FastSurfer-CNN reads 7 slices)
  for (const network of ["quicknat", "fastsurfer"] as const) {
    const net = buildNetwork({ network, classes, nf: wb.nf, levels: wb.levels }, 5);
    const channels = 2 * thickSlicesOf(network) + 1;
    const input = tf.randomUniform([wb.batch, 1, ...SLICE, channels], 0, 1, "float32", 6) as tf.Tensor5D;
    out.push(
      await profileStep(
        `${NETWORKS[network].label} (whole brain)`,
        net,
        () => segmentationLoss(wb.loss, net.decode(net.encode(input)), labels2d, weights),
        steps,
      ),
    );
    input.dispose();
    net.dispose();
  }
  // UNesT, the 3D whole-brain network, on one crop of its window (the configured `unestWindow`)
  const unest = buildNetwork(
    {
      network: "unest",
      classes,
      nf: wb.nf,
      levels: wb.levels,
      unestDepths: wb.unestDepths.split(",").map(Number),
      window: wb.unestWindow,
    },
    7,
  );
  const crop: [number, number, number] = [wb.unestWindow, wb.unestWindow, wb.unestWindow];
  const volume = tf.randomUniform([1, ...crop, 1], 0, 1, "float32", 8) as tf.Tensor5D;
  const volumeLabels = Int32Array.from(volume.dataSync(), (v) => Math.floor(v * (classes - 0.001)));
  const labels3d = tf.tensor(volumeLabels, [volumeLabels.length], "int32");
  const weights3d = tf.tensor(classWeightMap(volumeLabels, crop));
  out.push(
    await profileStep(
      `${NETWORKS.unest.label} (whole brain, one ${wb.unestWindow}^3 crop)`,
      unest,
      () => segmentationLoss(wb.loss, unest.decode(unest.encode(volume)), labels3d, weights3d),
      steps,
    ),
  );
  tf.dispose([volume, labels3d, weights3d]);
  unest.dispose();
  tf.dispose([x, y, fake, labels, slices, labels2d, weights, ...target]);
  for (const m of [teacher, kkn, disc, unet, unet2d]) m.dispose();
  return out;
}

/** The breakdown as text: per network the top kernels, the rest, and the time outside kernels. */
export function profileTable(profiles: StepProfile[], top = 8): string {
  const lines: string[] = [];
  for (const p of profiles) {
    const wall = p.kernel_ms + p.outside_ms;
    const pct = (ms: number) => `${((100 * ms) / wall).toFixed(1).padStart(5)}%`;
    lines.push(
      `${p.network}: step ${(p.step_s * 1000).toFixed(0)} ms unprofiled, ${wall.toFixed(0)} ms profiled; ` +
        `${p.new_tensors} tensors left, peak ${p.peak_mib.toFixed(0)} MiB of tensors`,
    );
    for (const k of p.kernels.slice(0, top)) {
      lines.push(
        `  ${k.kernel.padEnd(28)} ${String(k.calls).padStart(4)} calls ${k.ms.toFixed(1).padStart(8)} ms ${
          pct(k.ms)
        }`,
      );
    }
    const rest = p.kernels.slice(top);
    const restMs = rest.reduce((s, k) => s + k.ms, 0);
    const restCalls = rest.reduce((s, k) => s + k.calls, 0);
    lines.push(
      `  ${`${rest.length} other kernels`.padEnd(28)} ${String(restCalls).padStart(4)} calls ${
        restMs.toFixed(1).padStart(8)
      } ms ${pct(restMs)}`,
    );
    lines.push(
      `  ${"outside kernels".padEnd(28)} ${"".padStart(10)} ${p.outside_ms.toFixed(1).padStart(8)} ms ${
        pct(p.outside_ms)
      }`,
    );
  }
  return lines.join("\n");
}
