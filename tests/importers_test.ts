/**
 * The dataset importers (`lib/data/importers.ts`) and CLAHE (`lib/data/clahe.ts`): small fake
 * datasets in the IBSR, MALC and paired layouts are written from the quick phantom cohort (in
 * another orientation, with the datasets' label codings), imported, and checked voxel by voxel;
 * one trains briefly on an imported cohort; malformed layouts get errors naming the file.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { assert, assertAlmostEquals, assertEquals, assertRejects, assertThrows } from "@std/assert";
import { UsageError } from "../lib/cli.ts";
import { clahe } from "../lib/data/clahe.ts";
import { loadCohort, verifyCohort } from "../lib/data/cohort.ts";
import {
  IBSR_SPLIT,
  ibsrLayout,
  importDataset,
  importNextStep,
  MALC_SPLIT,
  malcLayout,
  pairedLayout,
  pairsCsv,
} from "../lib/data/importers.ts";
import { readNifti, writeNifti } from "../lib/io/nifti.ts";
import { ensureCohorts } from "../lib/phantom/cohort.ts";
import { MALC_LABEL_IDS, malcToStructure, STRUCTURES } from "../lib/phantom/labels.ts";
import type { Affine, Vec3 } from "../lib/volume/affine.ts";
import { axisCodes, type Orientation, permuteFlip, resampleToGrid } from "../lib/volume/geometry.ts";
import { makeVolume, type Volume } from "../lib/volume/volume.ts";

const QUICK = "data/generated/quick";
await ensureCohorts("quick", QUICK);

/** A stored orientation other than RAS+ (as scanners write them): axes permuted and flipped. */
const STORED: Orientation = { axis: [0, 2, 1], flip: [true, false, true] };

async function phantomScans(cohort: string) {
  const manifest = JSON.parse(await Deno.readTextFile(join(QUICK, cohort, "manifest.json")));
  const scans = [];
  for (const s of manifest.scans) {
    const vols: Record<string, Volume> = {};
    for (const [k, f] of Object.entries(s.files)) vols[k] = await readNifti(join(QUICK, cohort, f as string));
    scans.push(vols);
  }
  return scans;
}

const stored = <T extends Volume>(v: T) => permuteFlip(v, STORED);

/** `expected` (RAS, on the source grid) on an imported scan's grid, by the manifest's shift. */
function expectedOnGrid(
  expected: Volume,
  grid: { shape: Vec3; affine: Affine },
  shiftMm: number[],
): Uint8Array {
  const at = grid.affine.map((row, d) => d < 3 ? [...row.slice(0, 3), row[3] + shiftMm[d]] : [...row]);
  return Uint8Array.from(resampleToGrid(expected, grid.shape, at, "nearest").data);
}

const tmp = await Deno.makeTempDir({ prefix: "importers-test-" });
globalThis.addEventListener("unload", () => Deno.removeSync(tmp, { recursive: true }));

// ---------------------------------------------------------------------------------------------
// CLAHE, by hand

Deno.test("clahe: two regions along an axis, interpolated between their centres (by hand)", () => {
  // values 0..3 rescale to bins 0, 1, 2, 3 (nbins 4); regions [0, 1] and [2, 3], centres 0.5 and 2.5.
  // region 0 maps bins to 0.5, 1, 1, 1; region 1 to 0, 0, 0.5, 1.
  // voxel 0: before the first centre: 0.5; voxel 1: 0.75 * 1 + 0.25 * 0 = 0.75;
  // voxel 2: 0.25 * 1 + 0.75 * 0.5 = 0.625; voxel 3: after the last centre: 1.
  const data = Float32Array.from([0, 1, 2, 3]);
  for (const [shape, kernel] of [[[4, 1, 1], [2, 1, 1]], [[1, 1, 4], [1, 1, 2]]] as [Vec3, Vec3][]) {
    const raw = clahe(data, shape, { kernelSize: kernel, nbins: 4, clipLimit: 1, rescale: false });
    assertEquals(Array.from(raw), [0.5, 0.75, 0.625, 1]);
    // rescaled by min 0.5 and max 1
    const out = clahe(data, shape, { kernelSize: kernel, nbins: 4, clipLimit: 1 });
    assertEquals(Array.from(out), [0, 0.5, 0.25, 1]);
  }
});

