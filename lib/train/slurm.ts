/**
 * A run's job graph (`lib/train/jobs.ts`) on a Slurm cluster: `deno task slurm`.
 *
 * - `submitRun` writes the run-level files and the plan, then one sbatch script per level of
 *   the graph and kind of job (the teachers of every fold, the KKNs, ...) into
 *   `runs/<name>/slurm/` and submits each as a job array (`sbatch --parsable`), a task per job
 *   (`deno task train <options> --only <job>`), chained with `--dependency=afterok:<array>` on
 *   the arrays holding the jobs it needs (the KKNs wait for the teachers, not for the baseline
 *   segmenter, which runs beside the teachers). Finished jobs are
 *   skipped; jobs still queued or running from an earlier submission are not submitted again, and
 *   what depends on them waits for their Slurm task. The Slurm ids go to `slurm/submissions.json`.
 * - `runStatus` reports each job's state: finished (its result), else the Slurm state of its
 *   last submission (`squeue`, then `sacct`, then `scontrol`), else not submitted.
 * - `resubmitRun` submits again with the last submission's options: what failed or was cancelled,
 *   and what depends on it; finished jobs are never rerun.
 *
 * Every job is an ordinary process on the shared run folder, so the same jobs also run by hand,
 * one at a time (`deno task train --only`), with the same results.
 */
import { existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { type OptionSpec, UsageError } from "../cli.ts";
import { readJsonFile } from "../io/json.ts";
import { writeFileAtomic } from "../io/nifti.ts";
import { prepareRun, runningJobs } from "./run.ts";
import {
  finished,
  type Job,
  type JobPlan,
  missingDependency,
  readPlan,
  resultPath,
  setUpJobs,
} from "./jobs.ts";
import { writeJson } from "./pipeline.ts";

/** Slurm is not there (no `sbatch` or `squeue`) or refused a command. */
export class SlurmError extends Error {
  override name = "SlurmError";
}

/** What each job of a submission asks Slurm for. */
export interface SlurmResources {
  partition?: string;
  /** e.g. `gpu:1` (with `--backend tensorflow`). */
  gres?: string;
  /** CPUs per job (`--cpus-per-task`; oneDNN's threads follow it through `OMP_NUM_THREADS`). */
  cpus: number;
  /** e.g. `32G`. */
  mem?: string;
  /** e.g. `24:00:00`. */
  time?: string;
}

/** One job array: the jobs of one kind on one level of the graph. */
export interface SlurmArray {
  level: number;
  kind: string;
  /** The array's Slurm job id; task i runs `jobs[i]` (Slurm id `<slurmId>_<i>`). */
  slurmId: string;
  jobs: string[];
  script: string;
  /** Slurm ids this array waits for (`afterok`). */
  dependency: string[];
}

/** One `deno task slurm submit` (or `resubmit`). */
export interface Submission {
  n: number;
  time: string;
  phase: string;
  /** The `deno task train` options every job runs with (as parsed). */
  options: Record<string, string | number | boolean | undefined>;
  resources: SlurmResources;
  arrays: SlurmArray[];
}

/** `slurm/submissions.json`. */
export interface SubmissionLog {
  submissions: Submission[];
}

/** The CPUs a job asks for when `--cpus` is not given. */
export const DEFAULT_CPUS = 4;

/** Runs a Slurm client command; a missing binary or a failure is a `SlurmError`. */
async function slurm(
  cmd: string,
  args: string[],
  { check = true } = {},
): Promise<{ code: number; out: string; err: string }> {
  let output: Deno.CommandOutput;
  try {
    output = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      throw new SlurmError(
        `${cmd} not found on PATH: deno task slurm needs a Slurm cluster's client commands (sbatch, squeue); ` +
          `without one, run the jobs in order with deno task train --only <job> (--plan-only lists them)`,
      );
    }
    throw err;
  }
  const out = new TextDecoder().decode(output.stdout), err = new TextDecoder().decode(output.stderr);
  if (check && output.code !== 0) {
    throw new SlurmError(
      `${cmd} ${args.join(" ")} failed (exit ${output.code}): ${err.trim() || out.trim()}`,
    );
  }
  return { code: output.code, out, err };
}

/** Fails with a `SlurmError` unless sbatch and squeue are on PATH (before anything is written). */
export async function requireSlurm(): Promise<void> {
  for (const cmd of ["sbatch", "squeue"]) await slurm(cmd, ["--version"]);
}

