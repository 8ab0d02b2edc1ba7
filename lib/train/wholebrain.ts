/**
 * Whole-brain segmentation of 27 structures (paper sections 3 and 4.4.3, Table 3): the phases of
 * the tissue task, run by the same code on a different view of the data.
 *
 * A 2D network (`wholebrain.network` registered with `dims: 2`, e.g. the 2D U-Net) is trained per
 * view (axial, coronal, sagittal; `lib/data/views.ts`) on batches of slices: per view a 2D teacher
 * and a 2D KKN on the paired cohort's fold 1 (phases 1-2, the teacher and keeper settings with
 * `dims: 2` and the `wholebrain` schedules), then the segmentation network alone, the epoch-matched
 * control and the network fine-tuned with AFMs guided by that view's KKN. The sagittal models
 * learn the structures with left and right merged (16 classes). A test scan's labels are the three
 * views' predictions aggregated (`wholebrain.aggregation`). A 3D network (e.g. UNesT) is trained
 * once on volumes, guided by the 3D KKN of fold 1.
 *
 * Checkpoints of a view are the tissue task's names prefixed by the view (`axial-teacher-fold1-best`,
 * `axial-guided-best`); a 3D network's are prefixed by `wholebrain-`.
 */
import * as tf from "@tensorflow/tfjs-core";
import { existsSync } from "node:fs";
import type { Subject } from "../data/cohort.ts";
import {
  aggregateViews,
  meanOfViews,
  mergeLabels,
  mergeLeftRight,
  unmergeScores,
  type View,
  VIEWS,
} from "../data/views.ts";
import { dicePerClass } from "../metrics.ts";
import type { KnowledgeKeeper } from "../models/keeper.ts";
import { networkLabel, NETWORKS, thickSlicesOf } from "../models/networks.ts";
import { LEFT_RIGHT_PAIRS, STRUCTURES } from "../phantom/labels.ts";
import { loaded } from "./state.ts";
import type { Schedule } from "./schedule.ts";
import type { Scores } from "./loop.ts";
import {
  airAsBackground,
  buildGuided,
  buildKeeper,
  buildSegmenter,
  buildTeacher,
  ckpt,
  cohortSplits,
  type Context,
  evaluateFold,
  floorScores,
  type FoldMetrics,
  type FoldSplit,
  type FusionMetrics,
  guidedStage,
  imageScores,
  middleSlice,
  networkSpec,
  pairedMetrics,
  predictVolume,
  type RunConfig,
  segInput,
  synthesisOf,
  type TissueSplits,
  trainKeeper,
  trainSegmenter,
  trainTeacher,
  unguidedStage,
  windowed,
} from "./pipeline.ts";

/** The whole-brain label key of a cohort scan. */
export const STRUCTURES_KEY = "structures";

/** The sagittal view's classes: the 27 structures with left and right merged (16 with background). */
export const SAGITTAL_LABELS = mergeLeftRight(STRUCTURES.length, LEFT_RIGHT_PAIRS);

/** Whether a registered network is 2D (trained per view on slices). */
export function isSliceNetwork(cfg: RunConfig): boolean {
  return NETWORKS[cfg.wholebrain.network].dims === 2;
}

/**
 * The context a view's networks train in: 2D teacher, KKN and segmenter, the view's slices (for
 * the segmenter with the neighbours it reads, `thick`; the teacher and KKN read one slice).
 */
export function viewContext(ctx: Context, view: View | null, segmenter = true): Context {
  const wb = ctx.cfg.wholebrain;
  const classes = view === "sagittal" ? SAGITTAL_LABELS.split.length : STRUCTURES.length;
  const dims = view ? 2 : 3;
  const cfg: RunConfig = {
    ...ctx.cfg,
    // never augmented: the released code does not augment the whole-brain slices, and the tissue
    // task's left-right flip and axial-plane rotations would put a left structure where the right
    // one lies without swapping their labels (slices are not augmented in any case)
    augment: false,
    teacher: view ? { ...ctx.cfg.teacher, dims, train: wb.teacher } : ctx.cfg.teacher,
    keeper: view ? { ...ctx.cfg.keeper, dims, train: wb.keeper } : ctx.cfg.keeper,
    fusion: {
      ...ctx.cfg.fusion,
      network: wb.network,
      nf: wb.nf,
      levels: wb.levels,
      classes,
      loss: wb.loss,
      unestDepths: wb.unestDepths,
      unestWindow: wb.unestWindow,
      baseline: wb.baseline,
      fusion: wb.fusion,
    },
  };
  const thick = segmenter ? thickSlicesOf(wb.network) : 0;
  if (view) {
    return {
      ...ctx,
      cfg,
      slices: { view, batch: wb.batch, ...(thick ? { thick } : {}) },
      prefix: `${view}-`,
    };
  }
  // a fixed-input 3D network (UNesT) trains on crops of its window only and predicts by windows
  const window = networkSpec(cfg).window;
  if (!window) return { ...ctx, cfg, prefix: "wholebrain-" };
  const crops = (s: Schedule): Schedule => ({ ...s, patch: window, wholeFraction: 0 });
  return {
    ...ctx,
    cfg: { ...cfg, fusion: { ...cfg.fusion, baseline: crops(wb.baseline), fusion: crops(wb.fusion) } },
    window,
    prefix: "wholebrain-",
  };
}

