/**
 * The embedded default data: simulated 3T/7T and 1.5T cohorts from the Colin27/AAL anatomy in
 * `data-prep/atlas/` (see `data-prep/README.md` for the physics and the parameters).
 *
 * Per scan: pseudo-subject anatomy (random diffeomorphism, scaling, ventricular atrophy) on a
 * simulation grid -> tissue signal by Bloch simulation with partial-volume mixing, transmit and
 * receive bias -> blur to the acquisition resolution -> Rician noise -> skull strip ->
 * preprocessing as in the paper (resampling to a common grid, intensities to [0, 1], histogram
 * matching of 3T to 7T).
 */
import { existsSync } from "node:fs";
import { basename, dirname, resolve } from "node:path";
import { readNifti, writeFileAtomic, writeNifti } from "../io/nifti.ts";
import { sha256File } from "../io/hash.ts";
import { applyAffine, invertAffine, type Vec3 } from "../volume/affine.ts";
import { gridForSpacing, resampleToGrid } from "../volume/geometry.ts";
import type { CohortManifest, CohortName, ScanRecord } from "../data/cohort.ts";
import { commonGrid, histogramMatch, normalizeIntensity } from "../data/preprocess.ts";
import { makeVolume, type Volume } from "../volume/volume.ts";
import { gaussian, mulberry32 } from "../random.ts";
import { DEFAULT_DEFORMATION, type DeformationParams, randomDiffeomorphism, sampleField } from "./deform.ts";
import {
  acquisitionSnr,
  type Field,
  HEAD_CLASSES,
  headTissueProperties,
  MP2RAGE_7T,
  mp2rageUni,
  MPRAGE_15T,
  MPRAGE_3T,
  type MPSequence,
  mpSignals,
  PHYSICS_CLASSES,
  RECEIVE_BIAS_AMPLITUDE,
  tissueProperties,
  transmitScale,
} from "./physics.ts";

export const GENERATOR_VERSION = "1.2.0";
/**
 * The tissue cohort's noise-free image (no noise, receive bias or transmit tilt; partial volume
 * and the acquisition's resolution only), for measuring what segmentation can reach at the grid.
 */
export const IDEAL_KEY = "1.5T-ideal";
export const ATLAS_DIR = new URL("../../data-prep/atlas/", import.meta.url);

export interface PhantomProfile {
  name: "quick" | "default" | "paper";
  /** Simulation grid spacing, mm. */
  simSpacing: number;
  /** Acquisition voxel sizes are the paper's (1 mm, 0.65 mm) times this. */
  resolutionScale: number;
  /** Common grid spacing all images and labels are resampled to, mm; sizes padded to a multiple of 16. */
  commonSpacing: number;
  paired: { subjects: number };
  tissue: { train: number; validation: number; test: number };
  wholeBrain: { subjects: number; rescans: number; train: number; validation: number };
  deformation: DeformationParams;
  /** Reference SNR of WM at 3T and 1 mm^3 (others follow `acquisitionSnr`). */
  snr3T1mm: number;
}

const PAPER_COUNTS = {
  paired: { subjects: 15 },
  tissue: { train: 7, validation: 3, test: 8 },
  wholeBrain: { subjects: 30, rescans: 5, train: 10, validation: 5 },
};

export const PROFILES: Record<PhantomProfile["name"], PhantomProfile> = {
  quick: {
    name: "quick",
    simSpacing: 3,
    resolutionScale: 6,
    commonSpacing: 6,
    paired: { subjects: 3 },
    tissue: { train: 1, validation: 1, test: 1 },
    wholeBrain: { subjects: 3, rescans: 1, train: 1, validation: 1 },
    deformation: DEFAULT_DEFORMATION,
    snr3T1mm: 40,
  },
  default: {
    name: "default",
    simSpacing: 1.5,
    resolutionScale: 3,
    commonSpacing: 3,
    ...PAPER_COUNTS,
    deformation: DEFAULT_DEFORMATION,
    snr3T1mm: 40,
  },
  paper: {
    name: "paper",
    simSpacing: 0.65,
    resolutionScale: 1,
    commonSpacing: 1,
    ...PAPER_COUNTS,
    deformation: DEFAULT_DEFORMATION,
    snr3T1mm: 40,
  },
};

