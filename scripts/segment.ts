/**
 * `deno task segment <in.nii.gz> <out.nii.gz> [--run runs/<name>] [--task tissue|wholebrain]`:
 * segmentation of a new low-field T1 with a trained run: the input is reoriented to RAS+,
 * resampled to the run's voxel spacing on a grid padded to multiples of 16, normalised to [0, 1]
 * as in training; the frozen KKN gives the 7T-like features, the AFM-guided segmenter the labels
 * (tissue: 0 background, 1 CSF, 2 GM, 3 WM; wholebrain: the 27 structures, each view's guided 2D
 * network and KKN, the views aggregated as the run did), which are resampled (nearest) back onto
 * the input's own grid and affine. The label names and colours go beside the output as a
 * FreeSurfer-style lookup table (`<out>_lut.txt`) and as JSON (`<out>_lut.json`).
 */
import * as tf from "@tensorflow/tfjs-core";
import { existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { type CommandSpec, runCommand, UsageError } from "../lib/cli.ts";
import { backendOption, initBackend } from "../lib/backend.ts";
import { readNifti, requireVolume3D, writeNifti, zeroNonFinite } from "../lib/io/nifti.ts";
import { readJsonFile } from "../lib/io/json.ts";
import { resampleToGrid, toCanonical } from "../lib/volume/geometry.ts";
import { makeVolume, toFloat32, type Volume } from "../lib/volume/volume.ts";
import { DimensionError } from "../lib/io/errors.ts";
import { commonGrid, normalizeIntensity } from "../lib/data/preprocess.ts";
import { writeFileAtomic } from "../lib/io/nifti.ts";
import { loadGuided, type RunConfig, withDefaults } from "../lib/train/pipeline.ts";
import { WholeBrainModels } from "../lib/train/wholebrain.ts";
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
  usage:
    "deno task segment <in.nii.gz> <out.nii.gz> [--run runs/<name>] [--task tissue|wholebrain] [--backend NAME] [--force]",
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
    { name: "force", description: "replace an existing output file", type: "boolean", default: false },
  ],
};

/**
 * Checks the output path before anything is computed: a `.nii`/`.nii.gz` name, not the input
 * itself, in an existing writable folder, and not an existing file unless `force`.
 */
export async function checkOutputPath(input: string, output: string, force: boolean): Promise<void> {
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
  if (existsSync(output) && !force) {
    throw new UsageError(`${output}: exists; pass --force to replace it`);
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

export async function segmentFile(
  input: string,
  output: string,
  runDir: string,
  spacingOpt?: number,
  { force = false, task = "tissue" }: { force?: boolean; task?: "tissue" | "wholebrain" } = {},
): Promise<void> {
  if (spacingOpt !== undefined && !(Number.isFinite(spacingOpt) && spacingOpt > 0)) {
    throw new UsageError(`--spacing ${spacingOpt}: must be a positive number of millimetres`);
  }
  // the input and the output first: a bad file or path is named before anything loads or runs
  const original = await readNifti(input);
  requireVolume3D(original, input);
  await checkOutputPath(input, output, force);
  const cfgPath = join(runDir, "config.json");
  if (!existsSync(cfgPath)) {
    throw new UsageError(`--run ${runDir}: no config.json (not a finished training run)`);
  }
  const written = await readJsonFile<RunConfig>(cfgPath, "the run's configuration");
  const cfg = withDefaults(written, written.profile, written.seed);
  const wholebrain = task === "wholebrain";
  const needed = wholebrain
    ? (new WholeBrainModels({ cfg, runDir, log: async () => {}, reports: [], allowUnconverged: true })
        .views[0] === null
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
  const image = toFloat32(original); // a copy
  const replaced = zeroNonFinite(image.data);
  if (replaced) console.error(`warning: ${input}: ${replaced} NaN or infinite voxels read as 0`);
  const positive = image.data.reduce((n, v) => n + (v > 0 ? 1 : 0), 0);
  if (positive === 0) {
    throw new DimensionError(
      input,
      "has no voxel above 0: nothing to segment (an empty image, or intensities all <= 0)",
    );
  }
  const negative = image.data.reduce((n, v) => n + (v < 0 ? 1 : 0), 0);
  if (negative) console.error(`warning: ${input}: ${negative} voxels below 0 read as background`);
  const { volume: canonical } = toCanonical(image);
  checkModelGrid(input, canonical, spacing, spacingOpt !== undefined);
  // the training grid's construction: the input's field of view at the run's spacing, padded
  // (centred) to multiples of 16
  const grid = commonGrid(canonical, spacing);
  const onGrid = normalizeIntensity(toFloat32(resampleToGrid(canonical, grid.shape, grid.affine, "linear")));

  const [ni, nj, nk] = grid.shape;
  let data: Int16Array;
  if (wholebrain) {
    const models = new WholeBrainModels({
      cfg,
      runDir,
      log: async () => {},
      reports: [],
      allowUnconverged: true,
    });
    const scan = {
      id: input,
      split: "test" as const,
      arrays: { "1.5T": onGrid.data as Float32Array },
      shape: [nk, nj, ni] as [number, number, number],
      reference: onGrid,
    };
    data = Int16Array.from(await models.labels(scan, "guided"));
    models.dispose();
  } else {
    // the guided network rebuilt from the spec its checkpoint records, with the KKN it was trained with
    const { keeper: kkn, guided } = await loadGuided(cfg, join(runDir, "checkpoints"));
    const x = tf.tensor5d(onGrid.data, [1, nk, nj, ni, 1]);
    const labels = tf.tidy(() => tf.argMax(guided.apply(x, kkn.apply(x)), 4));
    data = Int16Array.from((await labels.data()) as Int32Array);
    tf.dispose([x, labels]);
    kkn.dispose();
    guided.dispose();
  }
  const onModelGrid = makeVolume(data, grid.shape, grid.affine);
  const back = resampleToGrid(onModelGrid, original.shape, original.affine, "nearest");
  await writeNifti(
    output,
    makeVolume(Int16Array.from(back.data), original.shape, original.affine),
    wholebrain ? "27 structures" : "tissue labels",
  );
  const names = wholebrain ? STRUCTURES : TISSUE_CLASSES;
  const colours = wholebrain ? STRUCTURE_COLOURS : TISSUE_COLOURS;
  const base = output.replace(/\.nii(\.gz)?$/, "");
  await writeFileAtomic(`${base}_lut.txt`, freeSurferLut(names, colours));
  await writeFileAtomic(`${base}_lut.json`, lutJson(names, colours));
}

/** Tissue label colours (FreeSurfer's CSF, cortex and white matter colours). */
const TISSUE_COLOURS: [number, number, number][] = [[0, 0, 0], [60, 60, 60], [205, 62, 78], [245, 245, 245]];

if (import.meta.main) {
  await runCommand(SEGMENT_COMMAND, async (args) => {
    const [input, output] = args.positional;
    if (!input || !output || args.positional.length > 2) {
      throw new UsageError("expected exactly two arguments: <in.nii.gz> <out.nii.gz>");
    }
    await initBackend(String(args.options.backend));
    await segmentFile(input, output, String(args.options.run), args.options.spacing as number | undefined, {
      force: args.options.force === true,
      task: args.options.task as "tissue" | "wholebrain",
    });
    const base = output.replace(/\.nii(\.gz)?$/, "");
    console.log(
      `labels written to ${output}, their names and colours to ${base}_lut.txt and ${base}_lut.json`,
    );
  }, { allowPositional: true });
}
