import {
  assert,
  assertAlmostEquals,
  assertEquals,
  assertRejects,
  assertStringIncludes,
  assertThrows,
} from "@std/assert";
import {
  type Affine,
  assertSameGrid,
  CorruptVolumeError,
  crc32,
  DimensionError,
  encodeNifti,
  GridMismatchError,
  makeVolume,
  NotNiftiError,
  parseNifti,
  readNifti,
  requireVolume3D,
  UnsupportedDatatypeError,
  type Vec3,
  VolumeNotFoundError,
  writeNifti,
  zeroNonFinite,
} from "../lib/mod.ts";

/** An oblique, anisotropic, left-handed affine: exercises qform quaternions and qfac. */
const OBLIQUE: Affine = (() => {
  const t = 0.3; // rotation about z
  const sp = [1.2, 0.9, 2.5];
  return [
    [-Math.cos(t) * sp[0], -Math.sin(t) * sp[1], 0, 90.5],
    [-Math.sin(t) * sp[0], Math.cos(t) * sp[1], 0, -126.25],
    [0, 0, sp[2], -72],
    [0, 0, 0, 1],
  ];
})();

function ramp<T extends Float32Array | Int16Array | Int32Array | Uint8Array | Float64Array>(
  Ctor: { new (n: number): T },
  shape: Vec3,
): T {
  const n = shape[0] * shape[1] * shape[2];
  const out = new Ctor(n);
  const frac = out instanceof Float32Array || out instanceof Float64Array ? 0.25 : 0;
  for (let i = 0; i < n; i++) out[i] = (i * 7) % 200 + frac;
  return out;
}

function assertAffineClose(a: Affine, b: Affine, tol = 1e-4) {
  for (let i = 0; i < 4; i++) {
    for (let j = 0; j < 4; j++) assertAlmostEquals(a[i][j], b[i][j], tol, `affine[${i}][${j}]`);
  }
}

const tmp = await Deno.makeTempDir({ prefix: "uhf-nifti-" });
const SHAPE: Vec3 = [5, 4, 3];

for (const Ctor of [Uint8Array, Int16Array, Int32Array, Float32Array, Float64Array]) {
  for (const ext of [".nii", ".nii.gz"]) {
    Deno.test(`round trip ${Ctor.name} ${ext}: shape, affine, datatype and values`, async () => {
      const vol = makeVolume(ramp(Ctor as never, SHAPE) as Float32Array, SHAPE, OBLIQUE);
      const path = `${tmp}/rt-${Ctor.name}${ext}`;
      await writeNifti(path, vol);
      const back = await readNifti(path);
      assertEquals(back.shape, SHAPE);
      assertEquals(back.data.constructor, Ctor);
      assertEquals(Array.from(back.data), Array.from(vol.data));
      assertAffineClose(back.affine, OBLIQUE);
      assertEquals(back.affineSource, "sform");
      for (let d = 0; d < 3; d++) assertAlmostEquals(back.spacing[d], [1.2, 0.9, 2.5][d], 1e-5);
    });
  }
}

/** Patches header fields of an uncompressed encoding (little-endian). */
function patched(vol: ReturnType<typeof makeVolume>, patch: (view: DataView) => void): ArrayBuffer {
  const bytes = encodeNifti(vol);
  patch(new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength));
  return bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
}

Deno.test("scl_slope and scl_inter are applied (to float32)", () => {
  const vol = makeVolume(Int16Array.from([0, 1, 2, 3, -4, 5, 6, 7]), [2, 2, 2], OBLIQUE);
  const buf = patched(vol, (v) => {
    v.setFloat32(112, 2, true);
    v.setFloat32(116, -1.5, true);
  });
  const back = parseNifti("scaled.nii", buf);
  assert(back.data instanceof Float32Array);
  assertEquals(Array.from(back.data), [0, 1, 2, 3, -4, 5, 6, 7].map((x) => 2 * x - 1.5));
  assertEquals(back.datatype, "int16");
});

Deno.test("affine precedence: sform, else qform, else pixdim", () => {
  const vol = makeVolume(new Float32Array(8), [2, 2, 2], OBLIQUE);
  // qform only: the quaternion written by encodeNifti must reproduce the affine.
  const qOnly = parseNifti("q.nii", patched(vol, (v) => v.setInt16(254, 0, true)));
  assertEquals(qOnly.affineSource, "qform");
  assertAffineClose(qOnly.affine, OBLIQUE);
  // sform wins even when the qform says something else.
  const sWins = parseNifti("s.nii", patched(vol, (v) => v.setFloat32(268, 999, true)));
  assertEquals(sWins.affineSource, "sform");
  assertAffineClose(sWins.affine, OBLIQUE);
  // neither: pixdim scaling.
  const none = parseNifti(
    "p.nii",
    patched(vol, (v) => {
      v.setInt16(252, 0, true);
      v.setInt16(254, 0, true);
    }),
  );
  assertEquals(none.affineSource, "pixdim");
  assertAffineClose(none.affine, [[1.2, 0, 0, 0], [0, 0.9, 0, 0], [0, 0, 2.5, 0], [0, 0, 0, 1]]);
});

