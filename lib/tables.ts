/**
 * The paper's comparison tables (Tables 1, 4, 5 and B.1) from measured rows: each row is one
 * method's per-subject Dice (and, for the KKN ablation, synthesis scores) on the same test
 * subjects, compared with the table's reference row by a paired t-test, the Wilcoxon signed-rank
 * test and a bootstrap 95% interval of the difference (`lib/stats.ts`), beside the paper's values
 * and whether the paper's ordering holds here.
 *
 * Every number also goes into one long-format record (`longRecords`: table, row, subject, measure,
 * value), from which any other view can be rebuilt.
 */
import type * as dfd from "danfojs";
import { comparePaired, meanOf, sdOf } from "./stats.ts";
import { dataFrame, type Row } from "./viz/table.ts";
import { barPlot, type PlotlyFigure } from "./viz/plotly.ts";
import type { RunData } from "./report.ts";

export const TISSUES = ["CSF", "GM", "WM"] as const;

/** A row's published numbers (Dice in %, PSNR in dB). */
export interface PaperValues {
  CSF: number;
  GM: number;
  WM: number;
  average: number;
  psnr?: number;
  ssim?: number;
}

/** One measured row. */
export interface MeasuredRow {
  /** The paper's row letter (a), (b), ... or a name for rows the paper does not have. */
  key: string;
  label: string;
  /** Where the numbers come from (a run folder and model). */
  source: string;
  /** Per test subject: Dice per class, background first (as `dicePerClass`). */
  subjects: { id: string; dice: number[] }[];
  /** Synthesis scores per paired test subject, where the row has a synthesis. */
  synthesis?: { id: string; psnr: number; ssim: number }[];
  paper?: PaperValues;
  /** Why a row of the paper is not measured (then `subjects` is empty). */
  pending?: string;
}

export interface TableSpec {
  id: string;
  title: string;
  /** The row every other row is compared with. */
  reference: string;
  /** How the guided models were trained (the fold protocol), said under the table. */
  protocol: string;
  rows: MeasuredRow[];
}

export const PAPER_TABLE4: Record<string, PaperValues> = {
  a: { psnr: 26.03, ssim: 0.9239, CSF: 81.24, GM: 92.05, WM: 88.37, average: 87.22 },
  b: { psnr: 26.15, ssim: 0.9265, CSF: 81.44, GM: 91.79, WM: 87.89, average: 87.04 },
  c: { psnr: 26.43, ssim: 0.9266, CSF: 81.58, GM: 92.22, WM: 88.89, average: 87.56 },
};

export const PAPER_TABLE5: Record<string, PaperValues> = {
  a: { CSF: 81.24, GM: 91.98, WM: 88.36, average: 87.19 },
  b: { CSF: 81.72, GM: 91.89, WM: 88.35, average: 87.32 },
  c: { CSF: 82.25, GM: 91.79, WM: 88.11, average: 87.38 },
  d: { CSF: 82.49, GM: 91.92, WM: 87.93, average: 87.45 },
  e: { CSF: 81.58, GM: 92.22, WM: 88.89, average: 87.56 },
};

export const PAPER_TABLEB1: Record<string, PaperValues> = {
  a: { CSF: 70.46, GM: 87.79, WM: 83.74, average: 80.66 },
  b: { CSF: 82.09, GM: 91.81, WM: 88.49, average: 87.46 },
  c: { CSF: 84.16, GM: 92.52, WM: 88.83, average: 88.50 },
};

export const PAPER_TABLE1: Record<string, PaperValues> = {
  a: { CSF: 64.19, GM: 71.85, WM: 80.04, average: 72.03 },
  b: { CSF: 72.33, GM: 75.05, WM: 83.49, average: 76.96 },
  c: { CSF: 72.39, GM: 77.80, WM: 84.99, average: 78.40 },
  d: { CSF: 72.66, GM: 76.08, WM: 86.18, average: 78.31 },
  e: { CSF: 76.50, GM: 80.55, WM: 86.33, average: 81.13 },
};

