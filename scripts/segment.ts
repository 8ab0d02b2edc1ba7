/**
 * `deno task segment <in.nii.gz | DICOM folder> <out.nii.gz> [--run runs/<name>] [--task tissue|wholebrain]`:
 * segmentation of a new low-field T1 with a trained run. A DICOM folder is read with
 * `lib/io/dicom.ts` (one series, or `--series UID`) and also written as `<out>_input.nii.gz`.
 * Intensities are brought to what training saw (`intensitiesForInference`: a positive scan on a
 * zero background is used as it is, a z-scored or shifted one has its brain's percentiles mapped
 * to the cohort's range), with a warning line for anything unlike the run's cohort. The input is
 * reoriented to RAS+, resampled to the run's voxel spacing on a grid padded to multiples of 16,
 * normalised to [0, 1] as in training; the frozen KKN gives the 7T-like features, the AFM-guided
 * segmenter the labels (tissue: 0 background, 1 CSF, 2 GM, 3 WM; wholebrain: the 27 structures,
 * each view's guided 2D network and KKN, the views aggregated as the run did), which are
 * resampled (nearest) back onto the input's own grid and affine. Beside the labels: the lookup
 * table (`<out>_lut.txt`, `<out>_lut.json`), the brain mask used (`<out>_mask.nii.gz`), a
 * three-view montage (`<out>_montage.png`), the volume per label (`<out>_volumes.csv`) and, with
 * `--probabilities`, the class probabilities (`<out>_probabilities.nii.gz`, 4D).
 */
import * as tf from "@tensorflow/tfjs-core";
import { existsSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import { type CommandSpec, runCommand, UsageError } from "../lib/cli.ts";
import { backendOption, initBackend } from "../lib/backend.ts";
import { encodeNifti, readNifti, requireVolume3D, writeNifti, zeroNonFinite } from "../lib/io/nifti.ts";
import { type DicomVolume, looksLikeDicomFolder, readDicomSeries } from "../lib/io/dicom.ts";
import { readJsonFile } from "../lib/io/json.ts";
import { foregroundBox, permuteFlip, resampleToGrid, toCanonical } from "../lib/volume/geometry.ts";
import { type Affine, affineDeterminant, type Vec3 } from "../lib/volume/affine.ts";
import { drawSlice, encodePng, newImage, slice, type View } from "../lib/viz/png.ts";
import { makeVolume, sameGrid, toFloat32, type Volume } from "../lib/volume/volume.ts";
import { DimensionError } from "../lib/io/errors.ts";
import {
  type CohortIntensity,
  commonGrid,
  DEFAULT_FOREGROUND_FLOOR,
  foregroundFloor,
  intensitiesForInference,
  type IntensityProfile,
  intensityProfile,
  intensityWarnings,
  normalizeIntensity,
} from "../lib/data/preprocess.ts";
import { writeFileAtomic } from "../lib/io/nifti.ts";
import { loadGuided, readOnlyContext, type RunConfig, withDefaults } from "../lib/train/pipeline.ts";
import { isSliceNetwork, WholeBrainModels } from "../lib/train/wholebrain.ts";
import { BRAIN_MASK_CHECKPOINT, cleanBrainMask, loadBrainMask } from "../lib/train/brainmask.ts";
import { VIEWS } from "../lib/data/views.ts";
import {
  freeSurferLut,
  lutJson,
  STRUCTURE_COLOURS,
  STRUCTURES,
  TISSUE_CLASSES,
} from "../lib/phantom/labels.ts";

export const SEGMENT_COMMAND: CommandSpec = {
  name: "deno task segment",
  summary: "segment CSF/GM/WM in a low-field T1 with a trained run (KKN + the run's AFM-guided network)",
  usage: "deno task segment <in.nii.gz | DICOM folder> <out.nii.gz> [--run runs/<name>] " +
    "[--task tissue|wholebrain] [--series UID] [--probabilities] [--backend NAME] [--force]",
  options: [
    { name: "run", description: "a finished `deno task train` run folder", default: "runs/default" },
    {
      name: "task",
      description:
        "tissue (CSF/GM/WM, the run's phase 3) or wholebrain (27 structures, the run's --phase wholebrain)",
      choices: ["tissue", "wholebrain"],
      default: "tissue",
    },
    backendOption(),
    {
      name: "spacing",
      description: "voxel size (mm) of the model grid (default: the run's cohort spacing)",
      type: "number",
    },
    { name: "series", description: "the SeriesInstanceUID to read when a DICOM folder holds several" },
    {
      name: "mask",
      description:
        "a brain mask (NIfTI on the input's grid, non-zero = brain) to use instead of brain extraction",
    },
    {
      name: "no-brain-extraction",
      description:
        "segment the input as it is, even when it does not look skull-stripped (default: brain extraction with the run's brain-mask network when the input has skull and scalp)",
      type: "boolean",
      default: false,
    },
    {
      name: "probabilities",
      description: "also write the class probabilities as a 4D NIfTI (<out>_probabilities.nii.gz)",
      type: "boolean",
      default: false,
    },
    { name: "force", description: "replace existing output files", type: "boolean", default: false },
  ],
};

/**
 * Checks the output path before anything is computed: a `.nii`/`.nii.gz` name, not the input
 * itself, in an existing writable folder, and neither it nor any of `others` (the files written
 * beside it) an existing file unless `force`.
 */
export async function checkOutputPath(
  input: string,
  output: string,
  force: boolean,
  others: string[] = [],
): Promise<void> {
  if (!/\.nii(\.gz)?$/.test(output)) {
    throw new UsageError(`${output}: the output name must end in .nii or .nii.gz`);
  }
  const real = async (p: string) => {
    try {
      return await Deno.realPath(p);
    } catch {
      return resolve(p);
    }
  };
  if ((await real(input)) === (await real(output))) {
    throw new UsageError(`${output}: is the input image; choose another output name`);
  }
  const dir = dirname(resolve(output));
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(dir);
  } catch {
    throw new UsageError(`${output}: the folder ${dir} does not exist`);
  }
  if (!info.isDirectory) throw new UsageError(`${output}: ${dir} is not a folder`);
  try {
    await Deno.remove(await Deno.makeTempFile({ dir, prefix: ".write-test-" }));
  } catch (err) {
    throw new UsageError(`${output}: the folder ${dir} is not writable (${(err as Error).message})`);
  }
  for (const path of [output, ...others]) {
    if (existsSync(path) && !force) throw new UsageError(`${path}: exists; pass --force to replace it`);
  }
}

