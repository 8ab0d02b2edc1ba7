/**
 * NIfTI-1 reading and writing (`.nii`, `.nii.gz`) through nifti-reader-js.
 *
 * Reading: every real scalar datatype nibabel reads (uint8, int8, int16, uint16, int32, uint32,
 * int64, uint64, float32, float64; 64-bit integers only while exactly representable), either
 * byte order; `scl_slope` / `scl_inter` applied (to float32) when the slope is set and not the
 * identity; the affine taken from the sform when `sform_code > 0`, else the qform when
 * `qform_code > 0`, else the pixdims (the precedence nibabel uses), and refused when it is
 * non-finite or singular. Gzip streams are checked against their CRC-32 and length. The two-file
 * `.hdr`/`.img` form, NIfTI-2, complex and RGB voxels are refused by name.
 *
 * Writing: a single-file NIfTI-1 with both sform and qform set to the volume's affine (codes 1,
 * scanner), gzip-compressed when the name ends in `.gz`, written to a temporary file and renamed
 * so that an interrupted write never leaves a half-written volume behind.
 */
import * as nifti from "nifti-reader-js";
import { type Affine, affineDeterminant, affineSpacing, scaleAffine, type Vec3 } from "../volume/affine.ts";
import { makeVolume, type Volume, type VoxelArray } from "../volume/volume.ts";
import {
  CorruptVolumeError,
  DimensionError,
  NotNiftiError,
  UnsupportedDatatypeError,
  VolumeError,
  VolumeNotFoundError,
} from "./errors.ts";

/** NIfTI datatype codes this project reads and writes. */
export const NIFTI_DATATYPES = {
  uint8: { code: 2, bytes: 1, array: Uint8Array },
  int16: { code: 4, bytes: 2, array: Int16Array },
  int32: { code: 8, bytes: 4, array: Int32Array },
  float32: { code: 16, bytes: 4, array: Float32Array },
  float64: { code: 64, bytes: 8, array: Float64Array },
} as const;
export type NiftiDatatype = keyof typeof NIFTI_DATATYPES;

/**
 * Datatypes read but not written: widened to an array type that holds every value exactly
 * (64-bit integers: float64, refused beyond 2^53).
 */
const READ_ONLY_DATATYPES = {
  int8: { code: 256, bytes: 1 },
  uint16: { code: 512, bytes: 2 },
  uint32: { code: 768, bytes: 4 },
  int64: { code: 1024, bytes: 8 },
  uint64: { code: 1280, bytes: 8 },
} as const;
export type StoredDatatype = NiftiDatatype | keyof typeof READ_ONLY_DATATYPES;

const DATATYPE_NAMES: Record<number, string> = {
  1: "binary",
  2: "uint8",
  4: "int16",
  8: "int32",
  16: "float32",
  32: "complex64",
  64: "float64",
  128: "rgb24",
  256: "int8",
  512: "uint16",
  768: "uint32",
  1024: "int64",
  1280: "uint64",
  1536: "float128",
  1792: "complex128",
  2048: "complex256",
  2304: "rgba32",
};

export interface NiftiReadOptions {
  /** Accept a 4D file and return its first volume instead of throwing `DimensionError`. */
  firstVolumeOf4D?: boolean;
}

/** A volume plus what the header said about how it was stored. */
export interface NiftiVolume extends Volume {
  /** Datatype as stored in the file. */
  datatype: StoredDatatype;
  /** Where the affine came from. */
  affineSource: "sform" | "qform" | "pixdim";
}

async function readBytes(path: string): Promise<ArrayBuffer> {
  try {
    const bytes = await Deno.readFile(path);
    return bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      throw new VolumeNotFoundError(path, "file not found");
    }
    if (err instanceof Deno.errors.IsADirectory) {
      throw new VolumeNotFoundError(path, "is a directory, expected a .nii or .nii.gz file");
    }
    throw new VolumeNotFoundError(path, `cannot be read (${(err as Error).message})`);
  }
}

/**
 * Parses NIfTI-1 bytes (possibly gzipped). `name` is used in error messages. Every failure is a
 * named `VolumeError`: an unexpected exception from decoding a damaged file becomes a
 * `CorruptVolumeError` naming the file.
 */