/** A view's subjects: the sagittal view's with left and right structures merged. */
export function viewSubjects(subjects: Subject[], view: View | null): Subject[] {
  if (view !== "sagittal") return subjects;
  return subjects.map((s) => ({
    ...s,
    arrays: { ...s.arrays, [STRUCTURES_KEY]: mergeLabels(s.arrays[STRUCTURES_KEY], SAGITTAL_LABELS) },
  }));
}

export interface WholeBrainSynthesis {
  /** Per view, the fold's test subjects: 2D teacher and KKN scores, 3T floor, Table A.1 distances. */
  views: Partial<Record<View, FoldMetrics[]>>;
  /** The three views' reconstructions and syntheses averaged (the released code's `/= 3`). */
  aggregated: { subject: string; teacher: Scores; keeper: Scores; floor3T: Scores }[];
}

export interface WholeBrainMetrics {
  network: string;
  label: string;
  /** The views trained (2D), or null for a 3D network. */
  views: View[] | null;
  aggregation: string;
  /** 2D teacher and KKN synthesis (2D networks; a 3D network uses the run's 3D KKN). */
  synthesis: WholeBrainSynthesis | null;
  /** Dice per structure (28 with background) of the test scans: baseline, control, guided. */
  segmentation: FusionMetrics;
}

/**
 * Phases 1-2 in 2D for every view on fold `split` (a view's teacher and KKN are read when their
 * best checkpoints exist), with per-view and aggregated synthesis scores. Returns each view's KKN.
 */
async function viewKeepers(
  ctx: Context,
  split: FoldSplit,
): Promise<{ keepers: Record<View, KnowledgeKeeper>; synthesis: WholeBrainSynthesis }> {
  const keepers = {} as Record<View, KnowledgeKeeper>;
  const views: WholeBrainSynthesis["views"] = {};
  // each test subject's reconstructions and syntheses, one per view
  const recon = new Map<Subject, Float32Array[]>(), syn = new Map<Subject, Float32Array[]>();
  for (const view of VIEWS) {
    const v = viewContext(ctx, view, false);
    const name = (phase: string) => ckpt(v, `${phase}-fold${split.fold}-best`);
    const teacher = existsSync(`${name("teacher")}.json`)
      ? await loaded(buildTeacher(v.cfg, split.fold), name("teacher"))
      : await trainTeacher(v, split);
    keepers[view] = existsSync(`${name("keeper")}.json`)
      ? await loaded(buildKeeper(v.cfg, split.fold), name("keeper"), "keeper.")
      : await trainKeeper(v, split, teacher);
    views[view] = await evaluateFold(split, teacher, keepers[view], v.slices, (s, r, y) => {
      recon.set(s, [...recon.get(s) ?? [], r]);
      syn.set(s, [...syn.get(s) ?? [], y]);
    });
    teacher.dispose();
  }
  const aggregated = split.test.map((s) => ({
    subject: s.id,
    teacher: imageScores(meanOfViews(recon.get(s)!), s.arrays["7T"], s.shape),
    keeper: imageScores(meanOfViews(syn.get(s)!), s.arrays["7T"], s.shape),
    floor3T: floorScores(s),
  }));
  return { keepers, synthesis: { views, aggregated } };
}

/**
 * The 7T-like syntheses of `subjects`' 3T images by a whole-brain run's fold-1 2D teachers and
 * KKNs, each view's slices through its KKN and teacher decoder, the three views averaged (as
 * `viewKeepers` scores them): the images of Table 1 (c).
 */
export async function viewSyntheses(ctx: Context, subjects: Subject[]): Promise<Float32Array[]> {
  const syn = subjects.map(() => [] as Float32Array[]);
  for (const view of VIEWS) {
    const v = viewContext(ctx, view, false);
    const teacher = await loaded(buildTeacher(v.cfg, 1), ckpt(v, "teacher-fold1-best"));
    const kkn = await loaded(buildKeeper(v.cfg, 1), ckpt(v, "keeper-fold1-best"), "keeper.");
    for (const [i, s] of subjects.entries()) syn[i].push(await synthesisOf(s, "3T", teacher, kkn, v.slices));
    teacher.dispose();
    kkn.dispose();
  }
  return syn.map(meanOfViews);
}

