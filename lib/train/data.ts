/**
 * Cohort loading and the paper's augmentation (each with p = 0.5: rotation by 90/180/270 degrees
 * in the axial plane, isotropic scaling 0.8-1.2 about the centre, left-right flip), applied
 * identically to every image of a subject (trilinear) and its labels (nearest).
 */
import * as tf from "@tensorflow/tfjs-core";
import { join } from "node:path";
import { parseNifti } from "../io/nifti.ts";
import { sha256Hex } from "../io/hash.ts";
import type { CohortManifest, ScanRecord } from "../phantom/cohort.ts";
import { mulberry32 } from "../random.ts";
import type { Volume } from "../volume/volume.ts";

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
  if (want !== undefined) {
    const sum = await sha256Hex(bytes);
    if (want !== sum) {
      throw new CohortError(
        `${path}: SHA-256 ${sum.slice(0, 12)}... differs from the manifest's ${want.slice(0, 12)}... ` +
          `(damaged or replaced since the cohort was written)`,
      );
    }
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

export function toTensor(a: Float32Array, shape: [number, number, number]): tf.Tensor5D {
  return tf.tensor5d(a, [1, ...shape, 1]);
}

export interface Augmentation {
  rot90: number;
  scale: number;
  flip: boolean;
}

/** Draws an augmentation from a seed (deterministic, so resumed runs see the same data). */
export function drawAugmentation(seed: number, shape: [number, number, number]): Augmentation {
  const r = mulberry32(seed);
  const square = shape[1] === shape[2];
  const rot = r() < 0.5 ? 1 + Math.floor(r() * 3) : 0;
  return {
    rot90: square ? rot : (rot === 2 ? 2 : 0), // 90/270 only where the axial plane is square
    scale: r() < 0.5 ? 0.8 + 0.4 * r() : 1,
    flip: r() < 0.5,
  };
}

/** Applies an augmentation to images (trilinear) and labels (nearest) of one subject. */
export function augment(
  arrays: Record<string, Float32Array>,
  shape: [number, number, number],
  aug: Augmentation,
  labelKeys: string[],
): Record<string, Float32Array> {
  if (aug.rot90 === 0 && aug.scale === 1 && !aug.flip) return arrays;
  const [nz, ny, nx] = shape;
  const [cz, cy, cx] = [(nz - 1) / 2, (ny - 1) / 2, (nx - 1) / 2];
  const out: Record<string, Float32Array> = {};
  for (const key of Object.keys(arrays)) out[key] = new Float32Array(nz * ny * nx);
  const keys = Object.keys(arrays);
  for (let z = 0; z < nz; z++) {
    for (let y = 0; y < ny; y++) {
      for (let x = 0; x < nx; x++) {
        // output -> source: undo flip, rotation (axial plane: y, x), then scaling about the centre
        let u = (aug.flip ? nx - 1 - x : x) - cx, v = y - cy;
        for (let r = 0; r < aug.rot90; r++) [u, v] = [v, -u];
        const sx = u / aug.scale + cx, sy = v / aug.scale + cy, sz = (z - cz) / aug.scale + cz;
        const o = (z * ny + y) * nx + x;
        for (const key of keys) {
          out[key][o] = labelKeys.includes(key)
            ? nearest(arrays[key], nz, ny, nx, sz, sy, sx)
            : trilinear(arrays[key], nz, ny, nx, sz, sy, sx);
        }
      }
    }
  }
  return out;
}

function nearest(
  a: Float32Array,
  nz: number,
  ny: number,
  nx: number,
  z: number,
  y: number,
  x: number,
): number {
  const [iz, iy, ix] = [Math.round(z), Math.round(y), Math.round(x)];
  if (iz < 0 || iy < 0 || ix < 0 || iz >= nz || iy >= ny || ix >= nx) return 0;
  return a[(iz * ny + iy) * nx + ix];
}

function trilinear(
  a: Float32Array,
  nz: number,
  ny: number,
  nx: number,
  z: number,
  y: number,
  x: number,
): number {
  const z0 = Math.floor(z), y0 = Math.floor(y), x0 = Math.floor(x);
  const fz = z - z0, fy = y - y0, fx = x - x0;
  let s = 0;
  for (let dz = 0; dz < 2; dz++) {
    for (let dy = 0; dy < 2; dy++) {
      for (let dx = 0; dx < 2; dx++) {
        const iz = z0 + dz, iy = y0 + dy, ix = x0 + dx;
        if (iz < 0 || iy < 0 || ix < 0 || iz >= nz || iy >= ny || ix >= nx) continue;
        s += a[(iz * ny + iy) * nx + ix] * (dz ? fz : 1 - fz) * (dy ? fy : 1 - fy) * (dx ? fx : 1 - fx);
      }
    }
  }
  return s;
}