Deno.test("clahe: the clip limit caps a bin and spreads the excess (by hand)", () => {
  // one region of 4 voxels, bins 0, 0, 0, 3: histogram [3, 0, 0, 1]. Clip 0.25 -> limit 1 voxel:
  // [1, 0, 0, 1] and 2 voxels of excess, 0.5 a bin: [1.5, 0.5, 0.5, 1.5]; cumulative / 4:
  // bin 0 -> 0.375, bin 3 -> 1. Without clipping bin 0 maps to 3/4.
  const data = Float32Array.from([0, 0, 0, 3]);
  const opts = { kernelSize: [4, 1, 1] as Vec3, nbins: 4, rescale: false };
  assertEquals(Array.from(clahe(data, [4, 1, 1], { ...opts, clipLimit: 0.25 })), [0.375, 0.375, 0.375, 1]);
  assertEquals(Array.from(clahe(data, [4, 1, 1], { ...opts, clipLimit: 1 })), [0.75, 0.75, 0.75, 1]);
});

Deno.test("clahe: one region without clipping is global histogram equalisation", () => {
  // a permutation of 0..11 in 12 bins: each voxel maps to (rank + 1) / 12
  const values = [7, 2, 11, 0, 5, 9, 1, 4, 10, 3, 8, 6];
  const out = clahe(Float32Array.from(values), [3, 2, 2], {
    kernelSize: [3, 2, 2],
    nbins: 12,
    clipLimit: 1,
    rescale: false,
  });
  values.forEach((v, p) => assertAlmostEquals(out[p], (v + 1) / 12, 1e-6));
  // the default: 5 regions per axis (the released code's shape // 5), output in [0, 1]
  const big = Float32Array.from({ length: 10 * 10 * 10 }, (_, p) => (p * 7919) % 101);
  const eq = clahe(big, [10, 10, 10]);
  assertEquals(Math.min(...eq), 0);
  assertEquals(Math.max(...eq), 1);
});

Deno.test("MALC label table: every structure named once, cortex by parity, the paper's dropped ids to 0", () => {
  assertEquals(Object.keys(MALC_LABEL_IDS).map(Number), Array.from({ length: 27 }, (_, i) => i + 1));
  assertEquals(STRUCTURES[malcToStructure(45)], "Left-Cerebral-White-Matter");
  assertEquals(STRUCTURES[malcToStructure(101)], "Left-Cerebral-Cortex");
  assertEquals(STRUCTURES[malcToStructure(208)], "Right-Cerebral-Cortex");
  assertEquals(STRUCTURES[malcToStructure(11)], "4th-Ventricle");
  assertEquals(STRUCTURES[malcToStructure(61)], "Right-VentralDC");
  for (const dropped of [0, 23, 30, 46, 49, 50, 63, 64, 69, 71, 72, 73, 75, 76]) {
    assertEquals(malcToStructure(dropped), 0, `MALC id ${dropped}`);
  }
});

// ---------------------------------------------------------------------------------------------
// fake datasets

/** IBSR: 18 subjects from the quick tissue scans; odd subjects with the filled labels (0/1/2/3), even ones
 * with the unfilled segTRI_ana in the 0/128/192/254 coding and a few brain voxels unlabelled. */
