/**
 * `deno task table3 [--from runs/wholebrain] [--networks unet2d,...]`: Table 3 and Fig. 9 of the
 * paper on the phantom's whole-brain cohort. The `--from` run (`deno task train --phase
 * wholebrain`) gives the per-view 2D teachers and KKNs (and its 3D KKN for a 3D network); each
 * other network is an arm of a plan (`lib/train/plan.ts`), a run `runs/<name>-<network>` with only
 * `wholebrain.network` changed that trains its three stages on those KKNs. Written to `--out`:
 * `table3.csv` / `.md` (cortical, subcortical and average Dice, gains with Wilcoxon p-values, the
 * paper's values and orderings), `table3-structures-<network>.csv` / `.md` (per structure),
 * `fig9-<network>.png` / `.svg` / `.json` (per-structure box plots) and
 * `wholebrain-montage-<network>.png` (input, truth, baseline, guided in FreeSurfer colours).
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { type CommandSpec, runCommand, UsageError } from "../lib/cli.ts";
import { initBackend } from "../lib/backend.ts";
import { writeFileAtomic } from "../lib/io/nifti.ts";
import { type NetworkName, NETWORKS } from "../lib/models/networks.ts";
import { loadRun, type RunData } from "../lib/report.ts";
import {
  fig9Plot,
  structureMontage,
  structureTable,
  table3,
  table3Changes,
  wholeBrainOf,
} from "../lib/report_wholebrain.ts";
import { renderFigures } from "../lib/viz/plotly.ts";
import { type Arm, planCommandOptions, planOptions, runArm, TEACHER_KKN } from "../lib/train/plan.ts";
import { toCsv, toMarkdown } from "../lib/viz/table.ts";
import { VIEWS } from "../lib/data/views.ts";

export const TABLE3_COMMAND: CommandSpec = {
  name: "deno task table3",
  summary: "train the whole-brain networks on a finished whole-brain run's KKNs and write Table 3 and Fig. 9",
  usage: "deno task table3 [--from runs/wholebrain] [--networks LIST] [--name table3] [--out figures]",
  options: [
    {
      name: "from",
      description: "a finished `deno task train --phase wholebrain` run whose KKNs every network uses",
      default: "runs/wholebrain",
    },
    {
      name: "networks",
      description: "comma-separated whole-brain networks (default: the source run's)",
    },
    ...planCommandOptions(
      { default: "table3", runs: "<name>-<network>" },
      "folder for table3.csv/.md, the per-structure tables, fig9 and the montage",
    ),
  ],
};

export async function runTable3(
  opts: Record<string, string | number | boolean | undefined>,
): Promise<string[]> {
  const from = String(opts.from);
  const source = await loadRun(from);
  const own = wholeBrainOf(source).network;
  const networks = opts.networks === undefined
    ? [own]
    : String(opts.networks).split(",").map((n) => n.trim()).filter(Boolean);
  for (const n of networks) {
    if (!(n in NETWORKS)) {
      throw new UsageError(`--networks: "${n}" is not one of ${Object.keys(NETWORKS).join(", ")}`);
    }
  }
  const runs: string[] = [];
  for (const network of networks as NetworkName[]) {
    if (network === own) {
      runs.push(from);
      continue;
    }
    // a 2D network: the source's per-view 2D teachers and KKNs; a 3D one: its 3D teacher and KKN of
    // fold 1 when it has them (a 2D source has not: the arm trains them)
    const names = NETWORKS[network].dims === 2
      ? VIEWS.flatMap((v) => [`${v}-teacher-fold1-best`, `${v}-keeper-fold1-best`])
      : TEACHER_KKN.filter((n) => existsSync(join(from, "checkpoints", `${n}.json`)));
    const arm: Arm = {
      id: network,
      changes: table3Changes(network),
      phase: "wholebrain",
      copy: [{ from: "source", names }],
    };
    runs.push(
      await runArm(arm, source, planOptions(opts)),
    );
  }
  const written = await writeTable3(await Promise.all(runs.map((r) => loadRun(r))), String(opts.out));
  console.log(await Deno.readTextFile(join(String(opts.out), written[1])));
  return runs;
}

/** Writes Table 3, the per-structure tables, Fig. 9 and the montage of each run into `out`. */
export async function writeTable3(runs: RunData[], out: string): Promise<string[]> {
  await Deno.mkdir(out, { recursive: true });
  const table = table3(runs);
  const files: [string, Uint8Array | string][] = [
    ["table3.csv", toCsv(table)],
    ["table3.md", toMarkdown(table, 3)],
  ];
  for (const run of runs) {
    const net = wholeBrainOf(run).network;
    const structures = structureTable(run);
    const fig = fig9Plot(run);
    const [rendered] = await renderFigures([fig]);
    files.push(
      [`table3-structures-${net}.csv`, toCsv(structures)],
      [`table3-structures-${net}.md`, toMarkdown(structures, 3)],
      [`fig9-${net}.png`, rendered.png],
      [`fig9-${net}.svg`, rendered.svg],
      [`fig9-${net}.json`, JSON.stringify(fig)],
      [`wholebrain-montage-${net}.png`, await structureMontage(run)],
    );
  }
  for (const [name, bytes] of files) await writeFileAtomic(join(out, name), bytes);
  return files.map(([name]) => name);
}

if (import.meta.main) {
  await runCommand(TABLE3_COMMAND, async (args) => {
    await initBackend(String(args.options.backend));
    await runTable3(args.options);
  });
}
