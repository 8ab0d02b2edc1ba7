/**
 * Figures and tables of a finished run, shared by the notebooks and `deno task figures`:
 * plotly specs from `metrics.json` / `log.jsonl`, danfojs tables, and image montages from the
 * run's checkpoints applied to its test subjects (each figure names the paper figure or table
 * it corresponds to in `FIGURES`).
 */
import type { ConvergenceReport } from "./train/schedule.ts";
import * as tf from "@tensorflow/tfjs-core";
import { existsSync } from "node:fs";
import { DamagedFileError, readJsonFile, readJsonLines } from "./io/json.ts";
import { join } from "node:path";
import type * as dfd from "danfojs";
import type { GuidedSegmenter, SegmentationNetwork } from "./models/fusion.ts";
import { networkLabel, NETWORKS } from "./models/networks.ts";
import type { KnowledgeKeeper } from "./models/keeper.ts";
import type { Teacher } from "./models/teacher.ts";
import { loadCohort, type Subject } from "./data/cohort.ts";
import { toTensor } from "./train/augment.ts";
import {
  type BaselineMetrics,
  buildTeacher,
  clip01,
  type DecoderMetrics,
  type FoldMetrics,
  foldSplits,
  type FusionMetrics,
  labelsOf,
  loadGuided,
  loadSegmenter,
  networkSpec,
  predictVolume,
  readAndDispose,
  type RunConfig,
  segInput,
  synthesisOf,
} from "./train/pipeline.ts";
import { loadCheckpoint } from "./train/state.ts";
import type { WholeBrainMetrics } from "./train/wholebrain.ts";
import { makeVolume, type Volume } from "./volume/volume.ts";
import { boxPlot, linePlot, type PlotlyFigure } from "./viz/plotly.ts";
import { dataFrame } from "./viz/table.ts";
import { comparePaired, meanOf, sdOf } from "./stats.ts";
import { montage } from "./viz/png.ts";
import {
  TISSUE_LUT,
  viewerHtml,
  type ViewerLayer,
  type ViewerPanel,
  type ViewerScene,
  type ViewerView,
} from "./viz/viewer.ts";
import { encodeNifti } from "./io/nifti.ts";

export { montage };

export interface RunData {
  dir: string;
  config: RunConfig;
  metrics: {
    data?: string;
    profile: string;
    wallSeconds: number;
    peakRssMiB: number | null;
    folds: FoldMetrics[];
    fusion: FusionMetrics | null;
    /** A `--phase baseline` run's results. */
    baseline?: BaselineMetrics | null;
    /** A `--phase decoder` run's results (Table 1 (d)), one per fold. */
    decoders?: DecoderMetrics[];
    /** A `--phase wholebrain` run's results (Table 3). */
    wholebrain?: WholeBrainMetrics | null;
    convergence?: ConvergenceReport[];
  };
  /** log.jsonl: one line per round, and one convergence verdict per phase. */
  log: {
    phase: string;
    epoch: number;
    steps?: number;
    train: Record<string, number>;
    validation: Record<string, number>;
    convergence?: ConvergenceReport;
  }[];
}

export async function loadRun(dir: string): Promise<RunData> {
  for (const f of ["config.json", "metrics.json", "log.jsonl"]) {
    const p = join(dir, f);
    if (!existsSync(p)) {
      throw new DamagedFileError(p, `missing (is ${dir} a finished \`deno task train\` run?)`);
    }
  }
  return {
    dir,
    config: await readJsonFile(join(dir, "config.json"), "the run's configuration"),
    metrics: await readJsonFile(join(dir, "metrics.json"), "the run's metrics"),
    log: await readJsonLines(join(dir, "log.jsonl"), "a training log line"),
  };
}

/** The cohort root a run trained on. */
export function runDataDir(run: RunData): string {
  return run.metrics.data ?? `data/generated/${run.metrics.profile}`;
}

/**
 * Training loss and validation score per round of one phase (e.g. "teacher fold 1") against
 * optimisation steps, with the phase's floor (the 3T input's own PSNR, or the Dice sanity floor)
 * as a dashed line on the validation axis.
 */
