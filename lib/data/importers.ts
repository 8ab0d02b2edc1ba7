/**
 * Importers of the paper's datasets into the cohort contract (`lib/data/cohort.ts`), behind
 * `deno task prep --dataset ibsr|malc|paired --from DIR [--out DIR]`:
 *
 * - `ibsr`: IBSR v2.0 (18 skull-stripped T1 volumes with CSF/GM/WM labels) -> a `tissue` cohort,
 *   CLAHE applied as the released code does, the paper's split by age (train 2, 4-9; validation
 *   1, 3, 18; test 10-17).
 * - `malc`: MICCAI 2012 multi-atlas challenge (MALC, 35 scans) -> a `wholebrain` cohort of the 27
 *   structures (`MALC_LABEL_IDS` in `lib/phantom/labels.ts`), the challenge's 15 training / 20
 *   testing scans, 5 of the training ones for validation (the released code's).
 * - `paired`: a folder of registered 3T/7T pairs (`<subject>/3T.nii.gz`, `<subject>/7T.nii.gz`,
 *   optionally `<subject>/tissue.nii.gz`) or a CSV of them -> a `paired` cohort with leave-one-out
 *   folds, 3T histogram-matched to 7T.
 *
 * Geometry, the same for every dataset: each file is reoriented to RAS+ (`toCanonical`); images
 * are blurred with a Gaussian before going to a coarser voxel (FWHM sqrt(new^2 - old^2) per axis)
 * and resampled trilinearly, labels by nearest neighbour. A cohort has one grid: isotropic
 * `spacing`, RAS+ axes, world origin at the grid's centre, each axis the largest brain extent of
 * the cohort's scans plus `margin` voxels on each side, rounded up to a multiple of 16 (the
 * networks' four poolings). Each scan is translated (never rotated or scaled) so that its brain's
 * bounding box (labels > 0; for pairs without labels, 3T above a tenth of its 99.5th percentile)
 * sits centred in the grid on whole voxels; the translation is recorded per scan (`params.shiftMm`:
 * the original world position is the grid's plus it). Scans are not registered to each other.
 */
import { existsSync } from "node:fs";
import { dirname, isAbsolute, join, relative, resolve } from "node:path";
import { UsageError } from "../cli.ts";
import { readNifti, writeFileAtomic, writeNifti } from "../io/nifti.ts";
import { sha256File } from "../io/hash.ts";
import { type Affine, applyAffine, type Vec3 } from "../volume/affine.ts";
import { axisCodes, foregroundBox, resampleToGrid, toCanonical } from "../volume/geometry.ts";
import { makeVolume, toFloat32, type Volume } from "../volume/volume.ts";
import { malcToStructure } from "../phantom/labels.ts";
import type { CohortManifest, CohortName, ScanRecord } from "./cohort.ts";
import { histogramMatch, normalizeIntensity } from "./preprocess.ts";
import { clahe, PAPER_CLAHE } from "./clahe.ts";

/** The datasets `importDataset` reads. */
export type DatasetName = "ibsr" | "malc" | "paired";

/** Recorded as `generatorVersion` ("importer <dataset> <version>") in every imported manifest. */
export const IMPORTER_VERSION = "1.0.0";

/** Voxel size (mm) of an import when `--spacing` is absent and the output has no paired cohort: the paper's 1 mm. */
export const DEFAULT_IMPORT_SPACING = 1;

/** Voxels of background kept around the largest brain of a cohort on each side (before rounding to 16). */
export const IMPORT_MARGIN = 2;

/** The cohort each dataset becomes. */
export const DATASET_COHORT: Record<DatasetName, Exclude<CohortName, "heads">> = {
  ibsr: "tissue",
  malc: "wholebrain",
  paired: "paired",
};

/** The paper's IBSR split by similar age distribution (P section 4.1.2; the released code's lists). */
export const IBSR_SPLIT = {
  train: [2, 4, 5, 6, 7, 8, 9],
  validation: [1, 3, 18],
  test: [10, 11, 12, 13, 14, 15, 16, 17],
} as const;

/**
 * The MICCAI 2012 challenge split of MALC: its 15 training scans (the released code validates on
 * 1012, 1013, 1014, 1015, 1017 and trains on the other 10) and 20 testing scans.
 */