const pct = (v: number) => 100 * v;

/** A subject's mean tissue Dice in % (background excluded, as the paper's "Average"). */
export function subjectAverage(dice: number[]): number {
  return pct(meanOf(dice.slice(1, 1 + TISSUES.length)));
}

/** Per-subject values of one measure of a row, in the order of `ids`. */
function valuesOf(row: MeasuredRow, measure: string, ids: string[]): number[] {
  const pick = (id: string): number => {
    if (measure === "psnr" || measure === "ssim") {
      const s = row.synthesis?.find((r) => r.id === id);
      return s ? s[measure] : NaN;
    }
    const s = row.subjects.find((r) => r.id === id);
    if (!s) return NaN;
    if (measure === "average") return subjectAverage(s.dice);
    return pct(s.dice[1 + TISSUES.indexOf(measure as typeof TISSUES[number])]);
  };
  return ids.map(pick);
}

function fmt(values: number[], digits: number): string {
  const v = values.filter(Number.isFinite);
  if (!v.length) return "n/a";
  return `${meanOf(v).toFixed(digits)} ± ${sdOf(v).toFixed(digits)}`;
}

/**
 * Whether the paper's ordering of a row against the reference holds here: the sign of the
 * paper's difference against the sign of the measured one, and whether the measured one is
 * significant (Wilcoxon p < 0.05).
 */
export function orderingHolds(paperDiff: number, diff: number, p: number): string {
  if (!Number.isFinite(paperDiff) || !Number.isFinite(diff)) return "n/a";
  const sig = Number.isFinite(p) && p < 0.05 ? "p < 0.05" : "not significant";
  if (paperDiff === 0) return `paper: equal; here ${diff > 0 ? "higher" : "lower"} (${sig})`;
  return Math.sign(paperDiff) === Math.sign(diff) ? `yes (${sig})` : `no (${sig})`;
}

/**
 * The table: per row mean ± sd over the test subjects of each tissue's Dice and their average
 * (and PSNR/SSIM where rows have syntheses), the paper's values, and the comparison of the average
 * (and PSNR where present) with the reference row.
 */
export function comparisonTable(spec: TableSpec): dfd.DataFrame {
  const ref = spec.rows.find((r) => r.key === spec.reference);
  if (!ref) throw new Error(`${spec.id}: reference row "${spec.reference}" missing`);
  const ids = ref.subjects.map((s) => s.id);
  const synIds = ref.synthesis?.map((s) => s.id) ?? [];
  const withSynthesis = spec.rows.some((r) => r.synthesis?.length);
  return dataFrame(spec.rows.map((row) => {
    const out: Row = { row: row.key, method: row.label };
    if (row.pending) {
      out["status"] = `not measured: ${row.pending}`;
      return out;
    }
    if (withSynthesis) {
      out["PSNR"] = fmt(valuesOf(row, "psnr", synIds), 2);
      out["SSIM"] = fmt(valuesOf(row, "ssim", synIds), 4);
    }
    for (const t of TISSUES) out[t] = fmt(valuesOf(row, t, ids), 2);
    out["average"] = fmt(valuesOf(row, "average", ids), 2);
    if (withSynthesis) {
      out["paper PSNR"] = row.paper?.psnr ?? "n/a";
      out["paper SSIM"] = row.paper?.ssim ?? "n/a";
    }
    for (const t of TISSUES) out[`paper ${t}`] = row.paper?.[t] ?? "n/a";
    out["paper average"] = row.paper?.average ?? "n/a";
    const isRef = row.key === spec.reference;
    const c = comparePaired(valuesOf(ref, "average", ids), valuesOf(row, "average", ids));
    const paperDiff = (row.paper?.average ?? NaN) - (ref.paper?.average ?? NaN);
    out[`Δ average vs (${spec.reference})`] = isRef ? "reference" : Number(c.meanDiff.toFixed(3));
    out["95% CI"] = isRef ? "" : `[${c.ciLow.toFixed(3)}, ${c.ciHigh.toFixed(3)}]`;
    out["p (t-test)"] = isRef ? "" : pValue(c.pT);
    out["p (Wilcoxon)"] = isRef ? "" : pValue(c.pWilcoxon);
    out["paper Δ average"] = isRef
      ? "reference"
      : Number.isFinite(paperDiff)
      ? Number(paperDiff.toFixed(2))
      : "n/a";
    out["paper ordering holds"] = isRef ? "" : orderingHolds(paperDiff, c.meanDiff, c.pWilcoxon);
    if (withSynthesis && row.synthesis?.length && ref.synthesis?.length) {
      const s = comparePaired(valuesOf(ref, "psnr", synIds), valuesOf(row, "psnr", synIds));
      const paperPsnr = (row.paper?.psnr ?? NaN) - (ref.paper?.psnr ?? NaN);
      out[`Δ PSNR vs (${spec.reference})`] = isRef ? "reference" : Number(s.meanDiff.toFixed(3));
      out["p PSNR (Wilcoxon)"] = isRef ? "" : pValue(s.pWilcoxon);
      out["paper PSNR ordering holds"] = isRef ? "" : orderingHolds(paperPsnr, s.meanDiff, s.pWilcoxon);
    }
    out["source"] = row.source;
    return out;
  }));
}