/** Voxels of the model grid, at most (a 512^3 grid; inference needs about 1 KiB a voxel). */
export const MAX_GRID_VOXELS = 512 ** 3;

/**
 * Refuses a model grid that cannot hold the image: fewer than 8 voxels of `spacing` across the
 * field of view along an axis (nothing left to segment), or more than `MAX_GRID_VOXELS`.
 */
function checkModelGrid(input: string, vol: Volume, spacing: number, fromOption: boolean): void {
  const fov = vol.shape.map((n, d) => n * vol.spacing[d]);
  const voxels = fov.map((f) => Math.ceil(f / spacing));
  const where = fromOption ? `--spacing ${spacing}` : `the run's ${spacing} mm grid`;
  const fovText = fov.map((f) => f.toPrecision(3)).join(" x ");
  if (voxels.some((n) => n < 8)) {
    throw new DimensionError(
      input,
      `its ${fovText} mm field of view is fewer than 8 voxels across at ${where} (voxel sizes ${
        vol.spacing.map((s) => s.toPrecision(3)).join(", ")
      } mm in the header)`,
    );
  }
  const total = voxels.reduce((a, b) => a * b, 1);
  if (total > MAX_GRID_VOXELS) {
    throw new DimensionError(
      input,
      `its ${fovText} mm field of view needs ${voxels.join(" x ")} voxels at ${where}, more than ` +
        `the ${MAX_GRID_VOXELS} this command handles (voxel sizes ${
          vol.spacing.map((s) => s.toPrecision(3)).join(", ")
        } mm in the header)`,
    );
  }
}

