/**
 * DICOM input through dcmjs: a folder of single-frame DICOM Part 10 files (the `DICM` preamble)
 * becomes one 3D volume with a NIfTI (RAS) affine.
 *
 * - Series: files are grouped by SeriesInstanceUID; `readDicomSeries` takes the folder's only
 *   series, or the one `series` names, and refuses a folder with several (listing them: UID,
 *   description, number of slices, one example file).
 * - Slices are sorted along the slice normal (ImagePositionPatient . (row x column cosines)) and
 *   must be evenly spaced along it (a gap, two slices at one position or a sheared stack are
 *   refused); RescaleSlope/RescaleIntercept are applied (float32).
 * - Geometry: voxel (i, j, k) is (column, last row up, slice in ascending position), the voxel
 *   order dcm2niix writes; spacing from PixelSpacing and the measured distance between slices;
 *   the affine from ImageOrientationPatient/ImagePositionPatient, converted from DICOM's LPS to
 *   NIfTI's RAS (x and y negated). `tests/dicom_test.ts` checks the world geometry and values
 *   against dcm2niix's after `toCanonical`, and the voxel order as written.
 * - Uncompressed transfer syntaxes only (implicit and explicit VR little endian, deflated explicit
 *   little endian); a compressed one (JPEG, JPEG-LS, JPEG 2000, RLE, ...) or big endian is refused
 *   naming the file and the transfer syntax's UID and name. Multi-frame (enhanced) files, colour
 *   pixels and MONOCHROME1 are refused by name.
 */
import dcmjs from "dcmjs";
import { join, relative } from "node:path";
import type { Affine, Vec3 } from "../volume/affine.ts";
import { permuteFlip } from "../volume/geometry.ts";
import { makeVolume, type Volume } from "../volume/volume.ts";
import { VolumeError, VolumeNotFoundError } from "./errors.ts";

// dcmjs logs recoverable oddities (a VR it guessed, a value it truncated) to the console; the
// reader's own checks decide what is refused, so only its errors are shown
dcmjs.log.setLevel("error");
dcmjs.log.getLogger("validation.dcmjs").setLevel("silent");

/** A DICOM file or folder that cannot be turned into a volume; the message names the file or folder. */
export class DicomError extends VolumeError {
  override name = "DicomError";
}

/** Transfer syntaxes whose pixel data is stored uncompressed and little endian (read here). */
const NATIVE_SYNTAXES: Record<string, string> = {
  "1.2.840.10008.1.2": "Implicit VR Little Endian",
  "1.2.840.10008.1.2.1": "Explicit VR Little Endian",
  "1.2.840.10008.1.2.1.99": "Deflated Explicit VR Little Endian",
};

/** Names of transfer syntaxes that are refused, for the error message. */
const OTHER_SYNTAXES: Record<string, string> = {
  "1.2.840.10008.1.2.2": "Explicit VR Big Endian",
  "1.2.840.10008.1.2.4.50": "JPEG Baseline (Process 1)",
  "1.2.840.10008.1.2.4.51": "JPEG Extended (Process 2 & 4)",
  "1.2.840.10008.1.2.4.57": "JPEG Lossless, Non-Hierarchical (Process 14)",
  "1.2.840.10008.1.2.4.70": "JPEG Lossless, First-Order Prediction (Process 14, SV1)",
  "1.2.840.10008.1.2.4.80": "JPEG-LS Lossless",
  "1.2.840.10008.1.2.4.81": "JPEG-LS Near-Lossless",
  "1.2.840.10008.1.2.4.90": "JPEG 2000 (Lossless Only)",
  "1.2.840.10008.1.2.4.91": "JPEG 2000",
  "1.2.840.10008.1.2.4.100": "MPEG2 Main Profile",
  "1.2.840.10008.1.2.4.102": "MPEG-4 AVC/H.264",
  "1.2.840.10008.1.2.4.201": "High-Throughput JPEG 2000 (Lossless Only)",
  "1.2.840.10008.1.2.4.202": "High-Throughput JPEG 2000 with RPCL Options (Lossless Only)",
  "1.2.840.10008.1.2.4.203": "High-Throughput JPEG 2000",
  "1.2.840.10008.1.2.5": "RLE Lossless",
};

/** The name of a transfer syntax UID ("unknown" when it is not a standard one). */
export function transferSyntaxName(uid: string): string {
  return NATIVE_SYNTAXES[uid] ?? OTHER_SYNTAXES[uid] ?? "unknown transfer syntax";
}

/** One series of a folder, as listed when a folder holds several. */
export interface DicomSeriesInfo {
  /** SeriesInstanceUID. */
  uid: string;
  /** SeriesDescription ("" when absent). */
  description: string;
  /** Image files of the series (one slice each), sorted by name. */
  files: string[];
}