async function fakeIbsr(dir: string) {
  const scans = await phantomScans("tissue");
  const expected: Volume<Uint8Array>[] = [];
  for (let n = 1; n <= 18; n++) {
    const s = scans[(n - 1) % scans.length];
    const name = `IBSR_${String(n).padStart(2, "0")}`;
    await Deno.mkdir(join(dir, name), { recursive: true });
    await writeNifti(join(dir, name, `${name}_ana_strip.nii.gz`), stored(s["1.5T"]));
    const tissue = Uint8Array.from(s.tissue.data);
    if (n % 2 === 1) {
      await writeNifti(
        join(dir, name, `${name}_segTRI_fill_ana.nii.gz`),
        stored(makeVolume(tissue, s.tissue.shape, s.tissue.affine)),
      );
      expected.push(makeVolume(tissue, s.tissue.shape, s.tissue.affine));
    } else {
      const coded = Uint8Array.from(tissue, (v, p) => (p % 7 === 0 ? 0 : [0, 128, 192, 254][v]));
      await writeNifti(
        join(dir, name, `${name}_segTRI_ana.nii.gz`),
        stored(makeVolume(coded, s.tissue.shape, s.tissue.affine)),
      );
      // filled: unlabelled voxels of the stripped brain become CSF
      const image = s["1.5T"].data;
      const want = Uint8Array.from(
        coded,
        (v, p) => (v === 0 ? (image[p] > 0 ? 1 : 0) : { 128: 1, 192: 2, 254: 3 }[v]!),
      );
      expected.push(makeVolume(want, s.tissue.shape, s.tissue.affine));
    }
    // another file of the distribution, ignored
    await Deno.writeTextFile(join(dir, name, `${name}_ana_brainmask.txt`), "not read");
  }
  return expected;
}

/** MALC: 35 scans from the quick whole-brain scans, structures written as Neuromorphometrics ids (cortex as
 * parcels >= 100), with ids the paper drops (CSF 46, inferior lateral ventricle 50, accumbens 30) in place of
 * some structure voxels; `.nii` as the challenge ships them. */
async function fakeMalc(dir: string) {
  const scans = await phantomScans("wholebrain");
  const firstId = (index: number, p: number) => {
    const ids = MALC_LABEL_IDS[index];
    if (ids === "odd>=100") return 101 + 2 * (p % 50);
    if (ids === "even>=100") return 100 + 2 * (p % 50);
    return ids[0];
  };
  const expected = new Map<number, Volume<Uint8Array>>();
  const all = [...MALC_SPLIT.train, ...MALC_SPLIT.validation, ...MALC_SPLIT.test];
  for (const part of ["training", "testing"]) {
    for (const kind of ["images", "labels"]) {
      await Deno.mkdir(join(dir, `${part}-${kind}`), { recursive: true });
    }
  }
  for (const [n, id] of all.entries()) {
    const s = scans[n % scans.length];
    const part = (MALC_SPLIT.test as readonly number[]).includes(id) ? "testing" : "training";
    const structures = s.structures.data;
    const want = new Uint8Array(structures.length);
    const ids = Int16Array.from(structures, (v, p) => {
      if (v === 0) return 0;
      if (p % 5 === 0) return [46, 50, 30][p % 3]; // dropped by the paper: background
      want[p] = v;
      return firstId(v, p);
    });
    await writeNifti(
      join(dir, `${part}-images`, `${id}_3.nii`),
      permuteFlip(s["1.5T"], { axis: [1, 0, 2], flip: [false, true, false] }),
    );
    await writeNifti(
      join(dir, `${part}-labels`, `${id}_3_glm.nii`),
      permuteFlip(makeVolume(ids, s.structures.shape, s.structures.affine), {
        axis: [1, 0, 2],
        flip: [false, true, false],
      }),
    );
    expected.set(id, makeVolume(want, s.structures.shape, s.structures.affine));
  }
  return expected;
}

/** Paired: the quick paired subjects as <subject>/3T.nii.gz, 7T.nii.gz (7T at 3 mm), tissue.nii.gz, and the
 * same images listed by a CSV under other names (without tissue). */
