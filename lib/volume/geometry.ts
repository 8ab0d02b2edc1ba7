/**
 * Geometry operations that keep a volume's world position: reorientation to RAS+, resampling to
 * a spacing or onto a reference grid, and cropping to the brain with restoration.
 */
import { type Affine, applyAffine, invertAffine, matmul4, type Vec3 } from "./affine.ts";
import { makeVolume, type Volume, type VoxelArray, voxelCount } from "./volume.ts";

// ---------------------------------------------------------------------------------------------
// Orientation

/**
 * For each output axis d (0: R, 1: A, 2: S in canonical space), `axis[d]` is the input voxel
 * axis that runs along it and `flip[d]` whether it runs backwards (L, P or I).
 */
export interface Orientation {
  axis: Vec3;
  flip: [boolean, boolean, boolean];
}

/**
 * The voxel-axis to world-axis assignment of an affine, as nibabel's `io_orientation`: columns
 * are normalised and greedily matched to the world axis they point along most strongly.
 */
export function orientationOf(affine: Affine): Orientation {
  const cols = [0, 1, 2].map((j) => {
    const n = Math.hypot(affine[0][j], affine[1][j], affine[2][j]) || 1;
    return [0, 1, 2].map((i) => affine[i][j] / n);
  });
  const axis: Vec3 = [-1, -1, -1];
  const flip: [boolean, boolean, boolean] = [false, false, false];
  const usedIn = new Set<number>();
  for (let round = 0; round < 3; round++) {
    let best = { inAx: -1, outAx: -1, v: -1, sign: 1 };
    for (let inAx = 0; inAx < 3; inAx++) {
      if (usedIn.has(inAx)) continue;
      for (let outAx = 0; outAx < 3; outAx++) {
        if (axis[outAx] !== -1) continue;
        const v = Math.abs(cols[inAx][outAx]);
        if (v > best.v) best = { inAx, outAx, v, sign: Math.sign(cols[inAx][outAx]) || 1 };
      }
    }
    axis[best.outAx] = best.inAx;
    flip[best.outAx] = best.sign < 0;
    usedIn.add(best.inAx);
  }
  return { axis, flip };
}

/** Orientation code such as "RAS" or "LPI" (nibabel's `aff2axcodes`). */
export function axisCodes(affine: Affine): string {
  const o = orientationOf(affine);
  const codes = ["", "", ""];
  const pos = ["R", "A", "S"], neg = ["L", "P", "I"];
  for (let d = 0; d < 3; d++) codes[o.axis[d]] = o.flip[d] ? neg[d] : pos[d];
  return codes.join("");
}

/**
 * Permutes and flips voxel axes: output axis d takes input axis `o.axis[d]`, reversed when
 * `o.flip[d]`. The affine is updated so every voxel keeps its world position.
 */
export function permuteFlip<T extends VoxelArray>(vol: Volume<T>, o: Orientation): Volume<T> {
  const inShape = vol.shape;
  const outShape = o.axis.map((a) => inShape[a]) as Vec3;
  // Input index = P * outIndex + b
  const P: Affine = [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]];
  for (let d = 0; d < 3; d++) {
    const a = o.axis[d];
    P[a][d] = o.flip[d] ? -1 : 1;
    P[a][3] = o.flip[d] ? inShape[a] - 1 : 0;
  }
  const out = new (vol.data.constructor as { new (n: number): T })(vol.data.length);
  const strideIn = [1, inShape[0], inShape[0] * inShape[1]];
  // Stride in the input for a unit step along each output axis, and the starting offset.
  const step = [0, 1, 2].map((d) => (o.flip[d] ? -1 : 1) * strideIn[o.axis[d]]);
  let start = 0;
  for (let d = 0; d < 3; d++) if (o.flip[d]) start += (inShape[o.axis[d]] - 1) * strideIn[o.axis[d]];
  let n = 0;
  for (let k = 0; k < outShape[2]; k++) {
    for (let j = 0; j < outShape[1]; j++) {
      let src = start + j * step[1] + k * step[2];
      for (let i = 0; i < outShape[0]; i++, src += step[0]) out[n++] = vol.data[src];
    }
  }
  return makeVolume(out, outShape, matmul4(vol.affine, P));
}

