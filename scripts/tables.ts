/**
 * `deno task tables [--tables 1,5,4,B1] [--from runs/default] [--host unet3d]`: the paper's tissue
 * comparisons as plans of runs, each an ordinary `deno task train` run folder under `--runs` that
 * resumes like any other, then each table with statistics beside the paper's values.
 *
 * - Table 1 (synthesis, then a classical tissue classifier): the Atropos method (`lib/tissue/
 *   atropos.ts`, ANTs' settings) on the `--from` run's 3D KKN syntheses of fold 1's paired test
 *   subjects, and on their 3T and real 7T images as floor and ceiling; row (d), a 3D U-Net
 *   decoder trained on the frozen KKN's features of fold 1's paired training subjects (the run's
 *   `decoder` phase), on the same test subjects; row (c), Atropos on the `--wholebrain` run's
 *   2D KKN syntheses (the three views averaged). Rows (a) WATNet and (e) (a 2D decoder) are listed
 *   as not measured, with why.
 * - Table 5 (AFM ablation): the host network (the paper: RP-Net) with the full AFM and with each
 *   part removed (`fusion.afm`). One run trains the host's baseline and epoch-matched control;
 *   the others copy them and train only the guided model, so every row fine-tunes the same
 *   baseline.
 * - Table 4 (KKN ablation): a KKN without guide blocks and one without distillation
 *   (`keeper.guideBlocks`, `keeper.distillation`), each trained on fold 1 like the `--from` run's
 *   and scored by synthesis on the paired test subjects; each then guides the same host baseline.
 *   Row (c) is the full KKN of Table 5's row (e).
 * - Table B.1 (image- vs feature-level guidance): the `--from` run's network trained on the
 *   7T-like syntheses of the low-field images (`fusion.input` "synthesized") beside that run's
 *   baseline and AFM-guided model.
 *
 * Every row follows the `--from` run's protocol: fold 1's teacher and KKN and one guided model, or,
 * when that run has `fusion.keeperFolds` "each", one guided model per KKN fold with Dice averaged
 * (the released code's); the protocol line under each table says which.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { type CommandSpec, runCommand, UsageError } from "../lib/cli.ts";
import { initBackend } from "../lib/backend.ts";
import { writeFileAtomic } from "../lib/io/nifti.ts";
import { type NetworkName, NETWORKS } from "../lib/models/networks.ts";
import { type AfmParts, afmVariantLabel, FULL_AFM } from "../lib/models/fusion.ts";
import { networkLabel } from "../lib/models/networks.ts";
import { loadRun, type RunData, runDataDir } from "../lib/report.ts";
import {
  buildKeeper,
  buildTeacher,
  clip01,
  foldSplits,
  networkSpec,
  readOnlyContext,
  synthesisOf,
} from "../lib/train/pipeline.ts";
import { type Arm, planCommandOptions, planOptions, runArm, TEACHER_KKN } from "../lib/train/plan.ts";
import { loadCohort, type Subject } from "../lib/data/cohort.ts";
import { viewSyntheses } from "../lib/train/wholebrain.ts";
import { loadCheckpoint } from "../lib/train/state.ts";
import { dicePerClass } from "../lib/metrics.ts";
import { atropos, type AtroposOptions } from "../lib/tissue/atropos.ts";
import {
  comparisonTable,
  guidanceProtocol,
  longRecords,
  type MeasuredRow,
  PAPER_TABLE1,
  PAPER_TABLE4,
  PAPER_TABLE5,
  PAPER_TABLEB1,
  tableMarkdown,
  tablePlot,
  type TableSpec,
} from "../lib/tables.ts";
import { dataFrame, parseCsv, type Row, toCsv, toMarkdown } from "../lib/viz/table.ts";
import { chromiumPath, type PlotlyFigure, renderFigures } from "../lib/viz/plotly.ts";

export const TABLE_IDS = ["1", "5", "4", "B1"] as const;
type TableId = typeof TABLE_IDS[number];

export const TABLES_COMMAND: CommandSpec = {
  name: "deno task tables",
  summary: "run the paper's tissue comparisons (Tables 1, 5, 4, B.1) on a finished run's KKN and write them",
  usage: "deno task tables [--tables 1,5,4,B1] [--from runs/default] [--host unet3d] [--out figures]",
  options: [
    { name: "tables", description: `comma-separated tables (${TABLE_IDS.join(", ")})`, default: "1,5,4,B1" },
    {
      name: "from",
      description: "a finished run whose teacher, KKN and settings every row starts from",
      default: "runs/default",
    },
    {
      name: "wholebrain",
      description:
        "a finished `deno task train --phase wholebrain` run whose per-view 2D KKNs give Table 1 (c) (skipped, and the row listed as not measured, when the folder does not exist)",
      default: "runs/wholebrain",
    },
    {
      name: "host",
      description:
        "the segmentation network the AFM and KKN ablations guide (the paper: rpnet, which does not reach the sanity floor at the default budget here)",
      choices: Object.entries(NETWORKS).filter(([, e]) => e.dims === 3).map(([n]) => n),
      default: "unet3d",
    },
    ...planCommandOptions(
      { default: "tables", runs: "<name>-<row>" },
      "folder for the tables, plots and results.csv",
    ),
  ],
};

const HOST_BASELINE = ["baseline-best", "baseline-last", "baseline-matched-best", "baseline-matched-last"];

const AFM_ROWS: [string, Partial<AfmParts>][] = [
  ["a", { aggregation: false }],
  ["b", { channelRefinement: "one-path" }],
  ["c", { featureCombined: false }],
  ["d", { channelRefinement: "none" }],
  ["e", {}],
];
const KKN_ROWS: [string, string, Record<string, unknown>][] = [
  ["a", "w/o guide blocks", { guideBlocks: false }],
  ["b", "w/o knowledge distillation", { distillation: false }],
];

/**
 * The runs the requested tables need, in training order (each once). When the `--from` run
 * already trained the host network with the full AFM, the host row is that run's phase 3 (copied,
 * so only its test Dice is recomputed).
 */