/** What `segmentFile` can be asked for beyond the labels. */
export interface SegmentOptions {
  /** Replace existing outputs. */
  force?: boolean;
  task?: "tissue" | "wholebrain";
  /** A DICOM folder's SeriesInstanceUID to read (a folder with several series needs one). */
  series?: string;
  /** Also write the class probabilities (`<out>_probabilities.nii.gz`). */
  probabilities?: boolean;
  /** A brain mask on the input's grid (non-zero = brain), used instead of brain extraction. */
  mask?: string;
  /** false: never extract the brain (default: when the input does not look skull-stripped). */
  brainExtraction?: boolean;
  /** Where warning lines go (default: standard error). */
  warn?: (line: string) => void;
  /** Where information lines go (default: standard output). */
  info?: (line: string) => void;
}

/** How `segmentFile` decided about brain extraction. */
export type BrainExtraction = "input" | "mask-file" | "network" | "off";

/**
 * Whether a scan looks brain-extracted: one value (its background) covers at least half of the
 * field of view's border, at most 2 % of the border is bright (a fifth of the foreground's range
 * above that background) and at most 10 % of the foreground is dark (within 5 % of that range
 * of the background; not asked of a scan with values below 0, z-scored). A full-head scan has noisy air (dark foreground; at the border too unless
 * it was zero-padded) and scalp at the border; a skull-stripped brain's darkest voxels are its
 * partial-volume edge.
 */
export function looksBrainExtracted(p: IntensityProfile): boolean {
  // (a z-scored brain has half its voxels about as far from the background as noisy air would be)
  const dark = p.negativeFraction > 0.01 ? 0 : p.darkFraction;
  return p.background !== null && p.brightBorderFraction <= 0.02 && dark <= 0.1;
}

/** Why `looksBrainExtracted` said no, in words. */
function notExtractedBecause(p: IntensityProfile): string {
  if (p.background === null) return "no constant background on its border";
  if (p.brightBorderFraction > 0.02) {
    return `${(100 * p.brightBorderFraction).toFixed(1)} % of its border is bright`;
  }
  return `${(100 * p.darkFraction).toFixed(0)} % of its non-background voxels are as dark as air`;
}

/** The files `segmentFile` writes for `output` (base name: `output` without `.nii`/`.nii.gz`). */
export function segmentOutputs(
  output: string,
  { dicom = false, probabilities = false }: { dicom?: boolean; probabilities?: boolean } = {},
): {
  labels: string;
  lut: string;
  lutJson: string;
  mask: string;
  montage: string;
  volumes: string;
  probabilities?: string;
  input?: string;
} {
  const base = output.replace(/\.nii(\.gz)?$/, "");
  return {
    labels: output,
    lut: `${base}_lut.txt`,
    lutJson: `${base}_lut.json`,
    mask: `${base}_mask.nii.gz`,
    montage: `${base}_montage.png`,
    volumes: `${base}_volumes.csv`,
    ...(probabilities ? { probabilities: `${base}_probabilities.nii.gz` } : {}),
    ...(dicom ? { input: `${base}_input.nii.gz` } : {}),
  };
}

/**
 * The run's cohort as its models saw it: foreground fraction, foreground range and voxel size,
 * means over (up to four of) the training scans of the cohort `data.json` names; null, with the
 * reason, when that cohort is not here.
 */
async function runCohortIntensity(
  runDir: string,
  task: "tissue" | "wholebrain",
): Promise<{ cohort: CohortIntensity | null; why?: string }> {
  const dataPath = join(runDir, "data.json");
  if (!existsSync(dataPath)) return { cohort: null, why: `${dataPath} is missing` };
  const { data } = await readJsonFile<{ data?: string }>(dataPath, "the run's data record");
  const manifestPath = join(data ?? "", task, "manifest.json");
  if (!data || !existsSync(manifestPath)) {
    return { cohort: null, why: `the run's cohort ${data ? join(data, task) : "(unnamed)"} is not here` };
  }
  const manifest = await readJsonFile<{ scans: { split: string; files: Record<string, string> }[] }>(
    manifestPath,
    "the cohort manifest",
  );
  const scans = manifest.scans.filter((s) => s.split === "train" && s.files["1.5T"]).slice(0, 4);
  if (!scans.length) return { cohort: null, why: `${manifestPath} lists no training scan` };
  let fraction = 0, floor = 0, spacing = 0;
  for (const s of scans) {
    const v = await readNifti(join(data, task, s.files["1.5T"]));
    const p = intensityProfile(v);
    fraction += p.foregroundFraction / scans.length;
    floor += foregroundFloor(v) / scans.length;
    spacing += v.spacing[0] / scans.length;
  }
  return { cohort: { foregroundFraction: fraction, floor, spacing: +spacing.toPrecision(4) } };
}