/** The orientation that undoes `o` (so `permuteFlip(permuteFlip(v, o), inverseOrientation(o))` is `v`). */
export function inverseOrientation(o: Orientation): Orientation {
  const axis: Vec3 = [0, 0, 0];
  const flip: [boolean, boolean, boolean] = [false, false, false];
  for (let d = 0; d < 3; d++) {
    axis[o.axis[d]] = d;
    flip[o.axis[d]] = o.flip[d];
  }
  return { axis, flip };
}

/**
 * Reorients to the closest canonical (RAS+) voxel order, as nibabel's `as_closest_canonical`.
 * Returns the reoriented volume and the orientation that was applied (pass it to
 * `fromCanonical` to go back to the original voxel order).
 */
export function toCanonical<T extends VoxelArray>(
  vol: Volume<T>,
): { volume: Volume<T>; orientation: Orientation } {
  const orientation = orientationOf(vol.affine);
  return { volume: permuteFlip(vol, orientation), orientation };
}

/** Undoes `toCanonical`: back to the original voxel order and affine. */
export function fromCanonical<T extends VoxelArray>(vol: Volume<T>, orientation: Orientation): Volume<T> {
  return permuteFlip(vol, inverseOrientation(orientation));
}

// ---------------------------------------------------------------------------------------------
// Resampling

export type Interpolation = "linear" | "nearest";

/**
 * Resamples `vol` onto the grid (`shape`, `affine`): each output voxel centre is mapped into
 * the input's voxel space and sampled trilinearly (images) or by nearest neighbour (labels).
 * Points outside the input (beyond half a voxel from its edge voxels) get `fill`.
 * Linear output is float32; nearest keeps the input's datatype.
 */
export function resampleToGrid(
  vol: Volume,
  shape: Vec3,
  affine: Affine,
  interpolation: Interpolation = "linear",
  fill = 0,
): Volume {
  const M = matmul4(invertAffine(vol.affine), affine); // output voxel -> input voxel
  const [nx, ny, nz] = vol.shape;
  const src = vol.data;
  const nOut = voxelCount(shape);
  const out: VoxelArray = interpolation === "linear"
    ? new Float32Array(nOut)
    : new (vol.data.constructor as { new (n: number): VoxelArray })(nOut);
  const inside = (x: number, n: number) => x >= -0.5 && x <= n - 0.5;
  let o = 0;
  for (let k = 0; k < shape[2]; k++) {
    for (let j = 0; j < shape[1]; j++) {
      // Input coordinate at i = 0 and its increment per step in i.
      let x = M[0][1] * j + M[0][2] * k + M[0][3];
      let y = M[1][1] * j + M[1][2] * k + M[1][3];
      let z = M[2][1] * j + M[2][2] * k + M[2][3];
      const dx = M[0][0], dy = M[1][0], dz = M[2][0];
      for (let i = 0; i < shape[0]; i++, o++, x += dx, y += dy, z += dz) {
        if (!inside(x, nx) || !inside(y, ny) || !inside(z, nz)) {
          out[o] = fill;
          continue;
        }
        if (interpolation === "nearest") {
          const xi = Math.min(nx - 1, Math.max(0, Math.round(x)));
          const yi = Math.min(ny - 1, Math.max(0, Math.round(y)));
          const zi = Math.min(nz - 1, Math.max(0, Math.round(z)));
          out[o] = src[xi + nx * (yi + ny * zi)];
          continue;
        }
        const cx = Math.min(nx - 1, Math.max(0, x));
        const cy = Math.min(ny - 1, Math.max(0, y));
        const cz = Math.min(nz - 1, Math.max(0, z));
        const x0 = Math.floor(cx), y0 = Math.floor(cy), z0 = Math.floor(cz);
        const x1 = Math.min(x0 + 1, nx - 1), y1 = Math.min(y0 + 1, ny - 1), z1 = Math.min(z0 + 1, nz - 1);
        const fx = cx - x0, fy = cy - y0, fz = cz - z0;
        const r0 = nx * (y0 + ny * z0), r1 = nx * (y1 + ny * z0);
        const r2 = nx * (y0 + ny * z1), r3 = nx * (y1 + ny * z1);
        const c00 = src[x0 + r0] * (1 - fx) + src[x1 + r0] * fx;
        const c10 = src[x0 + r1] * (1 - fx) + src[x1 + r1] * fx;
        const c01 = src[x0 + r2] * (1 - fx) + src[x1 + r2] * fx;
        const c11 = src[x0 + r3] * (1 - fx) + src[x1 + r3] * fx;
        out[o] = (c00 * (1 - fy) + c10 * fy) * (1 - fz) + (c01 * (1 - fy) + c11 * fy) * fz;
      }
    }
  }
  return makeVolume(out, shape, affine);
}