/** The whole-brain cohort's splits (every scan of a rescanned subject tests). */
export function wholeBrainSplits(subjects: Subject[]): TissueSplits {
  const data = cohortSplits(subjects, "wholebrain");
  for (const s of subjects) {
    if (!(STRUCTURES_KEY in s.arrays)) {
      throw new Error(`wholebrain scan ${s.id}: no "${STRUCTURES_KEY}" label map`);
    }
  }
  return { ...data, input: "low-field", labels: STRUCTURES_KEY, airIsBackground: true };
}

/** A view's training data: the whole-brain splits with the view's labels (sagittal: merged). */
export function viewData(data: TissueSplits, view: View | null): TissueSplits {
  return { ...data, train: viewSubjects(data.train, view), validation: viewSubjects(data.validation, view) };
}

/**
 * One stage of phase 3 for one view (or the 3D network), in context `v` (`viewContext`): the
 * baseline from scratch, the epoch-matched control or the AFM-guided network from the best
 * baseline, the guided one with `kkn` (the view's KKN, or the 3D KKN of fold 1) frozen.
 */
export async function trainStage(
  v: Context,
  data: TissueSplits,
  stage: Stage,
  kkn?: KnowledgeKeeper,
): Promise<void> {
  const spec = networkSpec(v.cfg);
  const label = `${networkLabel(spec)}${v.slices ? ` ${v.slices.view}` : ""}`;
  const meta = { spec, view: v.slices?.view ?? null };
  if (stage === "baseline") {
    const net = buildSegmenter(v.cfg, spec);
    await trainSegmenter(v, data, unguidedStage(v, net, "baseline", label, meta));
    net.dispose();
    return;
  }
  const net = await loaded(buildSegmenter(v.cfg, spec), ckpt(v, "baseline-best"));
  if (stage === "baseline-matched") {
    await trainSegmenter(v, data, unguidedStage(v, net, "baseline-matched", label, meta));
    net.dispose();
    return;
  }
  if (!kkn) throw new Error(`${label}: the guided stage needs a KKN`);
  const guided = buildGuided(v.cfg, net, kkn.widths);
  await trainSegmenter(
    v,
    data,
    guidedStage(v, guided, kkn, {
      label: `${label} + AFM`,
      name: "guided",
      keeperCheckpoint: `${v.slices ? v.prefix : ""}keeper-fold1-best`,
      auxDecay: net.auxDecay ?? 0,
      meta,
    }),
  );
  guided.dispose();
}

export type Stage = "baseline" | "baseline-matched" | "guided";
export const STAGES: readonly Stage[] = ["baseline", "baseline-matched", "guided"];

interface Predictor {
  apply(x: tf.Tensor5D): tf.Tensor5D;
  dispose(): void;
}

/**
 * The whole-brain labels of a run's trained models (`--phase wholebrain`), loaded from its
 * checkpoints when first needed: per stage and view the segmenter (and for the guided stage the
 * view's KKN, the 3D network's the fold 1 KKN), the views' predictions aggregated as the run's
 * configuration says. Used by the test scoring, the figures and `deno task segment`.
 */
export class WholeBrainModels {
  private readonly models = new Map<string, Predictor>();
  private readonly keepers = new Map<string, KnowledgeKeeper>();
  /** The views of a 2D network, or `[null]` for a 3D one. */
  readonly views: (View | null)[];
  constructor(private readonly ctx: Context) {
    this.views = isSliceNetwork(ctx.cfg) ? [...VIEWS] : [null];
  }

  private async keeper(v: Context): Promise<KnowledgeKeeper> {
    const path = v.slices ? ckpt(v, "keeper-fold1-best") : ckpt({ ...v, prefix: "" }, "keeper-fold1-best");
    if (!this.keepers.has(path)) {
      this.keepers.set(path, await loaded(buildKeeper(v.cfg, 1), path, "keeper."));
    }
    return this.keepers.get(path)!;
  }

