/**
 * Brain extraction: the full-head phantom (heads cohort), the decision whether a scan is
 * skull-stripped, and the cleaning of a predicted mask (largest component, holes filled) on
 * hand-built masks.
 */
import { assert, assertEquals } from "@std/assert";
import { join } from "node:path";
import { loadCohort } from "../lib/data/cohort.ts";
import { intensityProfile } from "../lib/data/preprocess.ts";
import { readNifti } from "../lib/io/nifti.ts";
import { ensureCohorts } from "../lib/phantom/cohort.ts";
import { BRAIN_KEY, generateHeadCohort, HEAD_COUNTS } from "../lib/phantom/head.ts";
import { headTissueProperties, MPRAGE_15T, MPRAGE_3T, mpSignals } from "../lib/phantom/physics.ts";
import { cleanBrainMask } from "../lib/train/brainmask.ts";
import { looksBrainExtracted } from "../scripts/segment.ts";

Deno.test("cleanBrainMask keeps the largest 6-connected component and fills its enclosed holes", () => {
  // 5 x 5 x 5 (k, j, i): a 3x3x3 cube with a hollow centre, a lone voxel in a corner, a voxel
  // touching the cube only by an edge (not 6-connected)
  const shape: [number, number, number] = [5, 5, 5];
  const at = (k: number, j: number, i: number) => i + 5 * (j + 5 * k);
  const mask = new Uint8Array(125);
  for (let k = 1; k <= 3; k++) {
    for (let j = 1; j <= 3; j++) for (let i = 1; i <= 3; i++) mask[at(k, j, i)] = 1;
  }
  mask[at(2, 2, 2)] = 0; // the hole
  mask[at(0, 0, 0)] = 1; // lone corner voxel
  mask[at(4, 4, 0)] = 1; // diagonal to (3, 3, 1): another component
  const out = cleanBrainMask(mask, shape);
  const want = new Uint8Array(125);
  for (let k = 1; k <= 3; k++) {
    for (let j = 1; j <= 3; j++) for (let i = 1; i <= 3; i++) want[at(k, j, i)] = 1;
  }
  assertEquals(Array.from(out), Array.from(want));
  // an empty prediction stays empty; a background pocket open to the border is not a hole
  assertEquals(cleanBrainMask(new Uint8Array(125), shape).reduce((a, b) => a + b, 0), 0);
  const open = Uint8Array.from(want);
  open[at(2, 2, 2)] = 0;
  open[at(2, 2, 3)] = 0; // a tunnel from the centre to the cube's face ...
  open[at(2, 2, 4)] = 0; // ... and on to the border
  assertEquals(cleanBrainMask(open, shape)[at(2, 2, 2)], 0);
});

Deno.test("head tissue on a T1-weighted MPRAGE: fat brightest, bone dark, at 1.5T and 3T; 7T refused", () => {
  for (const seq of [MPRAGE_15T, MPRAGE_3T]) {
    const [fat, muscle, bone] = (["fat", "muscle", "bone"] as const).map((c) =>
      Math.abs(mpSignals(seq, headTissueProperties(seq.field, c))[0])
    );
    assert(fat > muscle && muscle > 10 * bone, `${seq.field}: fat ${fat}, muscle ${muscle}, bone ${bone}`);
  }
  let threw = false;
  try {
    headTissueProperties("7T", "fat");
  } catch {
    threw = true;
  }
  assert(threw);
});

Deno.test("heads cohort (quick): full-head scans with air and scalp, brain masks, skull-stripped decision", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const manifest = await generateHeadCohort("quick", dir);
    const counts = HEAD_COUNTS.quick;
    assertEquals(manifest.cohort, "heads");
    assertEquals(manifest.scans.length, counts.train + counts.validation + counts.test);
    assertEquals(manifest.scans.map((s) => s.params?.field), ["1.5T", "3T", "1.5T", "3T"]);
    const { subjects } = await loadCohort(join(dir, "heads"));
    for (const s of subjects) {
      const key = s.arrays["1.5T"] ? "1.5T" : "3T";
      const image = s.arrays[key], brain = s.arrays[BRAIN_KEY];
      const n = image.length;
      const brainVoxels = brain.reduce((a, b) => a + b, 0);
      assert(brainVoxels > 0.1 * n && brainVoxels < 0.5 * n, `${s.id}: brain ${brainVoxels} of ${n}`);
      // not skull-stripped: signal outside the brain (scalp, and the air's noise)
      let outside = 0, outsideBright = 0;
      for (let p = 0; p < n; p++) {
        if (brain[p]) continue;
        if (image[p] > 0) outside++;
        if (image[p] > 0.5) outsideBright++;
      }
      assert(outside > 0.5 * (n - brainVoxels), `${s.id}: ${outside} non-zero voxels outside the brain`);
      assert(outsideBright > 0.01 * n, `${s.id}: ${outsideBright} bright voxels outside the brain (fat)`);
      assertEquals(looksBrainExtracted(intensityProfile(s.reference)), false, s.id);
    }
    // the skull-stripped cohorts look skull-stripped
    await ensureCohorts("quick", "data/generated/quick");
    for (const scan of ["tissue/sub-01_1.5T", "wholebrain/sub-01_scan-1_1.5T", "paired/sub-01_3T"]) {
      const stripped = await readNifti(`data/generated/quick/${scan}.nii.gz`);
      assert(looksBrainExtracted(intensityProfile(stripped)), scan);
    }
    // deterministic
    const again = await generateHeadCohort("quick", join(dir, "again"));
    assertEquals(again.checksums, manifest.checksums);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