// deno-lint-ignore no-explicit-any
type Dataset = Record<string, any>;

interface ParsedFile {
  path: string;
  syntax: string;
  ds: Dataset;
}

function isPart10(bytes: Uint8Array): boolean {
  return bytes.length >= 132 && bytes[128] === 0x44 && bytes[129] === 0x49 && bytes[130] === 0x43 &&
    bytes[131] === 0x4d;
}

/** Parses one Part 10 file (the header only when `headerOnly`: everything before PixelData). */
function parseFile(path: string, bytes: Uint8Array, headerOnly: boolean): ParsedFile {
  const buffer = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
  let message;
  try {
    message = dcmjs.data.DicomMessage.readFile(
      buffer,
      headerOnly ? { untilTag: "7FE00010", includeUntilTagValue: false } : {},
    );
  } catch (err) {
    throw new DicomError(path, `damaged DICOM file (${(err as Error)?.message ?? err})`);
  }
  const syntax = String(message.meta?.["00020010"]?.Value?.[0] ?? "").replace(/\0/g, "").trim();
  const ds = dcmjs.data.DicomMetaDictionary.naturalizeDataset(message.dict) as Dataset;
  return { path, syntax, ds };
}

async function listFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    const p = join(dir, e.name);
    if (e.isDirectory) out.push(...await listFiles(p));
    else if (e.isFile) out.push(p);
  }
  return out.sort();
}

/** Numbers of a DICOM value (a scalar or a multi-valued array); `[]` when absent. */
function nums(v: unknown): number[] {
  if (v === undefined || v === null || v === "") return [];
  return (Array.isArray(v) ? v : [v]).map(Number);
}

/**
 * The image series of a folder (searched recursively): every DICOM Part 10 file with pixel data,
 * grouped by SeriesInstanceUID, in UID order. Files without the `DICM` preamble and DICOM files
 * without an image (DICOMDIR, structured reports) are passed over.
 */
export async function listDicomSeries(dir: string): Promise<DicomSeriesInfo[]> {
  let files: string[];
  try {
    files = await listFiles(dir);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) throw new VolumeNotFoundError(dir, "folder not found");
    throw new VolumeNotFoundError(dir, `cannot be read (${(err as Error).message})`);
  }
  const series = new Map<string, DicomSeriesInfo>();
  for (const path of files) {
    const bytes = await Deno.readFile(path);
    if (!isPart10(bytes)) continue;
    const { ds } = parseFile(path, bytes, true);
    if (!ds.SeriesInstanceUID || ds.Rows === undefined || ds.Columns === undefined) continue;
    const uid = String(ds.SeriesInstanceUID);
    if (!series.has(uid)) {
      series.set(uid, { uid, description: String(ds.SeriesDescription ?? "").trim(), files: [] });
    }
    series.get(uid)!.files.push(path);
  }
  return [...series.values()].sort((a, b) => (a.uid < b.uid ? -1 : a.uid > b.uid ? 1 : 0));
}

/** Whether a folder holds at least one DICOM Part 10 file (a quick look at up to 64 files). */
export async function looksLikeDicomFolder(dir: string): Promise<boolean> {
  const files = (await listFiles(dir)).slice(0, 64);
  for (const f of files) {
    const fh = await Deno.open(f);
    try {
      const head = new Uint8Array(132);
      const n = await fh.read(head);
      if (n === 132 && isPart10(head)) return true;
    } finally {
      fh.close();
    }
  }
  return false;
}

/** A volume read from a DICOM series, with the series it came from. */
export interface DicomVolume extends Volume<Float32Array> {
  series: DicomSeriesInfo;
  /** The series' transfer syntax UID. */
  transferSyntax: string;
}

/**
 * Reads a folder's DICOM series into a volume (see the module comment for the geometry).
 * `series` picks a SeriesInstanceUID when the folder holds several; without it a folder with
 * several series is refused with a `DicomError` listing them and naming `option` to pick one.
 */
export async function readDicomSeries(
  dir: string,
  { series: wanted, option = "--series" }: { series?: string; option?: string } = {},
): Promise<DicomVolume> {
  const all = await listDicomSeries(dir);
  if (!all.length) {
    throw new DicomError(dir, "holds no DICOM image file (Part 10 files with a DICM preamble)");
  }
  let chosen: DicomSeriesInfo | undefined;
  if (wanted !== undefined) {
    chosen = all.find((s) => s.uid === wanted);
    if (!chosen) {
      throw new DicomError(dir, `has no series ${wanted}; it holds:\n${describeSeries(dir, all)}`);
    }
  } else if (all.length > 1) {
    throw new DicomError(
      dir,
      `holds ${all.length} series; pick one with ${option} UID:\n${describeSeries(dir, all)}`,
    );
  } else chosen = all[0];
  const slices = [];
  for (const path of chosen.files) {
    const parsed = parseFile(path, await Deno.readFile(path), false);
    if (!(parsed.syntax in NATIVE_SYNTAXES)) {
      throw new DicomError(
        path,
        `transfer syntax ${parsed.syntax || "(none)"} (${transferSyntaxName(parsed.syntax)}) cannot be ` +
          `decoded here; only uncompressed little-endian pixel data is read (${
            Object.values(NATIVE_SYNTAXES).join(", ")
          }): convert the series with dcm2niix, or decompress it (e.g. gdcmconv --raw)`,
      );
    }
    slices.push(parsed);
  }
  return { ...stackSlices(dir, slices), series: chosen, transferSyntax: slices[0].syntax };
}