function pValue(p: number): string | number {
  if (!Number.isFinite(p)) return "n/a";
  return p < 1e-4 ? "< 1e-4" : Number(p.toPrecision(3));
}

/** Every measured value of a table as long-format records. */
export function longRecords(spec: TableSpec): Row[] {
  const out: Row[] = [];
  for (const row of spec.rows) {
    for (const s of row.subjects) {
      s.dice.forEach((d, c) =>
        out.push({
          table: spec.id,
          row: row.key,
          method: row.label,
          subject: s.id,
          measure: `dice ${["background", ...TISSUES][c] ?? c}`,
          value: d,
        })
      );
    }
    for (const s of row.synthesis ?? []) {
      for (const m of ["psnr", "ssim"] as const) {
        out.push({ table: spec.id, row: row.key, method: row.label, subject: s.id, measure: m, value: s[m] });
      }
    }
  }
  return out;
}

/** Average Dice per row (mean ± sd over the test subjects) beside the paper's. */
export function tablePlot(spec: TableSpec): PlotlyFigure {
  const rows = spec.rows.filter((r) => !r.pending);
  const ref = spec.rows.find((r) => r.key === spec.reference)!;
  const ids = ref.subjects.map((s) => s.id);
  const x = rows.map((r) => `(${r.key}) ${r.label}`);
  const avg = rows.map((r) => valuesOf(r, "average", ids));
  return barPlot(`${spec.title}: average tissue Dice`, [
    { name: "phantom (mean ± sd over test subjects)", x, y: avg.map(meanOf), error: avg.map(sdOf) },
    { name: "paper", x, y: rows.map((r) => r.paper?.average ?? NaN) },
  ], "average Dice (%)");
}

/** The table as Markdown with its title and protocol line. */
export function tableMarkdown(spec: TableSpec, body: string): string {
  return `# ${spec.title}\n\n${spec.protocol}\n\n${body}\n`;
}

/**
 * How a run's guided models were trained, for a table's protocol line: fold 1's KKN and one guided
 * model, or one guided model per KKN fold with Dice averaged per subject (`fusion.keeperFolds`).
 */
export function guidanceProtocol(run: RunData): string {
  const folds = run.metrics.fusion?.keeperFolds ?? [1];
  return folds.length > 1
    ? `one guided model per KKN fold (folds ${folds.join(", ")}; the released code's protocol), ` +
      `Dice averaged over them per subject`
    : "fold 1's teacher and KKN, one guided model (no averaging over KKN folds)";
}
