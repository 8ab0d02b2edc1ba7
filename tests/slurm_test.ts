/**
 * `deno task slurm` against a real Slurm: a single-node cluster on localhost
 * (`scripts/slurm/local-cluster.sh`: munged, slurmctld, slurmd; root and Debian's slurm-wlm and
 * munge) runs the quick profile's `--phase all` on two folds as dependent job arrays; the
 * collected metrics must equal the same run in one process, bit for bit: jobs and the reference
 * run use the same number of oneDNN threads (with other thread counts oneDNN sums in another
 * order and scores differ by up to about 5e-5 relative). Where the daemons cannot start, that
 * test is ignored with the reason printed. The script's parts that need no cluster are tested
 * everywhere.
 */
import { assert, assertEquals } from "@std/assert";
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { readPlan, resultPath } from "../lib/train/jobs.ts";
import {
  latestTasks,
  readSubmissions,
  sbatchScript,
  taskIndices,
  taskStates,
  trainArguments,
} from "../lib/train/slurm.ts";
import { TRAIN_COMMAND } from "../scripts/train.ts";

const ROOT = resolve(new URL(".", import.meta.url).pathname, "..");
const CLUSTER = join(ROOT, "scripts", "slurm", "local-cluster.sh");

/** Runs a command in the repository; returns exit code and output. */
async function sh(cmd: string, args: string[], env: Record<string, string> = {}) {
  const out = await new Deno.Command(cmd, { args, cwd: ROOT, env, stdout: "piped", stderr: "piped" })
    .output();
  const text = (b: Uint8Array) => new TextDecoder().decode(b);
  return { code: out.code, stdout: text(out.stdout), stderr: text(out.stderr) };
}

/** A free TCP port on localhost. */
function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

const clusterDir = await Deno.makeTempDir({ prefix: "uhf-slurm-" });
const slurmConf = join(clusterDir, "slurm.conf");

/** Starts the local cluster; returns why it cannot run, or null once its node is idle. */
async function startCluster(): Promise<string | null> {
  if (Deno.build.os !== "linux") return "needs Linux";
  if (Deno.uid() !== 0) return "needs root (slurmd runs the jobs)";
  for (const bin of ["munged", "slurmctld", "slurmd", "sbatch", "squeue"]) {
    if ((await sh("bash", ["-c", `command -v ${bin}`])).code !== 0) {
      return `${bin} not installed (Debian slurm-wlm and munge; run.sh installs them)`;
    }
  }
  const started = await sh("bash", [CLUSTER, "start", clusterDir], {
    SLURMCTLD_PORT: String(freePort()),
    SLURMD_PORT: String(freePort()),
    SLURM_CPUS: "2", // with one CPU a job, two jobs train at once
  });
  return started.code === 0 ? null : `the local cluster did not start: ${started.stderr.trim()}`;
}

const skip = await startCluster();
if (skip) console.log(`slurm_test: the Slurm run is ignored: ${skip}`);
let running = skip === null;
/** Stops the cluster's daemons (once) and removes its folder. */
function stopCluster(): void {
  if (running) {
    running = false;
    new Deno.Command("bash", { args: [CLUSTER, "stop", clusterDir], stdout: "null", stderr: "null" })
      .outputSync();
  }
  try {
    Deno.removeSync(clusterDir, { recursive: true });
  } catch { /* removed already */ }
}
globalThis.addEventListener("unload", stopCluster);
if (skip) stopCluster();

/**
 * oneDNN threads of the reference run and CPUs of every job: equal, so the sums run in one order;
 * one, so two jobs of the run train side by side on the node's two CPUs.
 */
const THREADS = 1;