export function planArms(tables: TableId[], host: NetworkName, sourceHostsFullAfm = false): Arm[] {
  const arms: Arm[] = [];
  if (tables.includes("1")) {
    arms.push({
      id: "decoder",
      changes: {},
      phase: "decoder",
      copy: [{ from: "source", names: TEACHER_KKN }],
    });
  }
  const needsHost = tables.includes("5") || tables.includes("4");
  if (needsHost) {
    arms.push({
      id: "host",
      changes: { fusion: { network: host, afm: FULL_AFM } },
      phase: "fusion",
      copy: [{
        from: "source",
        names: sourceHostsFullAfm
          ? [...TEACHER_KKN, ...HOST_BASELINE, "guided-best", "guided-last"]
          : TEACHER_KKN,
      }],
    });
  }
  if (tables.includes("5")) {
    for (const [key, parts] of AFM_ROWS.filter(([k]) => k !== "e")) {
      arms.push({
        id: `afm-${key}`,
        changes: { fusion: { network: host, afm: { ...FULL_AFM, ...parts } } },
        phase: "fusion",
        copy: [{ from: "source", names: TEACHER_KKN }, { from: "host", names: HOST_BASELINE }],
      });
    }
  }
  if (tables.includes("4")) {
    for (const [key, , keeper] of KKN_ROWS) {
      arms.push({
        id: `kkn-${key}`,
        changes: { keeper, fusion: { network: host, afm: FULL_AFM } },
        phase: "fusion",
        copy: [{ from: "source", names: ["teacher-fold1-best"] }, { from: "host", names: HOST_BASELINE }],
      });
    }
  }
  if (tables.includes("B1")) {
    arms.push({
      id: "image-level",
      changes: { fusion: { input: "synthesized" } },
      phase: "baseline",
      copy: [{ from: "source", names: TEACHER_KKN }],
    });
  }
  return arms;
}

type Model = "baseline" | "baselineMatched" | "guided";

/** A run's per-subject Dice of one model. */
function diceRows(run: RunData, model: Model): MeasuredRow["subjects"] {
  if (model === "baseline" && run.metrics.baseline && !run.metrics.fusion) {
    return run.metrics.baseline.subjects;
  }
  const fu = run.metrics.fusion;
  if (!fu) throw new Error(`${run.dir}: no phase 3 results`);
  return fu.subjects.map((s) => ({ id: s.id, dice: s[model] }));
}

/** Per paired test subject: the KKN's synthesis scores, or the 3T input's (`floor3T`). */
function synthesisRows(run: RunData, image: "keeper" | "floor3T" = "keeper"): MeasuredRow["synthesis"] {
  return run.metrics.folds.map((f) => ({ id: f.subject, psnr: f[image].psnr, ssim: f[image].ssim }));
}

