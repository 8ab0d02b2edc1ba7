/**
 * `deno task segment` for real scans: the inference-side intensity handling on constructed
 * inputs (z-scored, shifted below 0, 16-bit integers, float outliers, not skull-stripped, unlike
 * the cohort), and, on a quick trained run, the files written beside the labels (mask, montage,
 * volumes CSV, 4D probabilities, the converted DICOM input) and their refusal without --force.
 */
import * as nifti from "nifti-reader-js";
import { assert, assertEquals, assertRejects } from "@std/assert";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { initBackend } from "../lib/backend.ts";
import { UsageError } from "../lib/cli.ts";
import {
  type CohortIntensity,
  intensitiesForInference,
  intensityProfile,
  intensityWarnings,
  normalizeIntensity,
} from "../lib/data/preprocess.ts";
import { readDicomSeries } from "../lib/io/dicom.ts";
import { readNifti, writeNifti } from "../lib/io/nifti.ts";
import { scaleAffine } from "../lib/volume/affine.ts";
import { makeVolume, type Volume } from "../lib/volume/volume.ts";
import { decodePng, isBlank } from "../lib/viz/png.ts";
import { TISSUE_CLASSES } from "../lib/phantom/labels.ts";
import { runTraining } from "../scripts/train.ts";
import { segmentFile } from "../scripts/segment.ts";
import { writeSeries } from "./dicom_fixtures.ts";
import { mulberry32 } from "../lib/random.ts";

await initBackend("cpu", { quiet: true });

const rng = mulberry32;

/**
 * A skull-stripped "brain" on a zero background: an ellipsoid of WM (0.9) with a GM rim (0.6)
 * and CSF ventricles (0.2), seeded noise; `n`^3 voxels of `spacing` mm.
 */
function phantom(n = 32, spacing = 6, seed = 3): Volume<Float32Array> {
  const random = rng(seed);
  const data = new Float32Array(n ** 3);
  for (let k = 0, p = 0; k < n; k++) {
    for (let j = 0; j < n; j++) {
      for (let i = 0; i < n; i++, p++) {
        const [x, y, z] = [i, j, k].map((v) => (v - (n - 1) / 2) / (n / 2));
        const r = x * x / 0.55 + y * y / 0.7 + z * z / 0.5;
        if (r >= 1) continue;
        const base = r > 0.7 ? 0.6 : (x * x + y * y) < 0.02 ? 0.2 : 0.9;
        data[p] = base * (1 + 0.08 * (random() - 0.5));
      }
    }
  }
  return makeVolume(data, [n, n, n], scaleAffine([spacing, spacing, spacing], [-90, -100, -80]));
}

const clean = phantom();
const cleanProfile = intensityProfile(clean);
/** The phantom as its own cohort: nothing about it is unusual. */
const cohort: CohortIntensity = {
  foregroundFraction: cleanProfile.foregroundFraction,
  floor: cleanProfile.low / cleanProfile.high,
  spacing: 6,
};
const reference = normalizeIntensity(clean).data;

function maxDiff(a: Float32Array, b: Float32Array, skip?: Set<number>): number {
  let worst = 0;
  for (let n = 0; n < a.length; n++) if (!skip?.has(n)) worst = Math.max(worst, Math.abs(a[n] - b[n]));
  return worst;
}

Deno.test("intensities: a clean skull-stripped scan is used as training used its cohort, with no warning", () => {
  const r = intensitiesForInference(clean, cohort.floor);
  assertEquals(r.mode, "as-training");
  assert(r.volume === clean, "the image passes unchanged");
  assertEquals(Array.from(r.mask.data), Array.from(clean.data, (v) => (v > 0 ? 1 : 0)));
  assertEquals(intensityWarnings(cleanProfile, r.mode, cohort), []);
});