export function trainingCurves(run: RunData, phase: string): PlotlyFigure {
  const rows = run.log.filter((l) => l.phase === phase && l.validation);
  if (!rows.length) throw new Error(`${run.dir}/log.jsonl: no epochs logged for "${phase}"`);
  const x = rows.map((r) => r.steps ?? r.epoch);
  const conv = run.log.find((l) => l.phase === phase && l.convergence)?.convergence;
  const valKey = "dice" in rows[0].validation ? "dice" : Object.keys(rows[0].validation)[0];
  const valName = valKey === "dice" ? "mean foreground Dice" : valKey;
  const series: Parameters<typeof linePlot>[1] = [
    { name: "training loss", x, y: rows.map((r) => r.train.loss) },
    { name: `validation ${valName}`, x, y: rows.map((r) => r.validation[valKey]), yaxis: "y2" },
  ];
  if (conv?.floor != null) {
    series.push({
      name: valKey === "dice" ? "Dice floor" : "3T input (floor)",
      x: [x[0], x[x.length - 1]],
      y: [conv.floor, conv.floor],
      yaxis: "y2",
      dashed: true,
    });
  }
  const fig = linePlot(`Training: ${phase}`, series, "optimisation steps", "loss", `validation ${valName}`);
  (fig.layout as Record<string, unknown>).yaxis = { title: { text: "loss" }, type: "log" };
  return fig;
}

/** Phases with logged epochs, in order. */
export function loggedPhases(run: RunData): string[] {
  return [...new Set(run.log.filter((l) => l.validation).map((l) => l.phase))];
}

/** PSNR or SSIM per test subject: teacher reconstruction, KKN synthesis, 3T floor (Fig. 6 numbers). */
export function synthesisScores(run: RunData, metric: "psnr" | "ssim"): PlotlyFigure {
  const f = run.metrics.folds;
  const series = [
    { name: "teacher (7T -> 7T)", key: "teacher" as const },
    { name: "KKN (3T -> 7T-like)", key: "keeper" as const },
    { name: "3T input (floor)", key: "floor3T" as const },
  ];
  return boxPlot(
    `${metric.toUpperCase()} against 7T per test subject`,
    series.map((s) => ({
      name: s.name,
      categories: f.map(() => s.name),
      values: f.map((m) => m[s.key][metric]),
    })),
    metric.toUpperCase(),
  );
}

export function synthesisTable(run: RunData): dfd.DataFrame {
  return dataFrame(run.metrics.folds.flatMap((f) =>
    (["teacher", "keeper", "floor3T"] as const).map((k) => ({
      fold: f.fold,
      subject: f.subject,
      model: k,
      psnr: f[k].psnr,
      ssim: f[k].ssim,
    }))
  ));
}

/**
 * Where Table A.1's "3T features" come from: `extractor`, the KKN's own low-field extractor (the
 * paper's Appendix A), or `teacher`, the teacher encoder applied to the 3T image.
 */
export type FeatureReading = "extractor" | "teacher";

/**
 * Table A.1: feature distances per level, mean and SD over test subjects, as root mean squares
 * (the L2 distance of the channel-averaged maps divided by the square root of the level's voxel
 * count, so levels compare), under one reading of "3T features".
 */
export function featureDistanceTable(run: RunData, reading: FeatureReading = "extractor"): dfd.DataFrame {
  const folds = run.metrics.folds;
  const levels = folds[0]?.featureDistance.map((d) => d.level) ?? [];
  if (!levels.length) throw new Error(`${run.dir}: no feature distances (run the keeper phase)`);
  if (reading === "extractor" && folds.some((f) => f.featureDistance.some((d) => d.dX7T === undefined))) {
    throw new Error(`${run.dir}: no extractor feature distances (the run predates them; evaluate it again)`);
  }
  const key = {
    d3T7T: reading === "extractor" ? "dX7T" : "d3T7T",
    d3TLike: reading === "extractor" ? "dXLike" : "d3TLike",
    d7TLike: "d7TLike",
  } as const;
  return dataFrame(levels.map((level) => {
    const at = (k: keyof typeof key) =>
      folds.map((f) => {
        const d = f.featureDistance[level - 1];
        // runs written before `voxels` existed: the level's voxel count is unknown, report L2
        return (d[key[k]] as number) / Math.sqrt(d.voxels ?? 1);
      });
    return {
      level,
      "d(3T, 7T)": meanOf(at("d3T7T")),
      "d(3T, 7T) sd": sdOf(at("d3T7T")),
      "d(3T, 7T-like)": meanOf(at("d3TLike")),
      "d(3T, 7T-like) sd": sdOf(at("d3TLike")),
      "d(7T, 7T-like)": meanOf(at("d7TLike")),
      "d(7T, 7T-like) sd": sdOf(at("d7TLike")),
      "7T-like closer to 7T than 3T is": meanOf(at("d7TLike")) < meanOf(at("d3T7T")) ? "yes" : "no",
    };
  }));
}

