/**
 * `deno task prep --profile quick|default|paper [--out DIR] [--seed N]`: regenerates the phantom
 * (its three cohorts and the full-head `heads` cohort)
 * cohorts deterministically (see lib/phantom/cohort.ts and data-prep/README.md).
 *
 * `deno task prep --dataset ibsr|malc|paired --from DIR [--out DIR]`: converts one of the paper's
 * datasets into a cohort (see lib/data/importers.ts and the README, "Importing the paper's
 * datasets").
 */
import { type CommandSpec, runCommand, UsageError } from "../lib/cli.ts";
import { generateCohorts, type PhantomProfile } from "../lib/phantom/cohort.ts";
import { generateHeadCohort } from "../lib/phantom/head.ts";
import { type DatasetName, importDataset, importNextStep } from "../lib/data/importers.ts";

export const PREP_COMMAND: CommandSpec = {
  name: "deno task prep",
  summary: "generate the simulated 3T/7T (paired), tissue and whole-brain cohorts, or import a real dataset",
  usage: "deno task prep [--profile quick|default|paper] [--out DIR] [--seed N]\n" +
    "       deno task prep --dataset ibsr|malc|paired --from DIR [--pairs FILE.csv] [--out DIR] [--spacing MM] [--force]",
  options: [
    {
      name: "profile",
      description: "phantom: grid size and cohort sizes (default: default)",
      choices: ["quick", "default", "paper"],
    },
    {
      name: "out",
      description: "output folder (default: data/generated/<profile>; with --dataset: data/imported)",
    },
    { name: "seed", description: "phantom: random seed", type: "integer", default: 0 },
    { name: "quiet", description: "no per-scan progress", type: "boolean", default: false },
    {
      name: "dataset",
      description:
        "import a real dataset instead: IBSR v2.0 -> tissue, MALC -> wholebrain, 3T/7T pairs -> paired",
      choices: ["ibsr", "malc", "paired"],
    },
    { name: "from", description: "--dataset: the dataset's folder (layouts: README)" },
    {
      name: "pairs",
      description: "--dataset paired: a CSV with columns subject,3T,7T[,tissue] instead of --from",
    },
    {
      name: "spacing",
      description: "--dataset: isotropic voxel size in mm (default: <out>/paired's when it exists, else 1)",
      type: "number",
    },
    {
      name: "clahe-tiles",
      description: "--dataset ibsr: CLAHE regions per axis (the released code's)",
      type: "integer",
      default: 5,
    },
    {
      name: "clahe-clip",
      description: "--dataset ibsr: CLAHE clip limit, share of a region's voxels (1: no clipping)",
      type: "number",
      default: 0.2,
    },
    { name: "force", description: "--dataset: replace an existing cohort", type: "boolean", default: false },
  ],
};

if (import.meta.main) {
  await runCommand(PREP_COMMAND, async (args) => {
    const o = args.options;
    const t0 = performance.now();
    const seconds = () => ((performance.now() - t0) / 1000).toFixed(1);
    const log = o.quiet ? undefined : (line: string) => console.log(line);
    if (o.dataset !== undefined) {
      if (o.profile !== undefined) {
        throw new UsageError("--profile is for the phantom; --dataset imports a dataset");
      }
      const out = String(o.out ?? "data/imported");
      const result = await importDataset(String(o.dataset) as DatasetName, {
        from: o.from === undefined ? undefined : String(o.from),
        pairs: o.pairs === undefined ? undefined : String(o.pairs),
        out,
        spacing: o.spacing === undefined ? undefined : Number(o.spacing),
        force: o.force === true,
        claheTiles: Number(o["clahe-tiles"]),
        claheClip: Number(o["clahe-clip"]),
        log,
      });
      const m = result.manifest;
      console.log(
        `${m.scans.length} scans of ${o.dataset} in ${result.dir} (${
          m.grid.shape.join("x")
        } at ${m.grid.spacing} mm; ` +
          `${seconds()} s); ${importNextStep(out, m.grid.spacing)}`,
      );
      return;
    }
    for (const name of ["from", "pairs", "spacing"]) {
      if (o[name] !== undefined) throw new UsageError(`--${name} needs --dataset`);
    }
    const profile = String(o.profile ?? "default") as PhantomProfile["name"];
    const out = String(o.out ?? `data/generated/${profile}`);
    const manifests = await generateCohorts(profile, out, { seed: Number(o.seed), log });
    // the full-head scans brain extraction learns from
    const heads = await generateHeadCohort(profile, out, { seed: Number(o.seed), log });
    const scans = [...Object.values(manifests), heads].reduce((s, m) => s + m.scans.length, 0);
    console.log(`${scans} scans of profile "${profile}" in ${out} (${seconds()} s)`);
  });
}