export const MALC_SPLIT = {
  train: [1000, 1001, 1002, 1006, 1007, 1008, 1009, 1010, 1011, 1036],
  validation: [1012, 1013, 1014, 1015, 1017],
  test: [
    1003,
    1004,
    1005,
    1018,
    1019,
    1023,
    1024,
    1025,
    1038,
    1039,
    1101,
    1104,
    1107,
    1110,
    1113,
    1116,
    1119,
    1122,
    1125,
    1128,
  ],
} as const;

/** MALC scans that are second scans of a subject (5 of the 30 subjects were scanned twice). */
export const MALC_RETEST_IDS = [1023, 1024, 1025, 1038, 1039] as const;

/** One scan of a source dataset: its files (absolute paths) by cohort key, and its split. */
export interface SourceScan {
  id: string;
  subject: string;
  split: ScanRecord["split"];
  /** Intensity images by cohort key ("1.5T", "3T", "7T"). */
  images: Record<string, string>;
  /** Label maps by cohort key ("tissue", "structures"). */
  labels: Record<string, string>;
  params?: Record<string, unknown>;
}

const NIFTI = /\.nii(\.gz)?$/;
const SAFE_ID = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

/** `stem.nii.gz` or `stem.nii` in `dir`, whichever exists (`.nii.gz` first). */
function niftiIn(dir: string, stem: string): string | undefined {
  for (const ext of [".nii.gz", ".nii"]) if (existsSync(join(dir, stem + ext))) return join(dir, stem + ext);
  return undefined;
}

function entries(dir: string): Deno.DirEntry[] {
  return [...Deno.readDirSync(dir)].filter((e) => !e.name.startsWith("."))
    .sort((a, b) => a.name.localeCompare(b.name, "en", { numeric: true }));
}

function requireFolder(dir: string, expected: string): void {
  let info: Deno.FileInfo;
  try {
    info = Deno.statSync(dir);
  } catch {
    throw new UsageError(`--from ${dir}: no such folder; expected ${expected}`);
  }
  if (!info.isDirectory) throw new UsageError(`--from ${dir}: not a folder; expected ${expected}`);
}

function missing(dir: string, file: string, expected: string, hint = ""): UsageError {
  return new UsageError(`--from ${dir}: ${file} missing; expected ${expected}${hint}`);
}

function unexpected(dir: string, file: string, expected: string): UsageError {
  return new UsageError(`--from ${dir}: unexpected ${file}; expected ${expected}`);
}

/** The IBSR v2.0 layout (the NITRC NIfTI distribution's names). */
export const IBSR_PATTERN =
  "IBSR_XX/IBSR_XX_ana_strip.nii[.gz] and IBSR_XX/IBSR_XX_segTRI_fill_ana.nii[.gz] " +
  "(or IBSR_XX_segTRI_ana.nii[.gz]) for XX = 01..18";

/**
 * The 18 IBSR scans of `dir`: per subject XX = 01..18 the folder `IBSR_XX` with the skull-stripped
 * T1 `IBSR_XX_ana_strip.nii[.gz]` and the CSF/GM/WM labels `IBSR_XX_segTRI_fill_ana.nii[.gz]` (the
 * paper's: holes inside the brain filled with CSF) or, without it, `IBSR_XX_segTRI_ana.nii[.gz]`
 * (filled here: see `importDataset`). Other files in the subject folders are ignored; a top-level
 * `IBSR_*` entry that is not one of the 18 is refused.
 */
export function ibsrLayout(dir: string): SourceScan[] {
  requireFolder(dir, IBSR_PATTERN);
  const names = new Set(Array.from({ length: 18 }, (_, n) => `IBSR_${String(n + 1).padStart(2, "0")}`));
  for (const e of entries(dir)) {
    if (/^IBSR_\d+/i.test(e.name) && (!names.has(e.name) || !e.isDirectory)) {
      throw unexpected(dir, e.name, IBSR_PATTERN);
    }
  }
  const splitOf = (n: number): ScanRecord["split"] =>
    (IBSR_SPLIT.train as readonly number[]).includes(n)
      ? "train"
      : (IBSR_SPLIT.validation as readonly number[]).includes(n)
      ? "validation"
      : "test";
  return [...names].map((name, n) => {
    const sub = join(dir, name);
    const hint = n === 0 && existsSync(join(dir, "IBSR_nifti_stripped"))
      ? ` (the distribution's subjects are in ${join(dir, "IBSR_nifti_stripped")}: pass that as --from)`
      : "";
    if (!existsSync(sub)) throw missing(dir, `${name}/`, IBSR_PATTERN, hint);
    const image = niftiIn(sub, `${name}_ana_strip`);
    if (!image) throw missing(dir, `${name}/${name}_ana_strip.nii.gz`, IBSR_PATTERN);
    const filled = niftiIn(sub, `${name}_segTRI_fill_ana`);
    const labels = filled ?? niftiIn(sub, `${name}_segTRI_ana`);
    if (!labels) throw missing(dir, `${name}/${name}_segTRI_fill_ana.nii.gz`, IBSR_PATTERN);
    return {
      id: name,
      subject: name,
      split: splitOf(n + 1),
      images: { "1.5T": image },
      labels: { tissue: labels },
      params: { fillHoles: !filled },
    };
  });
}

