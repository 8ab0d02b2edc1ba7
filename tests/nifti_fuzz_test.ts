/**
 * A seeded fuzzer over NIfTI headers and gzip streams: mutated bytes, truncations and extreme
 * header fields. Every outcome must be a consistent volume or a named `VolumeError` that names
 * the file; never another exception, a hang, or a volume whose data and shape disagree.
 */
import { assert } from "@std/assert";
import { encodeNifti, makeVolume, parseNifti, VolumeError } from "../lib/mod.ts";
import { mulberry32 } from "../lib/random.ts";
import { gzipSync } from "node:zlib";

const SHAPE: [number, number, number] = [6, 5, 4];
const plain = encodeNifti(makeVolume(Float32Array.from({ length: 120 }, (_, i) => i / 7), SHAPE, [
  [1.5, 0, 0, -3],
  [0, 1, 0.1, 4],
  [0, 0, 2, 5],
  [0, 0, 0, 1],
]));
const gz = new Uint8Array(gzipSync(plain));

/** Header fields worth pushing to extremes: [offset, kind]. */
const FIELDS: [number, "i16" | "f32"][] = [
  [40, "i16"],
  [42, "i16"],
  [44, "i16"],
  [46, "i16"], // dim[0..3]
  [70, "i16"],
  [72, "i16"], // datatype, bitpix
  [76, "f32"],
  [80, "f32"],
  [84, "f32"],
  [88, "f32"], // pixdim[0..3]
  [108, "f32"],
  [112, "f32"],
  [116, "f32"], // vox_offset, scl_slope, scl_inter
  [252, "i16"],
  [254, "i16"], // qform_code, sform_code
  [256, "f32"],
  [260, "f32"],
  [264, "f32"], // quatern b, c, d
  [280, "f32"],
  [284, "f32"],
  [300, "f32"],
  [320, "f32"], // srow entries
];
const EXTREMES = [0, -1, 1, 2, 7, 8, 255, 32767, -32768, 1e30, -1e30, NaN, Infinity, 3.5];

function mutate(seed: number): { name: string; bytes: Uint8Array } {
  const r = mulberry32(seed);
  const compressed = r() < 0.4;
  const src = compressed ? gz : plain;
  const bytes = src.slice();
  const kind = Math.floor(r() * 4);
  if (kind === 0) {
    // random byte flips, biased to the header (or to the gzip stream)
    const flips = 1 + Math.floor(r() * 6);
    for (let i = 0; i < flips; i++) {
      const at = r() < 0.7 ? Math.floor(r() * Math.min(352, bytes.length)) : Math.floor(r() * bytes.length);
      bytes[at] ^= 1 + Math.floor(r() * 255);
    }
    return { name: compressed ? "flip.nii.gz" : "flip.nii", bytes };
  }
  if (kind === 1) {
    return {
      name: compressed ? "cut.nii.gz" : "cut.nii",
      bytes: bytes.subarray(0, Math.floor(r() * bytes.length)),
    };
  }
  // extreme header fields (uncompressed, then optionally gzipped)
  const h = plain.slice();
  const view = new DataView(h.buffer, h.byteOffset, h.byteLength);
  const n = 1 + Math.floor(r() * 3);
  for (let i = 0; i < n; i++) {
    const [off, t] = FIELDS[Math.floor(r() * FIELDS.length)];
    const v = EXTREMES[Math.floor(r() * EXTREMES.length)];
    if (t === "i16") {
      view.setInt16(off, Number.isFinite(v) ? Math.max(-32768, Math.min(32767, Math.trunc(v))) : 0, true);
    } else view.setFloat32(off, v, true);
  }
  return compressed
    ? { name: "field.nii.gz", bytes: new Uint8Array(gzipSync(h)) }
    : { name: "field.nii", bytes: h };
}

/** Seeded cases a run: 600 in the suite; `FUZZ_CASES=10000 deno test -A tests/nifti_fuzz_test.ts` for more. */
const CASES = Number(Deno.env.get("FUZZ_CASES") ?? 600);

Deno.test(`NIfTI fuzzer: ${CASES} seeded mutations give a consistent volume or a named VolumeError`, () => {
  let read = 0, refused = 0;
  for (let seed = 1; seed <= CASES; seed++) {
    const { name, bytes } = mutate(seed);
    const buf = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
    try {
      const v = parseNifti(name, buf);
      const n = v.shape[0] * v.shape[1] * v.shape[2];
      assert(v.shape.every((d) => Number.isInteger(d) && d >= 1), `seed ${seed}: shape ${v.shape}`);
      assert(v.data.length === n, `seed ${seed}: ${v.data.length} voxels for shape ${v.shape}`);
      assert(v.affine.flat().every(Number.isFinite), `seed ${seed}: non-finite affine`);
      read++;
    } catch (err) {
      assert(
        err instanceof VolumeError,
        `seed ${seed} (${name}): ${(err as Error)?.name}: ${
          (err as Error)?.message
        } is not a named volume error`,
      );
      assert(err.message.startsWith(name), `seed ${seed}: message does not name the file: ${err.message}`);
      refused++;
    }
  }
  assert(read > 50 && refused > 50, `read ${read}, refused ${refused}: the fuzzer should exercise both`);
});