/** A word for a shell script, single-quoted. */
function shellQuote(s: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(s) ? s : `'${s.replaceAll("'", `'"'"'`)}'`;
}

/**
 * The command-line options that reproduce `options` (parsed by `specs`) for the jobs: every
 * option with a value, except those that pick what to run (`only`, `plan-only`) and progress
 * bars (jobs write none).
 */
export function trainArguments(
  specs: OptionSpec[],
  options: Record<string, string | number | boolean | undefined>,
): string[] {
  const args: string[] = [];
  for (const o of specs) {
    const v = options[o.name];
    if (v === undefined || ["only", "plan-only", "progress"].includes(o.name)) continue;
    if (o.type === "boolean") args.push(`--${o.name}=${v}`);
    else args.push(`--${o.name}`, String(v));
  }
  return [...args, "--progress=false"];
}

/** The repository's `deno.json` and `scripts/train.ts`, which every job runs. */
function projectPaths(): { config: string; train: string } {
  const root = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
  return { config: join(root, "deno.json"), train: join(root, "scripts", "train.ts") };
}

/** An sbatch script running the jobs `jobs` as one array, task i running `jobs[i]`. */
export function sbatchScript(
  { name, runDir, label, jobs, resources, args, dependency, cwd = Deno.cwd(), deno = Deno.execPath() }: {
    /** The submission (`<run>-s<N>`). */
    name: string;
    runDir: string;
    /** The array within it (`L1-keeper`). */
    label: string;
    jobs: string[];
    resources: SlurmResources;
    /** The `deno task train` options (`trainArguments`). */
    args: string[];
    dependency: string[];
    cwd?: string;
    deno?: string;
  },
): string {
  const { config, train } = projectPaths();
  const out = resolve(cwd, runDir, "slurm");
  const lines = [
    "#!/bin/bash",
    `#SBATCH --job-name=${name}-${label}`,
    `#SBATCH --array=0-${jobs.length - 1}`,
    `#SBATCH --output=${out}/${name}-${label}-%A_%a.out`,
    `#SBATCH --cpus-per-task=${resources.cpus}`,
    ...(resources.partition ? [`#SBATCH --partition=${resources.partition}`] : []),
    ...(resources.gres ? [`#SBATCH --gres=${resources.gres}`] : []),
    ...(resources.mem ? [`#SBATCH --mem=${resources.mem}`] : []),
    ...(resources.time ? [`#SBATCH --time=${resources.time}`] : []),
    ...(dependency.length
      ? [`#SBATCH --dependency=afterok:${dependency.join(":")}`, "#SBATCH --kill-on-invalid-dep=yes"]
      : []),
    `# written by deno task slurm: ${label} of ${runDir}'s job graph, one array task per job`,
    "set -euo pipefail",
    `jobs=(${jobs.join(" ")})`,
    'job="${jobs[$SLURM_ARRAY_TASK_ID]}"',
    "# oneDNN's OpenMP threads: the CPUs Slurm gave the task",
    'export OMP_NUM_THREADS="${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}"',
    `cd ${shellQuote(cwd)}`,
    'echo "job $job: Slurm job ${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID} on $(hostname), $(date -Is)"',
    `exec ${[deno, "run", "-A", "--config", config, train, ...args].map(shellQuote).join(" ")} --only "$job"`,
    "",
  ];
  return lines.join("\n");
}

/** `slurm/submissions.json` of a run folder (empty when nothing was submitted). */
export async function readSubmissions(runDir: string): Promise<SubmissionLog> {
  const path = join(runDir, "slurm", "submissions.json");
  if (!existsSync(path)) return { submissions: [] };
  return await readJsonFile<SubmissionLog>(path, "the run's Slurm submissions");
}

/** Each job's Slurm task (`<array>_<index>`) in its latest submission of `phase`. */
export function latestTasks(log: SubmissionLog, phase: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const s of log.submissions.filter((s) => s.phase === phase)) {
    for (const a of s.arrays) a.jobs.forEach((id, i) => out.set(id, `${a.slurmId}_${i}`));
  }
  return out;
}

/** A Slurm task's state (`RUNNING`, `PENDING`, `COMPLETED`, `FAILED`, ...), the reason and where it was read. */
export interface TaskState {
  state: string;
  reason: string;
  source: "squeue" | "sacct" | "scontrol";
}