Deno.test("big-endian files are read correctly", () => {
  // Hand-built big-endian header: int16 2x1x1 with values 258 and -2.
  const buf = new ArrayBuffer(352 + 4);
  const v = new DataView(buf);
  v.setInt32(0, 348, false);
  [3, 2, 1, 1, 1, 1, 1, 1].forEach((d, i) => v.setInt16(40 + 2 * i, d, false));
  v.setInt16(70, 4, false);
  v.setInt16(72, 16, false);
  [1, 1, 1, 1].forEach((p, i) => v.setFloat32(76 + 4 * i, p, false));
  v.setFloat32(108, 352, false);
  new Uint8Array(buf).set(new TextEncoder().encode("n+1\0"), 344);
  v.setInt16(352, 258, false);
  v.setInt16(354, -2, false);
  const back = parseNifti("be.nii", buf);
  assertEquals(Array.from(back.data), [258, -2]);
});

Deno.test("writes are atomic: a failed write leaves the earlier file intact", async () => {
  const path = `${tmp}/keep.nii.gz`;
  const vol = makeVolume(Float32Array.from([1, 2, 3, 4, 5, 6, 7, 8]), [2, 2, 2], OBLIQUE);
  await writeNifti(path, vol);
  const before = await Deno.readFile(path);
  // A volume whose data does not fit its shape cannot be encoded; nothing may be written.
  const broken = { ...vol, shape: [4, 4, 4] as Vec3 };
  await assertRejects(() => writeNifti(path, broken as never));
  assertEquals(await Deno.readFile(path), before);
  const leftovers = [...Deno.readDirSync(tmp)].filter((e) => e.name.endsWith(".tmp"));
  assertEquals(leftovers.length, 0);
});

// ------------------------------------------------------------------------------------------
// Bad input: each case has a named error whose message names the file and the problem.

Deno.test("bad input: a missing file", async () => {
  const err = await assertRejects(() => readNifti(`${tmp}/nope.nii.gz`), VolumeNotFoundError);
  assertStringIncludes(err.message, "nope.nii.gz");
  assertStringIncludes(err.message, "not found");
});

Deno.test("bad input: a truncated .gz", async () => {
  const path = `${tmp}/trunc.nii.gz`;
  await writeNifti(path, makeVolume(ramp(Float32Array, [16, 16, 16]), [16, 16, 16], OBLIQUE));
  const bytes = await Deno.readFile(path);
  await Deno.writeFile(path, bytes.subarray(0, Math.floor(bytes.length / 2)));
  const err = await assertRejects(() => readNifti(path), CorruptVolumeError);
  assertStringIncludes(err.message, "trunc.nii.gz");
  assertStringIncludes(err.message, "gzip");
});

Deno.test("bad input: truncated voxel data in a .nii", () => {
  const bytes = encodeNifti(makeVolume(ramp(Float32Array, SHAPE), SHAPE, OBLIQUE));
  const cut = bytes.slice(0, bytes.length - 10).buffer as ArrayBuffer;
  const err = assertThrows(() => parseNifti("short.nii", cut), CorruptVolumeError);
  assertStringIncludes(err.message, "short.nii: truncated");
});

Deno.test("bad input: a wrong magic", () => {
  const buf = patched(makeVolume(ramp(Float32Array, SHAPE), SHAPE, OBLIQUE), (v) => v.setUint8(345, 0x78));
  const err = assertThrows(() => parseNifti("magic.nii", buf), NotNiftiError);
  assertStringIncludes(err.message, "magic.nii");
  assertStringIncludes(err.message, "magic");
});

Deno.test("bad input: an unsupported datatype is named", () => {
  const buf = patched(makeVolume(ramp(Int16Array, SHAPE), SHAPE, OBLIQUE), (v) => v.setInt16(70, 32, true));
  const err = assertThrows(() => parseNifti("c64.nii", buf), UnsupportedDatatypeError);
  assertStringIncludes(err.message, "c64.nii");
  assertStringIncludes(err.message, "complex64");
});

Deno.test("crc32: the standard check value", () => {
  assertEquals(crc32(new TextEncoder().encode("123456789")), 0xcbf43926);
  assertEquals(crc32(new Uint8Array()), 0);
});

Deno.test("bad input: a .gz whose CRC-32 or length does not match its data", async () => {
  const path = `${tmp}/crc.nii.gz`;
  await writeNifti(path, makeVolume(ramp(Float32Array, SHAPE), SHAPE, OBLIQUE));
  const good = await Deno.readFile(path);
  assertEquals((await readNifti(path)).shape, SHAPE);
  const n = good.length;
  // the stored CRC-32, then the stored length (which fflate also uses to size its output)
  for (const [at, what] of [[n - 8, "CRC-32 mismatch"], [n - 3, "gzip"]] as const) {
    const bad = good.slice();
    bad[at] ^= 0x5a;
    await Deno.writeFile(path, bad);
    const err = await assertRejects(() => readNifti(path), CorruptVolumeError);
    assertStringIncludes(err.message, "crc.nii.gz");
    assertStringIncludes(err.message, what);
  }
});