/** The paper's Table 2 (IBSR tissue Dice, %): baseline and with UHF guidance, CSF / GM / WM. */
export const PAPER_TABLE2: Record<string, { baseline: number[]; guided: number[] }> = {
  "3D U-Net": { baseline: [82.09, 91.81, 88.49], guided: [84.16, 92.52, 88.83] },
  VoxResNet: { baseline: [77.70, 90.72, 86.75], guided: [81.11, 91.75, 87.84] },
  "U-SegNet": { baseline: [72.03, 87.79, 84.22], guided: [76.10, 89.41, 85.45] },
  "RP-Net": { baseline: [74.89, 87.29, 83.41], guided: [81.58, 92.22, 88.89] },
};

/** Per test subject, the mean tissue Dice (%, background excluded) of one model of a fusion run. */
function subjectAverages(fu: FusionMetrics, key: "baseline" | "baselineMatched" | "guided"): number[] {
  return fu.subjects.map((s) => 100 * meanOf(s[key].slice(1)));
}

function fusionOf(run: RunData): FusionMetrics {
  const fu = run.metrics.fusion;
  if (!fu) throw new Error(`${run.dir}: no fusion results (run the fusion phase)`);
  return fu;
}

/**
 * Table 2 from one finished fusion run per network: mean test Dice (%) per tissue class and
 * their average, for the baseline, the epoch-matched control and the AFM-guided network; the
 * AFM's gain in the average with its bootstrap 95% interval and the Wilcoxon signed-rank p-value,
 * against the baseline and against the control; per-class paired t-test p-values; the paper's
 * baseline and guided averages beside them.
 */
export function table2(runs: RunData[]): dfd.DataFrame {
  const pct = (v: number) => 100 * v;
  return dataFrame(runs.map((run) => {
    const fu = fusionOf(run);
    const net = networkLabel(networkSpec(run.config));
    const tissue = fu.tTest.filter((t) => t.class !== "background");
    const avg = (k: "baselineMean" | "baselineMatchedMean" | "guidedMean") =>
      meanOf(tissue.map((t) => pct(t[k])));
    const row: Record<string, number | string> = { network: net };
    for (const t of tissue) row[`${t.class}`] = pct(t.baselineMean);
    row["average"] = avg("baselineMean");
    row["control average"] = avg("baselineMatchedMean");
    for (const t of tissue) row[`${t.class} + AFM`] = pct(t.guidedMean);
    row["average + AFM"] = avg("guidedMean");
    const guided = subjectAverages(fu, "guided");
    const vsBase = comparePaired(subjectAverages(fu, "baseline"), guided);
    const vsControl = comparePaired(subjectAverages(fu, "baselineMatched"), guided);
    const ci = (c: typeof vsBase) => `[${c.ciLow.toFixed(2)}, ${c.ciHigh.toFixed(2)}]`;
    const pW = (c: typeof vsBase) => (Number.isFinite(c.pWilcoxon) ? c.pWilcoxon : "n/a");
    row["AFM gain"] = avg("guidedMean") - avg("baselineMean");
    row["gain 95% CI"] = ci(vsBase);
    row["p_W gain"] = pW(vsBase);
    row["AFM gain over control"] = avg("guidedMean") - avg("baselineMatchedMean");
    row["over control 95% CI"] = ci(vsControl);
    row["p_W over control"] = pW(vsControl);
    for (const t of tissue) {
      row[`p ${t.class} vs baseline`] = Number.isFinite(t.p) ? t.p : "n/a";
      row[`p ${t.class} vs control`] = Number.isFinite(t.pMatched) ? t.pMatched : "n/a";
    }
    const paper = PAPER_TABLE2[net];
    row["paper average"] = paper ? meanOf(paper.baseline) : "n/a";
    row["paper average + guidance"] = paper ? meanOf(paper.guided) : "n/a";
    const conv = run.metrics.convergence ?? [];
    const problems = conv.filter((c) => c.problems.length && !/^(teacher|keeper)/.test(c.phase));
    row["converged"] = problems.length
      ? problems.map((c) => `${c.phase}: ${c.problems.join("; ")}`).join(" | ")
      : "yes";
    return row;
  }));
}