/** Problems the runs' convergence checks reported for the segmentation and KKN phases. */
function convergenceNote(runs: RunData[]): string {
  const problems = runs.flatMap((r) =>
    (r.metrics.convergence ?? [])
      .filter((c) => c.problems.length && !/^teacher/.test(c.phase))
      .map((c) => `${r.dir} ${c.phase}: ${c.problems.join("; ")}`)
  );
  return problems.length
    ? `Not converged: ${problems.join(" | ")}.`
    : "Every phase passed its convergence checks.";
}

/** The table specs from finished runs. */
export async function buildTables(
  tables: TableId[],
  runs: Record<string, RunData>,
  source: RunData,
  wholeBrain?: RunData,
): Promise<TableSpec[]> {
  const out: TableSpec[] = [];
  if (tables.includes("1")) out.push(await table1Spec(source, runs.decoder, wholeBrain));
  const hostLabel = runs.host ? networkLabel(networkSpec(runs.host.config)) : "";
  const protocol = (rs: RunData[]) =>
    `Protocol: ${guidanceProtocol(rs.find((r) => r.metrics.fusion) ?? rs[0])}; ` +
    `statistics over the ${
      diceRows(rs[0], rs[0].metrics.fusion ? "guided" : "baseline").length
    } tissue test subjects (paired t-test, Wilcoxon signed-rank, bootstrap 95% CI of the mean difference). ` +
    convergenceNote(rs);
  if (tables.includes("5")) {
    const rows = AFM_ROWS.map(([key, parts]): MeasuredRow => {
      const run = key === "e" ? runs.host : runs[`afm-${key}`];
      return {
        key,
        label: afmVariantLabel({ ...FULL_AFM, ...parts }),
        source: `${run.dir} guided`,
        subjects: diceRows(run, "guided"),
        paper: PAPER_TABLE5[key],
      };
    });
    rows.push({
      key: "baseline",
      label: `${hostLabel} without AFMs`,
      source: `${runs.host.dir} baseline`,
      subjects: diceRows(runs.host, "baseline"),
    }, {
      key: "control",
      label: `${hostLabel} without AFMs, epoch-matched`,
      source: `${runs.host.dir} baselineMatched`,
      subjects: diceRows(runs.host, "baselineMatched"),
    });
    out.push({
      id: "table5",
      title: `Table 5: AFM ablation (${hostLabel})`,
      reference: "e",
      protocol: protocol([runs.host, ...AFM_ROWS.slice(0, 4).map(([k]) => runs[`afm-${k}`])]),
      rows,
    });
  }
  if (tables.includes("4")) {
    const rows: MeasuredRow[] = KKN_ROWS.map(([key, label]) => {
      const run = runs[`kkn-${key}`];
      return {
        key,
        label,
        source: `${run.dir} keeper fold 1, guided`,
        subjects: diceRows(run, "guided"),
        synthesis: synthesisRows(run),
        paper: PAPER_TABLE4[key],
      };
    });
    rows.push({
      key: "c",
      label: "full KKN (ours)",
      source: `${runs.host.dir} keeper fold 1, guided`,
      subjects: diceRows(runs.host, "guided"),
      synthesis: synthesisRows(runs.host),
      paper: PAPER_TABLE4.c,
    }, {
      key: "3T floor",
      label: "3T input itself (synthesis floor)",
      source: `${runs.host.dir} paired test subjects`,
      subjects: diceRows(runs.host, "baseline"),
      synthesis: synthesisRows(runs.host, "floor3T"),
    });
    out.push({
      id: "table4",
      title: `Table 4: KKN ablation (synthesis on the paired test subjects; ${hostLabel} + AFM Dice)`,
      reference: "c",
      protocol: protocol([runs.host, ...KKN_ROWS.map(([k]) => runs[`kkn-${k}`])]) +
        ` The 3T floor row's Dice is the ${hostLabel} baseline (no KKN).`,
      rows,
    });
  }
  if (tables.includes("B1")) {
    const label = networkLabel(networkSpec(source.config));
    out.push({
      id: "tableB1",
      title: `Table B.1: image-level against feature-level guidance (${label})`,
      reference: "b",
      protocol: protocol([runs["image-level"], source]),
      rows: [
        {
          key: "a",
          label: "image level (trained on KKN + teacher-decoder syntheses)",
          source: `${runs["image-level"].dir} baseline`,
          subjects: diceRows(runs["image-level"], "baseline"),
          paper: PAPER_TABLEB1.a,
        },
        {
          key: "b",
          label: "none (baseline)",
          source: `${source.dir} baseline`,
          subjects: diceRows(source, "baseline"),
          paper: PAPER_TABLEB1.b,
        },
        {
          key: "c",
          label: "feature level (KKN + AFM)",
          source: `${source.dir} guided`,
          subjects: diceRows(source, "guided"),
          paper: PAPER_TABLEB1.c,
        },
        {
          key: "control",
          label: "none, epoch-matched",
          source: `${source.dir} baselineMatched`,
          subjects: diceRows(source, "baselineMatched"),
        },
      ],
    });
  }
  return out;
}

