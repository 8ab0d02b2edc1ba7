/**
 * The three phases of Algorithm 1 end to end, with the evaluation the paper's tables need.
 *
 * - Phase 1 (teacher), per leave-one-out fold of the paired cohort: fold f tests subject f,
 *   validates on subject f+1, trains on the rest. Best checkpoint: validation PSNR and SSIM both
 *   improve (the authors' rule).
 * - Phase 2 (keeper), same folds, teacher frozen: a KKN update (Algorithm 1), then an LSGAN
 *   discriminator update on the same synthesis, detached.
 *   Best checkpoint: synthesis PSNR and SSIM both improve.
 * - Phase 3 (fusion) on the tissue cohort: the 3D U-Net baseline alone (cross-entropy), then the
 *   same network initialised from its best checkpoint and fine-tuned with AFMs, the first fold's
 *   KKN frozen. Best checkpoint: validation sum of per-class Dice. As a control for the extra
 *   epochs of fine-tuning, the best baseline is also trained on alone for as many epochs.
 */
import * as tf from "@tensorflow/tfjs-core";
import { join } from "node:path";
import { adam, Module } from "../nn/module.ts";
import { writeFileAtomic } from "../io/nifti.ts";
import { dicePerClass, featureDistance, pairedTTest, psnr, ssim3d } from "../metrics.ts";
import { DEFAULT_TEACHER, Teacher, type TeacherConfig } from "../models/teacher.ts";
import {
  adversarialLoss,
  DEFAULT_KEEPER,
  discriminatorLoss,
  distillationLoss,
  type KeeperConfig,
  KnowledgeKeeper,
  PatchDiscriminator,
} from "../models/keeper.ts";
import { crossEntropy, GuidedSegmenter, UNet3D } from "../models/fusion.ts";
import { l1 } from "../models/blocks.ts";
import { augment, drawAugmentation, type Subject, toTensor } from "./data.ts";
import { type Scores, trainLoop } from "./loop.ts";
import { loadCheckpoint } from "./state.ts";

export interface RunConfig {
  profile: string;
  seed: number;
  /** Leave-one-out folds of the paired cohort to run (1..subjects). */
  folds: number;
  learningRate: number;
  augment: boolean;
  teacher: TeacherConfig & { epochs: number };
  keeper: KeeperConfig & { epochs: number; discriminatorNf: number };
  fusion: { nf: number; levels: number; baselineEpochs: number; fusionEpochs: number; classes: number };
  progress: boolean;
}

/** Model sizes and epochs per profile (`--epochs` and the config file override them). */
export function profileConfig(profile: string, seed = 0): RunConfig {
  const small = profile === "quick";
  const paper = profile === "paper";
  // default: sized so that the main job fits in about 20 minutes on two CPU cores
  const nf = paper ? 16 : small ? 4 : 8;
  const pick = (p: number, q: number, d: number) => (paper ? p : small ? q : d);
  return {
    profile,
    seed,
    folds: pick(15, 1, 2),
    learningRate: 2e-4,
    augment: true,
    teacher: { ...DEFAULT_TEACHER, nf, epochs: pick(100, 2, 12) },
    keeper: { ...DEFAULT_KEEPER, nf, epochs: pick(100, 2, 6), discriminatorNf: nf },
    fusion: { nf, levels: 5, baselineEpochs: pick(100, 2, 8), fusionEpochs: pick(100, 2, 6), classes: 4 },
    progress: true,
  };
}

/** Recursively overlays `patch` on `base` (objects merge, other values replace). */
export function mergeConfig<T>(base: T, patch: unknown): T {
  if (patch === null || typeof patch !== "object" || Array.isArray(patch)) return patch as T;
  const out = { ...(base as Record<string, unknown>) };
  for (const [k, v] of Object.entries(patch as Record<string, unknown>)) {
    if (!(k in out)) throw new Error(`config: unknown setting "${k}"`);
    out[k] = typeof v === "object" && v !== null && !Array.isArray(v) ? mergeConfig(out[k], v) : v;
  }
  return out as T;
}

export interface Context {
  cfg: RunConfig;
  runDir: string;
  log(line: Record<string, unknown>): Promise<void>;
}

const ckpt = (ctx: Context, name: string) => join(ctx.runDir, "checkpoints", name);

function seedOf(...parts: number[]): number {
  return parts.reduce((h, p) => (Math.imul(h ^ p, 2654435761) >>> 0) + 0x9e37, 0x811c9dc5) >>> 0;
}

