/**
 * `deno task figure:phantom [--data DIR]`: figures/phantom-cohort.png, one paired subject's 3T,
 * 7T and tissue labels (and a whole-brain subject's structures) in three views.
 * Generates the quick cohort first when `--data` has none.
 */
import { parseArgs } from "../lib/cli.ts";
import { readNifti } from "../lib/io/nifti.ts";
import { generateCohorts } from "../lib/phantom/cohort.ts";
import { drawSlice, newImage, slice, type View, writePng } from "../lib/viz/png.ts";

const args = parseArgs({
  name: "phantom_figure",
  summary: "draw one phantom subject",
  usage: "deno run -A data-prep/phantom_figure.ts [--data DIR] [--out PNG]",
  options: [
    {
      name: "data",
      description: "cohort root with paired/ and wholebrain/",
      default: "data/generated/default",
    },
    { name: "out", description: "output PNG", default: "figures/phantom-cohort.png" },
  ],
}, Deno.args).options;
const root = String(args.data);
try {
  await Deno.stat(`${root}/paired/manifest.json`);
} catch {
  console.log(`no cohort in ${root}: generating the default profile there`);
  await generateCohorts("default", root);
}
const paired = JSON.parse(await Deno.readTextFile(`${root}/paired/manifest.json`));
const whole = JSON.parse(await Deno.readTextFile(`${root}/wholebrain/manifest.json`));
const s = paired.scans[0];
const t3 = await readNifti(`${root}/paired/${s.files["3T"]}`);
const t7 = await readNifti(`${root}/paired/${s.files["7T"]}`);
const tis = await readNifti(`${root}/paired/${s.files["tissue"]}`);
const w = whole.scans[0];
const lf = await readNifti(`${root}/wholebrain/${w.files["1.5T"]}`);
const st = await readNifti(`${root}/wholebrain/${w.files["structures"]}`);

const views: View[] = ["axial", "coronal", "sagittal"];
const zoom = Math.max(1, Math.round(256 / t3.shape[1]));
const cell = Math.max(...t3.shape) * zoom + 6;
const rows = [
  { vol: t3, labels: undefined },
  { vol: t7, labels: undefined },
  { vol: t3, labels: tis },
  { vol: lf, labels: st },
];
const img = newImage(cell * views.length, cell * rows.length, 0);
rows.forEach((row, r) => {
  views.forEach((view, c) => {
    const base = slice(row.vol, view);
    const lab = row.labels ? slice(row.labels, view).values : undefined;
    drawSlice(img, c * cell + 3, r * cell + 3, base, { lo: 0, hi: 1, zoom, labels: lab, alpha: 0.45 });
  });
});
await writePng(String(args.out), img);
console.log(
  `wrote ${args.out}: rows 3T MPRAGE, 7T MP2RAGE, 3T + tissue labels, 1.5T + 27 structures (${paired.profile} profile)`,
);