/** The MALC layout (the MICCAI 2012 challenge's distribution). */
export const MALC_PATTERN =
  "training-images/<id>_3.nii[.gz], training-labels/<id>_3_glm.nii[.gz] for the 15 " +
  "training ids and testing-images/, testing-labels/ likewise for the 20 testing ids";

/**
 * The 35 MALC scans of `dir`: `training-images/<id>_3.nii` with `training-labels/<id>_3_glm.nii`
 * for the challenge's 15 training ids, `testing-images/`, `testing-labels/` for its 20 testing ids
 * (`.nii.gz` accepted too). Any other NIfTI in those folders is refused.
 */
export function malcLayout(dir: string): SourceScan[] {
  requireFolder(dir, MALC_PATTERN);
  const scans: SourceScan[] = [];
  for (const part of ["training", "testing"] as const) {
    const ids: number[] = part === "training"
      ? [...MALC_SPLIT.train, ...MALC_SPLIT.validation]
      : [...MALC_SPLIT.test];
    ids.sort((a, b) => a - b);
    for (const kind of ["images", "labels"] as const) {
      const folder = join(dir, `${part}-${kind}`);
      if (!existsSync(folder)) throw missing(dir, `${part}-${kind}/`, MALC_PATTERN);
      const allowed = new Set(ids.flatMap((id) => {
        const stem = kind === "images" ? `${id}_3` : `${id}_3_glm`;
        return [`${stem}.nii`, `${stem}.nii.gz`];
      }));
      for (const e of entries(folder)) {
        if (!allowed.has(e.name)) throw unexpected(dir, `${part}-${kind}/${e.name}`, MALC_PATTERN);
      }
    }
    for (const id of ids) {
      const image = niftiIn(join(dir, `${part}-images`), `${id}_3`);
      if (!image) throw missing(dir, `${part}-images/${id}_3.nii`, MALC_PATTERN);
      const labels = niftiIn(join(dir, `${part}-labels`), `${id}_3_glm`);
      if (!labels) throw missing(dir, `${part}-labels/${id}_3_glm.nii`, MALC_PATTERN);
      const split: ScanRecord["split"] = part === "testing"
        ? "test"
        : (MALC_SPLIT.validation as readonly number[]).includes(id)
        ? "validation"
        : "train";
      scans.push({
        id: String(id),
        subject: String(id),
        split,
        images: { "1.5T": image },
        labels: { structures: labels },
        params: { retest: (MALC_RETEST_IDS as readonly number[]).includes(id) },
      });
    }
  }
  return scans;
}

/** The paired folder layout. */
export const PAIRED_PATTERN = "one folder per subject holding 3T.nii[.gz] and 7T.nii[.gz] (and, for all " +
  "subjects or none, tissue.nii[.gz]), or --pairs FILE.csv with columns subject,3T,7T[,tissue]";

function pairedScans(rows: { subject: string; "3T": string; "7T": string; tissue?: string }[]): SourceScan[] {
  return rows.map((r): SourceScan => ({
    id: r.subject,
    subject: r.subject,
    split: "fold",
    images: { "3T": r["3T"], "7T": r["7T"] },
    labels: r.tissue ? { tissue: r.tissue } : {} as Record<string, string>,
  }));
}

function checkPairCount(where: string, n: number): void {
  if (n < 3) {
    throw new UsageError(
      `${where}: ${n} subject${
        n === 1 ? "" : "s"
      }; leave-one-out folds need at least 3 (one to test, one to validate, one to train)`,
    );
  }
}