/**
 * Segments one scan (a NIfTI file or a DICOM folder) with a trained run and writes, beside
 * `output`: the labels, the lookup table (`_lut.txt`, `_lut.json`), the brain mask used
 * (`_mask.nii.gz`), a three-view montage (`_montage.png`), the volume per label
 * (`_volumes.csv`), with `probabilities` the class probabilities (`_probabilities.nii.gz`, 4D)
 * and for a DICOM input the converted scan (`_input.nii.gz`); every file on the input's grid,
 * every file written atomically. Returns the paths written and the warning lines printed.
 */
export async function segmentFile(
  input: string,
  output: string,
  runDir: string,
  spacingOpt?: number,
  {
    force = false,
    task = "tissue",
    series,
    probabilities = false,
    mask: maskFile,
    brainExtraction = true,
    warn,
    info = console.log,
  }: SegmentOptions = {},
): Promise<{ outputs: string[]; warnings: string[]; brainExtraction: BrainExtraction }> {
  if (spacingOpt !== undefined && !(Number.isFinite(spacingOpt) && spacingOpt > 0)) {
    throw new UsageError(`--spacing ${spacingOpt}: must be a positive number of millimetres`);
  }
  const warnings: string[] = [];
  const say = (line: string) => {
    warnings.push(line);
    (warn ?? ((l: string) => console.error(`warning: ${l}`)))(line);
  };
  // the input and the output first: a bad file or path is named before anything loads or runs
  const dicom = (await Deno.stat(input).catch(() => null))?.isDirectory === true;
  if (series !== undefined && !dicom) {
    throw new UsageError(
      `--series ${series}: ${input} is not a folder; --series picks a series of a DICOM folder`,
    );
  }
  let original: Volume;
  if (dicom) {
    if (!(await looksLikeDicomFolder(input))) {
      throw new UsageError(
        `${input}: is a folder without DICOM files; give a .nii/.nii.gz file or a DICOM folder`,
      );
    }
    original = await readDicomSeries(input, { series });
  } else original = await readNifti(input);
  requireVolume3D(original, input);
  if (maskFile !== undefined && !brainExtraction) {
    throw new UsageError("--mask and --no-brain-extraction: give one or the other");
  }
  const givenMask = maskFile === undefined ? null : await readMaskFile(maskFile, original);
  const paths = segmentOutputs(output, { dicom, probabilities });
  await checkOutputPath(input, output, force, Object.values(paths).filter((p) => p !== output));
  const cfgPath = join(runDir, "config.json");
  if (!existsSync(cfgPath)) {
    throw new UsageError(`--run ${runDir}: no config.json (not a finished training run)`);
  }
  const written = await readJsonFile<RunConfig>(cfgPath, "the run's configuration");
  const cfg = withDefaults(written, written.profile, written.seed);
  const wholebrain = task === "wholebrain";
  const needed = wholebrain
    ? (!isSliceNetwork(cfg)
      ? ["keeper-fold1-best.json", "wholebrain-guided-best.json"]
      : VIEWS.flatMap((v) => [`${v}-keeper-fold1-best.json`, `${v}-guided-best.json`]))
    : ["keeper-fold1-best.json", "guided-best.json"];
  for (const f of needed) {
    if (!existsSync(join(runDir, "checkpoints", f))) {
      throw new UsageError(
        `--run ${runDir}: checkpoints/${f} missing (${
          wholebrain ? "run deno task train --phase wholebrain" : "run all phases of deno task train"
        } first)`,
      );
    }
  }
  const metricsPath = join(runDir, "metrics.json");
  const spacing = spacingOpt ??
    ((await readJsonFile<{ spacing?: number }>(metricsPath, "the run's metrics")).spacing ?? 3);
  if (paths.input) {
    await writeNifti(
      paths.input,
      original,
      `DICOM series ${(original as DicomVolume).series.uid}`.slice(0, 79),
    );
  }
  let image = toFloat32(original); // a copy
  const replaced = zeroNonFinite(image.data);
  if (replaced) say(`${input}: ${replaced} NaN or infinite voxels read as 0`);
  // brain extraction: a given mask, the input as it is (skull-stripped already, or told so), or
  // the run's brain-mask network
  let extraction: BrainExtraction;
  let brain: Volume<Uint8Array> | null = givenMask;
  const raw = intensityProfile(image);
  if (givenMask) {
    extraction = "mask-file";
    info(`brain extraction: the mask ${maskFile} (${maskMl(givenMask)} mL)`);
  } else if (!brainExtraction) {
    extraction = "off";
    info("brain extraction: off (--no-brain-extraction), the input is segmented as it is");
  } else if (looksBrainExtracted(raw)) {
    extraction = "input";
    info(
      `brain extraction: none, the input looks skull-stripped (a constant background of ${raw.background} ` +
        `on the field-of-view border; --mask FILE gives a mask instead)`,
    );
  } else {
    extraction = "network";
    brain = await extractBrain(image, runDir, cfg, input);
    info(
      `brain extraction: the input looks not skull-stripped (${
        notExtractedBecause(raw)
      }), so ${runDir}'s brain-mask network found ${maskMl(brain)} mL of brain (--mask FILE or ` +
        `--no-brain-extraction to override)`,
    );
  }
  if (brain) image = applyMask(image, brain, raw.background ?? 0);
  // intensities as training saw them (see intensitiesForInference), checked against the cohort
  const { cohort, why } = await runCohortIntensity(runDir, task);
  if (!cohort) say(`${input}: ${why}: the input is not compared with the run's cohort`);
  // (measured again only when brain extraction changed the image)
  const profile = brain ? intensityProfile(image) : raw;
  const prepared = intensitiesForInference(image, cohort?.floor ?? DEFAULT_FOREGROUND_FLOOR, profile);
  if (!prepared.volume.data.some((v) => v > 0)) {
    throw new DimensionError(
      input,
      "has no voxel above 0: nothing to segment (an empty image, or intensities all <= 0)",
    );
  }
  const { grid, onGrid } = modelInput(prepared.volume, spacing, input, spacingOpt !== undefined);
  for (const line of intensityWarnings(profile, prepared.mode, cohort, foregroundFloor(onGrid))) {
    say(`${input}: ${line}`);
  }

  const [ni, nj, nk] = grid.shape;
  const names = wholebrain ? STRUCTURES : TISSUE_CLASSES;
  let data: Int16Array;
  let scores: Float32Array | undefined; // voxel-major, names.length per voxel, on the model grid
  if (wholebrain) {
    const models = new WholeBrainModels(readOnlyContext(cfg, runDir));
    const scan = {
      id: input,
      split: "test" as const,
      arrays: { "1.5T": onGrid.data as Float32Array },
      shape: [nk, nj, ni] as [number, number, number],
      reference: onGrid,
    };
    data = Int16Array.from(await models.labels(scan, "guided"));
    if (probabilities) {
      // the mean of the views' softmax (a 3D network's one prediction), renormalised below: the
      // sagittal view's score of a left/right pair stands on both of its labels
      for (const view of models.views) {
        const p = await models.probabilities(scan, "guided", view);
        scores ??= new Float32Array(p.length);
        for (let n = 0; n < p.length; n++) scores[n] += p[n] / models.views.length;
      }
    }
    models.dispose();
  } else {
    // the guided network rebuilt from the spec its checkpoint records, with the KKN it was trained with
    const { keeper: kkn, guided } = await loadGuided(cfg, join(runDir, "checkpoints"));
    const x = tf.tensor5d(onGrid.data, [1, nk, nj, ni, 1]);
    const logits = tf.tidy(() => guided.apply(x, kkn.apply(x)));
    const labels = tf.argMax(logits, 4);
    data = Int16Array.from((await labels.data()) as Int32Array);
    if (probabilities) {
      const soft = tf.softmax(logits);
      scores = (await soft.data()) as Float32Array;
      soft.dispose();
    }
    tf.dispose([x, logits, labels]);
    kkn.dispose();
    guided.dispose();
  }
  const onModelGrid = makeVolume(data, grid.shape, grid.affine);
  const back = resampleToGrid(onModelGrid, original.shape, original.affine, "nearest");
  // nothing outside the brain mask used is labelled (the grid's resampling can spill labels over
  // the brain's edge into the background)
  const labelVolume = makeVolume(
    Int16Array.from(back.data, (l, n) => (prepared.mask.data[n] ? l : 0)),
    original.shape,
    original.affine,
  );
  await writeNifti(output, labelVolume, wholebrain ? "27 structures" : "tissue labels");
  const colours = wholebrain ? STRUCTURE_COLOURS : TISSUE_COLOURS;
  await writeFileAtomic(paths.lut, freeSurferLut(names, colours));
  await writeFileAtomic(paths.lutJson, lutJson(names, colours));
  await writeNifti(paths.mask, prepared.mask, "brain mask: the input's non-background voxels");
  await writeFileAtomic(paths.volumes, labelVolumesCsv(labelVolume, names));
  await writeFileAtomic(
    paths.montage,
    await segmentationMontage(image, prepared.mask, labelVolume, wholebrain ? STRUCTURE_COLOURS : undefined),
  );
  if (paths.probabilities && scores) {
    await writeProbabilities(paths.probabilities, scores, names.length, grid, original, prepared.mask);
  }
  return { outputs: Object.values(paths), warnings, brainExtraction: extraction };
}

