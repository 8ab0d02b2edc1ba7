/** `deno task train` refuses bad options and configurations with errors that name them. */
import { assertRejects } from "@std/assert";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { UsageError } from "../lib/cli.ts";
import { CohortError, verifyCohort } from "../lib/data/cohort.ts";
import { sha256File } from "../lib/io/hash.ts";
import { writeNifti } from "../lib/io/nifti.ts";
import { makeVolume } from "../lib/volume/volume.ts";
import { profileConfig } from "../lib/train/pipeline.ts";
import { checkRunData, lockRun, runTraining } from "../lib/train/run.ts";

const base = { profile: "quick", seed: 0, phase: "all", progress: false };

Deno.test("train: a config file with bad JSON or an unknown setting is named in the error", async () => {
  const dir = await Deno.makeTempDir();
  const bad = join(dir, "bad.json"), unknown = join(dir, "unknown.json");
  await Deno.writeTextFile(bad, "{ not json");
  await Deno.writeTextFile(unknown, JSON.stringify({ teacher: { widthh: 3 } }));
  await assertRejects(() => runTraining({ ...base, out: dir, config: bad }), UsageError, `--config ${bad}`);
  await assertRejects(
    () => runTraining({ ...base, out: dir, config: unknown }),
    UsageError,
    `unknown setting "widthh"`,
  );
  await assertRejects(() => runTraining({ ...base, out: dir, epochs: 0 }), UsageError, "--epochs");
  await assertRejects(() => runTraining({ ...base, out: dir, folds: 0 }), UsageError, "--folds");
  for (const name of ["../../etc", "", ".", "a/b", "-x"]) {
    await assertRejects(
      () => runTraining({ ...base, out: dir, name }),
      UsageError,
      "must be a plain folder name",
    );
  }
  await Deno.remove(dir, { recursive: true });
});