/**
 * Table 2 as a figure: per network, the test subjects' mean tissue Dice (%) of the baseline, the
 * epoch-matched control and the AFM-guided network, with the paper's baseline and guided averages
 * as markers.
 */
export function table2Plot(runs: RunData[]): PlotlyFigure {
  const nets = runs.map((r) => networkLabel(networkSpec(r.config)));
  const series = (name: string, key: "baseline" | "baselineMatched" | "guided") => ({
    name,
    categories: runs.flatMap((r, i) => fusionOf(r).subjects.map(() => nets[i])),
    values: runs.flatMap((r) => subjectAverages(fusionOf(r), key)),
  });
  const fig = boxPlot("Table 2: mean tissue Dice of the test subjects", [
    series("baseline", "baseline"),
    series("epoch-matched control", "baselineMatched"),
    series("+ AFM", "guided"),
  ], "mean tissue Dice (%)");
  const paper = (key: "baseline" | "guided", name: string, symbol: string) => ({
    type: "scatter",
    mode: "markers",
    name,
    x: nets,
    y: nets.map((n) => (PAPER_TABLE2[n] ? meanOf(PAPER_TABLE2[n][key]) : null)),
    marker: { symbol, size: 11, color: "black" },
  });
  fig.data.push(paper("baseline", "paper: baseline", "x"), paper("guided", "paper: + guidance", "star"));
  return fig;
}

/**
 * The runs Table 2 is made of when none are named: `runDir` if it has fusion results, then every
 * `<runs>/<prefix>-<network>` with fusion results, in the registry's order, one per network.
 */
export async function table2Runs(runDir: string, runsDir = "runs", prefix = "table2"): Promise<RunData[]> {
  const found: RunData[] = [];
  const seen = new Set<string>();
  const add = async (dir: string) => {
    if (!existsSync(join(dir, "metrics.json"))) return;
    const run = await loadRun(dir);
    const network = run.config.fusion.network ?? "unet3d";
    if (!run.metrics.fusion || seen.has(network)) return;
    seen.add(network);
    found.push(run);
  };
  await add(runDir);
  for (const network of Object.keys(NETWORKS)) await add(join(runsDir, `${prefix}-${network}`));
  const order = Object.keys(NETWORKS);
  return found.sort((a, b) =>
    order.indexOf(a.config.fusion.network ?? "unet3d") - order.indexOf(b.config.fusion.network ?? "unet3d")
  );
}

/** Dice per class: baseline vs AFM-guided, one box per class and model (Table 1 / Fig. 7 numbers). */
export function diceBoxPlot(run: RunData): PlotlyFigure {
  const fu = fusionOf(run);
  const series = (name: string, key: "baseline" | "baselineMatched" | "guided") => ({
    name,
    categories: fu.subjects.flatMap(() => fu.classes.slice(1)),
    values: fu.subjects.flatMap((s) => s[key].slice(1)),
  });
  const net = networkLabel(networkSpec(run.config));
  return boxPlot("Tissue Dice on the test subjects", [
    series(net, "baseline"),
    series(`${net}, epoch-matched`, "baselineMatched"),
    series(`${net} + AFM`, "guided"),
  ], "Dice");
}

export function diceTable(run: RunData): dfd.DataFrame {
  const fu = fusionOf(run);
  const num = (v: number) => (Number.isFinite(v) ? v : "n/a");
  const net = networkLabel(networkSpec(run.config));
  return dataFrame(fu.tTest.map((t) => ({
    class: t.class,
    [net]: t.baselineMean,
    [`${net}, epoch-matched`]: t.baselineMatchedMean,
    [`${net} + AFM`]: t.guidedMean,
    "p (AFM vs baseline)": num(t.p),
    "p (AFM vs epoch-matched)": num(t.pMatched),
  })));
}