/** Subject arrays for a step, augmented when enabled. */
function sample(ctx: Context, s: Subject, seed: number, labelKeys: string[]): Record<string, Float32Array> {
  return ctx.cfg.augment ? augment(s.arrays, s.shape, drawAugmentation(seed, s.shape), labelKeys) : s.arrays;
}

/**
 * A network's output for one subject, computed from the subject's image `key` (e.g. "3T"), as
 * a flat array in the volume's voxel order.
 */
export async function predictVolume(
  s: Subject,
  key: string,
  f: (x: tf.Tensor5D) => tf.Tensor,
): Promise<Float32Array> {
  const x = toTensor(s.arrays[key], s.shape);
  const y = await readAndDispose(tf.tidy(() => f(x)));
  x.dispose();
  return y;
}

/** Per-voxel argmax of class logits, as float labels. */
export function labelsOf(logits: tf.Tensor5D): tf.Tensor {
  return tf.cast(tf.argMax(logits, 4), "float32");
}

/** A tensor's values, disposing the tensor. */
export async function readAndDispose(t: tf.Tensor): Promise<Float32Array> {
  const v = (await t.data()) as Float32Array;
  t.dispose();
  return v;
}

function imageScores(pred: Float32Array, truth: Float32Array, shape: [number, number, number]): Scores {
  const clipped = pred.map((v) => Math.min(1, Math.max(0, v)));
  return { psnr: psnr(clipped, truth), ssim: ssim3d(clipped, truth, shape) };
}

const bothImprove = (cur: Scores, best: Scores | null) =>
  !best || (cur.psnr > best.psnr && cur.ssim > best.ssim);

export interface FoldSplit {
  fold: number;
  test: Subject;
  validation: Subject;
  train: Subject[];
}

export function foldSplits(subjects: Subject[], folds: number): FoldSplit[] {
  const n = subjects.length;
  if (n < 3) throw new Error(`paired cohort: leave-one-out needs at least 3 subjects, found ${n}`);
  return Array.from({ length: Math.min(folds, n) }, (_, f) => ({
    fold: f + 1,
    test: subjects[f],
    validation: subjects[(f + 1) % n],
    train: subjects.filter((_, i) => i !== f && i !== (f + 1) % n),
  }));
}

export function buildTeacher(cfg: RunConfig, fold: number): Teacher {
  return new Teacher(cfg.teacher, seedOf(cfg.seed, 1, fold));
}

export function buildKeeper(cfg: RunConfig, fold: number): KnowledgeKeeper {
  return new KnowledgeKeeper(cfg.keeper, seedOf(cfg.seed, 2, fold));
}

/** Phase 1 for one fold. */
export async function trainTeacher(ctx: Context, split: FoldSplit): Promise<Teacher> {
  const teacher = buildTeacher(ctx.cfg, split.fold);
  const opt = adam(ctx.cfg.learningRate);
  const params = teacher.parameters();
  await trainLoop({
    label: `teacher fold ${split.fold}`,
    checkpoint: ckpt(ctx, `teacher-fold${split.fold}`),
    epochs: ctx.cfg.teacher.epochs,
    items: split.train,
    module: teacher,
    optimizers: { teacher: opt },
    progress: ctx.cfg.progress,
    step: (s, epoch, i) => {
      const seed = seedOf(ctx.cfg.seed, 11, split.fold, epoch, i);
      const a = sample(ctx, s, seed, []);
      const y7 = toTensor(a["7T"], s.shape);
      let parts: Record<string, number> = {};
      const cost = opt.minimize(
        () => {
          const l = teacher.loss(y7, seed);
          parts = { image: l.image.dataSync()[0], feature: l.feature.dataSync()[0] };
          return l.total;
        },
        true,
        params,
      )!;
      const loss = cost.dataSync()[0];
      tf.dispose([cost, y7]);
      return Promise.resolve({ loss, ...parts });
    },
    validate: async () => {
      const s = split.validation;
      return imageScores(
        await predictVolume(s, "7T", (y) => teacher.reconstruct(y)),
        s.arrays["7T"],
        s.shape,
      );
    },
    better: bothImprove,
    log: ctx.log,
  });
  await loadCheckpoint(ckpt(ctx, `teacher-fold${split.fold}-best`), teacher);
  opt.dispose();
  return teacher;
}

/** KKN and discriminator as one module, so one checkpoint resumes both. */
class KeeperPair extends Module {
  constructor(kkn: KnowledgeKeeper, disc: PatchDiscriminator) {
    super();
    this.child("keeper", kkn);
    this.child("discriminator", disc);
  }
}