/** Tissue fractions and structure labels on one grid. */
export interface Anatomy {
  gm: Volume<Float32Array>;
  wm: Volume<Float32Array>;
  csf: Volume<Float32Array>;
  structures: Volume<Uint8Array>;
  /** The full-head phantom's head labels (`head.ts`, `HEAD_LABELS`); absent: the brain alone. */
  head?: Volume<Uint8Array>;
}

/** Loads the shipped atlas (fractions in [0, 1]). */
export async function loadAtlas(dir: URL | string = ATLAS_DIR): Promise<Anatomy> {
  const base = typeof dir === "string" ? dir.replace(/\/?$/, "/") : dir.pathname;
  const frac = async (name: string) => {
    const v = await readNifti(`${base}colin27_${name}.nii.gz`);
    return makeVolume(Float32Array.from(v.data, (x) => x / 255), v.shape, v.affine);
  };
  const s = await readNifti(`${base}colin27_structures.nii.gz`);
  return {
    gm: await frac("gm"),
    wm: await frac("wm"),
    csf: await frac("csf"),
    structures: makeVolume(Uint8Array.from(s.data), s.shape, s.affine),
  };
}

/** The atlas resampled to `spacing` (fractions linear, labels nearest). */
export function atlasOnGrid(atlas: Anatomy, spacing: number): Anatomy {
  const g = gridForSpacing(atlas.gm, [spacing, spacing, spacing]);
  const lin = (v: Volume<Float32Array>) =>
    resampleToGrid(v, g.shape, g.affine, "linear") as Volume<Float32Array>;
  return {
    gm: lin(atlas.gm),
    wm: lin(atlas.wm),
    csf: lin(atlas.csf),
    structures: resampleToGrid(atlas.structures, g.shape, g.affine, "nearest") as Volume<Uint8Array>,
    ...(atlas.head
      ? { head: resampleToGrid(atlas.head, g.shape, g.affine, "nearest") as Volume<Uint8Array> }
      : {}),
  };
}

/** Parameters drawn for one pseudo-subject (recorded in the manifest). */
export interface SubjectParams {
  scale: number;
  atrophy: number;
  seed: number;
}

function centroidOf(v: Volume<Uint8Array>, labels: number[]): Vec3 {
  const set = new Set(labels);
  const [nx, ny] = v.shape;
  let sx = 0, sy = 0, sz = 0, n = 0;
  for (let p = 0; p < v.data.length; p++) {
    if (!set.has(v.data[p])) continue;
    sx += p % nx;
    sy += Math.floor(p / nx) % ny;
    sz += Math.floor(p / (nx * ny));
    n++;
  }
  return applyAffine(v.affine, n ? [sx / n, sy / n, sz / n] : v.shape.map((s) => s / 2) as Vec3);
}

/**
 * A pseudo-subject's anatomy on the template grid: x -> c + (x - c) / scale + u(x), where u is a
 * random diffeomorphic displacement including the ventricular expansion.
 */