async function fakePaired(dir: string) {
  const scans = await phantomScans("paired");
  const rows = ["subject,3T,7T"];
  for (const [n, s] of scans.entries()) {
    const sub = join(dir, "folder", `S_${n + 1}`);
    await Deno.mkdir(sub, { recursive: true });
    const fine = {
      shape: s["7T"].shape.map((x) => x * 2) as Vec3,
      affine: s["7T"].affine.map((r, d) => d < 3 ? [r[0] / 2, r[1] / 2, r[2] / 2, r[3] - 1.5] : r),
    };
    await writeNifti(join(sub, "3T.nii.gz"), stored(s["3T"]));
    await writeNifti(join(sub, "7T.nii.gz"), resampleToGrid(s["7T"], fine.shape, fine.affine, "linear"));
    await writeNifti(join(sub, "tissue.nii.gz"), stored(s.tissue));
    await Deno.mkdir(join(dir, "csv", "scans"), { recursive: true });
    await writeNifti(join(dir, "csv", "scans", `s${n}_t1_3t.nii.gz`), s["3T"]);
    await writeNifti(join(dir, "csv", "scans", `s${n}_mp2rage.nii`), s["7T"]);
    rows.push(`pair${n + 1},scans/s${n}_t1_3t.nii.gz,scans/s${n}_mp2rage.nii`);
  }
  await Deno.writeTextFile(join(dir, "csv", "pairs.csv"), rows.join("\n") + "\n");
  return scans;
}

const ibsrDir = join(tmp, "IBSR"), malcDir = join(tmp, "MALC"), pairedDir = join(tmp, "paired");
const ibsrExpected = await fakeIbsr(ibsrDir);
const malcExpected = await fakeMalc(malcDir);
const pairedScans = await fakePaired(pairedDir);

// ---------------------------------------------------------------------------------------------
// imports

Deno.test("paired folder: RAS+ grid, 3T matched to 7T, tissue on the grid exactly, leave-one-out folds", async () => {
  const out = join(tmp, "data");
  const { manifest, dir } = await importDataset("paired", {
    from: join(pairedDir, "folder"),
    out,
    spacing: 6,
  });
  assertEquals(dir, join(out, "paired"));
  assertEquals(manifest.cohort, "paired");
  assertEquals(manifest.generatorVersion, "importer paired 1.0.0");
  assertEquals(manifest.scans.map((s) => [s.id, s.split]), [["S_1", "fold"], ["S_2", "fold"], [
    "S_3",
    "fold",
  ]]);
  assert(manifest.grid.shape.every((s) => s % 16 === 0), `grid ${manifest.grid.shape}`);
  assertEquals(axisCodes(manifest.grid.affine), "RAS");
  assertEquals(manifest.scans[0].params!.orientation, axisCodes(stored(pairedScans[0]["3T"]).affine));
  assert(manifest.scans[0].params!.orientation !== "RAS");
  await verifyCohort(dir);
  const { subjects } = await loadCohort(dir);
  for (const [n, s] of subjects.entries()) {
    const truth = expectedOnGrid(
      pairedScans[n].tissue,
      manifest.grid,
      manifest.scans[n].params!.shiftMm as number[],
    );
    assertEquals(Array.from(s.arrays.tissue), Array.from(truth), `${s.id}: tissue`);
    // intensities in [0, 1], the 3T's distribution matched to the 7T's inside the brain
    const q = (a: Float32Array) => {
      const v = Array.from(a).filter((x) => x > 0).sort((x, y) => x - y);
      return [0.25, 0.5, 0.75].map((f) => v[Math.floor(f * v.length)]);
    };
    assert(s.arrays["3T"].every((v) => v >= 0 && v <= 1) && s.arrays["7T"].every((v) => v >= 0 && v <= 1));
    q(s.arrays["3T"]).forEach((v, i) => assertAlmostEquals(v, q(s.arrays["7T"])[i], 0.02));
    // the 7T (stored at 3 mm) came back onto the 6 mm grid where the brain is
    let inside = 0, brain = 0;
    s.arrays.tissue.forEach((t, p) => {
      if (t > 0) brain++;
      if (t > 0 && s.arrays["7T"][p] > 0.05) inside++;
    });
    assert(inside / brain > 0.97, `${s.id}: 7T covers ${inside}/${brain} brain voxels`);
  }
  // a finished output is refused unless --force
  await assertRejects(
    () => importDataset("paired", { from: join(pairedDir, "folder"), out, spacing: 6 }),
    UsageError,
    "pass --force",
  );
  const again = await importDataset("paired", {
    from: join(pairedDir, "folder"),
    out,
    spacing: 6,
    force: true,
  });
  assertEquals(again.manifest.checksums, manifest.checksums);
  assertEquals([...Deno.readDirSync(out)].map((e) => e.name), ["paired"]);
});

