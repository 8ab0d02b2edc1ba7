/**
 * Seeded random smooth diffeomorphisms for pseudo-subjects: a stationary velocity field (random
 * Gaussian values on a coarse control grid, trilinearly interpolated) exponentiated by scaling
 * and squaring (Arsigny et al., MICCAI 2006), plus a radial expansion about the ventricles
 * (atrophy) and a global isotropic scaling.
 */
import type { Vec3 } from "../volume/affine.ts";
import { gaussian } from "../random.ts";

/** A displacement field in millimetres on a regular grid (`origin` + index * `spacing`, axis-aligned). */
export interface DisplacementField {
  shape: Vec3;
  origin: Vec3;
  spacing: number;
  /** x, y, z components, i fastest. */
  u: [Float32Array, Float32Array, Float32Array];
}

export interface DeformationParams {
  /** Standard deviation of the velocity at the control points, mm. */
  sigmaMm: number;
  /** Control-point spacing, mm (sets the smoothness). */
  controlSpacingMm: number;
  /** Range of the global isotropic scale factor [min, max]. */
  scale: [number, number];
  /** Range of the ventricular expansion (fractional radial stretch at the centre) [min, max]. */
  atrophy: [number, number];
  /** Width (Gaussian sigma, mm) of the atrophy expansion about the ventricle centre. */
  atrophyWidthMm: number;
  /** Squaring steps of the exponential. */
  squarings: number;
}

export const DEFAULT_DEFORMATION: DeformationParams = {
  sigmaMm: 2.5,
  controlSpacingMm: 24,
  scale: [0.92, 1.08],
  atrophy: [0, 0.25],
  atrophyWidthMm: 18,
  squarings: 6,
};

/** Trilinear sample of one component at world point (x, y, z); clamped at the border. */
export function sampleField(f: DisplacementField, c: number, x: number, y: number, z: number): number {
  const [nx, ny, nz] = f.shape;
  const fx = Math.min(nx - 1, Math.max(0, (x - f.origin[0]) / f.spacing));
  const fy = Math.min(ny - 1, Math.max(0, (y - f.origin[1]) / f.spacing));
  const fz = Math.min(nz - 1, Math.max(0, (z - f.origin[2]) / f.spacing));
  const x0 = Math.min(Math.floor(fx), nx - 2 < 0 ? 0 : nx - 2),
    y0 = Math.min(Math.floor(fy), ny - 2 < 0 ? 0 : ny - 2);
  const z0 = Math.min(Math.floor(fz), nz - 2 < 0 ? 0 : nz - 2);
  const x1 = Math.min(x0 + 1, nx - 1), y1 = Math.min(y0 + 1, ny - 1), z1 = Math.min(z0 + 1, nz - 1);
  const ax = fx - x0, ay = fy - y0, az = fz - z0;
  const d = f.u[c];
  const at = (i: number, j: number, k: number) => d[i + nx * (j + ny * k)];
  return (
    ((at(x0, y0, z0) * (1 - ax) + at(x1, y0, z0) * ax) * (1 - ay) +
        (at(x0, y1, z0) * (1 - ax) + at(x1, y1, z0) * ax) * ay) * (1 - az) +
    ((at(x0, y0, z1) * (1 - ax) + at(x1, y0, z1) * ax) * (1 - ay) +
        (at(x0, y1, z1) * (1 - ax) + at(x1, y1, z1) * ax) * ay) * az
  );
}

/**
 * A random diffeomorphic displacement on a grid of `spacing` mm covering [lo, hi] (mm): the
 * exponential of a smooth random velocity plus an expansion of `atrophy` about `centre`.
 */
