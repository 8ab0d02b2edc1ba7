/**
 * Builds the phantom's anatomy from Debian's `mricron-data` (run once; its output is shipped in
 * `data-prep/atlas/` so nothing needs Debian at run time):
 *
 *   deno run -A data-prep/build_atlas.ts [--templates /usr/share/mricron/templates] [--out data-prep/atlas]
 *
 * Inputs (Colin27, one real brain scanned 27 times and averaged; AAL atlas on the same grid):
 * - `ch2better.nii.gz`: 0.5 mm Colin27 with CSF and skull zeroed (GM and WM only).
 * - `ch2bet.nii.gz`: 1 mm skull-stripped Colin27 (its non-zero voxels are the brain mask).
 * - `ch2.nii.gz`: the same 1 mm Colin27 with skull and scalp (the full-head phantom's head).
 * - `aal.nii.gz` + `aal.nii.txt`: the AAL atlas (116 regions) on the 1 mm grid.
 *
 * Outputs on the 1 mm grid, cropped to the brain with a 2-voxel margin:
 * - `colin27_gm.nii.gz`, `colin27_wm.nii.gz`, `colin27_csf.nii.gz`: tissue fractions (uint8,
 *   255 = 1). GM/WM come from the 0.5 mm image, thresholded at Otsu's level of its non-zero
 *   intensities, then averaged over each 1 mm voxel (partial volume). CSF is the brain mask minus GM and WM.
 * - `colin27_head.nii.gz` (from `ch2.nii.gz`, the full-head Colin27 on the same 1 mm grid, not
 *   cropped): the head around the brain for the full-head phantom (`lib/phantom/head.ts`,
 *   `HEAD_LABELS`): 0 outside the head, 1 brain (ch2bet's mask), 2 fat, 3 muscle and skin,
 *   4 bone. The head is everything not reached from the field of view's border through voxels
 *   darker than 0.2 x the white matter's median intensity (air); its non-brain voxels are
 *   classed by intensity relative to that median: above 1.15 fat (scalp, orbit, marrow), 0.45
 *   to 1.15 muscle and skin, below 0.45 bone (with the sinuses' air, the eyes and the CSF outside
 *   the mask, all dark on a T1 image).
 * - `colin27_structures.nii.gz`: 27 structures + background (see `lib/phantom/labels.ts`).
 *   From AAL: cortex (all cortical AAL regions), thalamus, caudate, putamen, pallidum,
 *   hippocampus, amygdala, cerebellar cortex; hemisphere from the region's name, vermis from x.
 *   By rule (approximate; coordinates are MNI millimetres, Colin27 is in MNI space):
 *   - cerebral vs cerebellar white matter: a WM voxel takes the class of the geodesically
 *     nearest AAL region (cerebellar region -> cerebellar WM, else cerebral WM by hemisphere);
 *   - ventral DC: non-CSF voxels without an AAL label, 3-18 mm from the midline, from 10 mm
 *     below to 3 mm above the thalamus's lowest point, within the thalamus's anterior-posterior
 *     extent;
 *   - brain stem: non-CSF voxels without an AAL label below the thalamus (2 mm under its lowest
 *     point), within 14 mm of the midline and anterior to y = -45 mm;
 *   - ventricles: CSF voxels at least 5 mm deep inside the brain mask: lateral ventricles
 *     (at or above the thalamus's lowest point, >= 2 mm off the midline), 3rd ventricle (within
 *     3 mm of the midline, between the thalami), 4th ventricle (15 mm or more below the
 *     thalamus, within 10 mm of the midline, y between -55 and -30 mm);
 *   - other CSF (sulci, cisterns) is background, as in MALC.
 */
import { parseArgs } from "../lib/cli.ts";
import { readNifti, writeNifti } from "../lib/io/nifti.ts";
import { applyAffine } from "../lib/volume/affine.ts";
import { cropToBox, fillHoles, foregroundBox } from "../lib/volume/geometry.ts";
import { makeVolume, type Vec3 } from "../lib/volume/volume.ts";
import { fitGaussianMixture, otsuThreshold } from "../lib/phantom/gmm.ts";
import { structureIndex as S } from "../lib/phantom/labels.ts";
import { HEAD_LABELS } from "../lib/phantom/head.ts";

const args = parseArgs({
  name: "build_atlas",
  summary: "build the phantom anatomy from mricron-data",
  usage: "deno run -A data-prep/build_atlas.ts",
  options: [
    { name: "templates", description: "mricron templates folder", default: "/usr/share/mricron/templates" },
    { name: "out", description: "output folder", default: "data-prep/atlas" },
  ],
}, Deno.args).options;
const dir = String(args.templates);
const out = String(args.out);