Deno.test("intensities: z-scored and shifted-below-0 scans are mapped back to the training normalisation", () => {
  // z-scored within the brain, background left at 0 (as FSL-style pipelines write it)
  const fg = clean.data.filter((v) => v > 0);
  const mean = fg.reduce((a, b) => a + b, 0) / fg.length;
  const sd = Math.sqrt(fg.reduce((a, b) => a + (b - mean) ** 2, 0) / fg.length);
  const z = makeVolume(
    Float32Array.from(clean.data, (v) => (v > 0 ? (v - mean) / sd : 0)),
    clean.shape,
    clean.affine,
  );
  // every voxel shifted and scaled, the background becoming -100
  const shifted = makeVolume(Float32Array.from(clean.data, (v) => 250 * v - 100), clean.shape, clean.affine);
  for (const [name, v] of [["z-scored", z], ["shifted", shifted]] as const) {
    const p = intensityProfile(v);
    const r = intensitiesForInference(v, cohort.floor, p);
    assertEquals(r.mode, "rescaled", name);
    assertEquals(Array.from(r.mask.data), Array.from(clean.data, (x) => (x > 0 ? 1 : 0)), name);
    const worst = maxDiff(normalizeIntensity(r.volume).data, reference);
    assert(worst < 1e-4, `${name}: differs from the training normalisation by ${worst}`);
    const warnings = intensityWarnings(p, r.mode, cohort);
    assertEquals(warnings.length, 1, `${name}: ${warnings}`);
    assert(warnings[0].includes("z-scored or shifted"), warnings[0]);
  }
  // without the cohort's range the mapping uses the default floor: still in [0, 1], brain > 0
  const r = intensitiesForInference(z);
  assert(r.volume.data.every((v, n) => v >= 0 && (clean.data[n] > 0 ? v >= 0 : v === 0)));
});

Deno.test("intensities: 16-bit integers and float outliers normalise as the clean scan does", () => {
  const int16 = makeVolume(
    Int16Array.from(clean.data, (v) => Math.round(v * 30000)),
    clean.shape,
    clean.affine,
  );
  const asFloat = makeVolume(Float32Array.from(int16.data), clean.shape, clean.affine);
  const r16 = intensitiesForInference(asFloat, cohort.floor);
  assertEquals(r16.mode, "as-training");
  assert(maxDiff(normalizeIntensity(r16.volume).data, reference) < 1e-4);
  // 0.2 % of the brain at 1e6 (a reconstruction artefact): the 99.5th percentile ignores them
  const random = rng(9);
  const brain = [...clean.data.keys()].filter((n) => clean.data[n] > 0);
  const hot = new Set(brain.filter(() => random() < 0.002));
  assert(hot.size > 0);
  const outliers = makeVolume(
    Float32Array.from(clean.data, (v, n) => (hot.has(n) ? 1e6 : v)),
    clean.shape,
    clean.affine,
  );
  const ro = intensitiesForInference(outliers, cohort.floor);
  assertEquals(ro.mode, "as-training");
  const out = normalizeIntensity(ro.volume).data;
  assert(maxDiff(out, reference, hot) < 0.02, `${maxDiff(out, reference, hot)}`);
  assert([...hot].every((n) => out[n] === 1));
  // a few negative voxels (< 1 %) keep the training path and are named
  const neg = makeVolume(
    Float32Array.from(clean.data, (v, n) => (n === brain[0] ? -5 : v)),
    clean.shape,
    clean.affine,
  );
  const p = intensityProfile(neg);
  const rn = intensitiesForInference(neg, cohort.floor, p);
  assertEquals(rn.mode, "as-training");
  assert(intensityWarnings(p, rn.mode, cohort).some((w) => w.includes("below 0 and read as background")));
});