export function randomDiffeomorphism(
  lo: Vec3,
  hi: Vec3,
  spacing: number,
  params: DeformationParams,
  rand: () => number,
  centre: Vec3,
  atrophy: number,
): DisplacementField {
  const shape = [0, 1, 2].map((d) => Math.max(2, Math.ceil((hi[d] - lo[d]) / spacing) + 1)) as Vec3;
  const n = shape[0] * shape[1] * shape[2];
  // Control grid of random velocities.
  const cs = params.controlSpacingMm;
  const cShape = [0, 1, 2].map((d) => Math.max(2, Math.ceil((hi[d] - lo[d]) / cs) + 1)) as Vec3;
  const cn = cShape[0] * cShape[1] * cShape[2];
  const control: DisplacementField = {
    shape: cShape,
    origin: lo,
    spacing: cs,
    u: [0, 1, 2].map(() =>
      Float32Array.from({ length: cn }, () => gaussian(rand) * params.sigmaMm)
    ) as DisplacementField["u"],
  };
  const v: DisplacementField = {
    shape,
    origin: lo,
    spacing,
    u: [new Float32Array(n), new Float32Array(n), new Float32Array(n)],
  };
  const s2 = params.atrophyWidthMm ** 2;
  let p = 0;
  for (let k = 0; k < shape[2]; k++) {
    for (let j = 0; j < shape[1]; j++) {
      for (let i = 0; i < shape[0]; i++, p++) {
        const x = lo[0] + i * spacing, y = lo[1] + j * spacing, z = lo[2] + k * spacing;
        // Atrophy: sampling the atlas nearer the centre enlarges what lies there.
        const dx = x - centre[0], dy = y - centre[1], dz = z - centre[2];
        const g = -atrophy * Math.exp(-(dx * dx + dy * dy + dz * dz) / (2 * s2));
        v.u[0][p] = sampleField(control, 0, x, y, z) + g * dx;
        v.u[1][p] = sampleField(control, 1, x, y, z) + g * dy;
        v.u[2][p] = sampleField(control, 2, x, y, z) + g * dz;
      }
    }
  }
  // Scaling and squaring: u <- v / 2^N, then N times u(x) <- u(x) + u(x + u(x)).
  const f = 1 / 2 ** params.squarings;
  for (const c of v.u) for (let q = 0; q < n; q++) c[q] *= f;
  for (let step = 0; step < params.squarings; step++) {
    const next: DisplacementField["u"] = [new Float32Array(n), new Float32Array(n), new Float32Array(n)];
    p = 0;
    for (let k = 0; k < shape[2]; k++) {
      for (let j = 0; j < shape[1]; j++) {
        for (let i = 0; i < shape[0]; i++, p++) {
          const x = lo[0] + i * spacing + v.u[0][p],
            y = lo[1] + j * spacing + v.u[1][p],
            z = lo[2] + k * spacing + v.u[2][p];
          for (let c = 0; c < 3; c++) next[c][p] = v.u[c][p] + sampleField(v, c, x, y, z);
        }
      }
    }
    v.u = next;
  }
  return v;
}

/** Smallest Jacobian determinant of x -> x + u(x) over the grid (positive for a diffeomorphism). */
export function minJacobian(f: DisplacementField): number {
  const [nx, ny, nz] = f.shape;
  let min = Infinity;
  const h = f.spacing;
  for (let k = 0; k < nz - 1; k++) {
    for (let j = 0; j < ny - 1; j++) {
      for (let i = 0; i < nx - 1; i++) {
        const p = i + nx * (j + ny * k);
        const J = [0, 1, 2].map((c) => [
          (f.u[c][p + 1] - f.u[c][p]) / h + (c === 0 ? 1 : 0),
          (f.u[c][p + nx] - f.u[c][p]) / h + (c === 1 ? 1 : 0),
          (f.u[c][p + nx * ny] - f.u[c][p]) / h + (c === 2 ? 1 : 0),
        ]);
        const det = J[0][0] * (J[1][1] * J[2][2] - J[1][2] * J[2][1]) -
          J[0][1] * (J[1][0] * J[2][2] - J[1][2] * J[2][0]) +
          J[0][2] * (J[1][0] * J[2][1] - J[1][1] * J[2][0]);
        if (det < min) min = det;
      }
    }
  }
  return min;
}