Deno.test("train: a missing cohort, or a run folder holding another configuration, is refused", async () => {
  const dir = await Deno.makeTempDir();
  await assertRejects(
    () => runTraining({ ...base, out: dir, data: join(dir, "nowhere") }),
    UsageError,
    "no paired/manifest.json",
  );
  // a folder that looks like a cohort, and a run with a different recorded configuration
  await Deno.mkdir(join(dir, "cohort", "paired"), { recursive: true });
  await Deno.writeTextFile(join(dir, "cohort", "paired", "manifest.json"), "{}");
  await Deno.mkdir(join(dir, "runs", "r"), { recursive: true });
  await Deno.writeTextFile(
    join(dir, "runs", "r", "config.json"),
    JSON.stringify({ profile: "quick", seed: 99 }),
  );
  await assertRejects(
    () => runTraining({ ...base, out: join(dir, "runs"), name: "r", data: join(dir, "cohort") }),
    UsageError,
    "different configuration",
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test("train: settings of the wrong type or range are refused before anything runs, naming the setting", async () => {
  const dir = await Deno.makeTempDir();
  const cases: [unknown, string][] = [
    [{ teacher: null }, "teacher: must be an object of settings, got null"],
    [{ teacher: { nf: 0 } }, "teacher.nf: must be a positive integer, got 0"],
    [{ keeper: { kernel: 4 } }, "keeper.kernel: must be an odd positive integer"],
    [{ keeper: { growth: -1 } }, "keeper.growth"],
    [
      { teacher: { train: { learningRate: "0.01" } } },
      'teacher.train.learningRate: must be a number, got "0.01"',
    ],
    [{ teacher: { train: { steps: -5 } } }, "teacher.train.steps: must be a positive integer"],
    [{ teacher: { skipNoise: "gaussian" } }, 'teacher.skipNoise: must be one of "paper", "code", "none"'],
    [{ fusion: { loss: "dice" } }, "fusion.loss: must be one of"],
    [{ folds: 0 }, "folds: must be a positive integer, got 0"],
    [{ checks: { window: 2 } }, "checks.window: must be in (0, 1]"],
    [{ augment: "yes" }, "augment: must be a boolean"],
    [null, "must hold a JSON object of settings, got null"],
    [[1, 2], "must hold a JSON object of settings"],
    [{ fusion: { classes: 2 } }, "fusion.classes: must be 4"],
  ];
  for (const [patch, text] of cases) {
    const path = join(dir, "c.json");
    await Deno.writeTextFile(path, JSON.stringify(patch));
    await assertRejects(() => runTraining({ ...base, out: dir, config: path }), UsageError, text);
  }
  await Deno.remove(dir, { recursive: true });
});

Deno.test("train: one process per run folder (a stale lock is taken over); a run folder keeps its cohort", async () => {
  const dir = await Deno.makeTempDir();
  const release = await lockRun(dir);
  await assertRejects(() => lockRun(dir), UsageError, `another process (PID ${Deno.pid})`);
  await release();
  // a lock whose process is gone; temporary files a killed process left are removed
  await Deno.writeTextFile(join(dir, ".lock"), "999999999\n");
  await Deno.mkdir(join(dir, "checkpoints"));
  await Deno.writeTextFile(join(dir, "checkpoints", "teacher-fold1-last.json.1a2b3c4d.tmp"), "{");
  await (await lockRun(dir))();
  if (existsSync(join(dir, "checkpoints", "teacher-fold1-last.json.1a2b3c4d.tmp"))) {
    throw new Error("an orphaned temporary file survived taking the lock");
  }
  // data identity: the same cohort passes, a changed manifest is refused
  const cohort = join(dir, "cohort");
  await Deno.mkdir(join(cohort, "paired"), { recursive: true });
  await Deno.writeTextFile(join(cohort, "paired", "manifest.json"), '{"scans": []}');
  await checkRunData(dir, cohort);
  await checkRunData(dir, cohort);
  await Deno.writeTextFile(join(cohort, "paired", "manifest.json"), '{"scans": [1]}');
  await assertRejects(() => checkRunData(dir, cohort), UsageError, "was trained on another cohort");
  await Deno.remove(dir, { recursive: true });
});

Deno.test("train: a run written before a setting existed resumes (the setting takes its default)", async () => {
  const dir = await Deno.makeTempDir();
  await Deno.mkdir(join(dir, "cohort", "paired"), { recursive: true });
  await Deno.writeTextFile(join(dir, "cohort", "paired", "manifest.json"), "{}");
  await Deno.mkdir(join(dir, "runs", "r"), { recursive: true });
  const cfg = profileConfig("quick", 0);
  const old = { ...cfg, fusion: { ...cfg.fusion } } as Record<string, unknown>;
  delete (old.fusion as Record<string, unknown>).network; // absent from older runs
  await Deno.writeTextFile(join(dir, "runs", "r", "config.json"), JSON.stringify(old));
  // accepted as the same configuration: it fails later, on the (empty) cohort, not on the config
  await assertRejects(
    () => runTraining({ ...base, out: join(dir, "runs"), name: "r", data: join(dir, "cohort") }),
    CohortError,
    "tissue/manifest.json: cannot read the cohort manifest",
  );
  await Deno.remove(dir, { recursive: true });
});

/** A two-subject cohort in the data contract, with real NIfTI files and their checksums. */
async function fakeCohort(dir: string, keys: string[]): Promise<void> {
  await Deno.mkdir(dir, { recursive: true });
  const eye = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]];
  const scans = [], checksums: Record<string, string> = {};
  for (const id of ["sub-01", "sub-02"]) {
    const files: Record<string, string> = {};
    for (const key of keys) {
      files[key] = `${id}_${key}.nii.gz`;
      await writeNifti(join(dir, files[key]), makeVolume(new Float32Array(8 ** 3).fill(0.5), [8, 8, 8], eye));
      checksums[files[key]] = await sha256File(join(dir, files[key]));
    }
    scans.push({ id, subject: id, split: "train", files });
  }
  await Deno.writeTextFile(
    join(dir, "manifest.json"),
    JSON.stringify({ cohort: "tissue", scans, checksums }),
  );
}

Deno.test("cohorts: a damaged, missing or unlisted file is named before anything trains", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const tissue = join(dir, "data", "tissue");
    await fakeCohort(join(dir, "data", "paired"), ["3T", "7T"]);
    await fakeCohort(tissue, ["1.5T", "tissue"]);
    await verifyCohort(tissue);
    const manifest = JSON.parse(await Deno.readTextFile(join(tissue, "manifest.json")));
    // a damaged file: named by its checksum, before the teacher trains
    const victim = join(tissue, "sub-02_tissue.nii.gz");
    const bytes = await Deno.readFile(victim);
    await Deno.writeFile(victim, bytes.map((b, i) => (i === bytes.length - 20 ? b ^ 0xff : b)));
    const run = () => runTraining({ ...base, out: join(dir, "runs"), name: "r", data: join(dir, "data") });
    await assertRejects(run, CohortError, `${victim}: SHA-256`);
    const checkpoints = [...Deno.readDirSync(join(dir, "runs", "r", "checkpoints"))];
    if (checkpoints.length) {
      throw new Error(`checkpoints written before the cohort check: ${checkpoints.map((e) => e.name)}`);
    }
    // a missing file (an interrupted prep), and a file the manifest has no checksum for
    await Deno.writeFile(victim, bytes);
    await Deno.remove(join(tissue, "sub-01_1.5T.nii.gz"));
    await assertRejects(() => verifyCohort(tissue), CohortError, "the cohort is incomplete");
    await fakeCohort(tissue, ["1.5T", "tissue"]);
    delete manifest.checksums["sub-01_tissue.nii.gz"];
    await Deno.writeTextFile(join(tissue, "manifest.json"), JSON.stringify(manifest));
    await assertRejects(() => verifyCohort(tissue), CohortError, "no SHA-256 for sub-01_tissue.nii.gz");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