/** Waits until every job of the plan has a result; fails at once on a task Slurm ended otherwise. */
async function waitForJobs(runDir: string, seconds: number): Promise<void> {
  const deadline = Date.now() + seconds * 1000;
  const plan = (await readPlan(runDir, "all"))!;
  while (true) {
    const open = plan.jobs.filter((j) => !existsSync(resultPath(runDir, j.id)));
    if (!open.length) return;
    const tasks = latestTasks(await readSubmissions(runDir), "all");
    const states = await taskStates(open.map((j) => tasks.get(j.id)!).filter(Boolean));
    for (const j of open) {
      const s = states.get(tasks.get(j.id)!);
      // (checked again: the task may have written its result and ended since `open` was listed)
      if (
        s &&
        ["FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "COMPLETED"].includes(s.state) &&
        !existsSync(resultPath(runDir, j.id))
      ) {
        const outputs = [...Deno.readDirSync(join(runDir, "slurm"))].filter((e) => e.name.endsWith(".out"));
        const text = outputs.map((e) => Deno.readTextFileSync(join(runDir, "slurm", e.name))).join("\n");
        throw new Error(
          `job ${j.id}: Slurm task ${tasks.get(j.id)} ${s.state} (${s.reason}) without a result\n${text}`,
        );
      }
    }
    if (Date.now() > deadline) {
      throw new Error(`jobs not finished after ${seconds} s: ${open.map((j) => j.id)}`);
    }
    await new Promise((r) => setTimeout(r, 2000));
  }
}

Deno.test({
  name:
    "slurm: the quick profile's --phase all as dependent job arrays, collected, equals the in-process run",
  ignore: skip !== null,
  fn: async () => {
    const out = await Deno.makeTempDir({ prefix: "uhf-slurm-runs-" });
    const env = { SLURM_CONF: slurmConf, OMP_NUM_THREADS: String(THREADS) };
    Deno.env.set("SLURM_CONF", slurmConf); // for squeue/scontrol from this process
    try {
      const train = ["--profile", "quick", "--phase", "all", "--folds", "2", "--out", out];
      const reference = await sh(
        Deno.execPath(),
        ["run", "-A", "scripts/train.ts", ...train, "--name", "in-process", "--progress=false"],
        env,
      );
      assertEquals(reference.code, 0, reference.stderr);

      const slurm = (args: string[]) => sh(Deno.execPath(), ["run", "-A", "scripts/slurm.ts", ...args], env);
      const runDir = join(out, "slurm");
      const submitted = await slurm(["submit", ...train, "--name", "slurm", "--cpus", String(THREADS)]);
      assertEquals(submitted.code, 0, submitted.stderr);
      // one array per level and kind: teachers, baseline, brain mask; KKNs, control; evaluations,
      // guided; scores
      const log = await readSubmissions(runDir);
      const arrays = log.submissions[0].arrays;
      assertEquals(arrays.map((a) => `${a.level} ${a.kind} ${a.jobs.length}`), [
        "0 teacher 2",
        "0 baseline 1",
        "0 brainmask 1",
        "1 keeper 2",
        "1 control 1",
        "2 evaluate 2",
        "2 guided 1",
        "3 fusion-evaluate 1",
      ], submitted.stdout);
      // the KKNs wait for the teachers only, the guided network for the baseline and the KKNs
      const id = (kind: string) => arrays.find((a) => a.kind === kind)!.slurmId;
      assertEquals(arrays.find((a) => a.kind === "keeper")!.dependency, [id("teacher")]);
      assertEquals(
        arrays.find((a) => a.kind === "guided")!.dependency.sort(),
        [id("baseline"), id("keeper")].sort(),
      );
      const script = await Deno.readTextFile(arrays.find((a) => a.kind === "keeper")!.script);
      assert(script.includes(`#SBATCH --dependency=afterok:${id("teacher")}\n`), script);

      await waitForJobs(runDir, 300);
      const status = await slurm(["status", "--out", out, "--name", "slurm"]);
      assertEquals(status.code, 0, status.stderr);
      assert(status.stdout.includes("--phase all: 11 finished"), status.stdout);
      const collected = await slurm(["collect", "--out", out, "--name", "slurm"]);
      assertEquals(collected.code, 0, collected.stderr);

      const inProcess = join(out, "in-process");
      const compare = async () => {
        const a = JSON.parse(await Deno.readTextFile(join(inProcess, "metrics.json")));
        const b = JSON.parse(await Deno.readTextFile(join(runDir, "metrics.json")));
        assertEquals(Object.keys(b), Object.keys(a));
        for (const key of Object.keys(a)) {
          if (["run", "wallSeconds", "peakRssMiB"].includes(key)) continue;
          assertEquals(b[key], a[key], `metrics.json "${key}" differs from the in-process run's`);
        }
        assertEquals(
          await Deno.readTextFile(join(runDir, "metrics.csv")),
          await Deno.readTextFile(join(inProcess, "metrics.csv")),
        );
      };
      await compare();
      const lines = async (dir: string) =>
        (await Deno.readTextFile(join(dir, "log.jsonl"))).trim().split("\n").map((l) => {
          const { time: _t, tensors: _n, ...rest } = JSON.parse(l);
          return rest;
        });
      assertEquals(await lines(runDir), await lines(inProcess));

      // finished jobs are not submitted again; one job whose result is gone is resubmitted alone
      const again = await slurm(["submit", ...train, "--name", "slurm", "--cpus", String(THREADS)]);
      assert(again.stdout.includes("nothing to submit: every job of --phase all has finished"), again.stdout);
      await Deno.remove(resultPath(runDir, "fusion-evaluate"));
      // a lock left by a Slurm job killed on another node (that Slurm no longer runs) is taken over
      await Deno.writeTextFile(
        join(runDir, "jobs", "fusion-evaluate", ".lock"),
        `4242\nanother-node\njob fusion-evaluate (Slurm job ${arrays[0].slurmId})\n`,
      );
      const one = await slurm(["resubmit", "--out", out, "--name", "slurm", "--only", "fusion-evaluate"]);
      assertEquals(one.code, 0, one.stderr);
      assert(
        /^level 3, fusion-evaluate: Slurm job \d+, 1 task \(fusion-evaluate\)$/m.test(one.stdout),
        one.stdout,
      );
      await waitForJobs(runDir, 120);
      assertEquals((await slurm(["collect", "--out", out, "--name", "slurm"])).code, 0);
      await compare();
    } finally {
      stopCluster();
      await Deno.remove(out, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test("slurm: without sbatch on PATH, submit fails with one line (exit 1) and writes nothing", async () => {
  const out = await Deno.makeTempDir();
  const empty = await Deno.makeTempDir();
  const r = await sh(
    Deno.execPath(),
    ["run", "-A", "scripts/slurm.ts", "submit", "--profile", "quick", "--out", out, "--name", "x"],
    { PATH: empty },
  );
  assertEquals(r.code, 1, r.stderr);
  assert(r.stderr.includes("sbatch not found on PATH"), r.stderr);
  assertEquals(r.stderr.trim().split("\n").length, 1, r.stderr);
  assert(!existsSync(join(out, "x")), "submit wrote into the run folder");
  const status = await sh(Deno.execPath(), [
    "run",
    "-A",
    "scripts/slurm.ts",
    "status",
    "--out",
    out,
    "--name",
    "x",
  ]);
  assertEquals(status.code, 64, status.stderr);
  assert(status.stderr.includes("holds no job plan"), status.stderr);
  await Deno.remove(out, { recursive: true });
  await Deno.remove(empty, { recursive: true });
});

Deno.test("slurm: job scripts, task lists and the options a job runs with", () => {
  assertEquals(taskIndices("3"), [3]);
  assertEquals(taskIndices("0-2,5"), [0, 1, 2, 5]);
  assertEquals(taskIndices("0-3%2"), [0, 1, 2, 3]);
  const args = trainArguments(TRAIN_COMMAND.options, {
    profile: "paper",
    phase: "all",
    folds: 15,
    name: "it's",
    only: "teacher-fold1",
    progress: true,
    "allow-unconverged": false,
  });
  assertEquals(args, [
    "--phase",
    "all",
    "--profile",
    "paper",
    "--folds",
    "15",
    "--name",
    "it's",
    "--allow-unconverged=false",
    "--progress=false",
  ]);
  const script = sbatchScript({
    name: "paper-s1",
    runDir: "runs/paper",
    label: "L1-keeper",
    jobs: ["keeper-fold1", "keeper-fold2"],
    resources: { cpus: 8, gres: "gpu:1", partition: "gpu", mem: "32G", time: "48:00:00" },
    args,
    dependency: ["41"],
    cwd: "/shared/uhf",
    deno: "/shared/deno/bin/deno",
  });
  for (
    const line of [
      "#SBATCH --array=0-1",
      "#SBATCH --job-name=paper-s1-L1-keeper",
      "#SBATCH --output=/shared/uhf/runs/paper/slurm/paper-s1-L1-keeper-%A_%a.out",
      "#SBATCH --cpus-per-task=8",
      "#SBATCH --gres=gpu:1",
      "#SBATCH --partition=gpu",
      "#SBATCH --mem=32G",
      "#SBATCH --time=48:00:00",
      "#SBATCH --dependency=afterok:41",
      "jobs=(keeper-fold1 keeper-fold2)",
      "cd /shared/uhf",
    ]
  ) {
    assert(script.split("\n").includes(line), `missing "${line}" in\n${script}`);
  }
  assert(
    script.includes(`--name 'it'"'"'s' --allow-unconverged=false --progress=false --only "$job"`),
    script,
  );
});