/**
 * Atropos as `antsAtroposN4`-style scripts call it for three tissues: `-i KMeans[3] -m [0.1,1x1x1]
 * -c [5,0]`: Potts weight 0.1 over the 26-neighbourhood weighted by inverse distance, the
 * neighbours' labels of the previous iteration, no mixing proportions in the posterior.
 */
export const ANTS_ATROPOS: AtroposOptions = {
  classes: 3,
  beta: 0.1,
  neighbourhood: 26,
  mrf: "labels",
  mixingWeights: false,
  iterations: 5,
  tolerance: 0,
};

/**
 * Table 1 on fold 1's paired test subjects: Atropos inside the true brain mask (tissue label > 0)
 * on the 3T image, the 3D KKN's synthesis and the real 7T image; given a `decoder` run, its
 * U-Net decoder on the frozen KKN (row (d)); given a whole-brain run, Atropos on its three views'
 * 2D KKN syntheses averaged (row (c)); rows without their run are listed as not measured.
 */
export async function table1Spec(
  source: RunData,
  decoderRun?: RunData,
  wholeBrain?: RunData,
): Promise<TableSpec> {
  const cfg = source.config;
  const paired = await loadCohort(join(runDataDir(source), "paired"));
  const split = foldSplits(paired.subjects, { folds: 1, testPerFold: cfg.testPerFold ?? 1 })[0];
  const ck = (n: string) => join(source.dir, "checkpoints", n);
  const teacher = buildTeacher(cfg, 1);
  await loadCheckpoint(ck("teacher-fold1-best"), teacher);
  const kkn = buildKeeper(cfg, 1);
  await loadCheckpoint(ck("keeper-fold1-best"), kkn, {}, "keeper.");
  const rows: Record<string, MeasuredRow["subjects"]> = { floor: [], b: [], ceiling: [], c: [] };
  // row (c) needs 2D KKNs trained on this cohort's fold 1
  const otherCohort = wholeBrain && runDataDir(wholeBrain) !== runDataDir(source)
    ? `${wholeBrain.dir} was trained on ${runDataDir(wholeBrain)}, ${source.dir} on ${runDataDir(source)}`
    : "";
  const twoD = wholeBrain && !otherCohort
    ? await wholeBrainSyntheses(wholeBrain, paired.subjects, split.test)
    : null;
  for (const [i, s] of split.test.entries()) {
    const mask = Float32Array.from(s.arrays.tissue, (v) => (v > 0 ? 1 : 0));
    const syn = clip01(await synthesisOf(s, "3T", teacher, kkn));
    const spacing = paired.manifest.grid.spacing;
    const classify = (image: ArrayLike<number>) => {
      const r = atropos(image, s.shape, mask, { ...ANTS_ATROPOS, spacing: [spacing, spacing, spacing] });
      return dicePerClass(r.labels, s.arrays.tissue, 4);
    };
    rows.floor.push({ id: s.id, dice: classify(s.arrays["3T"]) });
    rows.b.push({ id: s.id, dice: classify(syn) });
    rows.ceiling.push({ id: s.id, dice: classify(s.arrays["7T"]) });
    if (twoD) rows.c.push({ id: s.id, dice: classify(clip01(twoD[i])) });
  }
  teacher.dispose();
  kkn.dispose();
  const src = `${source.dir} fold 1 paired test subjects`;
  const pending = (key: string, label: string, why: string): MeasuredRow => ({
    key,
    label,
    source: "",
    subjects: [],
    paper: PAPER_TABLE1[key],
    pending: why,
  });
  return {
    id: "table1",
    title: "Table 1: synthesis, then segmentation (paired cohort)",
    reference: "b",
    protocol:
      `Protocol: fold 1's 3D KKN (${source.dir}); Atropos (k-means initialised Gaussian mixture, Potts ` +
      `MRF, ANTs' \`-m [0.1,1x1x1] -c [5,0]\`) inside the true brain mask; statistics over the ` +
      `${split.test.length} paired test subjects of fold 1 (the paper: 15 leave-one-out folds). Row (d): a ` +
      `3D U-Net decoder trained on the frozen KKN's features of the fold's ${split.train.length} paired ` +
      `training subjects' 3T images (the baseline schedule), scored on the same test subjects; its ` +
      `control, the run's segmentation network trained end to end on the same images and schedule` +
      (decoderRun ? `; ${convergenceNote([decoderRun])}` : "."),
    rows: [
      pending(
        "a",
        "WATNet + Atropos",
        "WATNet is a separate published synthesis network whose architecture this paper does not specify",
      ),
      { key: "b", label: "3D KKN + Atropos", source: src, subjects: rows.b, paper: PAPER_TABLE1.b },
      twoD
        ? {
          key: "c",
          label: "2D KKN + Atropos",
          source: `${wholeBrain!.dir} fold 1 2D KKNs, three views averaged`,
          subjects: rows.c,
          paper: PAPER_TABLE1.c,
        }
        : pending(
          "c",
          "2D KKN + Atropos",
          otherCohort || "no whole-brain run given (--wholebrain, deno task train --phase wholebrain)",
        ),
      ...decoderRows(
        decoderRun,
        split.test.map((s) => s.id),
        () =>
          pending(
            "d",
            "3D KKN + 3D U-Net decoder",
            "no decoder run given (deno task tables --tables 1 trains it)",
          ),
      ),
      pending(
        "e",
        "2D KKN + 2D U-Net decoder",
        "a 2D decoder per view on the frozen 2D KKNs (the decoder phase in 2D) is not built yet",
      ),
      { key: "floor", label: "3T image + Atropos (floor)", source: src, subjects: rows.floor },
      { key: "ceiling", label: "real 7T image + Atropos (ceiling)", source: src, subjects: rows.ceiling },
    ],
  };
}

