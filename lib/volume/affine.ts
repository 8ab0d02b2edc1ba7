/**
 * 4x4 affine matrices (voxel index -> world millimetres), row-major `number[][]` as in NIfTI's
 * `srow_x/y/z` and nibabel's `img.affine`.
 */

export type Affine = number[][];
export type Vec3 = [number, number, number];

export function identity4(): Affine {
  return [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]];
}

/** A diagonal affine with the given voxel spacing and origin (world position of voxel 0). */
export function scaleAffine(spacing: Vec3, origin: Vec3 = [0, 0, 0]): Affine {
  return [
    [spacing[0], 0, 0, origin[0]],
    [0, spacing[1], 0, origin[1]],
    [0, 0, spacing[2], origin[2]],
    [0, 0, 0, 1],
  ];
}

export function matmul4(a: Affine, b: Affine): Affine {
  const out = identity4();
  for (let i = 0; i < 4; i++) {
    for (let j = 0; j < 4; j++) {
      let s = 0;
      for (let k = 0; k < 4; k++) s += a[i][k] * b[k][j];
      out[i][j] = s;
    }
  }
  return out;
}

/** Inverse of an affine whose last row is [0, 0, 0, 1]. Throws when the 3x3 part is singular. */
export function invertAffine(a: Affine): Affine {
  const [[a00, a01, a02, t0], [a10, a11, a12, t1], [a20, a21, a22, t2]] = a;
  const c00 = a11 * a22 - a12 * a21, c01 = a02 * a21 - a01 * a22, c02 = a01 * a12 - a02 * a11;
  const c10 = a12 * a20 - a10 * a22, c11 = a00 * a22 - a02 * a20, c12 = a02 * a10 - a00 * a12;
  const c20 = a10 * a21 - a11 * a20, c21 = a01 * a20 - a00 * a21, c22 = a00 * a11 - a01 * a10;
  const det = a00 * c00 + a01 * c10 + a02 * c20;
  // relative to the voxel size, as the NIfTI reader judges it: a 1e-4 mm grid is not singular
  const scale = Math.max(...affineSpacing(a));
  if (!Number.isFinite(det) || !(Math.abs(det) > 1e-9 * scale ** 3)) {
    throw new RangeError(`affine is singular (determinant ${det})`);
  }
  const r = [
    [c00 / det, c01 / det, c02 / det],
    [c10 / det, c11 / det, c12 / det],
    [c20 / det, c21 / det, c22 / det],
  ];
  return [
    [...r[0], -(r[0][0] * t0 + r[0][1] * t1 + r[0][2] * t2)],
    [...r[1], -(r[1][0] * t0 + r[1][1] * t1 + r[1][2] * t2)],
    [...r[2], -(r[2][0] * t0 + r[2][1] * t1 + r[2][2] * t2)],
    [0, 0, 0, 1],
  ];
}

export function applyAffine(a: Affine, p: Vec3): Vec3 {
  return [0, 1, 2].map((i) => a[i][0] * p[0] + a[i][1] * p[1] + a[i][2] * p[2] + a[i][3]) as Vec3;
}

/** Voxel spacing implied by an affine: the norms of its first three columns. */
export function affineSpacing(a: Affine): Vec3 {
  return [0, 1, 2].map((j) => Math.hypot(a[0][j], a[1][j], a[2][j])) as Vec3;
}

/** Determinant of an affine's 3 x 3 linear part (its absolute value: the voxel volume in mm^3). */
export function affineDeterminant(affine: Affine): number {
  const [a, b, c] = affine;
  return a[0] * (b[1] * c[2] - b[2] * c[1]) - a[1] * (b[0] * c[2] - b[2] * c[0]) +
    a[2] * (b[0] * c[1] - b[1] * c[0]);
}

/** True when every entry of `a` and `b` differs by at most `tol` (millimetres). */
export function affinesClose(a: Affine, b: Affine, tol = 1e-4): boolean {
  for (let i = 0; i < 4; i++) {
    for (let j = 0; j < 4; j++) if (!(Math.abs(a[i][j] - b[i][j]) <= tol)) return false;
  }
  return true;
}

export function cloneAffine(a: Affine): Affine {
  return a.map((row) => [...row]);
}

export function formatAffine(a: Affine): string {
  return "[" + a.map((r) => "[" + r.map((v) => +v.toFixed(4)).join(", ") + "]").join(", ") + "]";
}