/** Resamples onto another volume's grid. */
export function resampleLike(
  vol: Volume,
  reference: Volume,
  interpolation: Interpolation = "linear",
  fill = 0,
): Volume {
  return resampleToGrid(vol, reference.shape, reference.affine, interpolation, fill);
}

/**
 * The grid covering the same field of view as `vol` with voxel size `spacing`: axes keep their
 * directions, the outer voxel faces stay where they were (to within one new voxel), and the
 * shape is `round(shape * oldSpacing / spacing)`.
 */
export function gridForSpacing(vol: Volume, spacing: Vec3): { shape: Vec3; affine: Affine } {
  const shape = vol.shape.map((n, d) => Math.max(1, Math.round((n * vol.spacing[d]) / spacing[d]))) as Vec3;
  const ratio = spacing.map((s, d) => s / vol.spacing[d]);
  // New voxel 0 centre sits at old index -0.5 + ratio/2 along each axis.
  const S: Affine = [
    [ratio[0], 0, 0, -0.5 + ratio[0] / 2],
    [0, ratio[1], 0, -0.5 + ratio[1] / 2],
    [0, 0, ratio[2], -0.5 + ratio[2] / 2],
    [0, 0, 0, 1],
  ];
  return { shape, affine: matmul4(vol.affine, S) };
}

/** Resamples to an isotropic or anisotropic voxel spacing (mm), keeping the field of view. */
export function resampleToSpacing(
  vol: Volume,
  spacing: Vec3,
  interpolation: Interpolation = "linear",
  fill = 0,
): Volume {
  const g = gridForSpacing(vol, spacing);
  return resampleToGrid(vol, g.shape, g.affine, interpolation, fill);
}

// ---------------------------------------------------------------------------------------------
// Cropping

/** A box of voxels `[start, end)` along i, j, k. */
export interface Box {
  start: Vec3;
  end: Vec3;
}

/**
 * The bounding box of voxels above `threshold`, grown by `margin` voxels on every side and
 * clipped to the volume. An empty foreground gives the whole volume.
 */
export function foregroundBox(vol: Volume, threshold = 0, margin = 0): Box {
  const [nx, ny, nz] = vol.shape;
  const lo = [nx, ny, nz], hi = [-1, -1, -1];
  let n = 0;
  for (let k = 0; k < nz; k++) {
    for (let j = 0; j < ny; j++) {
      for (let i = 0; i < nx; i++, n++) {
        if (vol.data[n] > threshold) {
          if (i < lo[0]) lo[0] = i;
          if (i > hi[0]) hi[0] = i;
          if (j < lo[1]) lo[1] = j;
          if (j > hi[1]) hi[1] = j;
          if (k < lo[2]) lo[2] = k;
          if (k > hi[2]) hi[2] = k;
        }
      }
    }
  }
  if (hi[0] < 0) return { start: [0, 0, 0], end: [...vol.shape] as Vec3 };
  return {
    start: lo.map((v) => Math.max(0, v - margin)) as Vec3,
    end: hi.map((v, d) => Math.min(vol.shape[d], v + 1 + margin)) as Vec3,
  };
}

/** Extracts a box; the affine is shifted so voxels keep their world positions. */
export function cropToBox<T extends VoxelArray>(vol: Volume<T>, box: Box): Volume<T> {
  const shape = box.end.map((e, d) => e - box.start[d]) as Vec3;
  if (shape.some((s, d) => s <= 0 || box.start[d] < 0 || box.end[d] > vol.shape[d])) {
    throw new RangeError(`crop box ${JSON.stringify(box)} does not fit a ${vol.shape.join("x")} volume`);
  }
  const [nx, ny] = vol.shape;
  const out = new (vol.data.constructor as { new (n: number): T })(voxelCount(shape));
  let o = 0;
  for (let k = 0; k < shape[2]; k++) {
    for (let j = 0; j < shape[1]; j++) {
      const from = box.start[0] + nx * (box.start[1] + j + ny * (box.start[2] + k));
      out.set(vol.data.subarray(from, from + shape[0]) as never, o);
      o += shape[0];
    }
  }
  const shift: Affine = [[1, 0, 0, box.start[0]], [0, 1, 0, box.start[1]], [0, 0, 1, box.start[2]], [
    0,
    0,
    0,
    1,
  ]];
  return makeVolume(out, shape, matmul4(vol.affine, shift));
}