  private async model(v: Context, stage: Stage): Promise<Predictor> {
    const key = `${v.prefix}${stage}`;
    if (!this.models.has(key)) {
      const spec = networkSpec(v.cfg);
      if (stage === "guided") {
        const kkn = await this.keeper(v);
        const guided = await loaded(
          buildGuided(v.cfg, buildSegmenter(v.cfg, spec), kkn.widths),
          ckpt(v, "guided-best"),
        );
        this.models.set(key, {
          apply: (x) => guided.apply(x, kkn.apply(middleSlice(x))),
          dispose: () => guided.dispose(),
        });
      } else {
        const net = await loaded(buildSegmenter(v.cfg, spec), ckpt(v, `${stage}-best`));
        this.models.set(key, { apply: (x) => net.apply(x), dispose: () => net.dispose() });
      }
    }
    return this.models.get(key)!;
  }

  /**
   * A scan's class probabilities over the 28 labels from one view's (or the 3D network's) model of
   * `stage`, in volume order; the sagittal view's spread back over both hemispheres.
   */
  async probabilities(s: Subject, stage: Stage, view: View | null): Promise<Float32Array> {
    const v = viewContext(this.ctx, view);
    const model = await this.model(v, stage);
    const logits = windowed((x) => model.apply(x), v.window);
    const p = await predictVolume(s, segInput(s), (x) => tf.softmax(logits(x)), v.slices);
    return view === "sagittal" ? unmergeScores(p, SAGITTAL_LABELS, STRUCTURES.length) : p;
  }

  /**
   * A scan's 28-label map from `stage`'s models, the views aggregated, background wherever the
   * input is exactly 0 (air of a skull-stripped scan, as `deno task segment` masks it): a 2D
   * network normalising each slice by its own statistics sees an all-air slice as all zeros, and
   * the whole-brain loss weighs the background near 0.001, so unmasked maps label much of the air
   * (README, Whole-brain segmentation).
   */
  async labels(s: Subject, stage: Stage): Promise<Float32Array> {
    const probabilities: Partial<Record<View, Float32Array>> = {};
    for (const view of this.views) {
      // a 3D network's one prediction stands in the place of a view: its argmax
      probabilities[view ?? "axial"] = await this.probabilities(s, stage, view);
    }
    const mode = this.views[0] === null ? "average" : this.ctx.cfg.wholebrain.aggregation;
    return airAsBackground(aggregateViews(probabilities, STRUCTURES.length, mode), s.arrays[segInput(s)]);
  }

  dispose(): void {
    for (const m of this.models.values()) m.dispose();
    for (const k of this.keepers.values()) k.dispose();
    this.models.clear();
    this.keepers.clear();
  }
}

/**
 * Whole-brain segmentation: for a 2D network the per-view 2D teacher and KKN of `split` (fold 1)
 * then per view the three stages, each test scan aggregated over the views; for a 3D network the
 * three stages guided by `keeper3d`. Returns Dice per structure with paired statistics.
 */
export async function trainWholeBrain(
  ctx: Context,
  split: FoldSplit,
  subjects: Subject[],
  keeper3d: () => Promise<KnowledgeKeeper>,
): Promise<WholeBrainMetrics> {
  const data = wholeBrainSplits(subjects);
  const views: (View | null)[] = isSliceNetwork(ctx.cfg) ? [...VIEWS] : [null];
  let synthesis: WholeBrainSynthesis | null = null;
  const keepers = new Map<View | null, KnowledgeKeeper>();
  if (views[0] === null) keepers.set(null, await keeper3d());
  else {
    const trained = await viewKeepers(ctx, split);
    synthesis = trained.synthesis;
    for (const view of VIEWS) keepers.set(view, trained.keepers[view]);
  }
  for (const view of views) {
    const v = viewContext(ctx, view);
    for (const stage of STAGES) await trainStage(v, viewData(data, view), stage, keepers.get(view));
  }
  for (const k of keepers.values()) k.dispose();
  // test: every stage's views aggregated per scan
  const models = new WholeBrainModels(ctx);
  const dice: Record<Stage, number[][]> = { baseline: [], "baseline-matched": [], guided: [] };
  for (const s of data.test) {
    for (const stage of STAGES) {
      dice[stage].push(
        dicePerClass(await models.labels(s, stage), s.arrays[STRUCTURES_KEY], STRUCTURES.length),
      );
    }
  }
  models.dispose();
  const rows = data.test.map((s, n) => ({
    id: s.id,
    baseline: dice.baseline[n],
    baselineMatched: dice["baseline-matched"][n],
    guided: dice.guided[n],
  }));
  const spec = networkSpec(viewContext(ctx, views[0]).cfg);
  return {
    network: spec.network,
    label: networkLabel(spec),
    views: views[0] === null ? null : [...VIEWS],
    aggregation: views[0] === null ? "none (3D)" : ctx.cfg.wholebrain.aggregation,
    synthesis,
    segmentation: pairedMetrics([...STRUCTURES], rows),
  };
}