/** Phase 2 for one fold (teacher frozen). */
export async function trainKeeper(
  ctx: Context,
  split: FoldSplit,
  teacher: Teacher,
): Promise<KnowledgeKeeper> {
  const kkn = buildKeeper(ctx.cfg, split.fold);
  const disc = new PatchDiscriminator(ctx.cfg.keeper.discriminatorNf, seedOf(ctx.cfg.seed, 3, split.fold));
  const optK = adam(ctx.cfg.learningRate), optD = adam(ctx.cfg.learningRate);
  const { lambdaSyn, lambdaAdv, distribution } = ctx.cfg.keeper;
  const pair = new KeeperPair(kkn, disc);
  await trainLoop({
    label: `keeper fold ${split.fold}`,
    checkpoint: ckpt(ctx, `keeper-fold${split.fold}`),
    epochs: ctx.cfg.keeper.epochs,
    items: split.train,
    module: pair,
    optimizers: { keeper: optK, discriminator: optD },
    progress: ctx.cfg.progress,
    step: (s, epoch, i) => {
      const a = sample(ctx, s, seedOf(ctx.cfg.seed, 12, split.fold, epoch, i), []);
      const x3 = toTensor(a["3T"], s.shape), y7 = toTensor(a["7T"], s.shape);
      const target = tf.tidy(() => teacher.encoder.apply(y7));
      // Algorithm 1 lines 12-19: the KKN update through the frozen teacher decoder; its synthesis
      // is kept (outside the gradient tape, i.e. detached) for the LSGAN discriminator update
      // that follows, so one forward pass serves both.
      let parts: Record<string, number> = {};
      let fake: tf.Tensor5D | undefined;
      const kCost = optK.minimize(
        () => {
          const feats = kkn.apply(x3);
          const syn = teacher.decoder.apply(feats);
          fake = tf.keep(syn);
          const distill = distillationLoss(target, feats, distribution);
          const synthesis = l1(syn, y7);
          const adv = adversarialLoss(disc.apply(syn));
          parts = {
            distill: distill.dataSync()[0],
            synthesis: synthesis.dataSync()[0],
            adversarial: adv.dataSync()[0],
          };
          return tf.add(distill, tf.add(tf.mul(lambdaSyn, synthesis), tf.mul(lambdaAdv, adv))) as tf.Scalar;
        },
        true,
        kkn.parameters(),
      )!;
      const dCost = optD.minimize(
        () => discriminatorLoss(disc.apply(y7), disc.apply(fake!)),
        true,
        disc.parameters(),
      )!;
      const out = { loss: kCost.dataSync()[0], discriminator: dCost.dataSync()[0], ...parts };
      tf.dispose([x3, y7, target, fake!, dCost, kCost]);
      return Promise.resolve(out);
    },
    validate: async () => {
      const s = split.validation;
      const syn = await predictVolume(s, "3T", (x) => teacher.decoder.apply(kkn.apply(x)));
      return imageScores(syn, s.arrays["7T"], s.shape);
    },
    better: bothImprove,
    log: ctx.log,
  });
  await loadCheckpoint(ckpt(ctx, `keeper-fold${split.fold}-best`), pair);
  optK.dispose();
  optD.dispose();
  return kkn;
}

export interface FoldMetrics {
  fold: number;
  subject: string;
  teacher: Scores;
  keeper: Scores;
  floor3T: Scores;
  /** Per level: d(3T, 7T), d(3T, 7T-like), d(7T, 7T-like) on channel-averaged features. */
  featureDistance: { level: number; d3T7T: number; d3TLike: number; d7TLike: number }[];
}

/** Test-subject metrics of one fold: Table 1-style synthesis scores and Table A.1 distances. */
export async function evaluateFold(
  split: FoldSplit,
  teacher: Teacher,
  kkn: KnowledgeKeeper,
): Promise<FoldMetrics> {
  const s = split.test;
  const x3 = toTensor(s.arrays["3T"], s.shape), y7 = toTensor(s.arrays["7T"], s.shape);
  const recon = await readAndDispose(tf.tidy(() => teacher.reconstruct(y7)));
  const f7 = tf.tidy(() => teacher.encoder.apply(y7));
  const f3 = tf.tidy(() => teacher.encoder.apply(x3));
  const fk = tf.tidy(() => kkn.apply(x3));
  const syn = await readAndDispose(tf.tidy(() => teacher.decoder.apply(fk)));
  const distances = [];
  for (let i = 0; i < f7.length; i++) {
    const c = f7[i].shape[4];
    const [a, b, k] = [await f3[i].data(), await f7[i].data(), await fk[i].data()];
    distances.push({
      level: i + 1,
      d3T7T: featureDistance(a, b, c),
      d3TLike: featureDistance(a, k, c),
      d7TLike: featureDistance(b, k, c),
    });
  }
  tf.dispose([x3, y7, ...f7, ...f3, ...fk]);
  return {
    fold: split.fold,
    subject: s.id,
    teacher: imageScores(recon, s.arrays["7T"], s.shape),
    keeper: imageScores(syn, s.arrays["7T"], s.shape),
    floor3T: imageScores(s.arrays["3T"], s.arrays["7T"], s.shape),
    featureDistance: distances,
  };
}

