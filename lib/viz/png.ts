/**
 * Minimal PNG encoding (8-bit RGB) and slice montages of volumes, for figures that need no
 * browser: image views, label overlays, synthesis versus ground truth.
 */
import { writeFileAtomic } from "../io/nifti.ts";
import type { Volume } from "../volume/volume.ts";

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

function crc32(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

async function zlib(bytes: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([bytes as BlobPart]).stream().pipeThrough(new CompressionStream("deflate"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** An RGB image, row-major, 3 bytes per pixel. */
export interface RgbImage {
  width: number;
  height: number;
  data: Uint8Array;
}

export function newImage(width: number, height: number, gray = 255): RgbImage {
  return { width, height, data: new Uint8Array(width * height * 3).fill(gray) };
}

/** Encodes an RGB image as PNG bytes. */
export async function encodePng(img: RgbImage): Promise<Uint8Array> {
  const raw = new Uint8Array((img.width * 3 + 1) * img.height);
  for (let y = 0; y < img.height; y++) {
    raw[y * (img.width * 3 + 1)] = 0; // filter: none
    raw.set(img.data.subarray(y * img.width * 3, (y + 1) * img.width * 3), y * (img.width * 3 + 1) + 1);
  }
  const chunk = (type: string, body: Uint8Array) => {
    const out = new Uint8Array(12 + body.length);
    const view = new DataView(out.buffer);
    view.setUint32(0, body.length);
    out.set(new TextEncoder().encode(type), 4);
    out.set(body, 8);
    view.setUint32(8 + body.length, crc32(out.subarray(4, 8 + body.length)));
    return out;
  };
  const ihdr = new Uint8Array(13);
  const hv = new DataView(ihdr.buffer);
  hv.setUint32(0, img.width);
  hv.setUint32(4, img.height);
  ihdr.set([8, 2, 0, 0, 0], 8); // 8-bit, RGB
  const parts = [
    Uint8Array.from([137, 80, 78, 71, 13, 10, 26, 10]),
    chunk("IHDR", ihdr),
    chunk("IDAT", await zlib(raw)),
    chunk("IEND", new Uint8Array(0)),
  ];
  const out = new Uint8Array(parts.reduce((s, p) => s + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

export async function writePng(path: string, img: RgbImage): Promise<void> {
  await writeFileAtomic(path, await encodePng(img));
}

export type View = "axial" | "coronal" | "sagittal";

/**
 * A 2D slice of an RAS-ordered volume, displayed radiologically upright: axial (k fixed, rows
 * from anterior to posterior), coronal (j fixed, rows from superior down), sagittal (i fixed).
 * Returns values row-major with its width and height, and the pixel aspect (height/width mm).
 */
export function slice(
  vol: Volume,
  view: View,
  index?: number,
): { width: number; height: number; values: Float32Array; aspect: number } {
  const [nx, ny, nz] = vol.shape;
  const [sx, sy, sz] = vol.spacing;
  const at = (i: number, j: number, k: number) => vol.data[i + nx * (j + ny * k)];
  if (view === "axial") {
    const k = index ?? Math.floor(nz / 2);
    const values = new Float32Array(nx * ny);
    for (let r = 0; r < ny; r++) for (let c = 0; c < nx; c++) values[r * nx + c] = at(c, ny - 1 - r, k);
    return { width: nx, height: ny, values, aspect: sy / sx };
  }
  if (view === "coronal") {
    const j = index ?? Math.floor(ny / 2);
    const values = new Float32Array(nx * nz);
    for (let r = 0; r < nz; r++) for (let c = 0; c < nx; c++) values[r * nx + c] = at(c, j, nz - 1 - r);
    return { width: nx, height: nz, values, aspect: sz / sx };
  }
  const i = index ?? Math.floor(nx / 2);
  const values = new Float32Array(ny * nz);
  for (let r = 0; r < nz; r++) for (let c = 0; c < ny; c++) values[r * ny + c] = at(i, c, nz - 1 - r);
  return { width: ny, height: nz, values, aspect: sz / sy };
}

/** A colour per label (0 transparent), distinct for up to 28 labels. */
export function labelColour(label: number): [number, number, number] {
  const hue = (label * 137.508) % 360;
  const s = 0.75, l = 0.55;
  const c = (1 - Math.abs(2 * l - 1)) * s, x = c * (1 - Math.abs(((hue / 60) % 2) - 1)), m = l - c / 2;
  const [r, g, b] = hue < 60
    ? [c, x, 0]
    : hue < 120
    ? [x, c, 0]
    : hue < 180
    ? [0, c, x]
    : hue < 240
    ? [0, x, c]
    : hue < 300
    ? [x, 0, c]
    : [c, 0, x];
  return [Math.round((r + m) * 255), Math.round((g + m) * 255), Math.round((b + m) * 255)];
}

/**
 * Draws a slice into `img` at (x0, y0), scaled by integer `zoom` with nearest-neighbour
 * (rows additionally stretched by the pixel aspect). Grey values map [lo, hi] to black..white;
 * a `labels` slice is blended on top with `alpha` (or drawn alone when `values` is null).
 */
export function drawSlice(
  img: RgbImage,
  x0: number,
  y0: number,
  s: { width: number; height: number; values: Float32Array | null; aspect: number },
  { lo = 0, hi = 1, zoom = 1, labels, alpha = 0.5, colours }: {
    lo?: number;
    hi?: number;
    zoom?: number;
    labels?: Float32Array;
    alpha?: number;
    /** A colour per label (e.g. a lookup table's); `labelColour` where absent. */
    colours?: readonly (readonly [number, number, number])[];
  } = {},
): { width: number; height: number } {
  const outW = s.width * zoom, outH = Math.round(s.height * zoom * s.aspect);
  for (let y = 0; y < outH; y++) {
    const r = Math.min(s.height - 1, Math.floor(y / (zoom * s.aspect)));
    for (let x = 0; x < outW; x++) {
      const c = Math.floor(x / zoom);
      const px = x0 + x, py = y0 + y;
      if (px < 0 || py < 0 || px >= img.width || py >= img.height) continue;
      let rgb: [number, number, number] = [0, 0, 0];
      if (s.values) {
        const g = Math.round(
          255 * Math.min(1, Math.max(0, (s.values[r * s.width + c] - lo) / (hi - lo || 1))),
        );
        rgb = [g, g, g];
      }
      const lab = labels ? labels[r * s.width + c] : 0;
      if (lab > 0) {
        const col = colours?.[lab] ?? labelColour(lab);
        const a = s.values ? alpha : 1;
        rgb = rgb.map((v, n) => Math.round((1 - a) * v + a * col[n])) as [number, number, number];
      }
      img.data.set(rgb, (py * img.width + px) * 3);
    }
  }
  return { width: outW, height: outH };
}

/**
 * Decodes an 8-bit, non-interlaced greyscale, RGB or RGBA PNG (what Chromium, plotly and
 * `encodePng` write) to RGB. Used to check rendered figures and screenshots are not blank.
 */
export async function decodePng(bytes: Uint8Array): Promise<RgbImage> {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes.length < 8 || view.getUint32(0) !== 0x89504e47) throw new Error("decodePng: not a PNG");
  let width = 0, height = 0, colourType = 0, depth = 0, interlace = 0;
  const idat: Uint8Array[] = [];
  for (let o = 8; o + 8 <= bytes.length;) {
    const len = view.getUint32(o);
    const type = new TextDecoder().decode(bytes.subarray(o + 4, o + 8));
    const body = bytes.subarray(o + 8, o + 8 + len);
    if (type === "IHDR") {
      const h = new DataView(body.buffer, body.byteOffset, body.byteLength);
      [width, height, depth, colourType, interlace] = [
        h.getUint32(0),
        h.getUint32(4),
        body[8],
        body[9],
        body[12],
      ];
    } else if (type === "IDAT") idat.push(body);
    else if (type === "IEND") break;
    o += 12 + len;
  }
  const channels = { 0: 1, 2: 3, 6: 4, 4: 2 }[colourType];
  if (depth !== 8 || !channels || interlace) {
    throw new Error(
      `decodePng: unsupported PNG (depth ${depth}, colour type ${colourType}, interlace ${interlace})`,
    );
  }
  const joined = new Uint8Array(idat.reduce((s, c) => s + c.length, 0));
  let p = 0;
  for (const c of idat) joined.set(c, p), (p += c.length);
  const raw = new Uint8Array(
    await new Response(new Blob([joined]).stream().pipeThrough(new DecompressionStream("deflate")))
      .arrayBuffer(),
  );
  const stride = width * channels;
  const pixels = new Uint8Array(stride * height);
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (stride + 1)];
    const line = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1));
    const out = pixels.subarray(y * stride, (y + 1) * stride);
    const prev = y > 0 ? pixels.subarray((y - 1) * stride, y * stride) : new Uint8Array(stride);
    for (let x = 0; x < stride; x++) {
      const a = x >= channels ? out[x - channels] : 0,
        b = prev[x],
        c = x >= channels ? prev[x - channels] : 0;
      let v = line[x];
      if (filter === 1) v += a;
      else if (filter === 2) v += b;
      else if (filter === 3) v += (a + b) >> 1;
      else if (filter === 4) {
        const pa = Math.abs(b - c), pb = Math.abs(a - c), pc = Math.abs(a + b - 2 * c);
        v += pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
      }
      out[x] = v & 255;
    }
  }
  const rgb = new Uint8Array(width * height * 3);
  for (let i = 0; i < width * height; i++) {
    for (let k = 0; k < 3; k++) rgb[i * 3 + k] = pixels[i * channels + (channels < 3 ? 0 : k)];
  }
  return { width, height, data: rgb };
}

/**
 * Whether an image shows nothing: luminance SD at most 2 (of 255), or at most two colours.
 * Used on rendered figures, notebook images and page screenshots.
 */
export function isBlank(img: RgbImage): boolean {
  const v = imageVariety(img);
  return v.lumaSd <= 2 || v.colours <= 2;
}

/** Standard deviation of the luminance and the number of distinct colours (a blank image has ~0 and 1). */
export function imageVariety(img: RgbImage): { lumaSd: number; colours: number } {
  const n = img.width * img.height;
  let s = 0, s2 = 0;
  const colours = new Set<number>();
  for (let i = 0; i < n; i++) {
    const [r, g, b] = [img.data[3 * i], img.data[3 * i + 1], img.data[3 * i + 2]];
    const l = 0.299 * r + 0.587 * g + 0.114 * b;
    s += l, s2 += l * l;
    if (colours.size < 4096) colours.add((r << 16) | (g << 8) | b);
  }
  const m = s / n;
  return { lumaSd: Math.sqrt(Math.max(0, s2 / n - m * m)), colours: colours.size };
}

const VIEWS: View[] = ["axial", "coronal", "sagittal"];

/** Rows of volumes (optionally with label overlays) in three views, as one PNG. */
export async function montage(
  rows: {
    vol: Volume;
    labels?: Volume;
    lo?: number;
    hi?: number;
    colours?: readonly (readonly [number, number, number])[];
  }[],
  cellPx = 200,
): Promise<Uint8Array> {
  const zoom = Math.max(1, Math.round(cellPx / Math.max(...rows[0].vol.shape)));
  const cell = Math.max(...rows[0].vol.shape) * zoom + 6;
  const img = newImage(cell * VIEWS.length, cell * rows.length, 0);
  rows.forEach((row, r) => {
    VIEWS.forEach((view, c) => {
      const labels = row.labels ? slice(row.labels, view).values : undefined;
      drawSlice(img, c * cell + 3, r * cell + 3, slice(row.vol, view), {
        lo: row.lo ?? 0,
        hi: row.hi ?? 1,
        zoom,
        labels,
        alpha: 0.45,
        colours: row.colours,
      });
    });
  });
  return await encodePng(img);
}
