/**
 * A run as a job graph (`lib/train/jobs.ts`): the graph per phase, `--only` and `--plan-only`,
 * per-job locks, and a run's jobs executed one by one then collected giving the in-process run's
 * metrics exactly (without Slurm; `tests/slurm_test.ts` runs the same through a real Slurm).
 */
import { assert, assertEquals, assertRejects } from "@std/assert";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { UsageError } from "../lib/cli.ts";
import { initBackend } from "../lib/backend.ts";
import { profileConfig, type RunConfig } from "../lib/train/pipeline.ts";
import { runTraining } from "../lib/train/run.ts";
import {
  collectRun,
  type Job,
  type JobPlan,
  planJobs,
  readPlan,
  resultPath,
  runJob,
} from "../lib/train/jobs.ts";

const quick = profileConfig("quick", 0);
const none = () => false;
const ids = (p: JobPlan) => p.jobs.map((j) => j.id);
const job = (p: JobPlan, id: string): Job => {
  const j = p.jobs.find((j) => j.id === id);
  if (!j) throw new Error(`no job ${id} in ${ids(p)}`);
  return j;
};
const withFusion = (changes: Partial<RunConfig["fusion"]>, folds = 2): RunConfig => ({
  ...quick,
  folds,
  fusion: { ...quick.fusion, ...changes },
});

/** Every plan: dependencies come before their dependents, levels rise along them, no two jobs write one checkpoint. */
function checkShape(p: JobPlan): void {
  const seen = new Map<string, Job>();
  const written = new Set<string>();
  for (const j of p.jobs) {
    for (const d of j.after) {
      assert(seen.has(d), `${j.id} comes after ${d}, which is not before it in the plan`);
      assert(j.level > seen.get(d)!.level, `${j.id}: level ${j.level} not above ${d}'s`);
    }
    assertEquals(j.level, j.after.length ? Math.max(...j.after.map((d) => seen.get(d)!.level)) + 1 : 0, j.id);
    for (const n of j.needs) {
      if (n.job) {
        assert(j.after.includes(n.job), `${j.id}: needs ${n.checkpoint} from ${n.job} but not after it`);
      }
    }
    for (const w of j.writes) {
      assert(!written.has(w), `${w} written by two jobs`);
      written.add(w);
    }
    seen.set(j.id, j);
  }
}

Deno.test("jobs: the graph of --phase all, teacher and keeper, in the in-process order", () => {
  const all = planJobs({ ...quick, folds: 2 }, "all", none);
  assertEquals(ids(all), [
    "teacher-fold1",
    "keeper-fold1",
    "evaluate-fold1",
    "teacher-fold2",
    "keeper-fold2",
    "evaluate-fold2",
    "fusion-baseline",
    "fusion-control",
    "fusion-guided",
    "fusion-evaluate",
    "brainmask",
  ]);
  checkShape(all);
  assertEquals(job(all, "brainmask").level, 0); // brain extraction needs no other job
  assertEquals(job(all, "keeper-fold2").after, ["teacher-fold2"]);
  assertEquals(job(all, "keeper-fold2").needs, [{ checkpoint: "teacher-fold2-best", job: "teacher-fold2" }]);
  assertEquals(job(all, "fusion-baseline").after, []); // the baseline needs no KKN: level 0
  assertEquals(job(all, "fusion-control").after, ["fusion-baseline"]);
  assertEquals(job(all, "fusion-guided").after, ["fusion-baseline", "keeper-fold1"]);
  assertEquals(job(all, "fusion-evaluate").level, 3);
  assertEquals(all.jobs.filter((j) => !j.trains).map((j) => j.id), [
    "evaluate-fold1",
    "evaluate-fold2",
    "fusion-evaluate",
  ]);
  // --phase all trains the teacher even when its checkpoint exists (it resumes), as runTraining does
  assertEquals(ids(planJobs(quick, "all", () => true)), ids(planJobs(quick, "all", none)));

  assertEquals(ids(planJobs({ ...quick, folds: 3 }, "teacher", none)), [
    "teacher-fold1",
    "teacher-fold2",
    "teacher-fold3",
  ]);
  // --phase keeper: the teacher is trained only when absent, the KKN always
  const keeper = planJobs(quick, "keeper", (n) => n === "teacher-fold1-best");
  assertEquals(ids(keeper), ["keeper-fold1", "evaluate-fold1"]);
  assertEquals(job(keeper, "keeper-fold1").needs, [{ checkpoint: "teacher-fold1-best", job: null }]);
  assertEquals(ids(planJobs(quick, "keeper", none)), ["teacher-fold1", "keeper-fold1", "evaluate-fold1"]);
});