/**
 * The registered 3T/7T pairs of `dir`: every subfolder is a subject (its name the subject id)
 * with `3T.nii[.gz]`, `7T.nii[.gz]` and optionally `tissue.nii[.gz]` (all subjects or none);
 * other NIfTI files, in a subject folder or at the top, are refused.
 */
export function pairedLayout(dir: string): SourceScan[] {
  requireFolder(dir, PAIRED_PATTERN);
  const subjects = entries(dir).filter((e) => {
    if (!e.isDirectory && NIFTI.test(e.name)) throw unexpected(dir, e.name, PAIRED_PATTERN);
    return e.isDirectory;
  }).map((e) => e.name);
  checkPairCount(`--from ${dir}`, subjects.length);
  const withTissue = subjects.some((s) => niftiIn(join(dir, s), "tissue"));
  const rows = subjects.map((subject) => {
    if (!SAFE_ID.test(subject)) {
      throw new UsageError(
        `--from ${dir}: subject folder "${subject}" is not a plain name (letters, digits, ".", "_", "-")`,
      );
    }
    const sub = join(dir, subject);
    for (const e of entries(sub)) {
      if (NIFTI.test(e.name) && !/^(3T|7T|tissue)\.nii(\.gz)?$/.test(e.name)) {
        throw unexpected(dir, `${subject}/${e.name}`, PAIRED_PATTERN);
      }
    }
    const file = (key: string) => {
      const f = niftiIn(sub, key);
      if (!f) throw missing(dir, `${subject}/${key}.nii.gz`, PAIRED_PATTERN);
      return f;
    };
    return { subject, "3T": file("3T"), "7T": file("7T"), tissue: withTissue ? file("tissue") : undefined };
  });
  return pairedScans(rows);
}

/**
 * The pairs listed by a CSV file: a header `subject,3T,7T` or `subject,3T,7T,tissue`, then one
 * line per subject; plain comma-separated values (no quoting), paths relative to the CSV's folder
 * unless absolute. Every listed file must exist.
 */
export function pairsCsv(csv: string): SourceScan[] {
  let text: string;
  try {
    text = Deno.readTextFileSync(csv);
  } catch (err) {
    throw new UsageError(`--pairs ${csv}: cannot read it (${(err as Error).message})`);
  }
  const lines = text.split(/\r?\n/).map((l, n) => ({ l: l.trim(), n: n + 1 })).filter((x) => x.l);
  const header = (lines[0]?.l ?? "").split(",").map((c) => c.trim());
  const columns = header.join(",");
  if (columns !== "subject,3T,7T" && columns !== "subject,3T,7T,tissue") {
    throw new UsageError(
      `--pairs ${csv}: header "${columns}"; expected subject,3T,7T or subject,3T,7T,tissue`,
    );
  }
  const base = dirname(resolve(csv));
  const seen = new Set<string>();
  const rows = lines.slice(1).map(({ l, n }) => {
    if (l.includes('"')) throw new UsageError(`--pairs ${csv}: line ${n}: quoted values are not supported`);
    const cells = l.split(",").map((c) => c.trim());
    if (cells.length !== header.length) {
      throw new UsageError(
        `--pairs ${csv}: line ${n} has ${cells.length} values; the header has ${header.length}`,
      );
    }
    const [subject, ...paths] = cells;
    if (!SAFE_ID.test(subject)) {
      throw new UsageError(
        `--pairs ${csv}: line ${n}: subject "${subject}" is not a plain name (letters, digits, ".", "_", "-")`,
      );
    }
    if (seen.has(subject)) throw new UsageError(`--pairs ${csv}: line ${n}: subject ${subject} listed twice`);
    seen.add(subject);
    const abs = paths.map((p, c) => {
      const path = isAbsolute(p) ? p : join(base, p);
      if (!existsSync(path)) {
        throw new UsageError(`--pairs ${csv}: line ${n}: ${header[c + 1]} file ${p} missing (${path})`);
      }
      return path;
    });
    return { subject, "3T": abs[0], "7T": abs[1], tissue: abs[2] };
  });
  checkPairCount(`--pairs ${csv}`, rows.length);
  return pairedScans(rows);
}