// ---------------------------------------------------------------------------------------------
// Montages from the run's checkpoints

export interface TrainedModels {
  teacher: Teacher;
  keeper: KnowledgeKeeper;
  baseline: SegmentationNetwork;
  guided: GuidedSegmenter;
}

/** Fold 1's teacher and KKN, and the baseline and guided segmenters, from a run's checkpoints. */
export async function loadModels(run: RunData): Promise<TrainedModels> {
  const ck = (n: string) => join(run.dir, "checkpoints", n);
  const cfg = run.config;
  const teacher = buildTeacher(cfg, 1);
  await loadCheckpoint(ck("teacher-fold1-best"), teacher);
  // segmenters are rebuilt from the network spec their checkpoints record; the KKN is the one the
  // guided network was trained with
  const baseline = await loadSegmenter(cfg, ck("baseline-best"));
  const { keeper, guided } = await loadGuided(cfg, join(run.dir, "checkpoints"));
  return { teacher, keeper, baseline, guided };
}

/** Fold 1's test subject of the paired cohort, and the tissue cohort's first test subject. */
export async function testSubjects(run: RunData): Promise<{ paired: Subject; tissue: Subject }> {
  const root = runDataDir(run);
  const paired = await loadCohort(join(root, "paired"));
  const tissue = await loadCohort(join(root, "tissue"));
  return {
    paired: foldSplits(paired.subjects, { folds: 1, testPerFold: run.config.testPerFold ?? 1 })[0].test[0],
    tissue: tissue.subjects.find((s) => s.split === "test")!,
  };
}

function asVolume(s: Subject, data: ArrayLike<number>): Volume<Float32Array> {
  return makeVolume(Float32Array.from(data), s.reference.shape, s.reference.affine);
}

/** Fig. 6: rows 3T input, KKN 7T-like synthesis, 7T ground truth, teacher reconstruction. */
export async function synthesisMontage(m: TrainedModels, s: Subject): Promise<Uint8Array> {
  const syn = await synthesisOf(s, "3T", m.teacher, m.keeper);
  const rec = await predictVolume(s, "7T", (y) => m.teacher.reconstruct(y));
  return await montage([
    { vol: asVolume(s, s.arrays["3T"]) },
    { vol: asVolume(s, syn) },
    { vol: asVolume(s, s.arrays["7T"]) },
    { vol: asVolume(s, rec) },
  ]);
}

/** Channel mean of a [1, D, H, W, C] feature map as a volume on its own (coarser) grid. */
async function channelMeanVolume(f: tf.Tensor5D, s: Subject): Promise<Volume<Float32Array>> {
  const [, d, h, w] = f.shape;
  const v = await readAndDispose(tf.tidy(() => tf.mean(f, 4)));
  const factor = s.shape[0] / d;
  const a = s.reference.affine.map((
    row,
    i,
  ) => (i < 3 ? [row[0] * factor, row[1] * factor, row[2] * factor, row[3]] : row));
  return makeVolume(v, [w, h, d], a);
}

/** Normalises a volume to [0, 1] by its own range (for showing feature maps). */
function stretch(v: Volume<Float32Array>): Volume<Float32Array> {
  let lo = Infinity, hi = -Infinity;
  for (const x of v.data) (lo = Math.min(lo, x)), (hi = Math.max(hi, x));
  return makeVolume(v.data.map((x) => (x - lo) / (hi - lo || 1)), v.shape, v.affine);
}

/** Fig. A.1: channel-averaged 3T, 7T and 7T-like features (teacher encoder / KKN) at one level. */
export async function featureMontage(m: TrainedModels, s: Subject, level = 1): Promise<Uint8Array> {
  const x3 = toTensor(s.arrays["3T"], s.shape), y7 = toTensor(s.arrays["7T"], s.shape);
  const f3 = tf.tidy(() => m.teacher.encoder.apply(x3)), f7 = tf.tidy(() => m.teacher.encoder.apply(y7));
  const fk = tf.tidy(() => m.keeper.apply(x3));
  const rows = [];
  for (const f of [f3, f7, fk]) rows.push({ vol: stretch(await channelMeanVolume(f[level - 1], s)) });
  tf.dispose([x3, y7, ...f3, ...f7, ...fk]);
  return await montage(rows);
}

