import { assert, assertAlmostEquals, assertEquals } from "@std/assert";
import {
  type Affine,
  applyAffine,
  axisCodes,
  cropToForeground,
  fromCanonical,
  gridForSpacing,
  invertAffine,
  makeVolume,
  matmul4,
  resampleLike,
  resampleToGrid,
  resampleToSpacing,
  scaleAffine,
  toCanonical,
  uncrop,
  type Vec3,
  voxelIndex,
} from "../lib/mod.ts";

const LPI_PERMUTED: Affine = [
  [0, -2, 0, 40],
  [0, 0, -1, 30],
  [-3, 0, 0, 20],
  [0, 0, 0, 1],
];

Deno.test("invertAffine and matmul4 give the identity", () => {
  const a: Affine = [[0.9, 0.1, 0, 3], [-0.2, 1.1, 0.05, -4], [0, 0.3, 2, 7], [0, 0, 0, 1]];
  const id = matmul4(a, invertAffine(a));
  for (let i = 0; i < 4; i++) {
    for (let j = 0; j < 4; j++) assertAlmostEquals(id[i][j], i === j ? 1 : 0, 1e-12);
  }
});

Deno.test("axis codes and canonical reorientation keep every voxel's world position", () => {
  assertEquals(axisCodes(LPI_PERMUTED), "ILP");
  const shape: Vec3 = [4, 3, 5];
  const data = Float32Array.from({ length: 60 }, (_, i) => i);
  const vol = makeVolume(data, shape, LPI_PERMUTED);
  const { volume: can, orientation } = toCanonical(vol);
  assertEquals(axisCodes(can.affine), "RAS");
  assertEquals(can.shape, [3, 5, 4]);
  // Each canonical voxel's world position holds the value the original had there.
  const inv = invertAffine(vol.affine);
  for (let k = 0; k < can.shape[2]; k++) {
    for (let j = 0; j < can.shape[1]; j++) {
      for (let i = 0; i < can.shape[0]; i++) {
        const w = applyAffine(can.affine, [i, j, k]);
        const [oi, oj, ok] = applyAffine(inv, w).map(Math.round) as Vec3;
        assertEquals(can.data[voxelIndex(can.shape, i, j, k)], data[voxelIndex(shape, oi, oj, ok)]);
      }
    }
  }
  const back = fromCanonical(can, orientation);
  assertEquals(back.shape, shape);
  assertEquals(Array.from(back.data), Array.from(data));
  for (let i = 0; i < 4; i++) {
    for (let j = 0; j < 4; j++) assertAlmostEquals(back.affine[i][j], LPI_PERMUTED[i][j], 1e-12);
  }
});

Deno.test("resampling onto the same grid is the identity (linear and nearest)", () => {
  const vol = makeVolume(Float32Array.from({ length: 60 }, (_, i) => Math.sin(i)), [5, 4, 3], LPI_PERMUTED);
  assertEquals(Array.from(resampleLike(vol, vol, "linear").data), Array.from(vol.data));
  assertEquals(Array.from(resampleLike(vol, vol, "nearest").data), Array.from(vol.data));
});

Deno.test("trilinear resampling reproduces a linear function exactly inside the volume", () => {
  const shape: Vec3 = [8, 7, 6];
  const affine = scaleAffine([1, 1.5, 2], [-3, 4, 10]);
  const f = (w: Vec3) => 0.5 * w[0] - 0.25 * w[1] + 0.125 * w[2] + 2;
  const data = new Float32Array(shape[0] * shape[1] * shape[2]);
  for (let k = 0; k < shape[2]; k++) {
    for (let j = 0; j < shape[1]; j++) {
      for (let i = 0; i < shape[0]; i++) data[voxelIndex(shape, i, j, k)] = f(applyAffine(affine, [i, j, k]));
    }
  }
  const vol = makeVolume(data, shape, affine);
  // A rotated, finer grid lying well inside the source.
  const t = 0.2;
  const target: Affine = [
    [0.7 * Math.cos(t), -0.7 * Math.sin(t), 0, -0.5],
    [0.7 * Math.sin(t), 0.7 * Math.cos(t), 0, 5.5],
    [0, 0, 0.8, 11],
    [0, 0, 0, 1],
  ];
  const out = resampleToGrid(vol, [5, 5, 5], target, "linear", NaN);
  for (let k = 0; k < 5; k++) {
    for (let j = 0; j < 5; j++) {
      for (let i = 0; i < 5; i++) {
        assertAlmostEquals(out.data[voxelIndex([5, 5, 5], i, j, k)], f(applyAffine(target, [i, j, k])), 1e-4);
      }
    }
  }
});

Deno.test("resampleToSpacing keeps the field of view; nearest keeps the label set", () => {
  const shape: Vec3 = [10, 8, 6];
  const labels = new Int32Array(480).map((_, n) => (n % 10 < 5 ? 1 : 3) * (n % 80 < 40 ? 1 : 2));
  const vol = makeVolume(labels, shape, scaleAffine([1, 1, 1], [-5, -4, -3]));
  const half = resampleToSpacing(vol, [0.5, 0.5, 2], "nearest");
  assertEquals(half.shape, [20, 16, 3]);
  assert(half.data instanceof Int32Array);
  assertEquals(new Set(half.data), new Set(labels));
  // Outer faces are preserved: voxel 0's lower face sits where the original's did.
  const g = gridForSpacing(vol, [0.5, 0.5, 2]);
  assertAlmostEquals(g.affine[0][3] - 0.25, -5.5, 1e-12);
  assertAlmostEquals(g.affine[2][3] - 1, -3.5, 1e-12);
});

Deno.test("crop to the brain with a margin and restore into the original grid", () => {
  const shape: Vec3 = [12, 10, 8];
  const data = new Float32Array(960);
  data[voxelIndex(shape, 4, 3, 2)] = 1;
  data[voxelIndex(shape, 7, 6, 5)] = 2;
  const vol = makeVolume(data, shape, LPI_PERMUTED);
  const { volume: cropped, box } = cropToForeground(vol, { margin: 1 });
  assertEquals(box, { start: [3, 2, 1], end: [9, 8, 7] });
  assertEquals(cropped.shape, [6, 6, 6]);
  // Same world position for the marked voxel.
  const w = applyAffine(cropped.affine, [1, 1, 1]);
  assertEquals(w, applyAffine(vol.affine, [4, 3, 2]));
  assertEquals(cropped.data[voxelIndex(cropped.shape, 1, 1, 1)], 1);
  const restored = uncrop(cropped, box, vol);
  assertEquals(Array.from(restored.data), Array.from(data));
  assertEquals(restored.affine, vol.affine);
});