export interface FusionMetrics {
  classes: string[];
  /**
   * Per test subject: the baseline (the paper's protocol), the baseline trained on for as many
   * epochs as the AFM fine-tuning without AFMs (a control for the extra training), and the guided.
   */
  subjects: { id: string; baseline: number[]; baselineMatched: number[]; guided: number[] }[];
  /** Paired t-tests per class: guided against the baseline and against the epoch-matched control. */
  tTest: {
    class: string;
    baselineMean: number;
    baselineMatchedMean: number;
    guidedMean: number;
    t: number;
    p: number;
    tMatched: number;
    pMatched: number;
  }[];
}

/** The low-field image a segmentation subject is segmented from. */
export function segInput(s: Subject): string {
  return "1.5T" in s.arrays ? "1.5T" : "3T";
}

/** Phase 3 on the tissue cohort: baseline, then baseline + AFMs; Dice on the test subjects. */
export async function trainFusion(
  ctx: Context,
  subjects: Subject[],
  kkn: KnowledgeKeeper,
): Promise<FusionMetrics> {
  const { nf, levels, classes } = ctx.cfg.fusion;
  const train = subjects.filter((s) => s.split === "train");
  const val = subjects.filter((s) => s.split === "validation");
  const test = subjects.filter((s) => s.split === "test");
  if (!train.length || !val.length || !test.length) {
    throw new Error("tissue cohort: needs train, validation and test subjects in its manifest");
  }
  const keeperFeatures = (x: tf.Tensor5D) => tf.tidy(() => kkn.apply(x));
  /** Dice per class of each subject. */
  const diceOf = async (subjects: Subject[], predict: (x: tf.Tensor5D) => tf.Tensor5D) => {
    const out: number[][] = [];
    for (const s of subjects) {
      const labels = await predictVolume(s, segInput(s), (x) => labelsOf(predict(x)));
      out.push(dicePerClass(labels, s.arrays.tissue, classes));
    }
    return out;
  };
  const diceSum = async (predict: (x: tf.Tensor5D) => tf.Tensor5D) => {
    const sums = (await diceOf(val, predict)).map((d) => d.reduce((a, b) => a + b, 0));
    return { diceSum: sums.reduce((a, b) => a + b, 0) / val.length };
  };
  const better = (cur: Scores, best: Scores | null) => !best || cur.diceSum > best.diceSum;

  // one loop for both stages: cross-entropy on augmented whole volumes, best by validation Dice
  const trainSegmentation = async (
    label: string,
    name: string,
    epochs: number,
    module: Module,
    seedTag: number,
    logits: (x: tf.Tensor5D, keeper: tf.Tensor5D[]) => tf.Tensor5D,
    withKeeper: boolean,
  ) => {
    const opt = adam(ctx.cfg.learningRate);
    await trainLoop({
      label,
      checkpoint: ckpt(ctx, name),
      epochs,
      items: train,
      module,
      optimizers: { [name]: opt },
      progress: ctx.cfg.progress,
      step: (s, epoch, i) => {
        const a = sample(ctx, s, seedOf(ctx.cfg.seed, seedTag, epoch, i), ["tissue"]);
        const x = toTensor(a[segInput(s)], s.shape);
        const y = tf.tensor(Int32Array.from(a.tissue), [a.tissue.length], "int32");
        const fk = withKeeper ? keeperFeatures(x) : [];
        const cost = opt.minimize(() => crossEntropy(logits(x, fk), y), true, module.parameters())!;
        const loss = cost.dataSync()[0];
        tf.dispose([x, y, cost, ...fk]);
        return Promise.resolve({ loss });
      },
      validate: () => diceSum((x) => logits(x, withKeeper ? kkn.apply(x) : [])),
      better,
      log: ctx.log,
    });
    await loadCheckpoint(ckpt(ctx, `${name}-best`), module);
    opt.dispose();
  };

  const baseline = new UNet3D(classes, nf, levels, seedOf(ctx.cfg.seed, 4));
  await trainSegmentation(
    "baseline 3D U-Net",
    "baseline",
    ctx.cfg.fusion.baselineEpochs,
    baseline,
    13,
    (x) => baseline.apply(x),
    false,
  );
  const testDice = (predict: (x: tf.Tensor5D) => tf.Tensor5D) => diceOf(test, predict);
  const baselineDice = await testDice((x) => baseline.apply(x));

  // control: the best baseline trained on, without AFMs, for as many epochs as the fine-tuning
  const matched = new UNet3D(classes, nf, levels, seedOf(ctx.cfg.seed, 4));
  await loadCheckpoint(ckpt(ctx, "baseline-best"), matched);
  await trainSegmentation(
    "baseline 3D U-Net, epoch-matched",
    "baseline-matched",
    ctx.cfg.fusion.fusionEpochs,
    matched,
    14,
    (x) => matched.apply(x),
    false,
  );
  const matchedDice = await testDice((x) => matched.apply(x));
  matched.dispose();

  // fine-tune the baseline jointly with AFMs (KKN frozen)
  const guided = new GuidedSegmenter(baseline, kkn.widths, seedOf(ctx.cfg.seed, 5));
  await trainSegmentation(
    "3D U-Net + AFM",
    "guided",
    ctx.cfg.fusion.fusionEpochs,
    guided,
    14,
    (x, fk) => guided.apply(x, fk),
    true,
  );

  const guidedDice = await testDice((x) => guided.apply(x, kkn.apply(x)));
  const rows: FusionMetrics["subjects"] = test.map((s, n) => ({
    id: s.id,
    baseline: baselineDice[n],
    baselineMatched: matchedDice[n],
    guided: guidedDice[n],
  }));
  const names = ["background", "CSF", "GM", "WM"].slice(0, classes);
  const mean = (v: number[]) => v.reduce((p, q) => p + q, 0) / v.length;
  const test2 = (a: number[], b: number[]) => (rows.length > 1 ? pairedTTest(a, b) : { t: NaN, p: NaN });
  const tTest = names.map((name, c) => {
    const a = rows.map((r) => r.baseline[c]), m = rows.map((r) => r.baselineMatched[c]);
    const b = rows.map((r) => r.guided[c]);
    const t = test2(a, b), tm = test2(m, b);
    return {
      class: name,
      baselineMean: mean(a),
      baselineMatchedMean: mean(m),
      guidedMean: mean(b),
      t: t.t,
      p: t.p,
      tMatched: tm.t,
      pMatched: tm.p,
    };
  });
  return { classes: names, subjects: rows, tTest };
}