Deno.test("jobs: --phase fusion loads what the run folder holds; keeperFolds, random KKN and synthesized input", () => {
  // a plan arm's folder: teacher and KKN copied in, so neither is a job
  const copied = planJobs(quick, "fusion", (n) => n === "teacher-fold1-best" || n === "keeper-fold1-best");
  assertEquals(ids(copied), [
    "evaluate-fold1",
    "fusion-baseline",
    "fusion-control",
    "fusion-guided",
    "fusion-evaluate",
  ]);
  assertEquals(job(copied, "evaluate-fold1").after, []);
  assertEquals(job(copied, "fusion-guided").needs, [
    { checkpoint: "baseline-best", job: "fusion-baseline" },
    { checkpoint: "keeper-fold1-best", job: null },
  ]);
  checkShape(copied);

  const each = planJobs(withFusion({ keeperFolds: "each" }), "all", none);
  assertEquals(ids(each).filter((id) => id.startsWith("fusion-guided")), [
    "fusion-guided",
    "fusion-guided-fold2",
  ]);
  assertEquals(job(each, "fusion-guided-fold2").writes, ["guided-fold2"]);
  assertEquals(job(each, "fusion-guided-fold2").after, ["fusion-baseline", "keeper-fold2"]);
  assert(job(each, "fusion-evaluate").after.includes("fusion-guided-fold2"));
  checkShape(each);

  const random = planJobs(withFusion({ keeper: "random", keeperFolds: "each" }), "all", none);
  assertEquals(ids(random).filter((id) => id.startsWith("fusion-guided")), ["fusion-guided"]);
  assertEquals(job(random, "fusion-guided").after, ["fusion-baseline"]);
  assertEquals(job(random, "fusion-evaluate").writes, ["keeper-random"]);

  const synthesized = planJobs(withFusion({ input: "synthesized" }, 1), "all", none);
  assertEquals(job(synthesized, "fusion-baseline").after, ["teacher-fold1", "keeper-fold1"]);
  // --phase baseline alone: the syntheses' teacher and KKN must be in the run folder already
  const baseline = planJobs(withFusion({ input: "synthesized" }, 1), "baseline", none);
  assertEquals(ids(baseline), ["fusion-baseline"]);
  assertEquals(job(baseline, "fusion-baseline").needs.map((n) => n.job), [null, null]);
});

Deno.test("jobs: --phase decoder and wholebrain (2D views, a 3D network on the tissue KKN)", async () => {
  const decoder = planJobs({ ...quick, folds: 2 }, "decoder", none);
  assertEquals(job(decoder, "decoder-fold2").after, ["keeper-fold2"]);
  assertEquals(job(decoder, "decoder-fold2").writes, ["decoder-fold2", "paired-unet3d-fold2"]);
  checkShape(decoder);

  const wb = planJobs(quick, "wholebrain", none);
  assertEquals(wb.jobs.length, 16);
  assertEquals(ids(wb).slice(0, 2), ["axial-teacher-fold1", "axial-keeper-fold1"]);
  assertEquals(job(wb, "sagittal-guided").after, ["sagittal-baseline", "sagittal-keeper-fold1"]);
  assertEquals(job(wb, "coronal-control").writes, ["coronal-baseline-matched"]);
  assertEquals(job(wb, "wholebrain-evaluate").after.length, 15);
  checkShape(wb);
  // a view's teacher and KKN already there are loaded, not trained
  const loaded = planJobs(quick, "wholebrain", (n) => n.startsWith("axial-"));
  assert(!ids(loaded).includes("axial-teacher-fold1") && !ids(loaded).includes("axial-keeper-fold1"));
  assertEquals(job(loaded, "axial-guided").after, ["axial-baseline"]);

  const wb3d = planJobs(
    { ...quick, wholebrain: { ...quick.wholebrain, network: "unet3d" } },
    "wholebrain",
    none,
  );
  assertEquals(ids(wb3d), [
    "teacher-fold1",
    "keeper-fold1",
    "wholebrain-baseline",
    "wholebrain-control",
    "wholebrain-guided",
    "wholebrain-evaluate",
  ]);
  assertEquals(job(wb3d, "wholebrain-guided").after, ["wholebrain-baseline", "keeper-fold1"]);
  checkShape(wb3d);
  await assertRejects(async () => await planJobs(quick, "everything", none), UsageError, "--phase");
});