/** Fig. 7: the low-field image with ground-truth, baseline and guided tissue labels. */
export async function segmentationMontage(m: TrainedModels, s: Subject): Promise<Uint8Array> {
  const input = segInput(s);
  const base = await predictVolume(s, input, (x) => labelsOf(m.baseline.apply(x)));
  const guided = await predictVolume(s, input, (x) => labelsOf(m.guided.apply(x, m.keeper.apply(x))));
  const img = asVolume(s, s.arrays[input]);
  return await montage([
    { vol: img },
    { vol: img, labels: asVolume(s, s.arrays.tissue) },
    { vol: img, labels: asVolume(s, base) },
    { vol: img, labels: asVolume(s, guided) },
  ]);
}

/** Fig. C.1: at one encoder level, LF features, general guidance G, assimilable A and guided features. */
export async function afmMontage(m: TrainedModels, s: Subject, level = 1): Promise<Uint8Array> {
  const afm = m.guided.afms[level - 1];
  if (!afm) throw new Error(`the guided network has no AFM at level ${level}`);
  const x = toTensor(s.arrays[segInput(s)], s.shape);
  const fk = tf.tidy(() => m.keeper.apply(x));
  const fs = tf.tidy(() => m.guided.net.encode(x));
  const maps = afm.applyWithMaps(fk, fs[level - 1]);
  const rows = [];
  for (const f of [fs[level - 1], maps.guidance, maps.assimilable, maps.fused]) {
    rows.push({ vol: stretch(await channelMeanVolume(f, s)) });
  }
  tf.dispose([x, ...fk, ...fs, maps.guidance, maps.refined, maps.assimilable, maps.fused]);
  return await montage(rows);
}

// ---------------------------------------------------------------------------------------------
// The interactive viewer's volumes (`deno task view <run>`)

/** A run's viewer scene and the volumes it names (written as NIfTI by `deno task view`). */
export interface RunViewer {
  scene: ViewerScene;
  volumes: Record<string, Volume>;
}

/**
 * The viewer scene of a run: per paired test subject of fold 1, the 3T input, the KKN's 7T-like
 * synthesis, the real 7T and the teacher's reconstruction, and the KKN's channel-mean features at
 * every level; per tissue test subject, the low-field image with the ground-truth, baseline and
 * AFM-guided labels (a toggle), its Dice, and every AFM's assimilable guidance.
 */