/** States of a task that will still run or is running. */
const ACTIVE = new Set([
  "PENDING",
  "RUNNING",
  "CONFIGURING",
  "COMPLETING",
  "SUSPENDED",
  "REQUEUED",
  "RESIZING",
]);

/** Whether a task will still run: queued or running, and not waiting on a dependency that failed. */
export function inFlight(s: TaskState | undefined): boolean {
  return !!s && ACTIVE.has(s.state) && s.reason !== "DependencyNeverSatisfied";
}

/**
 * The states of Slurm tasks (`<array>_<index>`): from `squeue` while queued or running, else
 * from `sacct` where accounting is on, else from `scontrol` while the controller remembers them.
 */
export async function taskStates(tasks: string[]): Promise<Map<string, TaskState>> {
  const states = new Map<string, TaskState>();
  if (!tasks.length) return states;
  const wanted = new Set(tasks);
  const queue = await slurm("squeue", ["-h", "-r", "-o", "%i|%T|%r"], { check: false });
  for (const line of queue.out.split("\n")) {
    const [id, state, reason] = line.trim().split("|");
    if (wanted.has(id)) states.set(id, { state, reason: reason ?? "", source: "squeue" });
  }
  const arrays = [...new Set(tasks.filter((t) => !states.has(t)).map((t) => t.split("_")[0]))];
  if (!arrays.length) return states;
  const acct = await slurm(
    "sacct",
    ["-n", "-P", "-X", "-o", "JobID,State,ExitCode", "-j", arrays.join(",")],
    {
      check: false,
    },
  ).catch(() => null);
  if (acct && acct.code === 0) {
    for (const line of acct.out.split("\n")) {
      const [id, state, exit] = line.trim().split("|");
      if (wanted.has(id) && !states.has(id)) {
        states.set(id, { state: state.split(" ")[0], reason: `exit ${exit}`, source: "sacct" });
      }
    }
  }
  for (const array of arrays) {
    const shown = await slurm("scontrol", ["show", "job", "-o", array], { check: false }).catch(() => null);
    for (const line of shown?.code === 0 ? shown.out.split("\n") : []) {
      const field = (k: string) => new RegExp(`(?:^|\\s)${k}=(\\S*)`).exec(line)?.[1];
      // one line per task, or one for tasks that never started (`ArrayTaskId=0-2,5`)
      for (const index of taskIndices(field("ArrayTaskId") ?? "")) {
        const id = `${field("ArrayJobId")}_${index}`;
        if (wanted.has(id) && !states.has(id)) {
          states.set(id, {
            state: field("JobState") ?? "?",
            reason: `${field("Reason") ?? ""}${field("ExitCode") ? ` exit ${field("ExitCode")}` : ""}`.trim(),
            source: "scontrol",
          });
        }
      }
    }
  }
  return states;
}

/** The task indices of an array task list (`3`, `0-2`, `0-2,5`, `0-9%2`). */
export function taskIndices(spec: string): number[] {
  const out: number[] = [];
  for (const part of spec.split("%")[0].split(",")) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part.trim());
    if (!m) continue;
    for (let i = Number(m[1]); i <= Number(m[2] ?? m[1]); i++) out.push(i);
  }
  return out;
}

/**
 * `deno task slurm submit`: writes the run-level files and the plan (`setUpJobs`), then submits
 * the unfinished jobs of `--phase` as one job array per graph level and kind of job (only `only`
 * when given), each waiting (afterok) for the arrays holding the jobs it needs; records the submission in `slurm/submissions.json`.
 * Returns it, or null when nothing was left to submit.
 */