Deno.test("intensities: not skull-stripped, noisy, or unlike the cohort: a warning line names it", () => {
  const warningsOf = (v: Volume<Float32Array>) => {
    const p = intensityProfile(v);
    return intensityWarnings(p, intensitiesForInference(v, cohort.floor, p).mode, cohort);
  };
  const [n] = clean.shape;
  // a bright neck-and-scalp region across the lower third of the field of view
  const head = Float32Array.from(
    clean.data,
    (v, p) => (v === 0 && Math.floor(p / (n * n)) < n / 3 ? 0.8 : v),
  );
  const h = warningsOf(makeVolume(head, clean.shape, clean.affine));
  assert(h.some((w) => w.includes("looks not skull-stripped")), `${h}`);
  // a noisy background: no one value covers the border
  const random = rng(4);
  const noisy = Float32Array.from(clean.data, (v) => (v === 0 ? 0.02 * random() : v));
  const nz = warningsOf(makeVolume(noisy, clean.shape, clean.affine));
  assert(nz.some((w) => w.includes("no constant background")), `${nz}`);
  // a small brain in a large field of view, at 1 mm: foreground fraction and voxel size
  const small = phantom(32, 1);
  const padded = new Float32Array(64 ** 3);
  for (let k = 0; k < 32; k++) {
    for (let j = 0; j < 32; j++) {
      for (let i = 0; i < 32; i++) {
        padded[(i + 16) + 64 * ((j + 16) + 64 * (k + 16))] = small.data[i + 32 * (j + 32 * k)];
      }
    }
  }
  const s = warningsOf(makeVolume(padded, [64, 64, 64], scaleAffine([1, 1, 1])));
  assert(s.some((w) => w.includes("fills") && w.includes("of the field of view")), `${s}`);
  assert(s.some((w) => w.includes("mm voxels (the input is resampled")), `${s}`);
  // a dark tail: a quarter of the brain near 0
  const dark = Float32Array.from(clean.data, (v, p) => (v > 0 && p % 4 === 0 ? 0.001 : v));
  const d = warningsOf(makeVolume(dark, clean.shape, clean.affine));
  assert(d.some((w) => w.includes("0.5th percentile")), `${d}`);
});