/** Options of `importDataset`. */
export interface ImportOptions {
  /** The dataset folder (for `paired`, optional when `pairs` is given). */
  from?: string;
  /** `paired`: a CSV of pairs instead of the folder layout. */
  pairs?: string;
  /** Output data folder: the cohort goes to `<out>/<cohort>/`. */
  out: string;
  /** Isotropic voxel size (mm); default: `<out>/paired`'s spacing for IBSR and MALC when it exists, else 1. */
  spacing?: number;
  /** Replace an existing `<out>/<cohort>`. */
  force?: boolean;
  /** IBSR CLAHE: regions per axis (default 5) and clip limit (default 0.2), the released code's. */
  claheTiles?: number;
  claheClip?: number;
  /** Background voxels kept on each side of the largest brain (default `IMPORT_MARGIN`). */
  margin?: number;
  log?: (line: string) => void;
}

/** What an import wrote. */
export interface ImportResult {
  dir: string;
  manifest: CohortManifest;
  /** Where the spacing came from ("--spacing", "<out>/paired", "default"). */
  spacingFrom: string;
}

/** The voxel size an import uses and where it came from (see `ImportOptions.spacing`). */
export async function importSpacing(
  dataset: DatasetName,
  out: string,
  spacing?: number,
): Promise<{ spacing: number; from: string }> {
  if (spacing !== undefined) {
    if (!(Number.isFinite(spacing) && spacing > 0)) {
      throw new UsageError(`--spacing: ${spacing} is not a positive voxel size in mm`);
    }
    return { spacing, from: "--spacing" };
  }
  const paired = join(out, "paired", "manifest.json");
  if (dataset !== "paired" && existsSync(paired)) {
    const s = JSON.parse(await Deno.readTextFile(paired))?.grid?.spacing;
    if (Number.isFinite(s) && s > 0) return { spacing: s, from: paired };
  }
  return { spacing: DEFAULT_IMPORT_SPACING, from: "default" };
}

/** Separable Gaussian blur with a standard deviation (voxels) per axis, edges replicated. */
function blurAxes(v: Volume<Float32Array>, sigma: Vec3): Volume<Float32Array> {
  let data = v.data;
  const strides = [1, v.shape[0], v.shape[0] * v.shape[1]];
  for (let axis = 0; axis < 3; axis++) {
    if (sigma[axis] < 0.2) continue;
    const radius = Math.ceil(3 * sigma[axis]);
    const kernel = Float64Array.from(
      { length: 2 * radius + 1 },
      (_, t) => Math.exp(-((t - radius) ** 2) / (2 * sigma[axis] ** 2)),
    );
    const ksum = kernel.reduce((a, b) => a + b, 0);
    const out = new Float32Array(data.length);
    const n = v.shape[axis], st = strides[axis];
    for (let p = 0; p < data.length; p++) {
      const pos = Math.floor(p / st) % n;
      let s = 0;
      for (let t = -radius; t <= radius; t++) {
        const q = Math.min(n - 1, Math.max(0, pos + t));
        s += kernel[t + radius] * data[p + (q - pos) * st];
      }
      out[p] = s / ksum;
    }
    data = out;
  }
  return makeVolume(data, v.shape, v.affine);
}

/** An image reoriented to RAS+, blurred for a coarser voxel, resampled onto a grid (trilinear). */
function imageOnGrid(v: Volume, shape: Vec3, affine: Affine, spacing: number): Volume<Float32Array> {
  const can = toFloat32(toCanonical(v).volume);
  const sigma = can.spacing.map((s) => Math.sqrt(Math.max(0, spacing * spacing - s * s)) / 2.355 / s) as Vec3;
  return resampleToGrid(blurAxes(can, sigma), shape, affine, "linear") as Volume<Float32Array>;
}

/** A label map reoriented to RAS+ and resampled onto a grid (nearest neighbour), as uint8 through `map`. */
function labelsOnGrid(
  v: Volume,
  shape: Vec3,
  affine: Affine,
  map: (id: number) => number,
): Volume<Uint8Array> {
  const r = resampleToGrid(toCanonical(v).volume, shape, affine, "nearest");
  return makeVolume(Uint8Array.from(r.data, map), shape, affine);
}

/** The 99.5th percentile of the non-zero voxels. */
function topOf(data: ArrayLike<number>): number {
  const nz = Array.from(data).filter((x) => x > 0).sort((a, b) => a - b);
  return nz.length ? nz[Math.min(nz.length - 1, Math.floor(0.995 * nz.length))] : 0;
}