/**
 * A scan as the models read it: reoriented to RAS+, refused when the grid cannot hold it
 * (`checkModelGrid`), resampled onto the training grid's construction (its field of view at
 * `spacing`, padded, centred, to multiples of 16) and normalised as in training.
 */
function modelInput(
  image: Volume,
  spacing: number,
  input: string,
  fromOption: boolean,
): { grid: { shape: Vec3; affine: Affine }; onGrid: Volume<Float32Array> } {
  const { volume: canonical } = toCanonical(image);
  checkModelGrid(input, canonical, spacing, fromOption);
  const grid = commonGrid(canonical, spacing);
  const onGrid = normalizeIntensity(toFloat32(resampleToGrid(canonical, grid.shape, grid.affine, "linear")));
  return { grid, onGrid };
}

/** A `--mask` file as 0/1 labels on the input's grid (the same shape and affine, to 0.01 mm). */
async function readMaskFile(path: string, input: Volume): Promise<Volume<Uint8Array>> {
  const m = await readNifti(path);
  requireVolume3D(m, path);
  if (!sameGrid(m, input, 0.01)) {
    throw new UsageError(
      `--mask ${path}: its grid (${m.shape.join("x")}, affine ${
        JSON.stringify(m.affine.slice(0, 3))
      }) is not ` +
        `the input's (${input.shape.join("x")}, affine ${JSON.stringify(input.affine.slice(0, 3))})`,
    );
  }
  const data = Uint8Array.from(m.data, (x) => (x !== 0 && Number.isFinite(x) ? 1 : 0));
  if (!data.some((x) => x)) throw new UsageError(`--mask ${path}: has no non-zero voxel`);
  return makeVolume(data, m.shape, m.affine);
}