export function parseNifti(
  name: string,
  raw: ArrayBuffer,
  options: NiftiReadOptions = {},
): NiftiVolume {
  try {
    return parseNiftiUnchecked(name, raw, options);
  } catch (err) {
    if (err instanceof VolumeError) throw err;
    throw new CorruptVolumeError(name, `damaged header or data (${(err as Error)?.message ?? err})`);
  }
}

function parseNiftiUnchecked(
  name: string,
  raw: ArrayBuffer,
  options: NiftiReadOptions,
): NiftiVolume {
  let buf = raw;
  if (raw.byteLength < 4) {
    throw new CorruptVolumeError(name, raw.byteLength ? `only ${raw.byteLength} bytes` : "the file is empty");
  }
  if (nifti.isCompressed(raw)) {
    try {
      buf = nifti.decompress(raw) as ArrayBuffer;
    } catch (err) {
      throw new CorruptVolumeError(
        name,
        `truncated or corrupt gzip stream (${(err as Error).message})`,
      );
    }
    checkGzipTrailer(name, raw, buf);
  } else if (name.endsWith(".gz")) {
    throw new CorruptVolumeError(name, "name ends in .gz but the file is not gzip-compressed");
  }
  if (buf.byteLength < 348) {
    throw new CorruptVolumeError(
      name,
      `only ${buf.byteLength} bytes, a NIfTI-1 header needs 348`,
    );
  }
  if (/\.(hdr|img)(\.gz)?$/i.test(name)) {
    throw new NotNiftiError(
      name,
      "the two-file NIfTI/Analyze form (.hdr + .img) is not supported; convert it to a single .nii or .nii.gz",
    );
  }
  if (!nifti.isNIFTI1(buf)) {
    const magic = new TextDecoder().decode(new Uint8Array(buf, 344, 4)).replace(/\0/g, "\\0");
    throw new NotNiftiError(
      name,
      nifti.isNIFTI2(buf)
        ? "NIfTI-2 files are not supported; convert to NIfTI-1"
        : `not a NIfTI-1 file (magic "${magic}", expected "n+1\\0")`,
    );
  }
  const header = nifti.readHeader(buf) as nifti.NIFTI1;
  const stored = ([...Object.entries(NIFTI_DATATYPES), ...Object.entries(READ_ONLY_DATATYPES)] as [
    StoredDatatype,
    { code: number; bytes: number },
  ][]).find(([, d]) => d.code === header.datatypeCode);
  if (!stored) {
    const dtName = DATATYPE_NAMES[header.datatypeCode] ?? "unknown";
    throw new UnsupportedDatatypeError(
      name,
      `datatype ${header.datatypeCode} (${dtName}) is not supported: only real scalar voxels are read ` +
        `(uint8, int8, int16, uint16, int32, uint32, int64, uint64, float32, float64)`,
    );
  }
  const [datatype, dt] = stored;

  const ndim = header.dims[0];
  const dims = header.dims.slice(1, 1 + ndim);
  const extra = dims.slice(3).reduce((a, b) => a * b, 1);
  if (ndim < 1 || ndim > 7 || dims.some((d) => d < 1)) {
    throw new CorruptVolumeError(name, `invalid dimensions ${JSON.stringify(header.dims)}`);
  }
  if (extra > 1 && !options.firstVolumeOf4D) {
    throw new DimensionError(
      name,
      `is ${ndim}D (${dims.join("x")}), expected a 3D volume`,
    );
  }
  const shape = [dims[0] ?? 1, dims[1] ?? 1, dims[2] ?? 1] as Vec3;
  const nvox = shape[0] * shape[1] * shape[2];

  const offset = Math.max(352, Math.round(header.vox_offset));
  const needed = offset + nvox * dt.bytes;
  if (buf.byteLength < needed) {
    throw new CorruptVolumeError(
      name,
      `truncated: ${buf.byteLength} bytes, header promises ${needed} (${shape.join("x")} ${datatype})`,
    );
  }
  let data: VoxelArray = readTyped(name, buf, offset, nvox, datatype, header.littleEndian);

  const slope = header.scl_slope;
  const inter = header.scl_inter;
  if (Number.isFinite(slope) && slope !== 0 && (slope !== 1 || (Number.isFinite(inter) && inter !== 0))) {
    const scaled = new Float32Array(nvox);
    const b = Number.isFinite(inter) ? inter : 0;
    for (let n = 0; n < nvox; n++) scaled[n] = data[n] * slope + b;
    data = scaled;
  }

  const { affine, source } = headerAffine(name, buf, header);
  return { ...makeVolume(data, shape, affine), datatype, affineSource: source };
}