const bet = await readNifti(`${dir}/ch2bet.nii.gz`);
const aal = await readNifti(`${dir}/aal.nii.gz`);
const fine = await readNifti(`${dir}/ch2better.nii.gz`);
const aalNames = new Map<number, string>();
for (const line of (await Deno.readTextFile(`${dir}/aal.nii.txt`)).split("\n")) {
  const [idx, name] = line.trim().split(/\s+/);
  if (idx && name) aalNames.set(Number(idx), name);
}

// --- GM/WM threshold: Otsu on the 0.5 mm image ----------------------------------------------------
// The two-Gaussian mixture is reported for reference only: in this 27-scan average the WM peak is
// narrow (sd ~4) and its equal-posterior point (~106) lies deep in the WM tail, labelling 1182 mL
// GM against 446 mL WM; Otsu's between-class-variance threshold gives GM/WM about 1.1.
const nonzero: number[] = [];
for (const v of fine.data) if (v > 0) nonzero.push(v);
const [gmG, wmG] = fitGaussianMixture(nonzero, 2, { bins: 128 });
const threshold = otsuThreshold(nonzero) + 0.5; // values <= the Otsu level are GM
console.log(
  `GM ~ N(${gmG.mean.toFixed(1)}, ${gmG.sd.toFixed(1)}), WM ~ N(${wmG.mean.toFixed(1)}, ${
    wmG.sd.toFixed(1)
  }); Otsu threshold ${threshold.toFixed(1)}`,
);

// --- Fractions on the 1 mm grid: [0.25, 0.5, 0.25] box average of the 0.5 mm masks ------------
const shape = bet.shape;
const n = shape[0] * shape[1] * shape[2];
const fGM = new Float32Array(n), fWM = new Float32Array(n), fCSF = new Float32Array(n);
const [fx, fy, fz] = fine.shape;
const fineInv = [0, 1, 2].map((d) => ({ scale: 1 / fine.affine[d][d], origin: fine.affine[d][3] }));
const w3 = [0.25, 0.5, 0.25];
let idx = 0;
for (let k = 0; k < shape[2]; k++) {
  for (let j = 0; j < shape[1]; j++) {
    for (let i = 0; i < shape[0]; i++, idx++) {
      const w = applyAffine(bet.affine, [i, j, k]);
      const c = w.map((x, d) => Math.round((x - fineInv[d].origin) * fineInv[d].scale));
      let g = 0, m = 0;
      for (let dk = -1; dk <= 1; dk++) {
        const z = c[2] + dk;
        if (z < 0 || z >= fz) continue;
        for (let dj = -1; dj <= 1; dj++) {
          const y = c[1] + dj;
          if (y < 0 || y >= fy) continue;
          for (let di = -1; di <= 1; di++) {
            const x = c[0] + di;
            if (x < 0 || x >= fx) continue;
            const v = fine.data[x + fx * (y + fy * z)];
            if (v <= 0) continue;
            const wt = w3[di + 1] * w3[dj + 1] * w3[dk + 1];
            if (v < threshold) g += wt;
            else m += wt;
          }
        }
      }
      fGM[idx] = g;
      fWM[idx] = m;
      fCSF[idx] = bet.data[idx] > 0 ? Math.max(0, 1 - g - m) : 0;
    }
  }
}

// --- Tissue argmax and helpers ------------------------------------------------------------------
const tissue = new Uint8Array(n); // 0 bg, 1 CSF, 2 GM, 3 WM
for (let p = 0; p < n; p++) {
  const tot = fGM[p] + fWM[p] + fCSF[p];
  if (tot < 0.5) continue;
  tissue[p] = fCSF[p] >= fGM[p] && fCSF[p] >= fWM[p] ? 1 : fGM[p] >= fWM[p] ? 2 : 3;
}
const inBrain = (p: number) => tissue[p] > 0;

// Depth inside the brain (6-connected erosion steps, capped).
const depth = new Uint8Array(n);
for (let p = 0; p < n; p++) depth[p] = inBrain(p) ? 255 : 0;
const [nx, ny, nz] = shape;
const strides = [1, -1, nx, -nx, nx * ny, -nx * ny];
for (let step = 1; step <= 10; step++) {
  const frontier: number[] = [];
  for (let p = 0; p < n; p++) {
    if (depth[p] !== 255) continue;
    const i = p % nx, j = Math.floor(p / nx) % ny, k = Math.floor(p / (nx * ny));
    if (i === 0 || j === 0 || k === 0 || i === nx - 1 || j === ny - 1 || k === nz - 1) {
      frontier.push(p);
      continue;
    }
    for (const s of strides) {
      if (depth[p + s] === step - 1) {
        frontier.push(p);
        break;
      }
    }
  }
  for (const p of frontier) depth[p] = step;
}