export function warpAnatomy(template: Anatomy, params: DeformationParams, subject: SubjectParams): Anatomy {
  const rand = mulberry32(subject.seed);
  const ref = template.gm;
  const lo = applyAffine(ref.affine, [0, 0, 0]);
  const hi = applyAffine(ref.affine, ref.shape.map((s) => s - 1) as Vec3);
  const centre = centroidOf(template.structures, [5, 18]); // lateral ventricles
  const brainCentre = centroidOf(template.structures, Array.from({ length: 27 }, (_, i) => i + 1));
  const field = randomDiffeomorphism(
    lo,
    hi,
    Math.max(4, ref.spacing[0] * 2),
    params,
    rand,
    centre,
    subject.atrophy,
  );
  const inv = invertAffine(ref.affine);
  const [nx, ny, nz] = ref.shape;
  const n = nx * ny * nz;
  const out: Anatomy = {
    gm: makeVolume(new Float32Array(n), ref.shape, ref.affine),
    wm: makeVolume(new Float32Array(n), ref.shape, ref.affine),
    csf: makeVolume(new Float32Array(n), ref.shape, ref.affine),
    structures: makeVolume(new Uint8Array(n), ref.shape, ref.affine),
    ...(template.head ? { head: makeVolume(new Uint8Array(n), ref.shape, ref.affine) } : {}),
  };
  const fr = [template.gm.data, template.wm.data, template.csf.data];
  const dst = [out.gm.data, out.wm.data, out.csf.data];
  let p = 0;
  for (let k = 0; k < nz; k++) {
    for (let j = 0; j < ny; j++) {
      for (let i = 0; i < nx; i++, p++) {
        const w = applyAffine(ref.affine, [i, j, k]);
        const src = [0, 1, 2].map((d) =>
          brainCentre[d] + (w[d] - brainCentre[d]) / subject.scale + sampleField(field, d, w[0], w[1], w[2])
        ) as Vec3;
        const [x, y, z] = applyAffine(inv, src);
        if (x < 0 || y < 0 || z < 0 || x > nx - 1 || y > ny - 1 || z > nz - 1) continue;
        const x0 = Math.min(Math.floor(x), nx - 2),
          y0 = Math.min(Math.floor(y), ny - 2),
          z0 = Math.min(Math.floor(z), nz - 2);
        const ax = x - x0, ay = y - y0, az = z - z0;
        const q = x0 + nx * (y0 + ny * z0);
        for (let c = 0; c < 3; c++) {
          const d = fr[c];
          dst[c][p] = ((d[q] * (1 - ax) + d[q + 1] * ax) * (1 - ay) +
                (d[q + nx] * (1 - ax) + d[q + nx + 1] * ax) * ay) * (1 - az) +
            ((d[q + nx * ny] * (1 - ax) + d[q + nx * ny + 1] * ax) * (1 - ay) +
                (d[q + nx * ny + nx] * (1 - ax) + d[q + nx * ny + nx + 1] * ax) * ay) * az;
        }
        const nearest = Math.round(x) + nx * (Math.round(y) + ny * Math.round(z));
        out.structures.data[p] = template.structures.data[nearest];
        if (out.head) out.head.data[p] = template.head!.data[nearest];
      }
    }
  }
  return out;
}

/** Physics class of the grey-matter fraction of a voxel, from its structure label. */
function gmClassOf(label: number): number {
  switch (label) {
    case 9:
    case 22:
      return PHYSICS_CLASSES.indexOf("caudate");
    case 10:
    case 23:
      return PHYSICS_CLASSES.indexOf("putamen");
    case 11:
    case 24:
      return PHYSICS_CLASSES.indexOf("pallidum");
    case 8:
    case 21:
      return PHYSICS_CLASSES.indexOf("thalamus");
    default:
      return PHYSICS_CLASSES.indexOf("gm");
  }
}

const B1_STEPS = 81, B1_MIN = 0.4, B1_MAX = 1.6;

/** Separable Gaussian blur with standard deviation `sigma` voxels (reflecting borders). */
export function gaussianBlur(v: Volume<Float32Array>, sigma: number): Volume<Float32Array> {
  if (sigma < 0.2) return v;
  const radius = Math.ceil(3 * sigma);
  const kernel = Float32Array.from(
    { length: 2 * radius + 1 },
    (_, t) => Math.exp(-((t - radius) ** 2) / (2 * sigma * sigma)),
  );
  const ksum = kernel.reduce((a, b) => a + b, 0);
  for (let t = 0; t < kernel.length; t++) kernel[t] /= ksum;
  let data = v.data;
  const shape = v.shape;
  const strides = [1, shape[0], shape[0] * shape[1]];
  for (let axis = 0; axis < 3; axis++) {
    const out = new Float32Array(data.length);
    const n = shape[axis], st = strides[axis];
    for (let p = 0; p < data.length; p++) {
      const pos = Math.floor(p / st) % n;
      let s = 0;
      for (let t = -radius; t <= radius; t++) {
        let q = pos + t;
        if (q < 0) q = -q - 1;
        if (q >= n) q = 2 * n - q - 1;
        q = Math.min(n - 1, Math.max(0, q));
        s += kernel[t + radius] * data[p + (q - pos) * st];
      }
      out[p] = s;
    }
    data = out;
  }
  return makeVolume(data, v.shape, v.affine);
}