export async function runViewer(run: RunData, m: TrainedModels): Promise<RunViewer> {
  const root = runDataDir(run);
  const paired = await loadCohort(join(root, "paired"));
  const tissue = await loadCohort(join(root, "tissue"));
  const pairedTest =
    foldSplits(paired.subjects, { folds: 1, testPerFold: run.config.testPerFold ?? 1 })[0].test;
  const volumes: Record<string, Volume> = {};
  const views: ViewerView[] = [];
  const add = (key: string, vol: Volume) => ((volumes[key] = vol), key);
  const image = (key: string, label: string, colormap?: string): ViewerLayer => ({
    volume: key,
    label,
    colormap,
  });
  for (const s of pairedTest) {
    const p = (k: string) => `paired-${s.id}-${k}`;
    add(p("3T"), asVolume(s, s.arrays["3T"]));
    add(p("synthesis"), asVolume(s, clip01(await synthesisOf(s, "3T", m.teacher, m.keeper))));
    add(p("7T"), asVolume(s, s.arrays["7T"]));
    add(
      p("reconstruction"),
      asVolume(s, clip01(await predictVolume(s, "7T", (y) => m.teacher.reconstruct(y)))),
    );
    const x = toTensor(s.arrays["3T"], s.shape);
    const fk = tf.tidy(() => m.keeper.apply(x));
    const features: ViewerPanel[] = [];
    for (const [k, f] of fk.entries()) {
      add(p(`kkn-level${k + 1}`), stretch(await channelMeanVolume(f, s)));
      features.push({
        title: `KKN 7T-like features, level ${k + 1} (channel mean)`,
        image: image(p(`kkn-level${k + 1}`), `level ${k + 1}`, "inferno"),
      });
    }
    tf.dispose([x, ...fk]);
    const fold = run.metrics.folds.find((f) => f.subject === s.id);
    views.push({
      title: `${s.id}: synthesis (paired test subject, fold 1)`,
      notes: fold
        ? [
          `KKN synthesis PSNR ${fold.keeper.psnr.toFixed(2)} dB, SSIM ${
            fold.keeper.ssim.toFixed(4)
          }; 3T input ${fold.floor3T.psnr.toFixed(2)} dB; teacher ${fold.teacher.psnr.toFixed(2)} dB`,
        ]
        : [],
      panels: [
        { title: "3T input", image: image(p("3T"), "3T") },
        { title: "KKN 7T-like synthesis", image: image(p("synthesis"), "7T-like") },
        { title: "real 7T", image: image(p("7T"), "7T") },
        { title: "teacher reconstruction of 7T", image: image(p("reconstruction"), "reconstruction") },
        ...features,
      ],
    });
  }
  const dice = new Map((run.metrics.fusion?.subjects ?? []).map((r) => [r.id, r]));
  const pct = (d: number[]) =>
    d.slice(1).map((v, c) => `${TISSUE_LUT.labels[c + 1]} ${(100 * v).toFixed(1)}`).join(", ");
  for (const s of tissue.subjects.filter((t) => t.split === "test")) {
    const t = (k: string) => `tissue-${s.id}-${k}`;
    const input = segInput(s);
    add(t("image"), asVolume(s, s.arrays[input]));
    const labels = (data: ArrayLike<number>) =>
      makeVolume(Uint8Array.from(data), s.reference.shape, s.reference.affine);
    add(t("truth"), labels(s.arrays.tissue));
    add(t("baseline"), labels(await predictVolume(s, input, (x) => labelsOf(m.baseline.apply(x)))));
    add(
      t("guided"),
      labels(await predictVolume(s, input, (x) => labelsOf(m.guided.apply(x, m.keeper.apply(x))))),
    );
    const panels: ViewerPanel[] = [
      { title: `${input} input`, image: image(t("image"), input) },
      {
        title: "tissue labels",
        image: image(t("image"), input),
        overlays: [
          { volume: t("truth"), label: "ground truth", lut: "tissue" },
          { volume: t("baseline"), label: "baseline", lut: "tissue" },
          { volume: t("guided"), label: "AFM-guided", lut: "tissue" },
        ],
      },
    ];
    // every AFM's assimilable guidance A (levels without an AFM, e.g. U-SegNet's middle ones, have none)
    const x = toTensor(s.arrays[input], s.shape);
    const fk = tf.tidy(() => m.keeper.apply(x));
    const fs = tf.tidy(() => m.guided.net.encode(x));
    for (const [k, afm] of m.guided.afms.entries()) {
      if (!afm) continue;
      const maps = afm.applyWithMaps(fk, fs[k]);
      add(t(`afm${k + 1}`), stretch(await channelMeanVolume(maps.assimilable, s)));
      tf.dispose([maps.guidance, maps.refined, maps.assimilable, maps.fused]);
      panels.push({
        title: `AFM level ${k + 1}: assimilable guidance A (channel mean)`,
        image: image(t(`afm${k + 1}`), "A", "inferno"),
      });
    }
    tf.dispose([x, ...fk, ...fs]);
    const r = dice.get(s.id);
    views.push({
      title: `${s.id}: tissue segmentation (test subject)`,
      notes: r ? [`Dice baseline: ${pct(r.baseline)}`, `Dice AFM-guided: ${pct(r.guided)}`] : [],
      panels,
    });
  }
  return {
    scene: {
      title: `${run.dir}: ${networkLabel(networkSpec(run.config))}`,
      views,
      volumes: Object.fromEntries(
        Object.keys(volumes).map((k) => [k, { url: `volumes/${k}.nii.gz`, name: `${k}.nii.gz` }]),
      ),
      luts: { tissue: TISSUE_LUT },
    },
    volumes,
  };
}

/**
 * The run's viewer as one self-contained HTML page (niivue and the volumes inside): a notebook
 * cell's output that keeps working in exported HTML. `pick` keeps views by index (default: the
 * first synthesis view and the first segmentation view, to keep the output small).
 */