/** IBSR label codings: 0/1/2/3, or the older 0/128/192/254 (CSF/GM/WM). */
function ibsrCoding(path: string, data: ArrayLike<number>): (id: number) => number {
  const seen = new Set<number>();
  for (let p = 0; p < data.length; p++) seen.add(data[p]);
  if ([...seen].every((v) => v === 0 || v === 1 || v === 2 || v === 3)) return (v) => v;
  if ([...seen].every((v) => v === 0 || v === 128 || v === 192 || v === 254)) {
    return (v) => (v === 128 ? 1 : v === 192 ? 2 : v === 254 ? 3 : 0);
  }
  const bad = [...seen].sort((a, b) => a - b).find((v) => ![0, 1, 2, 3, 128, 192, 254].includes(v)) ??
    [...seen].sort((a, b) => a - b)[0];
  throw new UsageError(
    `${path}: label value ${bad}; expected IBSR's CSF/GM/WM coding 0/1/2/3 (or 0/128/192/254)`,
  );
}

function checkIntegerLabels(path: string, data: ArrayLike<number>): void {
  for (let p = 0; p < data.length; p++) {
    const v = data[p];
    if (!(Number.isInteger(v) && v >= 0)) {
      throw new UsageError(`${path}: voxel ${p} holds ${v}; a label map holds non-negative integers`);
    }
  }
}

async function readSource(path: string): Promise<Volume> {
  const v = await readNifti(path);
  if (v.shape.some((s) => s < 2)) {
    throw new UsageError(`${path}: grid ${v.shape.join("x")} is not a 3D volume`);
  }
  return v;
}

/** Where a scan's brain sits: its bounding box's lower world corner and extent in voxels of `spacing`. */
interface Placement {
  face: Vec3;
  extent: Vec3;
  orientation: string;
  sourceShape: Vec3;
  sourceSpacing: Vec3;
}

/** Measures the brain box of a mask source (labels > 0, or an image above a threshold). */
function place(v: Volume, threshold: number, spacing: number): Placement {
  const can = toCanonical(v).volume;
  const box = foregroundBox(can, threshold);
  const face = applyAffine(can.affine, box.start.map((s) => s - 0.5) as Vec3);
  const extent = box.end.map((e, d) =>
    Math.ceil(((e - box.start[d]) * can.spacing[d]) / spacing - 1e-6)
  ) as Vec3;
  return {
    face,
    extent,
    orientation: axisCodes(v.affine),
    sourceShape: [...v.shape] as Vec3,
    sourceSpacing: v.spacing.map((s) => Number(s.toFixed(4))) as Vec3,
  };
}

const ras = (spacing: number, t: Vec3): Affine => [
  [spacing, 0, 0, t[0]],
  [0, spacing, 0, t[1]],
  [0, 0, spacing, t[2]],
  [0, 0, 0, 1],
];

/**
 * Converts a dataset into a cohort under `<out>/<cohort>/` (see the module comment and README,
 * "Importing the paper's datasets"): files written into a temporary sibling folder, renamed into
 * place when complete; an existing cohort is refused unless `force`.
 */
