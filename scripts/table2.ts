/**
 * `deno task table2 [--from runs/default] [--networks voxresnet,usegnet,rpnet,unet3d]`: Table 2
 * of the paper on the tissue cohort. For each network, a run `runs/<name>-<network>` gets the
 * `--from` run's teacher and KKN (fold 1) and configuration with only `fusion.network` changed,
 * and trains phase 3 (baseline, epoch-matched control, AFM-guided); a network the `--from` run
 * already trained is taken from it. Then `<out>/table2.csv`, `table2.md` and the box plot
 * `table2.png` are written from the runs' results, beside the paper's numbers (`deno task figures`
 * writes them too, from the runs it finds). Each run is an arm of a plan (`lib/train/plan.ts`):
 * it resumes like any other, and a finished one is read.
 */
import { join } from "node:path";
import { type CommandSpec, runCommand, UsageError } from "../lib/cli.ts";
import { initBackend } from "../lib/backend.ts";
import { writeFileAtomic } from "../lib/io/nifti.ts";
import { type NetworkName, NETWORKS } from "../lib/models/networks.ts";
import { loadRun, type RunData, table2, table2Plot } from "../lib/report.ts";
import { renderFigures } from "../lib/viz/plotly.ts";
import { type Arm, planCommandOptions, planOptions, runArm, TEACHER_KKN } from "../lib/train/plan.ts";
import { toCsv, toMarkdown } from "../lib/viz/table.ts";

/** The registered 3D networks: Table 2's rows. */
const TISSUE_NETWORKS = Object.entries(NETWORKS).filter(([, e]) => e.dims === 3).map(([n]) => n);

export const TABLE2_COMMAND: CommandSpec = {
  name: "deno task table2",
  summary: "train phase 3 for every 3D tissue network on a finished run's KKN and write Table 2",
  usage: "deno task table2 [--from runs/default] [--networks LIST] [--name table2] [--out figures]",
  options: [
    {
      name: "from",
      description: "a finished run whose teacher and KKN (fold 1) every network uses",
      default: "runs/default",
    },
    {
      name: "networks",
      description: `comma-separated 3D networks (${TISSUE_NETWORKS.join(", ")})`,
      default: TISSUE_NETWORKS.join(","),
    },
    ...planCommandOptions(
      { default: "table2", runs: "<name>-<network>" },
      "folder for table2.csv, table2.md and the box plot table2.png",
    ),
  ],
};

export async function runTable2(
  opts: Record<string, string | number | boolean | undefined>,
): Promise<string[]> {
  const from = String(opts.from);
  const source = await loadRun(from);
  const networks = String(opts.networks).split(",").map((n) => n.trim()).filter(Boolean);
  for (const n of networks) {
    if (!TISSUE_NETWORKS.includes(n)) {
      throw new UsageError(
        `--networks: "${n}" is not one of ${TISSUE_NETWORKS.join(", ")}${
          n in NETWORKS ? " (a 2D network: whole-brain, deno task table3)" : ""
        }`,
      );
    }
  }
  const runs: string[] = [];
  for (const network of networks as NetworkName[]) {
    if ((source.config.fusion.network ?? "unet3d") === network && source.metrics.fusion) {
      runs.push(from);
      continue;
    }
    const arm: Arm = {
      id: network,
      changes: { fusion: { network } },
      phase: "fusion",
      copy: [{ from: "source", names: TEACHER_KKN }],
    };
    console.log(`${opts.name}-${network}: phase 3 with ${NETWORKS[network].label}`);
    runs.push(
      await runArm(arm, source, planOptions(opts)),
    );
  }
  const written = await writeTable2(await Promise.all(runs.map((r) => loadRun(r))), String(opts.out));
  console.log(await Deno.readTextFile(join(String(opts.out), written[1])));
  return runs;
}

/**
 * Writes Table 2 from finished fusion runs (one per network) into `out`: `table2.csv`, `table2.md`
 * and the box plot `table2.png` / `.svg` / `.json`; returns the file names.
 */
export async function writeTable2(runs: RunData[], out: string): Promise<string[]> {
  const table = table2(runs);
  const fig = table2Plot(runs);
  const [rendered] = await renderFigures([fig]);
  await Deno.mkdir(out, { recursive: true });
  const files: [string, Uint8Array | string][] = [
    ["table2.csv", toCsv(table)],
    ["table2.md", toMarkdown(table, 3)],
    ["table2.png", rendered.png],
    ["table2.svg", rendered.svg],
    ["table2.json", JSON.stringify(fig)],
  ];
  for (const [name, bytes] of files) await writeFileAtomic(join(out, name), bytes);
  return files.map(([name]) => name);
}

if (import.meta.main) {
  await runCommand(TABLE2_COMMAND, async (args) => {
    await initBackend(String(args.options.backend));
    await runTable2(args.options);
  });
}