Deno.test("jobs: --plan-only prints the graph and writes nothing; --only refuses unknown jobs and missing dependencies", async () => {
  const out = await Deno.makeTempDir();
  const cmd = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "scripts/train.ts",
      "--profile",
      "quick",
      "--folds",
      "2",
      "--out",
      out,
      "--name",
      "p",
      "--plan-only",
    ],
    stdout: "piped",
    stderr: "piped",
  });
  const { code, stdout } = await cmd.output();
  const text = new TextDecoder().decode(stdout);
  assertEquals(code, 0, text);
  assert(text.includes("11 jobs in 4 levels"), text);
  assert(/^2\s+fusion-guided\s+phase 3: .*\(after: fusion-baseline, keeper-fold1\)$/m.test(text), text);
  assert(!existsSync(join(out, "p")), "--plan-only created the run folder");

  await initBackend("cpu", { quiet: true });
  const opts = { profile: "quick", seed: 0, phase: "all", folds: 2, out, name: "only", progress: false };
  await assertRejects(
    () => runJob(opts, "keeper-fold3"),
    UsageError,
    "no such job in the plan of --phase all",
  );
  await assertRejects(
    () => runJob(opts, "keeper-fold1"),
    UsageError,
    `${
      join(out, "only", "checkpoints", "teacher-fold1-best.json")
    }, written by job teacher-fold1, which has not finished`,
  );
  await assertRejects(() => runJob(opts, "fusion-evaluate"), UsageError, "written by job keeper-fold1");
  // the run-level files and the plan are written once, before any job
  assert(existsSync(join(out, "only", "config.json")) && existsSync(join(out, "only", "data.json")));
  assertEquals((await readPlan(join(out, "only"), "all"))?.jobs.length, 11);
  await Deno.remove(out, { recursive: true });
});

Deno.test("jobs: a run's jobs one by one, collected, equal the in-process run; finished jobs are never rerun", async () => {
  await initBackend("cpu", { quiet: true });
  const out = await Deno.makeTempDir();
  const base = {
    profile: "quick",
    seed: 0,
    phase: "all",
    folds: 2,
    out,
    progress: false,
    "allow-unconverged": true,
  };
  const inProcess = await runTraining({ ...base, name: "in-process" });
  const opts = { ...base, name: "jobs" };
  const runDir = join(out, "jobs");
  await runJob(opts, "teacher-fold1");
  const plan = (await readPlan(runDir, "all"))!;
  // one job per process-like call, in plan order (every dependency comes first)
  for (const j of plan.jobs.slice(1)) {
    if (j.id === "fusion-guided") {
      // a job whose lock is held by a live process does not run twice; an in-process run waits too
      const lock = join(runDir, "jobs", j.id, ".lock");
      await Deno.mkdir(join(runDir, "jobs", j.id), { recursive: true });
      await Deno.writeTextFile(lock, `${Deno.pid}\n${Deno.hostname()}\njob ${j.id}\n`);
      await assertRejects(() => runJob(opts, j.id), UsageError, "is running already");
      // another node's lock cannot be checked from here: it holds (unless Slurm no longer runs its job)
      await Deno.writeTextFile(lock, `4242\nanother-node\njob ${j.id}\n`);
      await assertRejects(() => runJob(opts, j.id), UsageError, "PID 4242 on another-node");
      await Deno.writeTextFile(lock, `${Deno.pid}\n${Deno.hostname()}\njob ${j.id}\n`);
      await assertRejects(() => runTraining(opts), UsageError, "jobs of this run are running (fusion-guided");
      await Deno.remove(lock);
    }
    await runJob(opts, j.id);
  }
  for (const j of plan.jobs) assert(existsSync(resultPath(runDir, j.id)), `${j.id}: no result`);
  // finished: not rerun (result and log untouched)
  const before = await Deno.readTextFile(resultPath(runDir, "keeper-fold2"));
  const logBefore = await Deno.readTextFile(join(runDir, "jobs", "keeper-fold2", "log.jsonl"));
  await runJob(opts, "keeper-fold2");
  assertEquals(await Deno.readTextFile(resultPath(runDir, "keeper-fold2")), before);
  assertEquals(await Deno.readTextFile(join(runDir, "jobs", "keeper-fold2", "log.jsonl")), logBefore);

  await collectRun(runDir, "all");
  await collectRun(runDir, "all"); // collecting twice adds no log line twice
  const a = JSON.parse(await Deno.readTextFile(join(inProcess, "metrics.json")));
  const b = JSON.parse(await Deno.readTextFile(join(runDir, "metrics.json")));
  assertEquals(Object.keys(b), Object.keys(a));
  for (const key of Object.keys(a)) {
    if (["run", "wallSeconds", "peakRssMiB"].includes(key)) continue;
    assertEquals(b[key], a[key], `metrics.json "${key}" differs`);
  }
  // teacher, KKN per fold; baseline, control, guided; brain mask
  assertEquals(b.convergence.length, 8);
  assertEquals(
    await Deno.readTextFile(join(runDir, "metrics.csv")),
    await Deno.readTextFile(join(inProcess, "metrics.csv")),
  );
  const lines = async (dir: string) =>
    (await Deno.readTextFile(join(dir, "log.jsonl"))).trim().split("\n").map((l) => {
      const { time: _t, tensors: _n, ...rest } = JSON.parse(l);
      return rest;
    });
  assertEquals(await lines(runDir), await lines(inProcess));
  await Deno.remove(out, { recursive: true });
});