/** A random smooth receive field: exp(amplitude * a low-order polynomial with random coefficients). */
function receiveField(rand: () => number, amplitude: number): (x: number, y: number, z: number) => number {
  const c = Array.from({ length: 9 }, () => gaussian(rand) * amplitude / 2);
  return (x, y, z) => {
    const a = x / 80, b = y / 100, d = z / 80;
    return Math.exp(
      c[0] * a + c[1] * b + c[2] * d + c[3] * a * b + c[4] * b * d + c[5] * a * d + c[6] * (a * a - 0.3) +
        c[7] * (b * b - 0.3) + c[8] * (d * d - 0.3),
    );
  };
}

/**
 * Acquires one image of `anatomy` with `seq`: signal on the simulation grid (partial volume,
 * B1+ scaling of the flip angles, receive bias), blurred to and resampled on the acquisition
 * grid, Rician noise, skull-stripped. MP2RAGE returns the uniform image shifted to [0, 1].
 * `ideal`: the same sequence without noise, receive bias or transmit tilt (only partial volume and
 * the acquisition's resolution remain), drawing nothing from `rand`: the image a segmentation
 * ceiling is measured on. An anatomy with `head` labels adds the non-brain head tissue where the
 * brain's fractions leave room; `skullStrip` false keeps everything outside the brain (the air
 * with its noise).
 */
export function acquire(
  anatomy: Anatomy,
  seq: MPSequence,
  profile: PhantomProfile,
  rand: () => number,
  { ideal = false, skullStrip = true }: { ideal?: boolean; skullStrip?: boolean } = {},
): Volume<Float32Array> {
  const field: Field = seq.field;
  const blocks = seq.ti.length;
  // Signal lookup table: [class][b1 step][block]
  const lut = PHYSICS_CLASSES.map((cls) =>
    Array.from(
      { length: B1_STEPS },
      (_, s) =>
        mpSignals(seq, tissueProperties(field, cls), B1_MIN + ((B1_MAX - B1_MIN) * s) / (B1_STEPS - 1)),
    )
  );
  // non-brain head tissue by head label (HEAD_LABELS: 2 fat, 3 muscle, 4 bone)
  const headLut = anatomy.head
    ? HEAD_CLASSES.map((cls) =>
      Array.from(
        { length: B1_STEPS },
        (_, s) =>
          mpSignals(seq, headTissueProperties(field, cls), B1_MIN + ((B1_MAX - B1_MIN) * s) / (B1_STEPS - 1)),
      )
    )
    : null;
  const CSF = PHYSICS_CLASSES.indexOf("csf"), WM = PHYSICS_CLASSES.indexOf("wm");
  const ref = anatomy.gm;
  const [nx, ny, nz] = ref.shape;
  const n = nx * ny * nz;
  const centre = centroidOf(anatomy.structures, Array.from({ length: 27 }, (_, i) => i + 1));
  const tilt = ideal ? [0, 0] : [gaussian(rand) * 0.002, gaussian(rand) * 0.002];
  const rx = ideal ? () => 1 : receiveField(rand, RECEIVE_BIAS_AMPLITUDE[field]);
  const signal = Array.from({ length: blocks }, () => new Float32Array(n));
  let p = 0;
  for (let k = 0; k < nz; k++) {
    for (let j = 0; j < ny; j++) {
      for (let i = 0; i < nx; i++, p++) {
        const tot = anatomy.gm.data[p] + anatomy.wm.data[p] + anatomy.csf.data[p];
        const headClass = headLut ? anatomy.head!.data[p] - 2 : -1; // fat 0, muscle 1, bone 2
        const rest = headClass >= 0 ? Math.max(0, 1 - tot) : 0;
        if (tot <= 0 && rest <= 0) continue;
        const w = applyAffine(ref.affine, [i, j, k]);
        const dx = w[0] - centre[0], dy = w[1] - centre[1], dz = w[2] - centre[2];
        const b1 = transmitScale(field, Math.sqrt(dx * dx + dy * dy + dz * dz)) *
          (1 + tilt[0] * dx + tilt[1] * dy);
        const s = Math.min(B1_STEPS - 1, Math.max(0, ((b1 - B1_MIN) / (B1_MAX - B1_MIN)) * (B1_STEPS - 1)));
        const s0 = Math.min(Math.floor(s), B1_STEPS - 2), f = s - s0;
        const gmc = gmClassOf(anatomy.structures.data[p]);
        const gain = rx(dx, dy, dz);
        for (let b = 0; b < blocks; b++) {
          const at = (c: number) => lut[c][s0][b] * (1 - f) + lut[c][s0 + 1][b] * f;
          const other = rest > 0
            ? rest * (headLut![headClass][s0][b] * (1 - f) + headLut![headClass][s0 + 1][b] * f)
            : 0;
          signal[b][p] = gain *
            (anatomy.gm.data[p] * at(gmc) + anatomy.wm.data[p] * at(WM) + anatomy.csf.data[p] * at(CSF) +
              other);
        }
      }
    }
  }
  // Resolution: blur from the simulation voxel to the acquisition voxel, then resample.
  const acqVoxel = seq.voxel * profile.resolutionScale;
  const sim = ref.spacing[0];
  const sigma = Math.sqrt(Math.max(0, acqVoxel * acqVoxel - sim * sim)) / 2.355 / sim;
  const grid = gridForSpacing(ref, [acqVoxel, acqVoxel, acqVoxel]);
  const acquired = signal.map((s) =>
    resampleToGrid(
      gaussianBlur(makeVolume(s, ref.shape, ref.affine), sigma),
      grid.shape,
      grid.affine,
      "linear",
    ).data as Float32Array
  );
  const brain = makeVolume(
    Float32Array.from(anatomy.gm.data, (g, q) => g + anatomy.wm.data[q] + anatomy.csf.data[q]),
    ref.shape,
    ref.affine,
  );
  const mask = resampleToGrid(brain, grid.shape, grid.affine, "linear").data;
  // Noise: sigma from the SNR of white matter in the last block at the acquisition voxel.
  const wmRef = Math.abs(lut[WM][Math.round((1 - B1_MIN) / (B1_MAX - B1_MIN) * (B1_STEPS - 1))][blocks - 1]);
  const noise = wmRef / acquisitionSnr(field, seq.voxel, acqVoxel, profile.snr3T1mm);
  const draw = ideal ? () => 0 : () => gaussian(rand) * noise;
  const out = new Float32Array(mask.length);
  for (let q = 0; q < out.length; q++) {
    const re = acquired.map((a) => a[q] + draw());
    const im = acquired.map(() => draw());
    if (skullStrip && mask[q] < 0.5) continue; // skull stripped
    out[q] = blocks === 2 ? mp2rageUni(re[0], im[0], re[1], im[1]) + 0.5 : Math.hypot(re[0], im[0]);
  }
  return makeVolume(out, grid.shape, grid.affine);
}