/** A mask's volume in mL, to 1 decimal. */
function maskMl(m: Volume<Uint8Array>): string {
  return (m.data.reduce((s, x) => s + x, 0) * Math.abs(affineDeterminant(m.affine)) / 1000).toFixed(1);
}

/** The image with everything outside `mask` set to `background`. */
function applyMask(
  v: Volume<Float32Array>,
  mask: Volume<Uint8Array>,
  background: number,
): Volume<Float32Array> {
  return makeVolume(v.data.map((x, n) => (mask.data[n] ? x : background)), v.shape, v.affine);
}

/**
 * The brain mask of a full-head scan on its own grid: the run's brain-mask network on the scan
 * reoriented to RAS+, resampled to the network's grid (the heads cohort's spacing, padded to
 * multiples of 16) and normalised as in training; its labels cleaned (`cleanBrainMask`) and
 * resampled (nearest) back.
 */
async function extractBrain(
  image: Volume<Float32Array>,
  runDir: string,
  cfg: RunConfig,
  input: string,
): Promise<Volume<Uint8Array>> {
  const checkpoint = join(runDir, "checkpoints", `${BRAIN_MASK_CHECKPOINT}.json`);
  if (!existsSync(checkpoint)) {
    throw new UsageError(
      `${input}: looks not skull-stripped, and --run ${runDir} has no brain-extraction network ` +
        `(checkpoints/${BRAIN_MASK_CHECKPOINT}); train it (deno task train --phase brainmask --name ` +
        `${basename(runDir)}), or pass --mask FILE, or --no-brain-extraction`,
    );
  }
  const { net, spacing } = await loadBrainMask(cfg, runDir);
  let raw: Int32Array;
  let grid: { shape: Vec3; affine: Affine };
  try {
    const model = modelInput(image, spacing, input, false);
    grid = model.grid;
    const [ni, nj, nk] = grid.shape;
    const x = tf.tensor5d(model.onGrid.data, [1, nk, nj, ni, 1]);
    const labels = tf.tidy(() => tf.argMax(net.apply(x), 4));
    raw = (await labels.data()) as Int32Array;
    tf.dispose([x, labels]);
  } finally {
    net.dispose();
  }
  const [ni, nj, nk] = grid.shape;
  const cleaned = makeVolume(cleanBrainMask(raw, [nk, nj, ni]), grid.shape, grid.affine);
  const back = resampleToGrid(cleaned, image.shape, image.affine, "nearest");
  return makeVolume(Uint8Array.from(back.data), image.shape, image.affine);
}