Deno.test("paired CSV: pairs under any names, brain box from the 3T, no tissue", async () => {
  const out = join(tmp, "data-csv");
  const { manifest, dir } = await importDataset("paired", {
    pairs: join(pairedDir, "csv", "pairs.csv"),
    out,
    spacing: 6,
  });
  assertEquals(manifest.scans.map((s) => s.id), ["pair1", "pair2", "pair3"]);
  assertEquals(Object.keys(manifest.scans[0].files), ["3T", "7T"]);
  assertEquals(manifest.scans[0].params!.source, {
    "3T": "scans/s0_t1_3t.nii.gz",
    "7T": "scans/s0_mp2rage.nii",
  });
  const { subjects } = await loadCohort(dir);
  // every non-zero voxel of the source 7T (on the 6 mm grid already) lands on the cohort grid
  for (const [n, s] of subjects.entries()) {
    const src = pairedScans[n]["7T"].data;
    assertEquals(s.arrays["7T"].filter((v) => v > 0).length, Array.from(src).filter((v) => v > 0).length);
  }
});

Deno.test("IBSR: tissue cohort, labels recoded and filled, CLAHE, the paper's split, spacing from <out>/paired", async () => {
  const out = join(tmp, "data");
  if (!existsSync(join(out, "paired"))) {
    await importDataset("paired", { from: join(pairedDir, "folder"), out, spacing: 6 });
  }
  const { manifest, dir, spacingFrom } = await importDataset("ibsr", { from: ibsrDir, out, force: true });
  assertEquals(spacingFrom, join(out, "paired", "manifest.json"));
  assertEquals(manifest.grid.spacing, 6);
  assertEquals(manifest.cohort, "tissue");
  for (const split of ["train", "validation", "test"] as const) {
    assertEquals(
      manifest.scans.filter((s) => s.split === split).map((s) => Number(s.id.slice(5))),
      [...IBSR_SPLIT[split]],
    );
  }
  assertEquals(manifest.scans[1].params!.fillHoles, true);
  assert((manifest.scans[1].params!.filledVoxels as number) > 0);
  await verifyCohort(dir);
  const { subjects } = await loadCohort(dir);
  for (const [n, s] of subjects.entries()) {
    const truth = expectedOnGrid(
      ibsrExpected[n],
      manifest.grid,
      manifest.scans[n].params!.shiftMm as number[],
    );
    assertEquals(Array.from(s.arrays.tissue), Array.from(truth), `${s.id}: tissue`);
    const image = s.arrays["1.5T"];
    assertEquals(Math.min(...image), 0);
    assertEquals(Math.max(...image), 1);
    // CLAHE maps the background too, as scikit-image's does: the corner voxel is no longer zero
    assertEquals(s.arrays.tissue[0], 0);
    assert(image[0] > 0, `${s.id}: corner ${image[0]}`);
  }
  // without CLAHE clipping and tiles the image differs
  const flat = await importDataset("ibsr", {
    from: ibsrDir,
    out: join(tmp, "data-clahe"),
    spacing: 6,
    claheTiles: 1,
    claheClip: 1,
  });
  const a = (await loadCohort(flat.dir)).subjects[0].arrays["1.5T"];
  assert(a.some((v, p) => Math.abs(v - subjects[0].arrays["1.5T"][p]) > 0.05));
  assert(importNextStep(out, 6).startsWith("train on it"));
  assert(importNextStep(join(tmp, "data-clahe"), 6).includes("deno task prep --dataset paired"));
});