/** One line per series: UID, description, number of slices, an example file (relative to `dir`). */
export function describeSeries(dir: string, all: DicomSeriesInfo[]): string {
  return all.map((s) =>
    `  ${s.uid}  "${s.description}"  ${s.files.length} slice${s.files.length === 1 ? "" : "s"}  e.g. ${
      relative(dir, s.files[0])
    }`
  ).join("\n");
}

const dot = (a: number[], b: number[]) => a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
const cross = (a: number[], b: number[]) => [
  a[1] * b[2] - a[2] * b[1],
  a[2] * b[0] - a[0] * b[2],
  a[0] * b[1] - a[1] * b[0],
];

/** Pixel values of one slice (rescale applied) into `out` at `offset`. */
function decodePixels(f: ParsedFile, rows: number, cols: number, out: Float32Array, offset: number): void {
  const ds = f.ds;
  const bits = Number(ds.BitsAllocated), stored = Number(ds.BitsStored ?? bits);
  const signed = Number(ds.PixelRepresentation ?? 0) === 1;
  const frames = ds.PixelData;
  if (!Array.isArray(frames) || !(frames[0] instanceof ArrayBuffer)) {
    throw new DicomError(f.path, "has no pixel data (7FE0,0010)");
  }
  const n = rows * cols;
  const raw = new Uint8Array(frames[0]);
  const bytes = bits / 8;
  if (![8, 16, 32].includes(bits)) {
    throw new DicomError(f.path, `BitsAllocated ${bits} is not read (8, 16 or 32)`);
  }
  if (raw.byteLength < n * bytes) {
    throw new DicomError(
      f.path,
      `truncated pixel data: ${raw.byteLength} bytes for ${rows} x ${cols} pixels of ${bits} bits`,
    );
  }
  const view = new DataView(raw.buffer, raw.byteOffset, n * bytes);
  const slope = nums(ds.RescaleSlope)[0] ?? 1, intercept = nums(ds.RescaleIntercept)[0] ?? 0;
  if (!Number.isFinite(slope) || slope === 0 || !Number.isFinite(intercept)) {
    throw new DicomError(
      f.path,
      `RescaleSlope ${ds.RescaleSlope} / RescaleIntercept ${ds.RescaleIntercept} unusable`,
    );
  }
  const shift = bits - stored; // bits above BitsStored: masked off (unsigned) or sign-extended (signed)
  for (let p = 0; p < n; p++) {
    let v: number;
    if (bits === 8) v = signed ? view.getInt8(p) : view.getUint8(p);
    else if (bits === 16) v = signed ? view.getInt16(2 * p, true) : view.getUint16(2 * p, true);
    else v = signed ? view.getInt32(4 * p, true) : view.getUint32(4 * p, true);
    if (shift > 0 && shift < 32) {
      v = signed ? ((v << (32 - stored)) >> (32 - stored)) : (v & (2 ** stored - 1));
    }
    out[offset + p] = v * slope + intercept;
  }
}

/**
 * Stacks single-frame slices into a volume: sorted along the slice normal, checked to share
 * one grid and to be evenly spaced, rescaled, with the RAS affine. `dir` names the series in errors.
 */
