/**
 * `deno task prep --profile quick|default|paper [--out DIR] [--seed N]`: regenerates the phantom
 * cohorts deterministically (see lib/phantom/cohort.ts and data-prep/README.md).
 */
import { type CommandSpec, runCommand } from "../lib/cli.ts";
import { generateCohorts, type PhantomProfile } from "../lib/phantom/cohort.ts";

export const PREP_COMMAND: CommandSpec = {
  name: "deno task prep",
  summary: "generate the simulated 3T/7T (paired), tissue and whole-brain cohorts",
  usage: "deno task prep [--profile quick|default|paper] [--out DIR] [--seed N]",
  options: [
    {
      name: "profile",
      description: "grid size and cohort sizes",
      choices: ["quick", "default", "paper"],
      default: "default",
    },
    { name: "out", description: "output folder (default: data/generated/<profile>)" },
    { name: "seed", description: "random seed", type: "integer", default: 0 },
    { name: "quiet", description: "no per-scan progress", type: "boolean", default: false },
  ],
};

if (import.meta.main) {
  await runCommand(PREP_COMMAND, async (args) => {
    const profile = String(args.options.profile) as PhantomProfile["name"];
    const out = String(args.options.out ?? `data/generated/${profile}`);
    const t0 = performance.now();
    const manifests = await generateCohorts(profile, out, {
      seed: Number(args.options.seed),
      log: args.options.quiet ? undefined : (line) => console.log(line),
    });
    const scans = Object.values(manifests).reduce((s, m) => s + m.scans.length, 0);
    console.log(
      `${scans} scans of profile "${profile}" in ${out} (${((performance.now() - t0) / 1000).toFixed(1)} s)`,
    );
  });
}
