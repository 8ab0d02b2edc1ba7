/**
 * The `Volume` type: a 3D image or label map with its geometry.
 *
 * Voxel order is NIfTI's: index `i + nx * (j + ny * k)`, `i` fastest. Read as a row-major array
 * this is `[nz, ny, nx]`, so a volume becomes a tensor `[batch, depth=k, height=j, width=i,
 * channels]` without reordering (see `volumeToTensor`).
 */
import { type Affine, affinesClose, affineSpacing, cloneAffine, formatAffine, type Vec3 } from "./affine.ts";
import { GridMismatchError } from "../io/errors.ts";

export type VoxelArray = Uint8Array | Int16Array | Int32Array | Float32Array | Float64Array;

export interface Volume<T extends VoxelArray = VoxelArray> {
  /** Voxels, `i` (first NIfTI axis) fastest. */
  data: T;
  /** Voxels along i, j, k. */
  shape: Vec3;
  /** Voxel size in millimetres along i, j, k (the column norms of `affine`). */
  spacing: Vec3;
  /** Voxel index (i, j, k) to world (x, y, z) millimetres, 4x4 row-major. */
  affine: Affine;
}

export type { Affine, Vec3 };

export function voxelCount(shape: Vec3): number {
  return shape[0] * shape[1] * shape[2];
}

/** Builds a volume, checking that the data length matches the shape; spacing comes from the affine. */
export function makeVolume<T extends VoxelArray>(data: T, shape: Vec3, affine: Affine): Volume<T> {
  if (data.length !== voxelCount(shape)) {
    throw new RangeError(
      `volume data has ${data.length} voxels, shape ${shape.join("x")} needs ${voxelCount(shape)}`,
    );
  }
  return {
    data,
    shape: [...shape] as Vec3,
    spacing: affineSpacing(affine),
    affine: cloneAffine(affine),
  };
}

/** A volume on the same grid as `like`, with new data. */
export function withData<T extends VoxelArray>(like: Volume, data: T): Volume<T> {
  return makeVolume(data, like.shape, like.affine);
}

/** Copies voxels to float32 (images for networks). */
export function toFloat32(v: Volume): Volume<Float32Array> {
  return withData(v, v.data instanceof Float32Array ? v.data.slice() : Float32Array.from(v.data));
}

/** Copies voxels to int32, rounding to the nearest integer (label maps). */
export function toInt32(v: Volume): Volume<Int32Array> {
  const out = new Int32Array(v.data.length);
  for (let n = 0; n < out.length; n++) out[n] = Math.round(v.data[n]);
  return withData(v, out);
}

/** Whether two volumes share a voxel grid (same shape, affines within `tol` mm). */
export function sameGrid(a: Volume, b: Volume, tol = 1e-3): boolean {
  return a.shape.every((n, d) => n === b.shape[d]) && affinesClose(a.affine, b.affine, tol);
}

/**
 * Checks that an image and its label map share one grid; throws `GridMismatchError` naming both
 * files and what differs.
 */
export function assertSameGrid(
  image: Volume,
  labels: Volume,
  names: { image: string; labels: string } = { image: "image", labels: "labels" },
  tol = 1e-3,
): void {
  const pair = `${names.image} / ${names.labels}`;
  if (!image.shape.every((n, d) => n === labels.shape[d])) {
    throw new GridMismatchError(
      pair,
      `shapes disagree: image ${image.shape.join("x")} vs labels ${labels.shape.join("x")}`,
    );
  }
  if (!affinesClose(image.affine, labels.affine, tol)) {
    throw new GridMismatchError(
      pair,
      `affines disagree by more than ${tol} mm: image ${formatAffine(image.affine)} vs labels ${
        formatAffine(labels.affine)
      }`,
    );
  }
}

/** Linear index of voxel (i, j, k). */
export function voxelIndex(shape: Vec3, i: number, j: number, k: number): number {
  return i + shape[0] * (j + shape[1] * k);
}