export async function runViewerHtml(
  run: RunData,
  m: TrainedModels,
  pick?: (view: ViewerView, index: number) => boolean,
): Promise<string> {
  const { scene, volumes } = await runViewer(run, m);
  const firstOf = (kind: string) => scene.views.findIndex((v) => v.title.includes(kind));
  const defaults = [firstOf("synthesis"), firstOf("segmentation")];
  const views = scene.views.filter((v, i) => (pick ? pick(v, i) : defaults.includes(i)));
  const used = new Set(
    views.flatMap((v) => v.panels.flatMap((p) => [p.image, ...(p.overlays ?? [])])).map((l) => l.volume),
  );
  const bytes: Record<string, Uint8Array> = {};
  const files: ViewerScene["volumes"] = {};
  for (const k of used) {
    bytes[k] = encodeNifti(volumes[k]);
    files[k] = { url: "", name: `${k}.nii` };
  }
  return await viewerHtml({ ...scene, views, volumes: files }, bytes);
}

/** The figures `deno task figures` writes, each beside its counterpart in the paper. */
export const FIGURES: { file: string; paper: string; what: string }[] = [
  {
    file: "training-curves-*.png/.svg",
    paper: "(training logs)",
    what:
      "training loss and validation score per round against optimisation steps, with the phase's floor dashed, one per phase",
  },
  {
    file: "synthesis-psnr.png/.svg, synthesis-ssim.png/.svg",
    paper: "Fig. 6 (PSNR/SSIM insets)",
    what: "teacher reconstruction, KKN synthesis and the 3T floor against 7T per test subject",
  },
  { file: "synthesis-scores.csv/.md", paper: "Fig. 6 numbers", what: "the same, per fold" },
  {
    file: "synthesis-montage.png",
    paper: "Fig. 6",
    what:
      "rows: 3T input, KKN 7T-like synthesis, 7T, teacher reconstruction; columns: axial, coronal, sagittal",
  },
  {
    file: "feature-distances.csv/.md, feature-distances-teacher-encoder.csv/.md",
    paper: "Table A.1",
    what:
      "RMS distance of channel-averaged features per level: d(3T,7T), d(3T,7T-like), d(7T,7T-like); 3T features from the KKN's extractor (the paper's Appendix A), or from the teacher encoder",
  },
  {
    file: "table2.csv/.md/.png",
    paper: "Table 2",
    what:
      "from the runs of `deno task table2` (and this run): per-network tissue Dice of baseline, epoch-matched control and AFM-guided network, the AFM's gains with bootstrap 95% intervals and Wilcoxon p-values, per-class t-test p-values, convergence verdicts, the paper's averages; the box plot of the per-subject averages with the paper's marked",
  },
  {
    file: "table1.csv/.md/.png, table4.*, table5.*, tableB1.*, results.csv",
    paper: "Tables 1, 4, 5, B.1",
    what:
      "written by `deno task tables`, not by this command: synthesis-then-Atropos (Table 1), KKN ablation (Table 4), AFM ablation (Table 5), image- against feature-level guidance (Table B.1), each with mean ± sd, paired t-test, Wilcoxon, bootstrap CI, the paper's values and whether its ordering holds; results.csv has every value in long format",
  },
  {
    file: "keeper-features.png",
    paper: "Fig. A.1",
    what: "level-1 channel-averaged features: rows 3T (teacher encoder), 7T (teacher encoder), 7T-like (KKN)",
  },
  {
    file: "dice-boxplot.png/.svg",
    paper: "Table 2 (the network's row) / Fig. 7",
    what:
      "tissue Dice per class: the baseline network (`fusion.network`), the same trained as many extra epochs without AFMs (control), and with AFMs",
  },
  {
    file: "dice.csv/.md",
    paper: "Table 2 (the network's row)",
    what: "mean Dice per class, paired t-tests of AFM against both",
  },
  {
    file: "segmentation-overlay.png",
    paper: "Fig. 7",
    what: "rows: low-field input, ground truth, baseline, guided; columns: three views",
  },
  {
    file: "afm-features.png",
    paper: "Fig. C.1",
    what:
      "level-1 AFM: rows LF features F^S, general guidance G, assimilable guidance A, guided features F^F",
  },
];