function readTyped(
  name: string,
  buf: ArrayBuffer,
  offset: number,
  n: number,
  datatype: StoredDatatype,
  littleEndian: boolean,
): VoxelArray {
  if (datatype in NIFTI_DATATYPES) {
    const dt = NIFTI_DATATYPES[datatype as NiftiDatatype];
    if (littleEndian && offset % dt.bytes === 0) {
      const out = new dt.array(n);
      out.set(new dt.array(buf, offset, n));
      return out;
    }
  }
  const view = new DataView(buf, offset);
  const le = littleEndian;
  const read = (make: (p: number) => number, bytes: number, out: VoxelArray) => {
    for (let i = 0; i < n; i++) out[i] = make(i * bytes);
    return out;
  };
  switch (datatype) {
    case "uint8":
      return read((p) => view.getUint8(p), 1, new Uint8Array(n));
    case "int8":
      return read((p) => view.getInt8(p), 1, new Int16Array(n));
    case "int16":
      return read((p) => view.getInt16(p, le), 2, new Int16Array(n));
    case "uint16":
      return read((p) => view.getUint16(p, le), 2, new Int32Array(n));
    case "int32":
      return read((p) => view.getInt32(p, le), 4, new Int32Array(n));
    case "uint32":
      return read((p) => view.getUint32(p, le), 4, new Float64Array(n));
    case "float32":
      return read((p) => view.getFloat32(p, le), 4, new Float32Array(n));
    case "float64":
      return read((p) => view.getFloat64(p, le), 8, new Float64Array(n));
    case "int64":
    case "uint64": {
      const out = new Float64Array(n);
      for (let i = 0; i < n; i++) {
        const v = datatype === "int64" ? view.getBigInt64(i * 8, le) : view.getBigUint64(i * 8, le);
        if (v > 9007199254740992n || v < -9007199254740992n) {
          throw new UnsupportedDatatypeError(
            name,
            `${datatype} voxel ${i} is ${v}, beyond the 2^53 that float64 holds exactly`,
          );
        }
        out[i] = Number(v);
      }
      return out;
    }
  }
}