const world = (p: number): Vec3 =>
  applyAffine(bet.affine, [p % nx, Math.floor(p / nx) % ny, Math.floor(p / (nx * ny))]);

// AAL region class per label.
type Region =
  | "cortex"
  | "hippocampus"
  | "amygdala"
  | "caudate"
  | "putamen"
  | "pallidum"
  | "thalamus"
  | "cerebellum";
function region(label: number): Region | undefined {
  const name = aalNames.get(label);
  if (!name) return undefined;
  if (name.startsWith("Hippocampus")) return "hippocampus";
  if (name.startsWith("Amygdala")) return "amygdala";
  if (name.startsWith("Caudate")) return "caudate";
  if (name.startsWith("Putamen")) return "putamen";
  if (name.startsWith("Pallidum")) return "pallidum";
  if (name.startsWith("Thalamus")) return "thalamus";
  if (name.startsWith("Cerebelum") || name.startsWith("Vermis")) return "cerebellum";
  return "cortex";
}
const sideOf = (label: number, x: number): "L" | "R" => {
  const name = aalNames.get(label) ?? "";
  if (name.endsWith("_L")) return "L";
  if (name.endsWith("_R")) return "R";
  return x < 0 ? "L" : "R";
};

// Thalamus extent.
let zThalMin = Infinity, zThalMax = -Infinity, yThalMin = Infinity, yThalMax = -Infinity;
for (let p = 0; p < n; p++) {
  if (region(aal.data[p]) !== "thalamus") continue;
  const [, y, z] = world(p);
  zThalMin = Math.min(zThalMin, z);
  zThalMax = Math.max(zThalMax, z);
  yThalMin = Math.min(yThalMin, y);
  yThalMax = Math.max(yThalMax, y);
}
console.log(`thalamus: z ${zThalMin}..${zThalMax}, y ${yThalMin}..${yThalMax}`);

// Geodesically nearest AAL label through the brain (multi-source BFS).
const nearest = new Uint8Array(n);
let queue: number[] = [];
for (let p = 0; p < n; p++) {
  if (aal.data[p] > 0 && inBrain(p)) {
    nearest[p] = aal.data[p];
    queue.push(p);
  }
}
while (queue.length) {
  const next: number[] = [];
  for (const p of queue) {
    for (const s of strides) {
      const q = p + s;
      if (q < 0 || q >= n || nearest[q] || !inBrain(q)) continue;
      nearest[q] = nearest[p];
      next.push(q);
    }
  }
  queue = next;
}

const SIDE = {
  cortex: { L: S("Left-Cerebral-Cortex"), R: S("Right-Cerebral-Cortex") },
  wm: { L: S("Left-Cerebral-White-Matter"), R: S("Right-Cerebral-White-Matter") },
  cblmCortex: { L: S("Left-Cerebellum-Cortex"), R: S("Right-Cerebellum-Cortex") },
  cblmWM: { L: S("Left-Cerebellum-White-Matter"), R: S("Right-Cerebellum-White-Matter") },
  hippocampus: { L: S("Left-Hippocampus"), R: S("Right-Hippocampus") },
  amygdala: { L: S("Left-Amygdala"), R: S("Right-Amygdala") },
  caudate: { L: S("Left-Caudate"), R: S("Right-Caudate") },
  putamen: { L: S("Left-Putamen"), R: S("Right-Putamen") },
  pallidum: { L: S("Left-Pallidum"), R: S("Right-Pallidum") },
  thalamus: { L: S("Left-Thalamus"), R: S("Right-Thalamus") },
  vdc: { L: S("Left-VentralDC"), R: S("Right-VentralDC") },
  latVent: { L: S("Left-Lateral-Ventricle"), R: S("Right-Lateral-Ventricle") },
};

