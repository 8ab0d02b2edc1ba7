/**
 * Table 3 and Fig. 9 of the paper from whole-brain runs (`deno task train --phase wholebrain`):
 * Dice per structure of the test scans for the network alone, its epoch-matched control and the
 * AFM-guided network, the paper's cortical (structures 1-4), subcortical (5-27) and average (1-27)
 * means, the paired statistics of the tissue tables, and an overlay of the 27 structures in three
 * views in FreeSurfer's colours.
 */
import type * as dfd from "danfojs";
import { dirname, join } from "node:path";
import { loadCohort } from "./data/cohort.ts";
import { CORTICAL, STRUCTURE_COLOURS, STRUCTURES, SUBCORTICAL } from "./phantom/labels.ts";
import { comparePaired, meanOf } from "./stats.ts";
import { orderingHolds } from "./tables.ts";
import { loadRun, type RunData, runDataDir } from "./report.ts";
import { type NetworkName, NETWORKS } from "./models/networks.ts";
import { finishedArm } from "./train/plan.ts";
import { boxPlot, type PlotlyFigure } from "./viz/plotly.ts";
import { dataFrame, type Row } from "./viz/table.ts";
import { montage } from "./viz/png.ts";
import { makeVolume } from "./volume/volume.ts";
import { readOnlyContext, withDefaults } from "./train/pipeline.ts";
import { STRUCTURES_KEY, type WholeBrainMetrics, WholeBrainModels } from "./train/wholebrain.ts";

/** Table 3 of the paper: cortical, subcortical and average Dice (%) without and with guidance. */
export const PAPER_TABLE3: Record<
  string,
  { baseline: [number, number, number]; guided: [number, number, number] }
> = {
  "2D U-Net": { baseline: [85.80, 81.50, 82.14], guided: [86.07, 81.68, 82.33] },
  QuickNAT: { baseline: [86.11, 82.54, 83.08], guided: [86.57, 82.66, 83.24] },
  "FastSurfer-CNN": { baseline: [83.75, 78.96, 79.67], guided: [85.98, 80.98, 81.72] },
  // internally inconsistent in the paper (see ../shared/reference/wave2-architectures.md, section 5)
  UNesT: { baseline: [86.86, 82.07, 82.49], guided: [85.71, 82.49, 83.21] },
};

type Model = "baseline" | "baselineMatched" | "guided";
const MODELS: [Model, string][] = [["baseline", "baseline"], ["baselineMatched", "epoch-matched control"], [
  "guided",
  "+ AFM",
]];

/** A run's whole-brain results; an error naming the run when it has none. */
export function wholeBrainOf(run: RunData): WholeBrainMetrics {
  const wb = run.metrics.wholebrain;
  if (!wb) throw new Error(`${run.dir}: no whole-brain results (run deno task train --phase wholebrain)`);
  return wb;
}

/** The change to a whole-brain run's configuration that makes `deno task table3`'s arm of `network`. */
export function table3Changes(network: NetworkName): { wholebrain: { network: NetworkName } } {
  return { wholebrain: { network } };
}

/**
 * The runs of Table 3 around a whole-brain run: `run`, then each `<name>-<network>` run beside it
 * that `deno task table3 --from <run>` finished with the configuration it would give it now
 * (`finishedArm`; others are left out), in the registry's order.
 */
export async function table3Runs(run: RunData, name = "table3"): Promise<RunData[]> {
  const own = wholeBrainOf(run).network;
  const runs = [run];
  for (const network of Object.keys(NETWORKS) as NetworkName[]) {
    if (network === own) continue;
    const dir = await finishedArm(
      { id: network, changes: table3Changes(network) },
      run,
      dirname(run.dir),
      name,
    );
    if (dir) runs.push(await loadRun(dir));
  }
  return runs;
}

/** A scan's cortical (1-4), subcortical (5-27) and average (1-27) Dice in %, as Table 3 defines them. */
export function regionDice(dice: number[]): { cortical: number; subcortical: number; average: number } {
  const of = (labels: readonly number[]) => 100 * meanOf(labels.map((l) => dice[l]));
  return { cortical: of(CORTICAL), subcortical: of(SUBCORTICAL), average: of([...CORTICAL, ...SUBCORTICAL]) };
}

const REGIONS = ["cortical", "subcortical", "average"] as const;

/**
 * Table 3 from whole-brain runs (one per network): per model the test scans' mean cortical,
 * subcortical and average Dice (%), the AFM's gain in each with the Wilcoxon p-value (against
 * the baseline and against the epoch-matched control), the paper's values and whether the
 * paper's ordering (guided above or below the baseline) holds here.
 */