/** Crops to the foreground's bounding box plus `margin` voxels; returns the box for `uncrop`. */
export function cropToForeground<T extends VoxelArray>(
  vol: Volume<T>,
  { threshold = 0, margin = 4 }: { threshold?: number; margin?: number } = {},
): { volume: Volume<T>; box: Box } {
  const box = foregroundBox(vol, threshold, margin);
  return { volume: cropToBox(vol, box), box };
}

/**
 * Puts a cropped volume back into the grid it was cropped from (`original` gives shape and
 * affine), with `fill` outside the box.
 */
export function uncrop<T extends VoxelArray>(
  cropped: Volume<T>,
  box: Box,
  original: { shape: Vec3; affine: Affine },
  fill = 0,
): Volume<T> {
  const [nx, ny] = original.shape;
  const out = new (cropped.data.constructor as { new (n: number): T })(voxelCount(original.shape));
  if (fill !== 0) out.fill(fill as never);
  const [cx, cy, cz] = cropped.shape;
  let o = 0;
  for (let k = 0; k < cz; k++) {
    for (let j = 0; j < cy; j++) {
      const to = box.start[0] + nx * (box.start[1] + j + ny * (box.start[2] + k));
      out.set(cropped.data.subarray(o, o + cx) as never, to);
      o += cx;
    }
  }
  return makeVolume(out, original.shape, original.affine);
}

/** World coordinate of a voxel centre. */
export function voxelToWorld(vol: Volume, ijk: Vec3): Vec3 {
  return applyAffine(vol.affine, ijk);
}

/** Calls `visit` with each 6-connected neighbour of flat index `p` in a grid of `shape` [nk, nj, ni]. */
function forNeighbours(p: number, [nk, nj, ni]: readonly number[], visit: (q: number) => void): void {
  const i = p % ni, j = Math.floor(p / ni) % nj, k = Math.floor(p / (ni * nj));
  if (i > 0) visit(p - 1);
  if (i < ni - 1) visit(p + 1);
  if (j > 0) visit(p - ni);
  if (j < nj - 1) visit(p + ni);
  if (k > 0) visit(p - ni * nj);
  if (k < nk - 1) visit(p + ni * nj);
}

/**
 * The largest 6-connected component of a mask (non-zero voxels) in a grid of `shape` [nk, nj, ni]
 * (i fastest, the NIfTI voxel order), as 0/1; all zeros for an empty mask.
 */
export function largestComponent(mask: ArrayLike<number>, shape: readonly number[]): Uint8Array {
  const n = shape[0] * shape[1] * shape[2];
  const component = new Int32Array(n);
  let best = 0, bestSize = 0, id = 0;
  const stack: number[] = [];
  for (let p = 0; p < n; p++) {
    if (!mask[p] || component[p]) continue;
    id++;
    let size = 0;
    component[p] = id;
    stack.push(p);
    while (stack.length) {
      size++;
      forNeighbours(stack.pop()!, shape, (r) => {
        if (mask[r] && !component[r]) {
          component[r] = id;
          stack.push(r);
        }
      });
    }
    if (size > bestSize) [best, bestSize] = [id, size];
  }
  return Uint8Array.from(component, (c) => (best && c === best ? 1 : 0));
}

/**
 * A mask with its holes filled: every voxel not reached from the grid's border through zero
 * voxels (6-connected) is set, as 0/1. The grid is `shape` [nk, nj, ni], i fastest.
 */
export function fillHoles(mask: ArrayLike<number>, shape: readonly number[]): Uint8Array {
  const [nk, nj, ni] = shape;
  const n = nk * nj * ni;
  const outside = new Uint8Array(n);
  const stack: number[] = [];
  for (let p = 0; p < n; p++) {
    const i = p % ni, j = Math.floor(p / ni) % nj, k = Math.floor(p / (ni * nj));
    const border = i === 0 || j === 0 || k === 0 || i === ni - 1 || j === nj - 1 || k === nk - 1;
    if (border && !mask[p]) {
      outside[p] = 1;
      stack.push(p);
    }
  }
  while (stack.length) {
    forNeighbours(stack.pop()!, shape, (r) => {
      if (!outside[r] && !mask[r]) {
        outside[r] = 1;
        stack.push(r);
      }
    });
  }
  return Uint8Array.from(outside, (o) => 1 - o);
}