/**
 * The volume of every label: `label,name,voxels,mL`, one row per label of the scheme (0 rows
 * included), mL = voxels x the voxel volume of the label map's grid (|det| of its affine).
 */
export function labelVolumesCsv(labels: Volume, names: readonly string[]): string {
  const counts = new Float64Array(names.length);
  for (const l of labels.data) if (l >= 0 && l < names.length) counts[l]++;
  const voxelMm3 = Math.abs(affineDeterminant(labels.affine));
  const rows = names.map((name, l) =>
    `${l},${name},${counts[l]},${+(counts[l] * voxelMm3 / 1000).toFixed(6)}`
  );
  return ["label,name,voxels,mL", ...rows].join("\n") + "\n";
}

/**
 * One PNG page: the input (RAS+) in axial, coronal and sagittal rows of five slices each, spread
 * over the brain mask's extent, the labels blended on top (`colours` per label, else png.ts's
 * palette); grey window: the brain's 0.5th to 99.5th percentile.
 */
export async function segmentationMontage(
  image: Volume,
  mask: Volume,
  labels: Volume,
  colours?: readonly (readonly [number, number, number])[],
): Promise<Uint8Array> {
  const { volume: img, orientation } = toCanonical(image);
  const lab = permuteFlip(labels, orientation);
  const canonicalMask = permuteFlip(mask, orientation);
  const box = foregroundBox(canonicalMask, 0, 0);
  const brain = img.data.filter((_, n) => canonicalMask.data[n] > 0);
  const values = Float32Array.from(brain.length ? brain : img.data).sort();
  const lo = values[Math.floor(0.005 * (values.length - 1))],
    hi = values[Math.floor(0.995 * (values.length - 1))];
  const views: View[] = ["axial", "coronal", "sagittal"];
  const axisOf = { axial: 2, coronal: 1, sagittal: 0 } as const;
  const columns = 5;
  const mm = img.shape.map((n, d) => n * img.spacing[d]);
  const pixelMm = Math.max(...mm) / 180; // about 180 px across the largest side
  const zoom = Math.max(1, Math.round(Math.min(...img.spacing) / pixelMm));
  const cells = views.map((view) => {
    const probe = slice(img, view, 0);
    return { w: probe.width * zoom, h: Math.round(probe.height * zoom * probe.aspect) };
  });
  const cellW = Math.max(...cells.map((c) => c.w)) + 4, cellH = Math.max(...cells.map((c) => c.h)) + 4;
  const page = newImage(cellW * columns, cellH * views.length, 0);
  views.forEach((view, r) => {
    const d = axisOf[view];
    const from = box.start[d], to = box.end[d] - 1;
    for (let c = 0; c < columns; c++) {
      const index = Math.round(from + ((c + 1) / (columns + 1)) * (to - from));
      drawSlice(page, c * cellW + 2, r * cellH + 2, slice(img, view, index), {
        lo,
        hi: hi > lo ? hi : lo + 1,
        zoom,
        labels: slice(lab, view, index).values,
        alpha: 0.45,
        colours,
      });
    }
  });
  return await encodePng(page);
}

