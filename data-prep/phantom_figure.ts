/**
 * `deno task figure:phantom [--data DIR]`: figures/phantom-cohort.png, one paired subject's 3T,
 * 7T and tissue labels (and a whole-brain subject's structures) in three views.
 * Generates the quick cohort first when `--data` has none.
 */
import { parseArgs } from "../lib/cli.ts";
import { readNifti, writeFileAtomic } from "../lib/io/nifti.ts";
import { generateCohorts } from "../lib/phantom/cohort.ts";
import { montage } from "../lib/viz/png.ts";

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

const rows = [
  { vol: t3 },
  { vol: t7 },
  { vol: t3, labels: tis },
  { vol: lf, labels: st },
];
await writeFileAtomic(String(args.out), await montage(rows, 256));
console.log(
  `wrote ${args.out}: rows 3T MPRAGE, 7T MP2RAGE, 3T + tissue labels, 1.5T + 27 structures (${paired.profile} profile)`,
);