export function table3(runs: RunData[]): dfd.DataFrame {
  return dataFrame(runs.map((run) => {
    const wb = wholeBrainOf(run);
    const subjects = wb.segmentation.subjects;
    const per = (m: Model) => subjects.map((s) => regionDice(s[m]));
    const row: Row = { network: wb.label, views: wb.views ? wb.views.length : "3D", scans: subjects.length };
    for (const [m, name] of MODELS) {
      for (const r of REGIONS) row[`${r} ${name}`] = Number(meanOf(per(m).map((d) => d[r])).toFixed(2));
    }
    const paper = PAPER_TABLE3[wb.label];
    REGIONS.forEach((r, i) => {
      const base = per("baseline").map((d) => d[r]), guided = per("guided").map((d) => d[r]);
      const control = per("baselineMatched").map((d) => d[r]);
      const c = comparePaired(base, guided), cc = comparePaired(control, guided);
      row[`${r} gain`] = Number(c.meanDiff.toFixed(2));
      row[`${r} p (Wilcoxon)`] = pValue(c.pWilcoxon);
      row[`${r} gain over control`] = Number(cc.meanDiff.toFixed(2));
      row[`${r} p over control`] = pValue(cc.pWilcoxon);
      row[`paper ${r}`] = paper ? paper.baseline[i] : "n/a";
      row[`paper ${r} + guidance`] = paper ? paper.guided[i] : "n/a";
      row[`paper ${r} ordering holds`] = paper
        ? orderingHolds(paper.guided[i] - paper.baseline[i], c.meanDiff, c.pWilcoxon)
        : "n/a";
    });
    const problems = (run.metrics.convergence ?? []).filter((c) => c.problems.length);
    row["converged"] = problems.length ? problems.map((c) => c.phase).join("; ") : "yes";
    return row;
  }));
}

function pValue(p: number): string | number {
  if (!Number.isFinite(p)) return "n/a";
  return p < 1e-4 ? "< 1e-4" : Number(p.toPrecision(3));
}

/** Per structure: mean Dice (%) of each model, the AFM's gain and its paired t-test p-values. */
export function structureTable(run: RunData): dfd.DataFrame {
  const wb = wholeBrainOf(run);
  return dataFrame(
    wb.segmentation.tTest.slice(1).map((t, i) => ({
      structure: `(${i + 1}) ${t.class}`,
      group: i < CORTICAL.length ? "cortical" : "subcortical",
      baseline: Number((100 * t.baselineMean).toFixed(2)),
      "epoch-matched control": Number((100 * t.baselineMatchedMean).toFixed(2)),
      "+ AFM": Number((100 * t.guidedMean).toFixed(2)),
      "gain": Number((100 * (t.guidedMean - t.baselineMean)).toFixed(2)),
      "p (t-test)": pValue(t.p),
      "p vs control (t-test)": pValue(t.pMatched),
    })),
  );
}

/** Fig. 9: per-structure Dice of the test scans, one box per structure and model. */
export function fig9Plot(run: RunData): PlotlyFigure {
  const wb = wholeBrainOf(run);
  const names = STRUCTURES.slice(1).map((n, i) => `(${i + 1}) ${n}`);
  const fig = boxPlot(
    `Fig. 9: Dice per structure, ${wb.label} (${wb.segmentation.subjects.length} test scans)`,
    MODELS.map(([m, name]) => ({
      name: `${wb.label}${name === "baseline" ? "" : ` ${name}`}`,
      categories: wb.segmentation.subjects.flatMap(() => names),
      values: wb.segmentation.subjects.flatMap((s) => s[m].slice(1).map((d) => 100 * d)),
    })),
    "Dice (%)",
  );
  fig.layout.boxmode = "group";
  fig.layout.xaxis = { ...(fig.layout.xaxis as Record<string, unknown> ?? {}), tickangle: -60 };
  fig.layout.width = 1600;
  fig.layout.margin = { t: 60, l: 70, r: 30, b: 230 };
  return fig;
}

/**
 * The 27 structures in three views (FreeSurfer colours) on the first test scan: the low-field
 * image, the ground truth, the baseline's and the guided network's aggregated labels.
 */
export async function structureMontage(run: RunData): Promise<Uint8Array> {
  const cohort = await loadCohort(join(runDataDir(run), "wholebrain"));
  const s = cohort.subjects.find((x) => x.split === "test")!;
  const cfg = withDefaults(run.config, run.config.profile, run.config.seed);
  const models = new WholeBrainModels(readOnlyContext(cfg, run.dir));
  const [baseline, guided] = [await models.labels(s, "baseline"), await models.labels(s, "guided")];
  models.dispose();
  const vol = (data: ArrayLike<number>) =>
    makeVolume(Float32Array.from(data), s.reference.shape, s.reference.affine);
  const image = vol(s.arrays["1.5T"]);
  return await montage([
    { vol: image },
    { vol: image, labels: vol(s.arrays[STRUCTURES_KEY]), colours: STRUCTURE_COLOURS },
    { vol: image, labels: vol(baseline), colours: STRUCTURE_COLOURS },
    { vol: image, labels: vol(guided), colours: STRUCTURE_COLOURS },
  ]);
}