/**
 * The whole-brain run's 2D KKN syntheses (three views averaged) of `test`, fold 1's paired test
 * subjects of the Table 1 source; an error when that run's fold 1 tests other subjects.
 */
async function wholeBrainSyntheses(
  run: RunData,
  subjects: Subject[],
  test: Subject[],
): Promise<Float32Array[]> {
  const cfg = run.config;
  const own = foldSplits(subjects, { folds: 1, testPerFold: cfg.testPerFold ?? 1 })[0].test.map((s) => s.id);
  const ids = test.map((s) => s.id);
  if (JSON.stringify(own) !== JSON.stringify(ids)) {
    throw new Error(`${run.dir}: its 2D KKNs' fold 1 tests ${own.join(", ")}, Table 1's ${ids.join(", ")}`);
  }
  return await viewSyntheses(readOnlyContext(cfg, run.dir), test);
}

/**
 * Row (d) and its control from a `--phase decoder` run: fold 1's decoder on the frozen KKN, and the
 * network trained end to end on the same 3T images, on the given test subjects; without the run,
 * the `missing` row.
 */
function decoderRows(run: RunData | undefined, test: string[], missing: () => MeasuredRow): MeasuredRow[] {
  const fold1 = run?.metrics.decoders?.find((d) => d.fold === 1);
  if (!run || !fold1) return [missing()];
  const ids = fold1.subjects.map((s) => s.id);
  if (JSON.stringify(ids) !== JSON.stringify(test)) {
    throw new Error(
      `${run.dir}: decoder test subjects ${ids.join(", ")} differ from Table 1's ${test.join(", ")}`,
    );
  }
  const rows: MeasuredRow[] = [{
    key: "d",
    label: "3D KKN + 3D U-Net decoder",
    source: `${run.dir} decoder fold 1`,
    subjects: fold1.subjects,
    paper: PAPER_TABLE1.d,
  }];
  if (fold1.control) {
    rows.push({
      key: "3T network",
      label: `3T image + ${networkLabel(networkSpec(run.config))} (control for (d))`,
      source: `${run.dir} paired-${run.config.fusion.network}-fold1`,
      subjects: fold1.control.subjects,
    });
  }
  return rows;
}

