/**
 * DICOM series for tests, written with dcmjs's writer: single-frame MR files of one stack, the
 * file names shuffled (so slice order has to come from the geometry).
 */
import dcmjs from "dcmjs";
import { join } from "node:path";
import { mulberry32 } from "../lib/random.ts";

const { DicomDict, DicomMetaDictionary } = dcmjs.data;

const rng = mulberry32;

export interface SeriesSpec {
  uid: string;
  description: string;
  rows: number;
  cols: number;
  slices: number;
  /** ImageOrientationPatient: row then column direction cosines (LPS). */
  iop: number[];
  /** ImagePositionPatient of the first slice (LPS). */
  origin: number[];
  /** PixelSpacing: between rows, between columns. */
  pixelSpacing: [number, number];
  sliceSpacing: number;
  slope?: number;
  intercept?: number;
  transferSyntax?: string;
  /** Slice positions to leave out (a gap). */
  skip?: number[];
  seed?: number;
}

/**
 * Writes a series of single-frame MR files with dcmjs into `dir`: slice k's stored values (signed
 * 16-bit, row-major) from `pixels`, else an ellipsoidal phantom with a seeded, asymmetric texture.
 */
export async function writeSeries(
  dir: string,
  s: SeriesSpec,
  pixels?: (k: number) => Int16Array,
): Promise<Int16Array[]> {
  await Deno.mkdir(dir, { recursive: true });
  const r = s.iop.slice(0, 3), c = s.iop.slice(3, 6);
  const n = [r[1] * c[2] - r[2] * c[1], r[2] * c[0] - r[0] * c[2], r[0] * c[1] - r[1] * c[0]];
  const random = rng(s.seed ?? 1);
  const order = Array.from({ length: s.slices }, (_, k) => k).sort(() => random() - 0.5);
  const stored: Int16Array[] = [];
  for (let k = 0; k < s.slices; k++) {
    const px = pixels?.(k) ?? new Int16Array(s.rows * s.cols);
    for (let j = 0; !pixels && j < s.rows; j++) {
      for (let i = 0; i < s.cols; i++) {
        const x = (i / (s.cols - 1)) * 2 - 1,
          y = (j / (s.rows - 1)) * 2 - 1,
          z = (k / (s.slices - 1)) * 2 - 1;
        const inside = x * x / 0.8 + y * y / 0.6 + z * z / 1.2 < 1;
        // asymmetric texture: any flip of rows, columns or slices changes the values
        px[j * s.cols + i] = inside ? Math.round(200 + 300 * x + 120 * y + 60 * z + 40 * random()) : 0;
      }
    }
    stored.push(px);
    if (s.skip?.includes(k)) continue;
    // DS values hold at most 16 characters
    const pos = [0, 1, 2].map((a) => +(s.origin[a] + k * s.sliceSpacing * n[a]).toFixed(6));
    const sop = `${s.uid}.${k + 1}`;
    const ds: Record<string, unknown> = {
      SOPClassUID: "1.2.840.10008.5.1.4.1.1.4",
      SOPInstanceUID: sop,
      Modality: "MR",
      Manufacturer: "Phantom",
      StudyInstanceUID: "1.2.826.0.1.3680043.2.1125.1",
      SeriesInstanceUID: s.uid,
      SeriesDescription: s.description,
      SeriesNumber: 1,
      PatientName: "Phantom^Test",
      PatientID: "phantom",
      StudyDate: "20240101",
      SeriesDate: "20240101",
      AcquisitionTime: "120000",
      InstanceNumber: k + 1,
      Rows: s.rows,
      Columns: s.cols,
      BitsAllocated: 16,
      BitsStored: 16,
      HighBit: 15,
      PixelRepresentation: 1,
      SamplesPerPixel: 1,
      PhotometricInterpretation: "MONOCHROME2",
      PixelSpacing: s.pixelSpacing,
      SliceThickness: s.sliceSpacing,
      ImageOrientationPatient: s.iop.map((v) => +v.toFixed(10)),
      ImagePositionPatient: pos,
      RescaleSlope: s.slope ?? 1,
      RescaleIntercept: s.intercept ?? 0,
      PixelData: px.buffer,
      _vrMap: { PixelData: "OW" },
    };
    const meta = {
      FileMetaInformationVersion: new Uint8Array([0, 1]).buffer,
      MediaStorageSOPClassUID: ds.SOPClassUID,
      MediaStorageSOPInstanceUID: sop,
      TransferSyntaxUID: s.transferSyntax ?? "1.2.840.10008.1.2.1",
      ImplementationClassUID: "1.2.826.0.1.3680043.2.1125.2",
    };
    const dict = new DicomDict(DicomMetaDictionary.denaturalizeDataset(meta));
    dict.dict = DicomMetaDictionary.denaturalizeDataset(ds);
    await Deno.writeFile(join(dir, `IM${String(order[k]).padStart(4, "0")}`), new Uint8Array(dict.write()));
  }
  return stored;
}