Deno.test("bad input: singular or non-finite affines and non-positive voxel sizes", () => {
  const vol = makeVolume(ramp(Float32Array, SHAPE), SHAPE, OBLIQUE);
  // sform row x all zero: a collapsed axis
  const singular = patched(vol, (v) => [0, 1, 2, 3].forEach((c) => v.setFloat32(280 + 4 * c, 0, true)));
  assertStringIncludes(
    assertThrows(() => parseNifti("flat.nii", singular), CorruptVolumeError).message,
    "singular",
  );
  const nan = patched(vol, (v) => v.setFloat32(280, Number.NaN, true));
  assertStringIncludes(
    assertThrows(() => parseNifti("nan.nii", nan), CorruptVolumeError).message,
    "non-finite",
  );
  for (const size of [0, -3]) {
    // no sform, no qform: the pixdims are the affine
    const buf = patched(vol, (v) => {
      v.setInt16(252, 0, true);
      v.setInt16(254, 0, true);
      v.setFloat32(80, size, true);
    });
    const err = assertThrows(() => parseNifti("pixdim.nii", buf), CorruptVolumeError);
    assertStringIncludes(err.message, "pixdim.nii: voxel sizes");
  }
});

Deno.test("bad input: the two-file .hdr/.img form is named", () => {
  const buf = encodeNifti(makeVolume(ramp(Float32Array, SHAPE), SHAPE, OBLIQUE)).buffer as ArrayBuffer;
  const err = assertThrows(() => parseNifti("brain.hdr", buf), NotNiftiError);
  assertStringIncludes(err.message, ".hdr + .img");
});

Deno.test("requireVolume3D refuses 2D images and single slices; zeroNonFinite counts what it replaces", () => {
  requireVolume3D(makeVolume(new Float32Array(64), [4, 4, 4], OBLIQUE), "ok.nii");
  for (const shape of [[16, 16, 1], [16, 2, 16]] as Vec3[]) {
    const vol = makeVolume(new Float32Array(shape[0] * shape[1] * shape[2]), shape, OBLIQUE);
    const err = assertThrows(() => requireVolume3D(vol, "slice.nii"), DimensionError);
    assertStringIncludes(err.message, `slice.nii: is ${shape.join("x")} voxels`);
  }
  const data = Float32Array.from([1, Number.NaN, 2, Infinity, -Infinity, 0]);
  assertEquals(zeroNonFinite(data), 3);
  assertEquals(Array.from(data), [1, 0, 2, 0, 0, 0]);
});

Deno.test("bad input: a 4D volume where 3D is expected (and its first volume on request)", () => {
  const data = ramp(Float32Array, [2, 2, 2]);
  const four = new Float32Array(16);
  four.set(data);
  four.set(data.map((x) => x + 100), 8);
  const vol = makeVolume(four, [2, 2, 4], OBLIQUE);
  const buf = patched(vol, (v) => {
    v.setInt16(40, 4, true);
    v.setInt16(46, 2, true); // nk = 2
    v.setInt16(48, 2, true); // nt = 2
  });
  const err = assertThrows(() => parseNifti("fmri.nii", buf), DimensionError);
  assertStringIncludes(err.message, "fmri.nii");
  assertStringIncludes(err.message, "4D");
  const first = parseNifti("fmri.nii", buf, { firstVolumeOf4D: true });
  assertEquals(first.shape, [2, 2, 2]);
  assertEquals(Array.from(first.data), Array.from(data));
});

Deno.test("bad input: an image/label pair whose shape or affine disagree", () => {
  const image = makeVolume(new Float32Array(60), SHAPE, OBLIQUE);
  const labels = makeVolume(new Int32Array(60), [5, 3, 4], OBLIQUE);
  const e1 = assertThrows(
    () => assertSameGrid(image, labels, { image: "t1.nii.gz", labels: "seg.nii.gz" }),
    GridMismatchError,
  );
  assertStringIncludes(e1.message, "t1.nii.gz / seg.nii.gz: shapes disagree");
  const shifted = OBLIQUE.map((r) => [...r]);
  shifted[0][3] += 1;
  const e2 = assertThrows(
    () =>
      assertSameGrid(image, makeVolume(new Int32Array(60), SHAPE, shifted), {
        image: "a.nii",
        labels: "b.nii",
      }),
    GridMismatchError,
  );
  assertStringIncludes(e2.message, "affines disagree");
  assertSameGrid(image, makeVolume(new Int32Array(60), SHAPE, OBLIQUE)); // same grid passes
});