Deno.test("MALC: 27 structures mapped by the table, dropped ids to background, the challenge's split", async () => {
  const out = join(tmp, "data-malc");
  const { manifest, dir, spacingFrom } = await importDataset("malc", { from: malcDir, out, spacing: 6 });
  assertEquals(spacingFrom, "--spacing");
  assertEquals(manifest.cohort, "wholebrain");
  assertEquals(manifest.scans.length, 35);
  assertEquals(manifest.scans.filter((s) => s.split === "train").length, 10);
  assertEquals(manifest.scans.filter((s) => s.split === "validation").map((s) => s.id), [
    "1012",
    "1013",
    "1014",
    "1015",
    "1017",
  ]);
  assertEquals(manifest.scans.filter((s) => s.split === "test").length, 20);
  assertEquals(manifest.scans.find((s) => s.id === "1038")!.params!.retest, true);
  await verifyCohort(dir);
  const { subjects } = await loadCohort(dir);
  for (const [n, s] of subjects.entries()) {
    const truth = expectedOnGrid(
      malcExpected.get(Number(s.id))!,
      manifest.grid,
      manifest.scans[n].params!.shiftMm as number[],
    );
    assertEquals(Array.from(s.arrays.structures), Array.from(truth), `${s.id}: structures`);
    assert(Math.max(...s.arrays.structures) <= 27);
    assert(s.arrays["1.5T"].every((v) => v >= 0 && v <= 1));
  }
});

Deno.test("deno task prep --dataset ibsr, then deno task train --data --phase baseline on the imported cohort", async () => {
  const out = join(tmp, "data-train");
  await importDataset("paired", { from: join(pairedDir, "folder"), out, spacing: 6 });
  const run = async (script: string, args: string[]) => {
    const r = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", script, ...args],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(r.stdout) + new TextDecoder().decode(r.stderr);
    assert(r.success, text);
    return text;
  };
  const prep = await run("scripts/prep.ts", [
    "--dataset",
    "ibsr",
    "--from",
    ibsrDir,
    "--out",
    out,
    "--quiet",
  ]);
  assert(prep.includes(`18 scans of ibsr in ${join(out, "tissue")}`), prep);
  assert(prep.includes("train on it"), prep);
  const runs = join(tmp, "runs");
  const log = await run("scripts/train.ts", [
    "--data",
    out,
    "--profile",
    "quick",
    "--phase",
    "baseline",
    "--out",
    runs,
    "--name",
    "imported",
    "--backend",
    "cpu",
    "--progress=false",
  ]);
  assert(log.includes("baseline on the"), log);
  const metrics = JSON.parse(await Deno.readTextFile(join(runs, "imported", "metrics.json")));
  assertEquals(metrics.data, out);
  assertEquals(metrics.baseline.classes.length, 4);
  assert(metrics.baseline.mean.every((d: number) => d >= 0 && d <= 1));
});

// ---------------------------------------------------------------------------------------------
// malformed layouts

/** A folder of empty files (layout checks only look at names). */
async function layout(name: string, files: string[]): Promise<string> {
  const dir = join(tmp, "layouts", name);
  for (const f of files) {
    await Deno.mkdir(join(dir, f, ".."), { recursive: true });
    await Deno.writeFile(join(dir, f), new Uint8Array());
  }
  return dir;
}