/** Long-format CSV rows (phase, fold, subject, metric, index, value) of a run's metrics. */
export function metricsCsv(folds: FoldMetrics[], fusion: FusionMetrics | null): string {
  const rows = ["phase,fold,subject,metric,index,value"];
  for (const f of folds) {
    for (
      const [phase, s] of [["teacher", f.teacher], ["keeper", f.keeper], ["floor3T", f.floor3T]] as const
    ) {
      rows.push(
        `${phase},${f.fold},${f.subject},psnr,,${s.psnr}`,
        `${phase},${f.fold},${f.subject},ssim,,${s.ssim}`,
      );
    }
    for (const d of f.featureDistance) {
      rows.push(
        `features,${f.fold},${f.subject},d_3T_7T,${d.level},${d.d3T7T}`,
        `features,${f.fold},${f.subject},d_3T_7Tlike,${d.level},${d.d3TLike}`,
        `features,${f.fold},${f.subject},d_7T_7Tlike,${d.level},${d.d7TLike}`,
      );
    }
  }
  if (fusion) {
    for (const s of fusion.subjects) {
      fusion.classes.forEach((c, i) => {
        rows.push(
          `baseline,,${s.id},dice,${c},${s.baseline[i]}`,
          `baselineMatched,,${s.id},dice,${c},${s.baselineMatched[i]}`,
          `guided,,${s.id},dice,${c},${s.guided[i]}`,
        );
      });
    }
  }
  return rows.join("\n") + "\n";
}

export async function writeJson(path: string, value: unknown): Promise<void> {
  await writeFileAtomic(path, JSON.stringify(value, null, 2) + "\n");
}