Deno.test("segment on a quick run: mask, montage, volumes, probabilities, a DICOM input; outputs refused without --force", async () => {
  const out = await Deno.makeTempDir();
  try {
    const runDir = await runTraining({
      profile: "quick",
      seed: 0,
      out,
      name: "seg",
      phase: "all",
      epochs: 1,
      progress: false,
    });
    const input = "data/generated/quick/tissue/sub-03_1.5T.nii.gz";
    const output = join(out, "labels.nii.gz");
    const warnings: string[] = [];
    const { outputs } = await segmentFile(input, output, runDir, undefined, {
      probabilities: true,
      warn: (l) => warnings.push(l),
    });
    // a cohort scan is nothing unusual
    assertEquals(warnings, []);
    const base = join(out, "labels");
    const expected = [
      "",
      "_lut.txt",
      "_lut.json",
      "_mask.nii.gz",
      "_montage.png",
      "_volumes.csv",
      "_probabilities.nii.gz",
    ]
      .map((s) => (s ? `${base}${s}` : output));
    assertEquals(outputs.sort(), expected.sort());
    for (const f of expected) assert(existsSync(f), `missing ${f}`);
    const [image, labels, mask] = [
      await readNifti(input),
      await readNifti(output),
      await readNifti(`${base}_mask.nii.gz`),
    ];
    assertEquals(mask.shape, image.shape);
    assertEquals(mask.affine, image.affine);
    assertEquals(Array.from(mask.data), Array.from(image.data, (v) => (v > 0 ? 1 : 0)));
    // volumes: voxels counted from the label map, mL = voxels x the voxel volume (6 mm)^3
    const rows = (await Deno.readTextFile(`${base}_volumes.csv`)).trim().split("\n");
    assertEquals(rows[0], "label,name,voxels,mL");
    assertEquals(rows.length, 1 + TISSUE_CLASSES.length);
    rows.slice(1).forEach((row, l) => {
      const [id, name, voxels, ml] = row.split(",");
      assertEquals([Number(id), name], [l, TISSUE_CLASSES[l]]);
      assertEquals(Number(voxels), labels.data.filter((v) => v === l).length);
      assert(Math.abs(Number(ml) - Number(voxels) * 216 / 1000) < 1e-6, row);
    });
    assert(rows.slice(2).some((r) => Number(r.split(",")[2]) > 0), "some tissue is labelled");
    // probabilities: 4D, one volume per class on the input grid, summing to 1, argmax ~ labels
    const raw = await Deno.readFile(`${base}_probabilities.nii.gz`);
    const buf = nifti.decompress(raw.buffer as ArrayBuffer) as ArrayBuffer;
    const header = nifti.readHeader(buf) as nifti.NIFTI1;
    assertEquals(header.dims.slice(0, 5), [4, ...image.shape, TISSUE_CLASSES.length]);
    assertEquals(header.datatypeCode, 16);
    const probs = new Float32Array(nifti.readImage(header, buf));
    const nvox = image.data.length;
    let worstSum = 0, agree = 0;
    for (let p = 0; p < nvox; p++) {
      let sum = 0, arg = 0;
      for (let c = 0; c < TISSUE_CLASSES.length; c++) {
        const v = probs[c * nvox + p];
        assert(v >= 0 && v <= 1 + 1e-6);
        sum += v;
        if (v > probs[arg * nvox + p]) arg = c;
      }
      worstSum = Math.max(worstSum, Math.abs(sum - 1));
      if (arg === labels.data[p]) agree++;
    }
    assert(worstSum < 1e-5, `probabilities sum to 1 within ${worstSum}`);
    assert(agree / nvox > 0.9, `argmax of the probabilities agrees with the labels on ${agree / nvox}`);
    const png = await decodePng(await Deno.readFile(`${base}_montage.png`));
    assert(png.width > 300 && png.height > 150 && !isBlank(png), `montage ${png.width}x${png.height}`);
    // every output is refused when it exists, unless --force (here the labels are gone, the LUT is not)
    await Deno.remove(output);
    const refused = await assertRejects(() => segmentFile(input, output, runDir), UsageError);
    assert(refused.message.includes("_lut.txt: exists; pass --force"), refused.message);
    assert(!existsSync(output));
    await segmentFile(input, output, runDir, undefined, { force: true, warn: () => {} });

    // a skull-stripped scan is segmented as it is, said in one line
    const info: string[] = [];
    const asIs = await segmentFile(input, join(out, "as-is.nii.gz"), runDir, undefined, {
      warn: () => {},
      info: (l) => info.push(l),
    });
    assertEquals(asIs.brainExtraction, "input");
    assertEquals(info.filter((l) => l.startsWith("brain extraction:")).length, 1);
    // a full-head scan (the quick heads cohort's test scan) is not: the run's brain-mask network
    // extracts the brain; nothing outside the mask it used is labelled
    const head = "data/generated/quick/heads/sub-04_3T.nii.gz";
    const headOut = join(out, "head.nii.gz");
    const viaNetwork = await segmentFile(head, headOut, runDir, undefined, {
      warn: () => {},
      info: () => {},
    });
    assertEquals(viaNetwork.brainExtraction, "network");
    const headLabels = (await readNifti(headOut)).data;
    const headMask = (await readNifti(join(out, "head_mask.nii.gz"))).data;
    assert(headLabels.every((v, n) => v === 0 || headMask[n] === 1), "labels outside the brain mask");
    // --mask: the cohort's brain mask is used (the mask written lies inside it) ...
    const given = "data/generated/quick/heads/sub-04_brain.nii.gz";
    const viaFile = await segmentFile(head, join(out, "head-m.nii.gz"), runDir, undefined, {
      mask: given,
      warn: () => {},
      info: () => {},
    });
    assertEquals(viaFile.brainExtraction, "mask-file");
    const givenMask = (await readNifti(given)).data;
    const usedMask = (await readNifti(join(out, "head-m_mask.nii.gz"))).data;
    assert(usedMask.some((v) => v) && usedMask.every((v, n) => !v || givenMask[n]), "the mask used");
    // ... a mask on another grid is refused, naming it; so are --mask with --no-brain-extraction
    const wrong = await assertRejects(
      () => segmentFile(head, join(out, "x.nii.gz"), runDir, undefined, { mask: input }),
      UsageError,
    );
    assert(wrong.message.startsWith(`--mask ${input}: its grid`), wrong.message);
    await assertRejects(
      () =>
        segmentFile(head, join(out, "x.nii.gz"), runDir, undefined, { mask: given, brainExtraction: false }),
      UsageError,
      "--no-brain-extraction",
    );
    const off = await segmentFile(head, join(out, "head-off.nii.gz"), runDir, undefined, {
      brainExtraction: false,
      warn: () => {},
      info: () => {},
    });
    assertEquals(off.brainExtraction, "off");

    // the scan z-scored within the brain: named in a warning, brought back to the cohort's range,
    // labelled (nearly) as the original
    const fg = Array.from(image.data).filter((v) => v > 0);
    const mean = fg.reduce((a, b) => a + b, 0) / fg.length;
    const sd = Math.sqrt(fg.reduce((a, b) => a + (b - mean) ** 2, 0) / fg.length);
    const zInput = join(out, "z.nii.gz");
    await writeNifti(
      zInput,
      makeVolume(
        Float32Array.from(image.data, (v) => (v > 0 ? (v - mean) / sd : 0)),
        image.shape,
        image.affine,
      ),
    );
    const zWarnings: string[] = [];
    await segmentFile(zInput, join(out, "z-labels.nii.gz"), runDir, undefined, {
      warn: (l) => zWarnings.push(l),
    });
    assert(zWarnings.some((w) => w.includes("z-scored or shifted")), `${zWarnings}`);
    const zLabels = (await readNifti(join(out, "z-labels.nii.gz"))).data;
    const same = zLabels.filter((v, n) => v === labels.data[n]).length / nvox;
    assert(same > 0.9, `z-scored labels agree with the original's on ${same}`);
    assertEquals(
      Array.from((await readNifti(join(out, "z-labels_mask.nii.gz"))).data),
      Array.from(mask.data),
    );

    // the same scan as a DICOM folder (stored x 10000, RescaleSlope 1e-4): the converted input is
    // written, every output lies on its grid, and the labels equal those of segmenting that NIfTI
    const [nx, ny, nz] = image.shape;
    const dicomDir = join(out, "dicom");
    await writeSeries(
      dicomDir,
      {
        uid: "1.2.826.0.1.3680043.2.1125.77",
        description: "phantom T1",
        rows: ny,
        cols: nx,
        slices: nz,
        iop: [1, 0, 0, 0, 1, 0],
        origin: [-90, -100, -80],
        pixelSpacing: [6, 6],
        sliceSpacing: 6,
        slope: 1e-4,
      },
      (k) => Int16Array.from({ length: nx * ny }, (_, p) => Math.round(image.data[p + nx * ny * k] * 10000)),
    );
    const dOut = join(out, "dicom-labels.nii.gz");
    const d = await segmentFile(dicomDir, dOut, runDir, undefined, { warn: () => {} });
    const converted = join(out, "dicom-labels_input.nii.gz");
    assert(d.outputs.includes(converted));
    const [conv, fromDicom, dLabels] = [
      await readNifti(converted),
      await readDicomSeries(dicomDir),
      await readNifti(dOut),
    ];
    assertEquals(conv.shape, fromDicom.shape);
    assertEquals(
      conv.affine.flat().map((v) => +v.toFixed(4)),
      fromDicom.affine.flat().map((v) => +v.toFixed(4)),
    );
    assertEquals(dLabels.shape, conv.shape);
    assertEquals(dLabels.affine, conv.affine);
    assertEquals((await readNifti(join(out, "dicom-labels_mask.nii.gz"))).shape, conv.shape);
    const nOut = join(out, "converted-labels.nii.gz");
    await segmentFile(converted, nOut, runDir, undefined, { warn: () => {} });
    assertEquals(Array.from((await readNifti(nOut)).data), Array.from(dLabels.data));
    // --series names a series of a folder only
    await assertRejects(
      () => segmentFile(input, join(out, "x.nii.gz"), runDir, undefined, { series: "1.2" }),
      UsageError,
    );
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});