Deno.test("malformed layouts: the first missing or unexpected file and the expected pattern", async () => {
  const ibsr = (skip: string[], extra: string[] = []) =>
    Array.from({ length: 18 }, (_, n) => `IBSR_${String(n + 1).padStart(2, "0")}`).flatMap((s) =>
      [`${s}/${s}_ana_strip.nii.gz`, `${s}/${s}_segTRI_fill_ana.nii.gz`].filter((f) => !skip.includes(f))
    ).concat(extra);
  const pattern = "IBSR_XX/IBSR_XX_ana_strip.nii[.gz] and IBSR_XX/IBSR_XX_segTRI_fill_ana.nii[.gz]";
  assertThrows(
    () => ibsrLayout(join(tmp, "absent")),
    UsageError,
    "absent: no such folder; expected " + pattern,
  );
  await Deno.mkdir(join(tmp, "empty"));
  assertThrows(() => ibsrLayout(join(tmp, "empty")), UsageError, "IBSR_01/ missing; expected " + pattern);
  const d1 = await layout("ibsr1", ibsr(["IBSR_07/IBSR_07_segTRI_fill_ana.nii.gz"]));
  assertThrows(
    () => ibsrLayout(d1),
    UsageError,
    "IBSR_07/IBSR_07_segTRI_fill_ana.nii.gz missing; expected " + pattern,
  );
  const d2 = await layout("ibsr2", ibsr(["IBSR_03/IBSR_03_ana_strip.nii.gz"]));
  assertThrows(() => ibsrLayout(d2), UsageError, "IBSR_03/IBSR_03_ana_strip.nii.gz missing");
  const d3 = await layout("ibsr3", ibsr([], ["IBSR_19/IBSR_19_ana_strip.nii.gz"]));
  assertThrows(() => ibsrLayout(d3), UsageError, "unexpected IBSR_19; expected " + pattern);
  const d4 = await layout("ibsr4", ibsr([]).map((f) => `IBSR_nifti_stripped/${f}`));
  assertThrows(() => ibsrLayout(d4), UsageError, "pass that as --from");
  assertEquals(ibsrLayout(join(d4, "IBSR_nifti_stripped")).length, 18);

  const malc = (skip: string[], extra: string[] = []) =>
    [...MALC_SPLIT.train, ...MALC_SPLIT.validation, ...MALC_SPLIT.test].flatMap((id) => {
      const part = (MALC_SPLIT.test as readonly number[]).includes(id) ? "testing" : "training";
      return [`${part}-images/${id}_3.nii`, `${part}-labels/${id}_3_glm.nii`];
    }).filter((f) => !skip.includes(f)).concat(extra);
  const malcPattern = "training-images/<id>_3.nii[.gz], training-labels/<id>_3_glm.nii[.gz]";
  const m1 = await layout("malc1", malc(["testing-labels/1128_3_glm.nii"]));
  assertThrows(
    () => malcLayout(m1),
    UsageError,
    "testing-labels/1128_3_glm.nii missing; expected " + malcPattern,
  );
  const m2 = await layout("malc2", malc([], ["training-images/1099_3.nii"]));
  assertThrows(
    () => malcLayout(m2),
    UsageError,
    "unexpected training-images/1099_3.nii; expected " + malcPattern,
  );
  const m3 = await layout("malc3", malc([], ["training-images/1003_3.nii"])); // a testing id among training
  assertThrows(() => malcLayout(m3), UsageError, "unexpected training-images/1003_3.nii");
  const m4 = await layout("malc4", malc([]).filter((f) => !f.startsWith("testing-images")));
  assertThrows(() => malcLayout(m4), UsageError, "testing-images/ missing");
  assertEquals(malcLayout(await layout("malc5", malc([]))).length, 35);

  const pairs = (subjects: string[], files = ["3T.nii.gz", "7T.nii.gz"]) =>
    subjects.flatMap((s) => files.map((f) => `${s}/${f}`));
  const pairedPattern = "one folder per subject holding 3T.nii[.gz] and 7T.nii[.gz]";
  const p1 = await layout("paired1", pairs(["a", "b", "c"]).filter((f) => f !== "b/7T.nii.gz"));
  assertThrows(() => pairedLayout(p1), UsageError, "b/7T.nii.gz missing; expected " + pairedPattern);
  const p2 = await layout("paired2", [...pairs(["a", "b", "c"]), "b/3t_2.nii.gz"]);
  assertThrows(() => pairedLayout(p2), UsageError, "unexpected b/3t_2.nii.gz; expected " + pairedPattern);
  const p3 = await layout("paired3", [...pairs(["a", "b", "c"]), "a/tissue.nii", "c/tissue.nii"]);
  assertThrows(() => pairedLayout(p3), UsageError, "b/tissue.nii.gz missing");
  const p4 = await layout("paired4", pairs(["a", "b"]));
  assertThrows(() => pairedLayout(p4), UsageError, "2 subjects; leave-one-out folds need at least 3");
  const p5 = await layout("paired5", [...pairs(["a", "b", "c"]), "sub-04_3T.nii.gz"]);
  assertThrows(() => pairedLayout(p5), UsageError, "unexpected sub-04_3T.nii.gz");
  assertEquals(pairedLayout(await layout("paired6", pairs(["a", "b", "c"]))).length, 3);

  const csvDir = await layout("csv", pairs(["a", "b", "c"]));
  const csv = async (text: string) => {
    await Deno.writeTextFile(join(csvDir, "pairs.csv"), text);
    return join(csvDir, "pairs.csv");
  };
  assertThrows(() => pairsCsv(join(csvDir, "none.csv")), UsageError, "none.csv: cannot read it");
  const rows = "a,a/3T.nii.gz,a/7T.nii.gz\nb,b/3T.nii.gz,b/7T.nii.gz\nc,c/3T.nii.gz,c/7T.nii.gz\n";
  const header = await csv("id,3T,7T\n" + rows);
  assertThrows(
    () => pairsCsv(header),
    UsageError,
    'header "id,3T,7T"; expected subject,3T,7T or subject,3T,7T,tissue',
  );
  const bad = await csv("subject,3T,7T\n" + rows.replace("b/7T.nii.gz", "b/7t.nii.gz"));
  assertThrows(() => pairsCsv(bad), UsageError, "line 3: 7T file b/7t.nii.gz missing");
  const dup = await csv("subject,3T,7T\n" + rows + "a,a/3T.nii.gz,a/7T.nii.gz\n");
  assertThrows(() => pairsCsv(dup), UsageError, "line 5: subject a listed twice");
  assertEquals(pairsCsv(await csv("subject,3T,7T\n" + rows)).length, 3);

  // options and label values
  await assertRejects(() => importDataset("ibsr", { out: join(tmp, "x") }), UsageError, "--from");
  await assertRejects(
    () => importDataset("ibsr", { from: ibsrDir, out: join(tmp, "x"), spacing: -1 }),
    UsageError,
    "--spacing",
  );
  const badLabels = join(tmp, "IBSR-bad");
  await Deno.mkdir(badLabels);
  for (const e of Deno.readDirSync(ibsrDir)) {
    await Deno.mkdir(join(badLabels, e.name));
    for (const f of Deno.readDirSync(join(ibsrDir, e.name))) {
      await Deno.copyFile(join(ibsrDir, e.name, f.name), join(badLabels, e.name, f.name));
    }
  }
  const seg = join(badLabels, "IBSR_05", "IBSR_05_segTRI_fill_ana.nii.gz");
  const v = await readNifti(seg);
  const data = Uint8Array.from(v.data);
  data[data.findIndex((x) => x === 2)] = 5;
  await writeNifti(seg, makeVolume(data, v.shape, v.affine));
  const e = await assertRejects(
    () => importDataset("ibsr", { from: badLabels, out: join(tmp, "x"), spacing: 6 }),
    UsageError,
    "IBSR_05_segTRI_fill_ana.nii.gz: label value 5; expected IBSR's CSF/GM/WM coding 0/1/2/3",
  );
  assert(!existsSync(join(tmp, "x", "tissue")), e.message);
});