/** Tissue labels (0 bg, 1 CSF, 2 GM, 3 WM) by the largest fraction where the brain covers half a voxel. */
export function tissueLabels(
  a: { gm: Volume<Float32Array>; wm: Volume<Float32Array>; csf: Volume<Float32Array> },
): Volume<Uint8Array> {
  const out = new Uint8Array(a.gm.data.length);
  for (let p = 0; p < out.length; p++) {
    const g = a.gm.data[p], w = a.wm.data[p], c = a.csf.data[p];
    if (g + w + c < 0.5) continue;
    out[p] = c >= g && c >= w ? 1 : g >= w ? 2 : 3;
  }
  return makeVolume(out, a.gm.shape, a.gm.affine);
}

export function drawSubject(profile: PhantomProfile, rand: () => number): SubjectParams {
  const { scale, atrophy } = profile.deformation;
  return {
    scale: scale[0] + rand() * (scale[1] - scale[0]),
    atrophy: atrophy[0] + rand() * (atrophy[1] - atrophy[0]),
    seed: Math.floor(rand() * 2 ** 31),
  };
}

/**
 * Generates the three cohorts of a profile under `outDir/<cohort>/`, each with NIfTI files and a
 * `manifest.json`. Deterministic for a given profile and seed. `log` receives progress lines.
 */
