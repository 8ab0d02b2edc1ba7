/**
 * The data contract: what a cohort folder holds and how it is read, whoever wrote it (the phantom
 * generator in `lib/phantom/`, or a conversion of a real dataset).
 *
 * A cohort is a folder with `manifest.json` (`CohortManifest`) and single-file NIfTI-1 volumes
 * on one common grid (`grid`: shape, isotropic spacing in mm, affine), preprocessed as
 * `lib/data/preprocess.ts` does (intensities in [0, 1]; 3T histogram-matched to 7T). Each scan
 * names its files by key: images (`"3T"`, `"7T"`, `"1.5T"`, ...) and label maps (`"tissue"`: 0
 * background, 1 CSF, 2 GM, 3 WM). `checksums` holds the SHA-256 of every file, by its path
 * relative to the folder, and is checked before anything trains: a missing, partial, damaged or
 * swapped file is named. Three cohorts make a data folder: `paired` (3T + 7T, phases 1-2),
 * `tissue` (1.5T + tissue labels, phase 3), `wholebrain`.
 */
import { join } from "node:path";
import { parseNifti } from "../io/nifti.ts";
import { sha256Hex } from "../io/hash.ts";
import type { Affine, Vec3 } from "../volume/affine.ts";
import type { Volume } from "../volume/volume.ts";

export type CohortName = "paired" | "tissue" | "wholebrain" | "heads";

export interface ScanRecord {
  id: string;
  subject: string;
  split: "train" | "validation" | "test" | "fold";
  /** How the source made this scan (the phantom: its anatomy draw); free-form. */
  params?: Record<string, unknown>;
  files: Record<string, string>;
}

export interface CohortManifest {
  cohort: CohortName;
  /** The phantom profile, or a name for a converted dataset. */
  profile: string;
  seed: number;
  generatorVersion: string;
  grid: { shape: Vec3; spacing: number; affine: Affine };
  labels: string;
  description: string;
  scans: ScanRecord[];
  /** SHA-256 of every file, by path relative to the cohort folder. */
  checksums: Record<string, string>;
}

export interface Subject {
  id: string;
  split: ScanRecord["split"];
  /** Images and labels by manifest key ("3T", "7T", "1.5T", "tissue", ...), voxel order [k, j, i]. */
  arrays: Record<string, Float32Array>;
  /** [nk, nj, ni] */
  shape: [number, number, number];
  /** The first image's volume (grid and affine), for writing outputs. */
  reference: Volume;
}

async function readManifest(dir: string): Promise<CohortManifest> {
  const manifestPath = join(dir, "manifest.json");
  let manifest: CohortManifest;
  try {
    manifest = JSON.parse(await Deno.readTextFile(manifestPath));
  } catch (err) {
    throw new CohortError(`${manifestPath}: cannot read the cohort manifest (${(err as Error).message})`);
  }
  if (!Array.isArray(manifest?.scans) || !manifest.scans.length) {
    throw new CohortError(`${manifestPath}: lists no scans`);
  }
  return manifest;
}

/** A cohort folder that is missing, partial or damaged. */
export class CohortError extends Error {
  override name = "CohortError";
}

/**
 * A file of a cohort, read and checked against the SHA-256 its manifest records (a partly
 * written, damaged or swapped file is named).
 */
async function readListed(dir: string, manifest: CohortManifest, file: string): Promise<Uint8Array> {
  const path = join(dir, file);
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (err) {
    throw new CohortError(
      `${path}: listed by ${join(dir, "manifest.json")} but cannot be read (${(err as Error).message}); ` +
        `the cohort is incomplete`,
    );
  }
  const want = manifest.checksums?.[file];
  if (typeof want !== "string") {
    throw new CohortError(
      `${join(dir, "manifest.json")}: no SHA-256 for ${file} in "checksums" (every file of a cohort ` +
        `is listed with its checksum, so that a damaged or swapped file is found before training)`,
    );
  }
  const sum = await sha256Hex(bytes);
  if (want !== sum) {
    throw new CohortError(
      `${path}: SHA-256 ${sum.slice(0, 12)}... differs from the manifest's ${want.slice(0, 12)}... ` +
        `(damaged or replaced since the cohort was written)`,
    );
  }
  return bytes;
}

/**
 * Checks a cohort folder before anything trains on it: the manifest is readable and lists scans,
 * every file it names exists and still has the SHA-256 the manifest records.
 */
export async function verifyCohort(dir: string): Promise<CohortManifest> {
  const manifest = await readManifest(dir);
  for (const scan of manifest.scans) {
    for (const file of Object.values(scan.files ?? {})) await readListed(dir, manifest, file);
  }
  return manifest;
}

/**
 * Reads a cohort folder (`manifest.json` and its NIfTI files), each file read once and checked
 * as `verifyCohort` does, checking every grid and refusing non-finite voxels.
 */
export async function loadCohort(dir: string): Promise<{ manifest: CohortManifest; subjects: Subject[] }> {
  const manifest = await readManifest(dir);
  const subjects: Subject[] = [];
  for (const scan of manifest.scans) {
    const arrays: Record<string, Float32Array> = {};
    let reference: Volume | undefined;
    for (const [key, file] of Object.entries(scan.files)) {
      const path = join(dir, file);
      const bytes = await readListed(dir, manifest, file);
      const vol = parseNifti(
        path,
        bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer,
      );
      if (reference && vol.shape.join() !== reference.shape.join()) {
        throw new CohortError(
          `${path}: grid ${vol.shape.join("x")} differs from ${reference.shape.join("x")}`,
        );
      }
      reference ??= vol;
      const data = vol.data instanceof Float32Array ? vol.data : Float32Array.from(vol.data);
      const bad = data.findIndex((v) => !Number.isFinite(v));
      if (bad >= 0) {
        throw new CohortError(`${path}: voxel ${bad} is ${data[bad]} (training needs finite values)`);
      }
      arrays[key] = data;
    }
    const [ni, nj, nk] = reference!.shape;
    subjects.push({ id: scan.id, split: scan.split, arrays, shape: [nk, nj, ni], reference: reference! });
  }
  return { manifest, subjects };
}