/** Writes `<id>.csv`, `<id>.md`, `<id>.png/.svg` per table and `results.csv`; returns the files. */
export async function writeTables(specs: TableSpec[], out: string): Promise<string[]> {
  await Deno.mkdir(out, { recursive: true });
  const written: string[] = [];
  const plots: [string, PlotlyFigure][] = [];
  for (const spec of specs) {
    const table = comparisonTable(spec);
    await writeFileAtomic(join(out, `${spec.id}.csv`), toCsv(table));
    await writeFileAtomic(join(out, `${spec.id}.md`), tableMarkdown(spec, toMarkdown(table, 3)));
    written.push(`${spec.id}.csv`, `${spec.id}.md`);
    plots.push([spec.id, tablePlot(spec)]);
  }
  // results.csv keeps the records of tables not regenerated now (`--tables 1` leaves Table 5's)
  const resultsPath = join(out, "results.csv");
  const regenerated = new Set(specs.map((s) => s.id));
  const kept = existsSync(resultsPath)
    ? parseCsv(await Deno.readTextFile(resultsPath))
      .filter((r) => !regenerated.has(r.table))
      .map((r): Row => ({ ...r, value: Number(r.value) }))
    : [];
  await writeFileAtomic(resultsPath, toCsv(dataFrame([...kept, ...specs.flatMap(longRecords)])));
  written.push("results.csv");
  for (const [name, fig] of plots) {
    await writeFileAtomic(join(out, `${name}.json`), JSON.stringify(fig));
    written.push(`${name}.json`);
  }
  if (!chromiumPath()) {
    console.log(
      "Chromium not found: plots written as plotly JSON only (install the Debian package `chromium`)",
    );
    return written;
  }
  const rendered = await renderFigures(plots.map(([, f]) => f));
  for (const [i, [name]] of plots.entries()) {
    await writeFileAtomic(join(out, `${name}.png`), rendered[i].png);
    await writeFileAtomic(join(out, `${name}.svg`), rendered[i].svg);
    written.push(`${name}.png`, `${name}.svg`);
  }
  return written;
}

export async function runTables(
  opts: Record<string, string | number | boolean | undefined>,
): Promise<TableSpec[]> {
  const tables = String(opts.tables).split(",").map((t) => t.trim()).filter(Boolean) as TableId[];
  for (const t of tables) {
    if (!TABLE_IDS.includes(t)) {
      throw new UsageError(`--tables: "${t}" is not one of ${TABLE_IDS.join(", ")}`);
    }
  }
  const source = await loadRun(String(opts.from));
  if (!source.metrics.fusion) {
    throw new UsageError(`--from ${opts.from}: no phase 3 results (a finished run)`);
  }
  const runs: Record<string, RunData> = {};
  const host = String(opts.host) as NetworkName;
  const afm = source.config.fusion.afm ?? FULL_AFM;
  const sourceHostsFullAfm = (source.config.fusion.network ?? "unet3d") === host &&
    JSON.stringify(afm) === JSON.stringify(FULL_AFM) &&
    (source.config.fusion.keeper ?? "trained") === "trained";
  for (const arm of planArms(tables, host, sourceHostsFullAfm)) {
    runs[arm.id] = await loadRun(
      await runArm(arm, source, planOptions(opts)),
    );
  }
  const wbDir = opts.wholebrain ? String(opts.wholebrain) : "";
  const wholeBrain = tables.includes("1") && wbDir && existsSync(join(wbDir, "metrics.json"))
    ? await loadRun(wbDir)
    : undefined;
  const specs = await buildTables(tables, runs, source, wholeBrain);
  const files = await writeTables(specs, String(opts.out));
  for (const spec of specs) console.log(`\n${spec.title}\n${toMarkdown(comparisonTable(spec), 3)}`);
  console.log(`wrote ${files.map((f) => join(String(opts.out), f)).join(", ")}`);
  return specs;
}

if (import.meta.main) {
  await runCommand(TABLES_COMMAND, async (args) => {
    await initBackend(String(args.options.backend));
    await runTables(args.options);
  });
}