export async function generateCohorts(
  profileName: PhantomProfile["name"],
  outDir: string,
  { seed = 0, log = (_: string) => {}, cohorts = ["paired", "tissue", "wholebrain"] as BrainCohort[] } = {},
): Promise<Record<BrainCohort, CohortManifest>> {
  const profile = PROFILES[profileName];
  if (!profile) {
    throw new RangeError(`--profile: unknown profile "${profileName}"; expected quick, default or paper`);
  }
  const atlas = await loadAtlas();
  const template = atlasOnGrid(atlas, profile.simSpacing);
  const common = commonGrid(atlas.gm, profile.commonSpacing);
  const onCommon = (v: Volume, mode: "linear" | "nearest") =>
    resampleToGrid(v, common.shape, common.affine, mode);
  const result = {} as Record<BrainCohort, CohortManifest>;

  for (const cohort of cohorts) {
    const dir = `${outDir}/${cohort}`;
    await Deno.mkdir(dir, { recursive: true });
    const rand = mulberry32(
      (seed * 7919 + ["paired", "tissue", "wholebrain"].indexOf(cohort) * 104729 + 1) >>> 0,
    );
    const scans: ScanRecord[] = [];
    const plan: { id: string; subject: string; split: ScanRecord["split"]; params: SubjectParams }[] = [];
    if (cohort === "paired") {
      for (let s = 0; s < profile.paired.subjects; s++) {
        plan.push({
          id: `sub-${String(s + 1).padStart(2, "0")}`,
          subject: `sub-${String(s + 1).padStart(2, "0")}`,
          split: "fold",
          params: drawSubject(profile, rand),
        });
      }
    } else if (cohort === "tissue") {
      const t = profile.tissue;
      const splits = [
        ...Array(t.train).fill("train"),
        ...Array(t.validation).fill("validation"),
        ...Array(t.test).fill("test"),
      ] as ScanRecord["split"][];
      splits.forEach((split, s) =>
        plan.push({
          id: `sub-${String(s + 1).padStart(2, "0")}`,
          subject: `sub-${String(s + 1).padStart(2, "0")}`,
          split,
          params: drawSubject(profile, rand),
        })
      );
    } else {
      const w = profile.wholeBrain;
      const subjects = Array.from({ length: w.subjects }, () => drawSubject(profile, rand));
      // Rescanned subjects are the last `rescans`; all their scans are test scans.
      subjects.forEach((params, s) => {
        const subject = `sub-${String(s + 1).padStart(2, "0")}`;
        const split: ScanRecord["split"] = s < w.train
          ? "train"
          : s < w.train + w.validation
          ? "validation"
          : "test";
        plan.push({ id: `${subject}_scan-1`, subject, split, params });
        if (s >= w.subjects - w.rescans) {
          plan.push({ id: `${subject}_scan-2`, subject, split: "test", params });
        }
      });
    }
    for (const item of plan) {
      const t0 = performance.now();
      const anatomy = warpAnatomy(template, profile.deformation, item.params);
      const scanRand = mulberry32((item.params.seed ^ (item.id.endsWith("scan-2") ? 0x5bd1e995 : 0)) >>> 0);
      const files: Record<string, string> = {};
      const fractions = {
        gm: onCommon(anatomy.gm, "linear") as Volume<Float32Array>,
        wm: onCommon(anatomy.wm, "linear") as Volume<Float32Array>,
        csf: onCommon(anatomy.csf, "linear") as Volume<Float32Array>,
      };
      const tissue = tissueLabels(fractions);
      const write = async (key: string, v: Volume) => {
        files[key] = `${item.id}_${key}.nii.gz`;
        await writeNifti(`${dir}/${files[key]}`, v);
      };
      if (cohort === "paired") {
        const t7 = normalizeIntensity(
          onCommon(acquire(anatomy, MP2RAGE_7T, profile, scanRand), "linear") as Volume<Float32Array>,
        );
        const t3raw = normalizeIntensity(
          onCommon(acquire(anatomy, MPRAGE_3T, profile, scanRand), "linear") as Volume<Float32Array>,
        );
        await write("3T", histogramMatch(t3raw, t7));
        await write("7T", t7);
        await write("tissue", tissue);
      } else {
        const lf = normalizeIntensity(
          onCommon(acquire(anatomy, MPRAGE_15T, profile, scanRand), "linear") as Volume<Float32Array>,
        );
        await write("1.5T", lf);
        if (cohort === "tissue") {
          await write("tissue", tissue);
          // the segmentation ceiling's input: partial volume at the acquisition's resolution only
          await write(
            IDEAL_KEY,
            normalizeIntensity(
              onCommon(acquire(anatomy, MPRAGE_15T, profile, scanRand, { ideal: true }), "linear") as Volume<
                Float32Array
              >,
            ),
          );
        } else await write("structures", onCommon(anatomy.structures, "nearest"));
      }
      scans.push({ ...item, params: { ...item.params }, files });
      log(`${cohort} ${item.id}: ${((performance.now() - t0) / 1000).toFixed(2)} s`);
    }
    result[cohort] = await finishCohort(dir, {
      cohort,
      profile: profile.name,
      seed,
      grid: { shape: common.shape, spacing: profile.commonSpacing, affine: common.affine },
      labels: cohort === "wholebrain"
        ? "structures: lib/phantom/labels.ts STRUCTURES (27 + background)"
        : "tissue: 0 background, 1 CSF, 2 GM, 3 WM",
      description: {
        paired:
          "simulated paired 3T MPRAGE (histogram-matched to 7T) and 7T MP2RAGE uniform images; leave-one-out folds",
        tissue: "simulated 1.5T T1-weighted scans with CSF/GM/WM labels (IBSR-like splits)",
        wholebrain:
          "simulated 1.5T T1-weighted scans with 27 structures (MALC-like; the last subjects scanned twice)",
      }[cohort],
    }, scans);
  }
  return result;
}

