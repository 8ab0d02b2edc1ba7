/**
 * The full-head phantom: the brain of `cohort.ts` inside Colin27's own head (scalp fat, muscle and
 * skin, bone; `data-prep/atlas/colin27_head.nii.gz`, built by `data-prep/build_atlas.ts` from
 * mricron-data's `ch2.nii.gz`), acquired at 1.5T or 3T without skull stripping: air around the
 * head keeps its Rician noise, fat is bright and bone dark as on a real T1-weighted MPRAGE
 * (`headTissueProperties` in `physics.ts`). The `heads` cohort pairs each scan with its brain mask
 * (brain tissue fractions >= 0.5), what the brain-extraction network of `deno task segment` learns.
 */
import { existsSync } from "node:fs";
import { basename, dirname, resolve } from "node:path";
import { readNifti } from "../io/nifti.ts";
import type { CohortManifest, ScanRecord } from "../data/cohort.ts";
import { commonGrid, normalizeIntensity } from "../data/preprocess.ts";
import { resampleToGrid } from "../volume/geometry.ts";
import { makeVolume, type Volume } from "../volume/volume.ts";
import { mulberry32 } from "../random.ts";
import {
  acquire,
  type Anatomy,
  ATLAS_DIR,
  atlasOnGrid,
  drawSubject,
  type GeneratedScan,
  loadAtlas,
  type PhantomProfile,
  PROFILES,
  warpAnatomy,
  writeCohort,
} from "./cohort.ts";
import { MPRAGE_15T, MPRAGE_3T } from "./physics.ts";

/** Labels of `colin27_head.nii.gz`. */
export const HEAD_LABELS = { outside: 0, brain: 1, fat: 2, muscle: 3, bone: 4 } as const;

/** The label array of a `heads` cohort scan: 1 where brain tissue fills at least half the voxel. */
export const BRAIN_KEY = "brain";

/** Scans per split of the `heads` cohort, per phantom profile. */
export const HEAD_COUNTS: Record<
  PhantomProfile["name"],
  { train: number; validation: number; test: number }
> = {
  quick: { train: 2, validation: 1, test: 1 },
  default: { train: 12, validation: 3, test: 5 },
  paper: { train: 12, validation: 3, test: 5 },
};

/** The atlas on the full-head grid of `colin27_head.nii.gz`, with `head` labels. */
export async function loadHeadAtlas(dir: URL | string = ATLAS_DIR): Promise<Anatomy> {
  const base = typeof dir === "string" ? dir.replace(/\/?$/, "/") : dir.pathname;
  const brain = await loadAtlas(dir);
  const head = await readNifti(`${base}colin27_head.nii.gz`);
  const on = <T extends Volume>(v: T, mode: "linear" | "nearest") =>
    resampleToGrid(v, head.shape, head.affine, mode) as T;
  return {
    gm: on(brain.gm, "linear"),
    wm: on(brain.wm, "linear"),
    csf: on(brain.csf, "linear"),
    structures: on(brain.structures, "nearest"),
    head: makeVolume(Uint8Array.from(head.data), head.shape, head.affine),
  };
}

/**
 * Generates the `heads` cohort of a profile into `outDir/heads/`: scans alternately at 1.5T
 * (ADNI-like MPRAGE, key `1.5T`) and 3T (the paper's MPRAGE, key `3T`), not skull-stripped,
 * resampled to the head's common grid and normalised as the other cohorts, each with its brain
 * mask (`brain`). Deterministic for a profile and seed.
 */
export async function generateHeadCohort(
  profileName: PhantomProfile["name"],
  outDir: string,
  { seed = 0, log = (_: string) => {} } = {},
): Promise<CohortManifest> {
  const profile = PROFILES[profileName];
  if (!profile) {
    throw new RangeError(`--profile: unknown profile "${profileName}"; expected quick, default or paper`);
  }
  const atlas = await loadHeadAtlas();
  const template = atlasOnGrid(atlas, profile.simSpacing);
  const common = commonGrid(atlas.gm, profile.commonSpacing);
  const onCommon = (v: Volume, mode: "linear" | "nearest") =>
    resampleToGrid(v, common.shape, common.affine, mode);
  const counts = HEAD_COUNTS[profile.name];
  const splits = [
    ...Array(counts.train).fill("train"),
    ...Array(counts.validation).fill("validation"),
    ...Array(counts.test).fill("test"),
  ] as ScanRecord["split"][];
  const rand = mulberry32((seed * 7919 + 3 * 104729 + 1) >>> 0);
  const dir = `${outDir}/heads`;
  await Deno.mkdir(dir, { recursive: true });
  const scans: GeneratedScan[] = [];
  for (const [s, split] of splits.entries()) {
    const t0 = performance.now();
    const params = drawSubject(profile, rand);
    const id = `sub-${String(s + 1).padStart(2, "0")}`;
    const seq = s % 2 === 0 ? MPRAGE_15T : MPRAGE_3T;
    const anatomy = warpAnatomy(template, profile.deformation, params);
    const image = normalizeIntensity(
      onCommon(
        acquire(anatomy, seq, profile, mulberry32(params.seed), { skullStrip: false }),
        "linear",
      ) as Volume<
        Float32Array
      >,
    );
    const fractions = ["gm", "wm", "csf"].map((k) =>
      onCommon(anatomy[k as "gm" | "wm" | "csf"], "linear").data as Float32Array
    );
    const brain = Uint8Array.from(
      fractions[0],
      (g, p) => (g + fractions[1][p] + fractions[2][p] >= 0.5 ? 1 : 0),
    );
    scans.push({
      id,
      subject: id,
      split,
      params: { ...params, field: seq.field },
      volumes: { [seq.field]: image, [BRAIN_KEY]: makeVolume(brain, common.shape, common.affine) },
    });
    log(`heads ${id} (${seq.field}): ${((performance.now() - t0) / 1000).toFixed(2)} s`);
  }
  return await writeCohort(dir, {
    cohort: "heads",
    profile: profile.name,
    seed,
    grid: { shape: common.shape, spacing: profile.commonSpacing, affine: common.affine },
    labels: "brain: 0 outside the brain, 1 brain (its tissue fractions sum to at least 0.5)",
    description:
      "simulated full-head 1.5T and 3T T1-weighted MPRAGE scans (not skull-stripped) with brain masks",
  }, scans);
}

/**
 * The `heads` cohort in `dataDir/heads`, generated when absent (into a temporary sibling folder,
 * renamed into place when complete, as `ensureCohorts` does). Returns whether this call generated it.
 */
export async function ensureHeadCohort(
  profileName: PhantomProfile["name"],
  dataDir: string,
  { seed = 0, log = (_: string) => {} } = {},
): Promise<boolean> {
  const target = `${dataDir}/heads`;
  if (existsSync(`${target}/manifest.json`)) return false;
  const parent = dirname(resolve(target));
  await Deno.mkdir(parent, { recursive: true });
  const tmp = await Deno.makeTempDir({ dir: parent, prefix: `.${basename(target)}-` });
  try {
    await generateHeadCohort(profileName, tmp, { seed, log });
    try {
      await Deno.rename(`${tmp}/heads`, target);
      return true;
    } catch (err) {
      if (existsSync(`${target}/manifest.json`)) return false;
      throw err;
    }
  } finally {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }
}