const structures = new Uint8Array(n);
for (let p = 0; p < n; p++) {
  const t = tissue[p];
  if (!t) continue;
  const [x, y, z] = world(p);
  const side: "L" | "R" = x < 0 ? "L" : "R";
  const label = aal.data[p];
  const reg = region(label);
  if (t === 1) {
    if (depth[p] < 5) continue; // sulcal / cisternal CSF: background
    if (Math.abs(x) < 3 && z >= zThalMin - 8 && z <= zThalMax && y >= yThalMin - 5 && y <= yThalMax + 5) {
      structures[p] = S("3rd-Ventricle");
    } else if (z >= zThalMin && Math.abs(x) >= 2) {
      structures[p] = SIDE.latVent[side];
    } else if (z <= zThalMin - 15 && Math.abs(x) < 10 && y >= -55 && y <= -30) {
      structures[p] = S("4th-Ventricle");
    }
    continue;
  }
  // Subcortical nuclei, hippocampus, amygdala: the AAL label decides, whatever the tissue.
  if (reg && reg !== "cortex" && reg !== "cerebellum") {
    structures[p] = SIDE[reg][sideOf(label, x)];
    continue;
  }
  if (reg === "cerebellum") {
    structures[p] = (t === 2 ? SIDE.cblmCortex : SIDE.cblmWM)[sideOf(label, x)];
    continue;
  }
  if (reg === "cortex" && t === 2) {
    structures[p] = SIDE.cortex[sideOf(label, x)];
    continue;
  }
  if (!reg) {
    const ax = Math.abs(x);
    if (ax >= 3 && ax <= 18 && z >= zThalMin - 10 && z < zThalMin + 3 && y >= yThalMin && y <= yThalMax) {
      structures[p] = SIDE.vdc[side];
      continue;
    }
    if (z < zThalMin - 2 && ax <= 14 && y > -45) {
      structures[p] = S("Brain-Stem");
      continue;
    }
  }
  // Remaining GM/WM: by the nearest AAL region.
  const nearReg = region(nearest[p]);
  if (nearReg === "cerebellum") {
    structures[p] = (t === 2 ? SIDE.cblmCortex : SIDE.cblmWM)[sideOf(nearest[p], x)];
  } else structures[p] = (t === 2 ? SIDE.cortex : SIDE.wm)[side];
}

// --- Crop and write ------------------------------------------------------------------------
const anyTissue = makeVolume(Uint8Array.from(tissue, (t) => (t ? 1 : 0)), shape, bet.affine);
const box = foregroundBox(anyTissue, 0, 2);
const toU8 = (f: Float32Array) => Uint8Array.from(f, (v) => Math.round(Math.min(1, Math.max(0, v)) * 255));
await Deno.mkdir(out, { recursive: true });
const description = "Colin27/AAL (mricron-data), see ATTRIBUTION.md";
for (
  const [name, data] of [["gm", toU8(fGM)], ["wm", toU8(fWM)], ["csf", toU8(fCSF)], [
    "structures",
    structures,
  ]] as const
) {
  await writeNifti(
    `${out}/colin27_${name}.nii.gz`,
    cropToBox(makeVolume(data, shape, bet.affine), box),
    description,
  );
}
const counts = new Array(28).fill(0);
for (const s of structures) counts[s]++;
console.log(
  `cropped to ${box.end.map((e, d) => e - box.start[d]).join("x")} at 1 mm; voxels per structure: ${
    counts.join(" ")
  }`,
);

// --- The head around the brain (full-head phantom) ------------------------------------------
const ch2 = await readNifti(`${dir}/ch2.nii.gz`);
if (ch2.shape.join() !== shape.join()) throw new Error(`ch2.nii.gz: grid ${ch2.shape} differs from ch2bet's`);
const wmValues = Float32Array.from(
  Array.from(ch2.data).filter((_, p) => tissue[p] === 3),
).sort();
const wmMedian = wmValues[wmValues.length >> 1];
// the head: everything not reached from the border through air (6-connected), holes included
const inHead = fillHoles(Uint8Array.from(ch2.data, (v) => (v < 0.2 * wmMedian ? 0 : 1)), [nz, ny, nx]);
const head = new Uint8Array(n);
const headCounts = new Array(5).fill(0);
for (let p = 0; p < n; p++) {
  const v = ch2.data[p] / wmMedian;
  head[p] = bet.data[p] > 0
    ? HEAD_LABELS.brain
    : !inHead[p]
    ? HEAD_LABELS.outside
    : v > 1.15
    ? HEAD_LABELS.fat
    : v >= 0.45
    ? HEAD_LABELS.muscle
    : HEAD_LABELS.bone;
  headCounts[head[p]]++;
}
await writeNifti(`${out}/colin27_head.nii.gz`, makeVolume(head, shape, bet.affine), description);
console.log(
  `head (white matter median ${wmMedian} in ch2): mL outside/brain/fat/muscle/bone ${
    headCounts.map((c) => (c / 1000).toFixed(0)).join(" ")
  }`,
);