/** The cohorts of skull-stripped brains `generateCohorts` writes (the full-head one: `head.ts`). */
type BrainCohort = Exclude<CohortName, "heads">;

/** What a cohort's manifest says besides its scans, checksums and generator version. */
export type CohortMeta = Omit<CohortManifest, "scans" | "checksums" | "generatorVersion">;

/** A generated scan with its volumes by manifest key, before they are written. */
export interface GeneratedScan extends Omit<ScanRecord, "files"> {
  volumes: Record<string, Volume>;
}

/**
 * Writes a cohort folder's `manifest.json` for `scans` whose files are in `dir`: their SHA-256
 * and the generator version added, written atomically (last, so a folder with a manifest is whole).
 */
async function finishCohort(dir: string, meta: CohortMeta, scans: ScanRecord[]): Promise<CohortManifest> {
  const checksums: Record<string, string> = {};
  for (const s of scans) {
    for (const f of Object.values(s.files)) checksums[f] = await sha256File(`${dir}/${f}`);
  }
  const manifest: CohortManifest = { ...meta, generatorVersion: GENERATOR_VERSION, scans, checksums };
  await writeFileAtomic(`${dir}/manifest.json`, JSON.stringify(manifest, null, 2) + "\n");
  return manifest;
}

/** Writes `scans`' volumes (`<id>_<key>.nii.gz`) into `dir` and the cohort's manifest. */
export async function writeCohort(
  dir: string,
  meta: CohortMeta,
  scans: GeneratedScan[],
): Promise<CohortManifest> {
  const records: ScanRecord[] = [];
  for (const { volumes, ...scan } of scans) {
    const files: Record<string, string> = {};
    for (const [key, v] of Object.entries(volumes)) {
      files[key] = `${scan.id}_${key}.nii.gz`;
      await writeNifti(`${dir}/${files[key]}`, v);
    }
    records.push({ ...scan, files });
  }
  return await finishCohort(dir, meta, records);
}

/**
 * The phantom cohorts in `outDir`, generated when absent. They are generated into a temporary
 * sibling folder and renamed into place when complete, so a cohort folder that exists is whole:
 * another process (parallel tests, a notebook beside a training run) never reads a half-written
 * cohort, and when two generate at once the first rename wins (generation is deterministic) and
 * the other's copy is removed. Returns whether this call generated it.
 */
export async function ensureCohorts(
  profileName: PhantomProfile["name"],
  outDir: string,
  { seed = 0, log = (_: string) => {} } = {},
): Promise<boolean> {
  if (existsSync(`${outDir}/paired/manifest.json`)) return false;
  const parent = dirname(resolve(outDir));
  await Deno.mkdir(parent, { recursive: true });
  const tmp = await Deno.makeTempDir({ dir: parent, prefix: `.${basename(outDir)}-` });
  try {
    await generateCohorts(profileName, tmp, { seed, log });
    try {
      await Deno.rename(tmp, outDir);
      return true;
    } catch (err) {
      if (existsSync(`${outDir}/paired/manifest.json`)) return false; // another process finished first
      throw err;
    }
  } finally {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }
}