/**
 * Writes class probabilities (voxel-major on the model grid) as a 4D NIfTI on the input's grid:
 * renormalised to sum 1 per voxel, each class resampled (linear; outside the model grid background
 * 1), one float32 volume per class.
 */
async function writeProbabilities(
  path: string,
  scores: Float32Array,
  classes: number,
  grid: { shape: Vec3; affine: Affine },
  target: Volume,
  mask: Volume<Uint8Array>,
): Promise<void> {
  const voxels = scores.length / classes;
  for (let p = 0; p < voxels; p++) {
    let sum = 0;
    for (let c = 0; c < classes; c++) sum += scores[p * classes + c];
    for (let c = 0; c < classes; c++) {
      scores[p * classes + c] = sum > 0 ? scores[p * classes + c] / sum : c === 0 ? 1 : 0;
    }
  }
  const n = target.data.length;
  const volumes: Float32Array[] = [];
  for (let c = 0; c < classes; c++) {
    const channel = Float32Array.from({ length: voxels }, (_, p) => scores[p * classes + c]);
    const onInput = resampleToGrid(
      makeVolume(channel, grid.shape, grid.affine),
      target.shape,
      target.affine,
      "linear",
      c === 0 ? 1 : 0,
    );
    // outside the brain mask: background, as the labels
    volumes.push((onInput.data as Float32Array).map((v, n) => (mask.data[n] ? v : c === 0 ? 1 : 0)));
  }
  // a 3D header for the first class, made 4D (dim[0] = 4, dim[4] = classes), then every class's voxels
  const first = encodeNifti(makeVolume(volumes[0], target.shape, target.affine), "class probabilities");
  const bytes = new Uint8Array(352 + classes * n * 4);
  bytes.set(first.subarray(0, 352));
  const header = new DataView(bytes.buffer);
  header.setInt16(40, 4, true);
  header.setInt16(48, classes, true);
  header.setFloat32(92, 1, true); // pixdim[4]
  volumes.forEach((v, c) => bytes.set(new Uint8Array(v.buffer, v.byteOffset, v.byteLength), 352 + c * n * 4));
  const gz = new Uint8Array(
    await new Response(new Blob([bytes]).stream().pipeThrough(new CompressionStream("gzip"))).arrayBuffer(),
  );
  await writeFileAtomic(path, gz);
}

/** Tissue label colours (FreeSurfer's CSF, cortex and white matter colours). */
const TISSUE_COLOURS: [number, number, number][] = [[0, 0, 0], [60, 60, 60], [205, 62, 78], [245, 245, 245]];

if (import.meta.main) {
  await runCommand(SEGMENT_COMMAND, async (args) => {
    const [input, output] = args.positional;
    if (!input || !output || args.positional.length > 2) {
      throw new UsageError("expected exactly two arguments: <in.nii.gz | DICOM folder> <out.nii.gz>");
    }
    await initBackend(String(args.options.backend));
    const { outputs } = await segmentFile(
      input,
      output,
      String(args.options.run),
      args.options.spacing as number | undefined,
      {
        force: args.options.force === true,
        task: args.options.task as "tissue" | "wholebrain",
        series: args.options.series as string | undefined,
        probabilities: args.options.probabilities === true,
        mask: args.options.mask as string | undefined,
        brainExtraction: args.options["no-brain-extraction"] !== true,
      },
    );
    console.log(`written: ${outputs.join(", ")}`);
  }, { allowPositional: true });
}