export async function submitRun(
  specs: OptionSpec[],
  options: Record<string, string | number | boolean | undefined>,
  resources: SlurmResources,
  only?: string,
): Promise<Submission | null> {
  await requireSlurm();
  const phase = String(options.phase ?? "all");
  const run = await prepareRun(options);
  const { plan } = await setUpJobs(run, phase);
  const { runDir } = run;
  const log = await readSubmissions(runDir);
  const tasks = latestTasks(log, phase);
  const states = await taskStates([...tasks.values()]);
  const running = new Set((await runningJobs(runDir)).map((j) => j.id));
  // queued or running in Slurm (its task id), or running outside Slurm (no id to wait for)
  const flying = new Map<string, string | null>();
  const stale: string[] = [];
  for (const job of plan.jobs) {
    if (finished(runDir, job.id)) continue;
    const task = tasks.get(job.id);
    const state = task ? states.get(task) : undefined;
    if (inFlight(state)) flying.set(job.id, task!);
    else if (running.has(job.id)) flying.set(job.id, null);
    else if (task && state && ACTIVE.has(state.state)) stale.push(task); // waits on a failed job forever
  }
  const toSubmit = plan.jobs.filter((j) => !finished(runDir, j.id) && !flying.has(j.id));
  let chosen: Job[] = toSubmit;
  if (only !== undefined) {
    const job = plan.jobs.find((j) => j.id === only);
    if (!job) {
      throw new UsageError(
        `--only ${only}: no such job in the plan of --phase ${phase} (${
          plan.jobs.map((j) => j.id).join(", ")
        })`,
      );
    }
    if (finished(runDir, only)) {
      console.log(`job ${only}: finished (${resultPath(runDir, only)}), not submitted`);
      return null;
    }
    if (flying.has(only)) {
      throw new UsageError(
        `job ${only} is ${flying.get(only) ? `in Slurm already (${flying.get(only)})` : "running"}`,
      );
    }
    for (const dep of job.after) {
      if (finished(runDir, dep) || flying.get(dep)) continue;
      throw new UsageError(
        `${missingDependency(runDir, plan, job) ?? `job ${only} needs job ${dep}`}; ` +
          `it is not queued either: submit without --only to run both`,
      );
    }
    chosen = [job];
  }
  if (!chosen.length) {
    console.log(
      flying.size
        ? `nothing to submit: ${flying.size} jobs are queued or running (deno task slurm status)`
        : `nothing to submit: every job of --phase ${phase} has finished (deno task slurm collect)`,
    );
    return null;
  }
  for (const job of chosen) {
    const waiting = job.after.find((d) => flying.get(d) === null);
    if (waiting) {
      throw new UsageError(
        `job ${job.id} needs job ${waiting}, which runs outside Slurm: wait for it to finish`,
      );
    }
  }
  if (stale.length) {
    // tasks whose dependency failed: they would never run; cancelled so they are resubmitted
    await slurm("scancel", stale);
  }
  const n = log.submissions.length + 1;
  const args = trainArguments(specs, options);
  const name = `${runDir.split("/").filter(Boolean).at(-1)}-s${n}`;
  await Deno.mkdir(join(runDir, "slurm"), { recursive: true });
  const arrayOf = new Map<string, string>(); // job id -> this submission's array id
  const arrays: SlurmArray[] = [];
  // one array per level and kind, levels in order: every array's dependencies exist before it
  const groups = [...new Set(chosen.map((j) => `${j.level}|${j.kind}`))].map((key) => {
    const [level, kind] = key.split("|");
    return { level: Number(level), kind, jobs: chosen.filter((j) => `${j.level}|${j.kind}` === key) };
  }).sort((a, b) => a.level - b.level);
  for (const { level, kind, jobs } of groups) {
    const dependency = [
      ...new Set(
        jobs.flatMap((j) =>
          j.after.flatMap((d) => [arrayOf.get(d), flying.get(d)]).filter((x): x is string => !!x)
        ),
      ),
    ];
    const label = `L${level}-${kind}`;
    const script = join(runDir, "slurm", `${name}-${label}.sh`);
    await writeFileAtomic(
      script,
      sbatchScript({ name, runDir, label, jobs: jobs.map((j) => j.id), resources, args, dependency }),
    );
    const submitted = await slurm("sbatch", ["--parsable", script]);
    const slurmId = submitted.out.trim().split(";")[0];
    if (!/^\d+$/.test(slurmId)) {
      throw new SlurmError(`sbatch ${script}: unexpected reply "${submitted.out.trim()}"`);
    }
    for (const j of jobs) arrayOf.set(j.id, slurmId);
    arrays.push({ level, kind, slurmId, jobs: jobs.map((j) => j.id), script, dependency });
    console.log(
      `level ${level}, ${kind}: Slurm job ${slurmId}, ${jobs.length} task${jobs.length > 1 ? "s" : ""} (${
        jobs.map((j) => j.id).join(", ")
      })${dependency.length ? `, after ${dependency.join(", ")}` : ""}`,
    );
  }
  const submission: Submission = {
    n,
    time: new Date().toISOString(),
    phase,
    options: Object.fromEntries(Object.entries(options).filter(([k]) => !["only", "plan-only"].includes(k))),
    resources,
    arrays,
  };
  await writeJson(join(runDir, "slurm", "submissions.json"), {
    submissions: [...log.submissions, submission],
  });
  return submission;
}