/** CRC-32 (IEEE 802.3, as gzip uses) of some bytes. */
export function crc32(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
const CRC_TABLE = Uint32Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

/**
 * Checks a gzip file's trailer (CRC-32 and length mod 2^32 of the uncompressed data) against what
 * decompression produced: a damaged stream can inflate without error.
 */
function checkGzipTrailer(name: string, raw: ArrayBuffer, out: ArrayBuffer): void {
  if (raw.byteLength < 18) throw new CorruptVolumeError(name, "truncated gzip stream");
  const trailer = new DataView(raw, raw.byteLength - 8);
  const size = trailer.getUint32(4, true);
  if (size !== out.byteLength % 2 ** 32) {
    throw new CorruptVolumeError(
      name,
      `gzip length check failed (the stream records ${size} bytes, ${out.byteLength} inflated): ` +
        `truncated or damaged, or a multi-member (bgzip) stream, which is not supported`,
    );
  }
  const want = trailer.getUint32(0, true), got = crc32(new Uint8Array(out));
  if (want !== got) {
    throw new CorruptVolumeError(
      name,
      `gzip CRC-32 mismatch (stored ${want.toString(16)}, computed ${got.toString(16)}): the file is damaged`,
    );
  }
}

/** sform if coded, else qform if coded, else pixdim scaling (nibabel's precedence). */
function headerAffine(
  name: string,
  buf: ArrayBuffer,
  header: nifti.NIFTI1,
): { affine: Affine; source: NiftiVolume["affineSource"] } {
  let affine: Affine, source: NiftiVolume["affineSource"];
  if (header.sform_code > 0) {
    const view = new DataView(buf);
    affine = [0, 1, 2].map((r) =>
      [0, 1, 2, 3].map((c) => view.getFloat32(280 + (r * 4 + c) * 4, header.littleEndian))
    );
    affine.push([0, 0, 0, 1]);
    source = "sform";
  } else if (header.qform_code > 0) {
    const q = header.getQformMat();
    affine = q.map((row) => [...row]);
    source = "qform";
  } else {
    const sp = [1, 2, 3].map((d) => header.pixDims[d]) as Vec3;
    if (sp.some((v) => !Number.isFinite(v) || v <= 0)) {
      throw new CorruptVolumeError(name, `voxel sizes (pixdim) ${sp.join(", ")} must be finite and positive`);
    }
    affine = scaleAffine(sp);
    source = "pixdim";
  }
  if (affine.some((row) => row.some((v) => !Number.isFinite(v)))) {
    throw new CorruptVolumeError(name, `the ${source} affine has non-finite entries`);
  }
  const [a, b, c] = affine;
  const det = affineDeterminant(affine);
  const scale = Math.max(...[0, 1, 2].map((j) => Math.hypot(a[j], b[j], c[j])));
  if (!(Math.abs(det) > 1e-9 * scale ** 3)) {
    throw new CorruptVolumeError(
      name,
      `the ${source} affine is singular (a zero voxel size or collapsed axes)`,
    );
  }
  return { affine, source };
}

/**
 * Refuses a volume that is not a 3D image with at least `minExtent` voxels along every axis
 * (a 2D image or a single slice reads as shape [x, y, 1]).
 */
export function requireVolume3D(vol: Volume, name: string, minExtent = 4): void {
  if (vol.shape.some((n) => n < minExtent)) {
    throw new DimensionError(
      name,
      `is ${
        vol.shape.join("x")
      } voxels; a 3D volume with at least ${minExtent} voxels along every axis is needed`,
    );
  }
}

/**
 * Replaces NaN and infinite voxels with 0 (SPM, for one, writes NaN outside the brain); returns
 * how many were replaced.
 */
export function zeroNonFinite(data: Float32Array): number {
  let n = 0;
  for (let i = 0; i < data.length; i++) {
    if (!Number.isFinite(data[i])) {
      data[i] = 0;
      n++;
    }
  }
  return n;
}

/** Reads a 3D NIfTI-1 volume from `.nii` or `.nii.gz`. */
export async function readNifti(path: string, options: NiftiReadOptions = {}): Promise<NiftiVolume> {
  return parseNifti(path, await readBytes(path), options);
}

/** Quaternion parameters (b, c, d, qfac) of the rotation in an affine, as nifti1_io's mat44_to_quatern. */
function affineToQuatern(a: Affine): { b: number; c: number; d: number; qfac: number } {
  const sp = affineSpacing(a);
  // Normalised columns.
  const r = [0, 1, 2].map((i) => [0, 1, 2].map((j) => a[i][j] / (sp[j] || 1)));
  const det = r[0][0] * (r[1][1] * r[2][2] - r[1][2] * r[2][1]) -
    r[0][1] * (r[1][0] * r[2][2] - r[1][2] * r[2][0]) +
    r[0][2] * (r[1][0] * r[2][1] - r[1][1] * r[2][0]);
  let qfac = 1;
  if (det < 0) {
    qfac = -1;
    for (let i = 0; i < 3; i++) r[i][2] = -r[i][2];
  }
  const [[r11, r12, r13], [r21, r22, r23], [r31, r32, r33]] = r;
  let qa = r11 + r22 + r33 + 1;
  let b: number, c: number, d: number;
  if (qa > 0.5) {
    qa = 0.5 * Math.sqrt(qa);
    b = 0.25 * (r32 - r23) / qa;
    c = 0.25 * (r13 - r31) / qa;
    d = 0.25 * (r21 - r12) / qa;
  } else {
    const xd = 1 + r11 - (r22 + r33), yd = 1 + r22 - (r11 + r33), zd = 1 + r33 - (r11 + r22);
    if (xd > 1) {
      b = 0.5 * Math.sqrt(xd);
      c = 0.25 * (r12 + r21) / b;
      d = 0.25 * (r13 + r31) / b;
      qa = 0.25 * (r32 - r23) / b;
    } else if (yd > 1) {
      c = 0.5 * Math.sqrt(yd);
      b = 0.25 * (r12 + r21) / c;
      d = 0.25 * (r23 + r32) / c;
      qa = 0.25 * (r13 - r31) / c;
    } else {
      d = 0.5 * Math.sqrt(zd);
      b = 0.25 * (r13 + r31) / d;
      c = 0.25 * (r23 + r32) / d;
      qa = 0.25 * (r21 - r12) / d;
    }
    if (qa < 0) {
      b = -b;
      c = -c;
      d = -d;
    }
  }
  return { b, c, d, qfac };
}

function datatypeOf(data: VoxelArray): NiftiDatatype {
  if (data instanceof Uint8Array) return "uint8";
  if (data instanceof Int16Array) return "int16";
  if (data instanceof Int32Array) return "int32";
  if (data instanceof Float64Array) return "float64";
  return "float32";
}

/** Serialises a volume to NIfTI-1 bytes (uncompressed), in the data's own datatype. */
export function encodeNifti(vol: Volume, description = "uhf-guided-segmentation"): Uint8Array {
  const datatype = datatypeOf(vol.data);
  const dt = NIFTI_DATATYPES[datatype];
  const nvox = vol.shape[0] * vol.shape[1] * vol.shape[2];
  if (vol.data.length !== nvox) {
    throw new RangeError(
      `cannot encode: ${vol.data.length} voxels do not fill a ${vol.shape.join("x")} grid`,
    );
  }
  if (!vol.affine.flat().every(Number.isFinite)) {
    throw new RangeError(`cannot encode: the affine has non-finite entries`);
  }
  const h = new nifti.NIFTI1();
  h.littleEndian = true;
  h.dims = [3, vol.shape[0], vol.shape[1], vol.shape[2], 1, 1, 1, 1];
  h.datatypeCode = dt.code;
  h.numBitsPerVoxel = dt.bytes * 8;
  const q = affineToQuatern(vol.affine);
  h.pixDims = [q.qfac, ...affineSpacing(vol.affine), 0, 0, 0, 0];
  h.vox_offset = 352;
  h.scl_slope = 1;
  h.scl_inter = 0;
  h.xyzt_units = 2 | 8; // millimetres, seconds
  h.description = description.slice(0, 79);
  h.aux_file = "";
  h.intent_name = "";
  h.qform_code = 1;
  h.sform_code = 1;
  h.quatern_b = q.b;
  h.quatern_c = q.c;
  h.quatern_d = q.d;
  h.qoffset_x = vol.affine[0][3];
  h.qoffset_y = vol.affine[1][3];
  h.qoffset_z = vol.affine[2][3];
  h.affine = vol.affine.map((row) => [...row]);
  h.magic = "n+1";
  const header = new Uint8Array(h.toArrayBuffer(false));
  const out = new Uint8Array(352 + vol.data.length * dt.bytes);
  out.set(header.subarray(0, 352), 0);
  // Typed arrays are little-endian on every platform Deno runs on (x86-64, arm64).
  out.set(new Uint8Array(vol.data.buffer, vol.data.byteOffset, vol.data.byteLength), 352);
  return out;
}

async function gzip(bytes: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([bytes as BlobPart]).stream().pipeThrough(new CompressionStream("gzip"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/**
 * Writes bytes atomically: to `path.<random>.tmp` in the same folder, then renamed over `path`.
 * A crash or error mid-write leaves any earlier file at `path` untouched.
 */
export async function writeFileAtomic(path: string, bytes: Uint8Array | string): Promise<void> {
  const tmp = `${path}.${crypto.randomUUID().slice(0, 8)}.tmp`;
  try {
    if (typeof bytes === "string") await Deno.writeTextFile(tmp, bytes);
    else await Deno.writeFile(tmp, bytes);
    await Deno.rename(tmp, path);
  } catch (err) {
    await Deno.remove(tmp).catch(() => {});
    throw err;
  }
}

/** Writes a volume as `.nii` or `.nii.gz` (by the file name), keeping its affine and datatype. */
export async function writeNifti(path: string, vol: Volume, description?: string): Promise<void> {
  if (!/\.nii(\.gz)?$/.test(path)) {
    throw new RangeError(`${path}: output name must end in .nii or .nii.gz`);
  }
  let raw: Uint8Array;
  try {
    raw = encodeNifti(vol, description);
  } catch (err) {
    throw new RangeError(`${path}: ${(err as Error).message}`);
  }
  await writeFileAtomic(path, path.endsWith(".gz") ? await gzip(raw) : raw);
}