export async function importDataset(dataset: DatasetName, opts: ImportOptions): Promise<ImportResult> {
  const log = opts.log ?? (() => {});
  const cohort = DATASET_COHORT[dataset];
  if (!cohort) throw new UsageError(`--dataset: "${dataset}" is not one of ibsr, malc, paired`);
  const target = join(opts.out, cohort);
  if (existsSync(target) && !opts.force) {
    throw new UsageError(
      `${target} exists (an earlier import or a phantom cohort); pass --force to replace it`,
    );
  }
  if (dataset !== "paired" && opts.pairs) throw new UsageError(`--pairs is for --dataset paired`);
  if (!opts.from && !(dataset === "paired" && opts.pairs)) {
    throw new UsageError(
      `--from: the ${dataset} dataset's folder is needed${
        dataset === "paired" ? " (or --pairs FILE.csv)" : ""
      }`,
    );
  }
  const margin = opts.margin ?? IMPORT_MARGIN;
  const claheTiles = opts.claheTiles ?? PAPER_CLAHE.tiles;
  const claheClip = opts.claheClip ?? PAPER_CLAHE.clipLimit;
  if (!(Number.isInteger(claheTiles) && claheTiles >= 1)) {
    throw new UsageError(`--clahe-tiles: ${claheTiles} is not a positive integer`);
  }
  if (!(claheClip > 0)) throw new UsageError(`--clahe-clip: ${claheClip} is not positive (1: no clipping)`);
  const scans = dataset === "ibsr"
    ? ibsrLayout(opts.from!)
    : dataset === "malc"
    ? malcLayout(opts.from!)
    : opts.pairs
    ? pairsCsv(opts.pairs)
    : pairedLayout(opts.from!);
  const { spacing, from: spacingFrom } = await importSpacing(dataset, opts.out, opts.spacing);
  log(`${dataset}: ${scans.length} scans, ${spacing} mm voxels (${spacingFrom})`);
  const sourceRoot = resolve(opts.from ?? dirname(opts.pairs!));
  const rel = (p: string) => relative(sourceRoot, resolve(p));

  // pass 1: each scan's brain box (labels checked on the way, before anything is written)
  const placements: Placement[] = [];
  for (const scan of scans) {
    const labelPath = Object.values(scan.labels)[0];
    let p: Placement;
    if (labelPath) {
      const v = await readSource(labelPath);
      if (dataset === "malc") checkIntegerLabels(labelPath, v.data);
      else ibsrCoding(labelPath, v.data); // tissue: 0 background, 1 CSF, 2 GM, 3 WM
      if (scan.params?.fillHoles) {
        // the brain includes what the filling will label CSF
        const image = await readSource(scan.images["1.5T"]);
        if (image.shape.join() !== v.shape.join()) {
          throw new UsageError(
            `${labelPath}: grid ${v.shape.join("x")} differs from ${scan.images["1.5T"]}'s ${
              image.shape.join("x")
            }`,
          );
        }
        p = place(
          makeVolume(
            Uint8Array.from(v.data, (x, q) => (x > 0 || image.data[q] > 0 ? 1 : 0)),
            v.shape,
            v.affine,
          ),
          0,
          spacing,
        );
      } else p = place(v, 0, spacing);
    } else {
      const v = await readSource(scan.images["3T"]);
      p = place(v, 0.1 * topOf(v.data), spacing);
    }
    placements.push(p);
  }
  const shape = [0, 1, 2].map((d) =>
    Math.ceil((Math.max(...placements.map((p) => p.extent[d])) + 2 * margin) / 16) * 16
  ) as Vec3;
  const common = ras(spacing, shape.map((n) => (-spacing * (n - 1)) / 2) as Vec3);

  await Deno.mkdir(opts.out, { recursive: true });
  const tmp = await Deno.makeTempDir({ dir: opts.out, prefix: `.${cohort}-import-` });
  try {
    const records: ScanRecord[] = [];
    for (const [n, scan] of scans.entries()) {
      const t0 = performance.now();
      const p = placements[n];
      const offset = shape.map((s, d) => Math.floor((s - p.extent[d]) / 2));
      const at = ras(spacing, p.face.map((f, d) => f + (0.5 - offset[d]) * spacing) as Vec3);
      const shiftMm = [0, 1, 2].map((d) => Number((at[d][3] - common[d][3]).toFixed(3)));
      const files: Record<string, string> = {};
      const write = async (key: string, v: Volume) => {
        files[key] = `${scan.id}_${key}.nii.gz`;
        await writeNifti(join(tmp, files[key]), makeVolume(v.data, shape, common));
      };
      const params: Record<string, unknown> = {
        ...scan.params,
        source: Object.fromEntries(
          Object.entries({ ...scan.images, ...scan.labels }).map(([k, f]) => [k, rel(f)]),
        ),
        sourceShape: p.sourceShape,
        sourceSpacing: p.sourceSpacing,
        orientation: p.orientation,
        shiftMm,
      };
      if (dataset === "ibsr") {
        const image = await readSource(scan.images["1.5T"]);
        const labels = await readSource(scan.labels.tissue);
        const code = ibsrCoding(scan.labels.tissue, labels.data);
        let tissue = labels;
        if (scan.params?.fillHoles) {
          // the segTRI_fill version's rule: unlabelled voxels inside the stripped brain are CSF
          const data = Uint8Array.from(labels.data, code);
          let filled = 0;
          for (let q = 0; q < data.length; q++) {
            if (data[q] === 0 && image.data[q] > 0) {
              data[q] = 1;
              filled++;
            }
          }
          tissue = makeVolume(data, labels.shape, labels.affine);
          params.filledVoxels = filled;
        }
        const lf = normalizeIntensity(imageOnGrid(image, shape, at, spacing));
        const eq = clahe(lf.data, shape, { tiles: claheTiles, clipLimit: claheClip });
        await write("1.5T", makeVolume(eq, shape, at));
        await write("tissue", labelsOnGrid(tissue, shape, at, scan.params?.fillHoles ? (v) => v : code));
      } else if (dataset === "malc") {
        const image = await readSource(scan.images["1.5T"]);
        await write("1.5T", normalizeIntensity(imageOnGrid(image, shape, at, spacing)));
        const labels = await readSource(scan.labels.structures);
        await write("structures", labelsOnGrid(labels, shape, at, malcToStructure));
      } else {
        const t7 = normalizeIntensity(imageOnGrid(await readSource(scan.images["7T"]), shape, at, spacing));
        const t3 = normalizeIntensity(imageOnGrid(await readSource(scan.images["3T"]), shape, at, spacing));
        await write("3T", histogramMatch(t3, t7));
        await write("7T", t7);
        if (scan.labels.tissue) {
          const labels = await readSource(scan.labels.tissue);
          await write("tissue", labelsOnGrid(labels, shape, at, ibsrCoding(scan.labels.tissue, labels.data)));
        }
      }
      records.push({ id: scan.id, subject: scan.subject, split: scan.split, params, files });
      log(`${cohort} ${scan.id} (${scan.split}): ${((performance.now() - t0) / 1000).toFixed(2)} s`);
    }
    const checksums: Record<string, string> = {};
    for (const r of records) {
      for (const f of Object.values(r.files)) checksums[f] = await sha256File(join(tmp, f));
    }
    const manifest: CohortManifest = {
      cohort,
      profile: `import:${dataset}`,
      seed: 0,
      generatorVersion: `importer ${dataset} ${IMPORTER_VERSION}`,
      grid: { shape, spacing, affine: common },
      labels: cohort === "wholebrain"
        ? "structures: lib/phantom/labels.ts STRUCTURES (27 + background; MALC ids mapped by MALC_LABEL_IDS)"
        : "tissue: 0 background, 1 CSF, 2 GM, 3 WM",
      description: {
        tissue:
          `IBSR v2.0 from ${sourceRoot}: skull-stripped T1 ("1.5T"), CLAHE (${claheTiles} regions per axis, ` +
          `clip limit ${claheClip}), CSF/GM/WM labels; the paper's split (train 2, 4-9; validation 1, 3, 18; test 10-17)`,
        wholebrain:
          `MALC (MICCAI 2012) from ${sourceRoot}: T1 ("1.5T") with the paper's 27 structures; the ` +
          `challenge's split (15 training, 5 of them for validation; 20 testing)`,
        paired:
          `3T/7T pairs from ${opts.pairs ? resolve(opts.pairs) : sourceRoot}: intensities to [0, 1], 3T ` +
          `histogram-matched to 7T; leave-one-out folds`,
      }[cohort],
      scans: records,
      checksums,
    };
    await writeFileAtomic(join(tmp, "manifest.json"), JSON.stringify(manifest, null, 2) + "\n");
    // into place: an existing cohort (--force) is moved aside first and removed after
    let old: string | undefined;
    if (existsSync(target)) {
      old = join(opts.out, `.${cohort}-replaced-${Date.now()}`);
      await Deno.rename(target, old);
    }
    await Deno.rename(tmp, target);
    if (old) await Deno.remove(old, { recursive: true });
    return { dir: target, manifest, spacingFrom };
  } finally {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }
}

/**
 * The line `deno task prep --dataset` ends with: how to train on the output, and, when the output
 * has no paired cohort (training reads `<out>/paired` for every phase), how to add one.
 */
export function importNextStep(out: string, spacing: number): string {
  if (existsSync(join(out, "paired", "manifest.json"))) return `train on it: deno task train --data ${out}`;
  return `${out}/paired is absent and deno task train --data ${out} needs one: import your pairs with ` +
    `deno task prep --dataset paired --from DIR --out ${out}, or copy the phantom's: deno task prep ` +
    `--profile default, then cp -r data/generated/default/paired ${out}/` +
    (spacing === 3
      ? ""
      : ` and import this dataset again with --spacing 3 --force (the phantom's 3 mm voxels)`);
}