/**
 * `deno task slurm resubmit`: submits the unfinished jobs of the run's last submission of
 * `phase` again with its options (and its resources, each replaced by one given).
 */
export async function resubmitRun(
  specs: OptionSpec[],
  runDir: string,
  phase: string,
  resources: Partial<SlurmResources>,
  only?: string,
): Promise<Submission | null> {
  const last = (await readSubmissions(runDir)).submissions.filter((s) => s.phase === phase).at(-1);
  if (!last) {
    throw new UsageError(`${runDir}: nothing of --phase ${phase} was submitted (deno task slurm submit)`);
  }
  const given = Object.fromEntries(Object.entries(resources).filter(([, v]) => v !== undefined));
  return await submitRun(specs, last.options, { ...last.resources, ...given }, only);
}

/** `deno task slurm status`: one line per job of the plan with its state. */
export async function runStatus(runDir: string, phase: string): Promise<string> {
  const plan: JobPlan | null = await readPlan(runDir, phase);
  if (!plan) throw new UsageError(`${runDir}: no job plan of --phase ${phase} (jobs/plan-${phase}.json)`);
  const log = await readSubmissions(runDir);
  const tasks = latestTasks(log, phase);
  let states = new Map<string, TaskState>();
  try {
    states = await taskStates([...tasks.values()]);
  } catch (err) {
    if (!(err instanceof SlurmError)) throw err;
    console.error(`(${err.message.split(":")[0]}: states from the run folder only)`);
  }
  const running = new Map((await runningJobs(runDir)).map((j) => [j.id, j.holder]));
  const rows: string[][] = [];
  const counts = new Map<string, number>();
  for (const job of plan.jobs) {
    const task = tasks.get(job.id);
    const s = task ? states.get(task) : undefined;
    let state: string, note = "";
    if (finished(runDir, job.id)) {
      const r = await readJsonFile<{ wallSeconds: number; host: string }>(
        resultPath(runDir, job.id),
        "a job result",
      );
      state = "finished";
      note = `${(r.wallSeconds / 60).toFixed(1)} min on ${r.host}`;
    } else if (s) {
      state = s.state === "PENDING" && s.reason === "DependencyNeverSatisfied"
        ? "blocked"
        : s.state === "COMPLETED"
        ? "ended-without-result"
        : s.state.toLowerCase();
      if (s.reason.startsWith("DependencyNeverSatisfied")) {
        note = "never started: a job it waits for failed (deno task slurm resubmit)";
      } else {
        note = s.reason;
        if (["FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "COMPLETED"].includes(s.state)) {
          note += `; see ${outputOf(log, phase, job.id) ?? "its output"}`;
        }
      }
    } else if (running.has(job.id)) {
      state = "running";
      note = `outside Slurm, PID ${running.get(job.id)!.pid}`;
    } else if (task) {
      state = "gone";
      note = `no result and unknown to Slurm now: failed or cancelled; see ${outputOf(log, phase, job.id)}`;
    } else state = "not-submitted";
    counts.set(state, (counts.get(state) ?? 0) + 1);
    rows.push([String(job.level), job.id, state, task ?? "-", note]);
  }
  const head = ["level", "job", "state", "slurm", "note"];
  const widths = head.map((h, c) => Math.max(h.length, ...rows.map((r) => r[c].length)));
  const fmt = (r: string[]) =>
    r.map((v, c) => (c < r.length - 1 ? v.padEnd(widths[c]) : v)).join("  ").trimEnd();
  return [
    `${runDir}, --phase ${phase}: ${[...counts].map(([k, v]) => `${v} ${k}`).join(", ")}`,
    fmt(head),
    ...rows.map(fmt),
  ].join("\n");
}

/** The Slurm output file of a job's latest task. */
function outputOf(log: SubmissionLog, phase: string, id: string): string | null {
  for (const s of [...log.submissions].reverse().filter((s) => s.phase === phase)) {
    for (const a of s.arrays) {
      const i = a.jobs.indexOf(id);
      if (i >= 0) {
        const name = a.script.replace(/\.sh$/, "").split("/").at(-1);
        return join(dirname(a.script), `${name}-${a.slurmId}_${i}.out`);
      }
    }
  }
  return null;
}
