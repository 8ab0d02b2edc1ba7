/**
 * `deno task slurm submit|status|collect|resubmit`: a training run as Slurm job arrays, one per
 * level of its job graph (`lib/train/jobs.ts`, `lib/train/slurm.ts`); `collect` merges the jobs'
 * results into the run's metrics as `deno task train` writes them.
 */
import { join } from "node:path";
import { type CommandSpec, type OptionSpec, runCommand, UsageError } from "../lib/cli.ts";
import { collectRun, phaseOf, PHASES } from "../lib/train/jobs.ts";
import { RUN_NAME } from "../lib/train/run.ts";
import {
  DEFAULT_CPUS,
  resubmitRun,
  runStatus,
  SlurmError,
  type SlurmResources,
  submitRun,
} from "../lib/train/slurm.ts";
import { TRAIN_COMMAND } from "./train.ts";

/** The options `deno task train` takes that a job runs with. */
const TRAIN_OPTIONS: OptionSpec[] = TRAIN_COMMAND.options.filter(
  (o) => !["plan-only", "only", "progress", "phase"].includes(o.name),
);

/** `deno task slurm`: its actions (positional) and options. */
export const SLURM_COMMAND: CommandSpec = {
  name: "deno task slurm",
  summary: "run a training run's job graph on a Slurm cluster, one job array per level and kind of job",
  usage: "deno task slurm submit|status|collect|resubmit [train options] [slurm options]",
  options: [
    {
      name: "phase",
      description:
        "the phase(s) the jobs run, as deno task train --phase (status/collect: the run's one planned phase)",
      choices: PHASES,
    },
    ...TRAIN_OPTIONS,
    { name: "partition", description: "Slurm partition (sbatch --partition)" },
    {
      name: "gres",
      description: "generic resources per job, e.g. gpu:1 with --backend tensorflow (sbatch --gres)",
    },
    {
      name: "cpus",
      description:
        `CPUs per job (sbatch --cpus-per-task; oneDNN's threads follow it; default ${DEFAULT_CPUS})`,
      type: "integer",
    },
    { name: "mem", description: "memory per job, e.g. 32G (sbatch --mem)" },
    { name: "time", description: "time limit per job, e.g. 24:00:00 (sbatch --time)" },
    { name: "only", description: "submit/resubmit: only this job (its dependencies finished or queued)" },
  ],
  notes: [
    "submit: writes runs/<name>/config.json, data.json, jobs/plan-<phase>.json and slurm/<name>-s<N>-L<level>-<kind>.sh, submits each with sbatch --parsable and --dependency=afterok on the arrays it needs, records the ids in slurm/submissions.json. Finished jobs are skipped, queued or running ones not submitted again.",
    "status --name N: each job's state (its result, else squeue/sacct/scontrol). collect --name N: metrics.json, metrics.csv and log.jsonl from the jobs' results (deno task figures then works unchanged). resubmit --name N: submit the unfinished jobs again with the last submission's options.",
    "Jobs run one by one without Slurm too: deno task train <options> --plan-only lists them, --only <job> runs one.",
  ],
};

if (import.meta.main) {
  await runCommand(SLURM_COMMAND, async (args) => {
    const [action, ...rest] = args.positional;
    if (rest.length) throw new UsageError(`unexpected argument "${rest[0]}" (see --help)`);
    const o = args.options;
    const resources: Partial<SlurmResources> = {
      partition: o.partition as string | undefined,
      gres: o.gres as string | undefined,
      cpus: o.cpus as number | undefined,
      mem: o.mem as string | undefined,
      time: o.time as string | undefined,
    };
    if (resources.cpus !== undefined && resources.cpus < 1) {
      throw new UsageError("--cpus: must be at least 1");
    }
    const only = o.only === undefined ? undefined : String(o.only);
    const name = String(o.name ?? o.profile);
    if (!RUN_NAME.test(name)) {
      throw new UsageError(`--name ${JSON.stringify(name)}: must be a plain folder name`);
    }
    const runDir = join(String(o.out), name);
    try {
      switch (action) {
        case "submit": {
          const options = { ...o, phase: o.phase ?? "all" };
          await submitRun(TRAIN_COMMAND.options, options, {
            ...resources,
            cpus: resources.cpus ?? DEFAULT_CPUS,
          }, only);
          return;
        }
        case "resubmit":
          await resubmitRun(
            TRAIN_COMMAND.options,
            runDir,
            await phaseOf(runDir, o.phase as string),
            resources,
            only,
          );
          return;
        case "status":
          console.log(await runStatus(runDir, await phaseOf(runDir, o.phase as string)));
          return;
        case "collect":
          await collectRun(runDir, await phaseOf(runDir, o.phase as string));
          console.log(`results in ${runDir}/ (metrics.json, metrics.csv, log.jsonl; time: the jobs' sum)`);
          return;
        default:
          throw new UsageError(
            `${
              action === undefined ? "no action" : `unknown action "${action}"`
            }: one of submit, status, collect, resubmit`,
          );
      }
    } catch (err) {
      if (!(err instanceof SlurmError)) throw err;
      // an environment error (no Slurm here, or Slurm refused): one line, exit 1
      console.error(`${SLURM_COMMAND.name}: ${err.message}`);
      Deno.exit(1);
    }
  }, { allowPositional: true });
}