function stackSlices(dir: string, files: ParsedFile[]): Volume<Float32Array> {
  const first = files[0].ds;
  const rows = Number(first.Rows), cols = Number(first.Columns);
  const iop = nums(first.ImageOrientationPatient);
  const spacing = nums(first.PixelSpacing);
  for (const f of files) {
    const ds = f.ds;
    const frames = Number(ds.NumberOfFrames ?? 1);
    if (frames > 1) {
      throw new DicomError(
        f.path,
        `is a multi-frame (enhanced) DICOM file with ${frames} frames; only single-frame series are read ` +
          `(convert it with dcm2niix)`,
      );
    }
    if (Number(ds.SamplesPerPixel ?? 1) !== 1) {
      throw new DicomError(
        f.path,
        `has ${ds.SamplesPerPixel} samples per pixel (colour); a greyscale scan is needed`,
      );
    }
    const photometric = String(ds.PhotometricInterpretation ?? "MONOCHROME2").trim();
    if (photometric !== "MONOCHROME2") {
      throw new DicomError(
        f.path,
        `PhotometricInterpretation ${photometric} is not read (MONOCHROME2 greyscale only)`,
      );
    }
    const o = nums(ds.ImageOrientationPatient), p = nums(ds.ImagePositionPatient), s = nums(ds.PixelSpacing);
    if (
      o.length !== 6 || p.length !== 3 || s.length !== 2 ||
      [...o, ...p, ...s].some((v) => !Number.isFinite(v))
    ) {
      throw new DicomError(
        f.path,
        "lacks ImageOrientationPatient (0020,0037), ImagePositionPatient (0020,0032) or PixelSpacing (0028,0030): " +
          "its position in the scanner is unknown",
      );
    }
    if (Number(ds.Rows) !== rows || Number(ds.Columns) !== cols) {
      throw new DicomError(
        f.path,
        `is ${ds.Rows} x ${ds.Columns} pixels where ${files[0].path} is ${rows} x ${cols}: not one stack`,
      );
    }
    if (o.some((v, n) => Math.abs(v - iop[n]) > 1e-4) || s.some((v, n) => Math.abs(v - spacing[n]) > 1e-4)) {
      throw new DicomError(
        f.path,
        `its orientation or pixel spacing differs from ${files[0].path}'s: the series is not one stack ` +
          `(a localizer or several orientations in one series)`,
      );
    }
  }
  const r = iop.slice(0, 3), c = iop.slice(3, 6);
  const normal = cross(r, c);
  const nn = Math.hypot(...normal);
  if (!(Math.abs(Math.hypot(...r) - 1) < 1e-3 && Math.abs(Math.hypot(...c) - 1) < 1e-3 && nn > 0.99)) {
    throw new DicomError(
      files[0].path,
      `ImageOrientationPatient ${iop.join("\\")} is not two orthogonal unit vectors`,
    );
  }
  const n3 = normal.map((v) => v / nn);
  const sorted = files.map((f) => ({ f, pos: nums(f.ds.ImagePositionPatient) }))
    .map((e) => ({ ...e, d: dot(e.pos, n3) }))
    .sort((a, b) => a.d - b.d);
  if (sorted.length < 2) {
    throw new DicomError(dir, `the series has a single slice (${sorted[0].f.path}); a 3D volume is needed`);
  }
  const gaps = sorted.slice(1).map((e, k) => e.d - sorted[k].d);
  const median = [...gaps].sort((a, b) => a - b)[Math.floor((gaps.length - 1) / 2)];
  const tol = 0.01 * Math.abs(median) + 1e-3;
  gaps.forEach((g, k) => {
    if (g < tol) {
      throw new DicomError(
        dir,
        `${sorted[k].f.path} and ${sorted[k + 1].f.path} lie at the same position along the slice normal ` +
          `(several echoes, time points or acquisitions in one series are not read)`,
      );
    }
    if (Math.abs(g - median) > tol) {
      throw new DicomError(
        dir,
        `slices are not evenly spaced: ${sorted[k].f.path} and ${sorted[k + 1].f.path} are ${
          g.toFixed(3)
        } mm apart where the others are ${median.toFixed(3)} mm (a missing slice?)`,
      );
    }
    const step = sorted[k + 1].pos.map((v, i) => v - sorted[k].pos[i]);
    const off = Math.hypot(...step.map((v, i) => v - g * n3[i]));
    if (off > tol) {
      throw new DicomError(
        dir,
        `${sorted[k + 1].f.path} is offset ${off.toFixed(3)} mm within the slice plane from the previous ` +
          `slice (a sheared stack, e.g. gantry tilt), which is not read`,
      );
    }
  });
  const dz = (sorted[sorted.length - 1].d - sorted[0].d) / (sorted.length - 1);
  const n = rows * cols;
  const data = new Float32Array(n * sorted.length);
  sorted.forEach((e, k) => decodePixels(e.f, rows, cols, data, k * n));
  // LPS: voxel (i, j, k) -> p0 + i * dCol * r + j * dRow * c + k * dz * n; RAS negates x and y
  const [dRow, dCol] = spacing;
  const p0 = sorted[0].pos;
  const lps = [0, 1, 2].map((a) => [r[a] * dCol, c[a] * dRow, n3[a] * dz, p0[a]]);
  const affine: Affine = [
    lps[0].map((v) => -v),
    lps[1].map((v) => -v),
    lps[2],
    [0, 0, 0, 1],
  ];
  // rows reversed (j from the last row up), as dcm2niix writes them: the same voxel order
  return permuteFlip(makeVolume(data, [cols, rows, sorted.length] as Vec3, affine), {
    axis: [0, 1, 2],
    flip: [false, true, false],
  });
}
