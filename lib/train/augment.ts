/**
 * Tensors from subjects, and the paper's augmentation (each with p = 0.5: rotation by 90/180/270 degrees
 * in the axial plane, isotropic scaling 0.8-1.2 about the centre, left-right flip), applied
 * identically to every image of a subject (trilinear) and its labels (nearest).
 */
import * as tf from "@tensorflow/tfjs-core";
import { mulberry32 } from "../random.ts";

/** A subject array (voxel order [k, j, i]) as a [1, nk, nj, ni, 1] tensor. */
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
