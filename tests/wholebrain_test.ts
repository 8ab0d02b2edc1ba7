/**
 * The whole-brain task end to end on the quick profile: per-view 2D teachers, KKNs and
 * segmenters, 28-label Dice of the aggregated test scans, Table 3's regions from them, and
 * `deno task segment --task wholebrain` writing a label map on the input grid with its lookup table.
 */
import { assert, assertEquals, assertRejects } from "@std/assert";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { runTraining } from "../lib/train/run.ts";
import { loadRun } from "../lib/report.ts";
import { initBackend } from "../lib/backend.ts";
import { readNifti } from "../lib/io/nifti.ts";
import { meanOf } from "../lib/stats.ts";
import { regionDice, table3, table3Runs, wholeBrainOf } from "../lib/report_wholebrain.ts";
import { VIEWS } from "../lib/data/views.ts";
import { STRUCTURES } from "../lib/phantom/labels.ts";
import { segmentFile } from "../scripts/segment.ts";
import { loadCohort } from "../lib/data/cohort.ts";
import { WholeBrainModels } from "../lib/train/wholebrain.ts";
import { profileConfig, readOnlyContext } from "../lib/train/pipeline.ts";

await initBackend("cpu", { quiet: true });

Deno.test("whole brain: three views trained, test scans aggregated over 28 labels, segment writes names", async () => {
  const out = await Deno.makeTempDir();
  try {
    const dir = await runTraining({
      profile: "quick",
      seed: 0,
      phase: "wholebrain",
      progress: false,
      out,
      name: "wb",
    });
    const run = await loadRun(dir);
    const wb = wholeBrainOf(run);
    assertEquals(wb.network, "unet2d");
    assertEquals(wb.views, [...VIEWS]);
    for (const view of VIEWS) {
      for (
        const ck of [
          "teacher-fold1-best",
          "keeper-fold1-best",
          "baseline-best",
          "baseline-matched-best",
          "guided-best",
        ]
      ) {
        assert(existsSync(join(dir, "checkpoints", `${view}-${ck}.json`)), `${view}-${ck} missing`);
      }
      assertEquals(wb.synthesis!.views[view]!.length, 1); // fold 1's test subject
    }
    // the sagittal segmenter learns 16 merged classes, the others all 28
    const meta = async (name: string) =>
      JSON.parse(await Deno.readTextFile(join(dir, "checkpoints", `${name}.json`))).meta.spec.classes;
    assertEquals(await meta("sagittal-baseline-best"), 16);
    assertEquals(await meta("axial-baseline-best"), 28);
    assertEquals(wb.segmentation.classes, [...STRUCTURES]);
    const s = wb.segmentation.subjects;
    assertEquals(s.length, 2); // the quick cohort's test scans
    for (const r of s) for (const d of [r.baseline, r.baselineMatched, r.guided]) assertEquals(d.length, 28);
    // Table 3's regions: cortical = mean of (1)-(4), average = mean of (1)-(27), in %
    const r = regionDice(s[0].guided);
    assertEquals(r.cortical, 100 * meanOf(s[0].guided.slice(1, 5)));
    assertEquals(r.average, 100 * meanOf(s[0].guided.slice(1)));
    assertEquals(table3([run]).shape[0], 1);
    // the test labels are background wherever the skull-stripped input is 0
    const cohort = await loadCohort(join("data", "generated", "quick", "wholebrain"));
    const scan = cohort.subjects.find((x) => x.split === "test")!;
    const models = new WholeBrainModels(readOnlyContext(run.config, dir));
    const labels = await models.labels(scan, "baseline");
    models.dispose();
    const air = scan.arrays["1.5T"].map((v) => (v === 0 ? 1 : 0));
    assert(air.some((v) => v === 1));
    assert(labels.every((l, i) => !air[i] || l === 0));

    // a new scan through the trained views: labels on the input's own grid, names and colours beside
    const input = join("data", "generated", "quick", "wholebrain", "sub-03_scan-1_1.5T.nii.gz");
    const output = join(out, "labels.nii.gz");
    await segmentFile(input, output, dir, undefined, { task: "wholebrain" });
    const [a, b] = [await readNifti(input), await readNifti(output)];
    assertEquals(b.shape, a.shape);
    assertEquals(b.affine, a.affine);
    assert(Math.max(...b.data) <= 27);
    const lut = (await Deno.readTextFile(join(out, "labels_lut.txt"))).split("\n").filter((l) =>
      /^\d/.test(l)
    );
    assertEquals(lut.length, 28);
    assert(lut[13].startsWith("13  4th-Ventricle"), lut[13]);
    const json = JSON.parse(await Deno.readTextFile(join(out, "labels_lut.json")));
    assertEquals(json.labels[2], { index: 2, name: "Left-Cerebral-Cortex", rgb: [205, 62, 78] });
    // a tissue run is not a whole-brain run: the missing checkpoints are named
    await assertRejects(
      () =>
        segmentFile(input, join(out, "x.nii.gz"), join(out, "nowhere"), undefined, { task: "wholebrain" }),
      Error,
      "config.json",
    );
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});

Deno.test("table3Runs: the arms table3 wrote beside a run, only those of the configuration it would give them", async () => {
  const out = await Deno.makeTempDir();
  try {
    const config = profileConfig("default");
    const write = async (name: string, network: string, seed = 0) => {
      const dir = join(out, name);
      await Deno.mkdir(dir);
      const cfg = { ...config, seed, wholebrain: { ...config.wholebrain, network } };
      await Deno.writeTextFile(join(dir, "config.json"), JSON.stringify(cfg));
      // (as runArm writes it: the configuration the arm was given)
      await Deno.writeTextFile(join(dir, "plan-config.json"), JSON.stringify(cfg, null, 2));
      await Deno.writeTextFile(join(dir, "log.jsonl"), "");
      await Deno.writeTextFile(
        join(dir, "metrics.json"),
        JSON.stringify({ profile: "default", data: "data/generated/default", wholebrain: { network } }),
      );
      return dir;
    };
    const source = await write("wholebrain", "unet2d");
    await write("table3-quicknat", "quicknat");
    await write("table3-fastsurfer", "fastsurfer", 1); // another seed: not this run's arm
    await write("other-unest", "unest"); // another plan name
    const runs = await table3Runs(await loadRun(source));
    assertEquals(runs.map((r) => r.dir), [source, join(out, "table3-quicknat")]);
    assertEquals((await table3Runs(await loadRun(source), "other")).map((r) => r.dir), [
      source,
      join(out, "other-unest"),
    ]);
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});
