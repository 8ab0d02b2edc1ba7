/**
 * `deno task figures [--run runs/<name>] [--out figures]`: regenerates the figures and tables of
 * a finished run: plotly plots as PNG and SVG (rendered offline by headless Chromium), image
 * montages from the run's checkpoints, tables as CSV and Markdown, and `<out>/README.md` listing
 * each beside the paper figure or table it corresponds to.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { type CommandSpec, runCommand, UsageError } from "../lib/cli.ts";
import { backendOption, initBackend } from "../lib/backend.ts";
import {
  afmMontage,
  diceBoxPlot,
  diceTable,
  featureDistanceTable,
  featureMontage,
  FIGURES,
  loadModels,
  loadRun,
  loggedPhases,
  type RunData,
  segmentationMontage,
  synthesisMontage,
  synthesisScores,
  synthesisTable,
  table2Runs,
  testSubjects,
  trainingCurves,
} from "../lib/report.ts";
import { type PlotlyFigure, renderFigures } from "../lib/viz/plotly.ts";
import { toCsv, toMarkdown } from "../lib/viz/table.ts";
import { writeTable2 } from "./table2.ts";

export const FIGURES_COMMAND: CommandSpec = {
  name: "deno task figures",
  summary: "regenerate figures/ (plots, montages, tables) from a finished training run",
  usage: "deno task figures [--run runs/<name>] [--out figures]",
  options: [
    { name: "run", description: "a finished `deno task train` run", default: "runs/default" },
    { name: "out", description: "output folder", default: "figures" },
    {
      name: "table2",
      description: "runs for Table 2, comma-separated (default: --run and every runs/table2-<network>)",
    },
    backendOption("compute backend for the montages"),
  ],
};

const slug = (s: string) => s.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "");

/**
 * Writes every figure of `runDir` into `out`, and Table 2 from `table2` (run folders; default:
 * `runDir` and every `runs/table2-<network>` with fusion results); returns the files written.
 */
export async function writeFigures(runDir: string, out: string, table2?: string[]): Promise<string[]> {
  const run = await loadRun(runDir);
  await Deno.mkdir(out, { recursive: true });
  // everything is made in a staging folder and moved into `out` only when all of it succeeded:
  // a damaged checkpoint or a failed render leaves the previous figures as they were
  const stage = await Deno.makeTempDir({ dir: out, prefix: ".figures-" });
  try {
    const written = await makeFigures(run, runDir, stage, table2);
    for (const name of written) await Deno.rename(join(stage, name), join(out, name));
    return written;
  } finally {
    await Deno.remove(stage, { recursive: true }).catch(() => {});
  }
}

async function makeFigures(
  run: RunData,
  runDir: string,
  out: string,
  table2?: string[],
): Promise<string[]> {
  const written: string[] = [];
  const put = async (name: string, bytes: Uint8Array | string) => {
    await Deno.writeFile(
      join(out, name),
      typeof bytes === "string" ? new TextEncoder().encode(bytes) : bytes,
    );
    written.push(name);
  };

  const plots: [string, PlotlyFigure][] = loggedPhases(run).map((
    p,
  ) => [`training-curves-${slug(p)}`, trainingCurves(run, p)]);
  if (run.metrics.folds.length) {
    plots.push(["synthesis-psnr", synthesisScores(run, "psnr")], [
      "synthesis-ssim",
      synthesisScores(run, "ssim"),
    ]);
  }
  if (run.metrics.fusion) plots.push(["dice-boxplot", diceBoxPlot(run)]);
  const rendered = await renderFigures(plots.map(([, f]) => f));
  for (const [i, [name]] of plots.entries()) {
    await put(`${name}.png`, rendered[i].png);
    await put(`${name}.svg`, rendered[i].svg);
    await put(`${name}.json`, JSON.stringify(plots[i][1]));
  }

  if (run.metrics.folds.length) {
    const syn = synthesisTable(run);
    await put("synthesis-scores.csv", toCsv(syn));
    await put("synthesis-scores.md", toMarkdown(syn));
    // Table A.1 under both readings of "3T features" (the paper's: the KKN's extractor)
    for (const [reading, suffix] of [["extractor", ""], ["teacher", "-teacher-encoder"]] as const) {
      const feat = featureDistanceTable(run, reading);
      await put(`feature-distances${suffix}.csv`, toCsv(feat));
      await put(`feature-distances${suffix}.md`, toMarkdown(feat));
    }
  }
  if (run.metrics.fusion) {
    const dice = diceTable(run);
    await put("dice.csv", toCsv(dice));
    await put("dice.md", toMarkdown(dice));
  }

  if (run.metrics.fusion) {
    const models = await loadModels(run);
    const subjects = await testSubjects(run);
    await put("synthesis-montage.png", await synthesisMontage(models, subjects.paired));
    await put("keeper-features.png", await featureMontage(models, subjects.paired, 1));
    await put("segmentation-overlay.png", await segmentationMontage(models, subjects.tissue));
    await put("afm-features.png", await afmMontage(models, subjects.tissue, 1));
  }

  const t2 = table2 ? await Promise.all(table2.map((d) => loadRun(d))) : await table2Runs(runDir);
  if (t2.length) written.push(...await writeTable2(t2, out));

  const lines = [
    "# Figures",
    "",
    `Regenerated by \`deno task figures --run ${runDir}\` from the run's \`metrics.json\`, \`log.jsonl\` and checkpoints`,
    `(profile \`${run.metrics.profile}\`). \`phantom-cohort.png\` comes from \`deno task figure:phantom\`.`,
    "",
    "| file | paper | what it shows |",
    "| --- | --- | --- |",
    "| phantom-cohort.png | Fig. 1 (data) | one phantom subject: 3T MPRAGE, 7T MP2RAGE, 3T + tissue labels, 1.5T + 27 structures |",
    ...FIGURES.map((f) => `| ${f.file} | ${f.paper} | ${f.what} |`),
    "",
  ];
  await put("README.md", lines.join("\n"));
  return written;
}

if (import.meta.main) {
  await runCommand(FIGURES_COMMAND, async (args) => {
    const runDir = String(args.options.run);
    try {
      await Deno.stat(join(runDir, "metrics.json"));
    } catch {
      throw new UsageError(`--run ${runDir}: no metrics.json (train first: deno task train)`);
    }
    await initBackend(String(args.options.backend), { quiet: true });
    const table2 = args.options.table2 === undefined
      ? undefined
      : String(args.options.table2).split(",").map((d) => d.trim()).filter(Boolean);
    for (const d of table2 ?? []) {
      if (!existsSync(join(d, "metrics.json"))) {
        throw new UsageError(`--table2 ${d}: no metrics.json (not a finished run)`);
      }
    }
    const files = await writeFigures(runDir, String(args.options.out), table2);
    console.log(`${files.length} files written to ${args.options.out}/`);
  });
}
