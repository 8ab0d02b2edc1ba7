/**
 * Independent check of NIfTI reading, writing and reorientation against nibabel (Debian's
 * python3-nibabel). Ignored, and reported as such, where nibabel is not installed; the README's
 * test command installs it.
 */
import { assertAlmostEquals, assertEquals } from "@std/assert";
import { type Affine, makeVolume, readNifti, toCanonical, type Vec3, writeNifti } from "../lib/mod.ts";

const PYTHON = "/usr/bin/python3";

function hasNibabel(): boolean {
  try {
    return new Deno.Command(PYTHON, { args: ["-c", "import nibabel"], stderr: "null" }).outputSync().success;
  } catch {
    return false;
  }
}
const ignore = !hasNibabel();
if (ignore) console.warn("nibabel_test: python3-nibabel not installed; nibabel round trips ignored");

interface NibDump {
  shape: number[];
  affine: Affine;
  data: number[];
  qform?: Affine;
  canonical?: { shape: number[]; affine: Affine; data: number[]; codes: string };
}

async function nib(script: string, path: string): Promise<NibDump> {
  const out = await new Deno.Command(PYTHON, { args: ["-c", script, path], stderr: "piped", stdout: "piped" })
    .output();
  if (!out.success) throw new Error(new TextDecoder().decode(out.stderr));
  return JSON.parse(new TextDecoder().decode(out.stdout));
}

const DUMP = `
import sys, json, nibabel as nib, numpy as np
img = nib.load(sys.argv[1])
can = nib.as_closest_canonical(img)
print(json.dumps({
  "shape": list(img.shape), "affine": img.affine.tolist(),
  "data": np.asarray(img.get_fdata()).ravel(order="F").tolist(),
  "qform": img.get_qform().tolist(),
  "canonical": {"shape": list(can.shape), "affine": can.affine.tolist(),
                "data": np.asarray(can.get_fdata()).ravel(order="F").tolist(),
                "codes": "".join(nib.aff2axcodes(img.affine))},
}))
`;

function close(a: Affine, b: Affine, tol: number, what: string) {
  for (let i = 0; i < 4; i++) {
    for (let j = 0; j < 4; j++) assertAlmostEquals(a[i][j], b[i][j], tol, `${what}[${i}][${j}]`);
  }
}

const tmp = await Deno.makeTempDir({ prefix: "uhf-nibabel-" });

// An oblique affine with permuted, flipped axes (i: posterior, j: superior, k: left), rotated
// 0.1 rad about x: exercises the qform quaternion and canonical reorientation.
const C = Math.cos(0.1), S = Math.sin(0.1);
const AFFINE: Affine = [
  [0, 0, -1.5, 80],
  [-0.9 * C, 1.1 * S, 0, 110],
  [0.9 * S, 1.1 * C, 0, -60],
  [0, 0, 0, 1],
];
const SHAPE: Vec3 = [6, 5, 4];

Deno.test(
  { name: "nibabel reads what we write (.nii.gz): shape, affine, qform, values", ignore },
  async () => {
    for (const Ctor of [Float32Array, Int16Array, Uint8Array]) {
      const data = new Ctor(120).map((_, i) => (i * 13) % 97);
      const path = `${tmp}/ours-${Ctor.name}.nii.gz`;
      await writeNifti(path, makeVolume(data, SHAPE, AFFINE));
      const d = await nib(DUMP, path);
      assertEquals(d.shape, SHAPE);
      close(d.affine, AFFINE, 1e-5, "affine");
      close(d.qform!, AFFINE, 1e-5, "qform");
      assertEquals(d.data, Array.from(data));
    }
  },
);

Deno.test({ name: "we read what nibabel writes: scaled int16, sform and qform", ignore }, async () => {
  const path = `${tmp}/theirs.nii.gz`;
  const script = `
import sys, numpy as np, nibabel as nib
data = (np.arange(120).reshape((6, 5, 4), order="F") * 3 - 100).astype(np.int16)
img = nib.Nifti1Image(data, np.array(${JSON.stringify(AFFINE)}))
img.header.set_slope_inter(0.5, 3.0)
nib.save(img, sys.argv[1])
`;
  const gen = await new Deno.Command(PYTHON, { args: ["-c", script, path] }).output();
  assertEquals(gen.success, true);
  const ours = await readNifti(path);
  const d = await nib(DUMP, path);
  assertEquals(ours.shape as number[], d.shape);
  close(ours.affine, d.affine, 1e-5, "affine");
  assertEquals(Array.from(ours.data), d.data);
});

Deno.test({ name: "toCanonical matches nibabel's as_closest_canonical", ignore }, async () => {
  const data = new Float32Array(120).map((_, i) => i);
  const path = `${tmp}/orient.nii.gz`;
  await writeNifti(path, makeVolume(data, SHAPE, AFFINE));
  const d = await nib(DUMP, path);
  const { volume } = toCanonical(await readNifti(path));
  assertEquals(volume.shape as number[], d.canonical!.shape);
  close(volume.affine, d.canonical!.affine, 1e-5, "canonical affine");
  assertEquals(Array.from(volume.data), d.canonical!.data);
});

Deno.test(
  { name: "we read every real scalar datatype nibabel writes, both byte orders", ignore },
  async () => {
    const script = `
import sys, numpy as np, nibabel as nib
out = sys.argv[1]
vals = {"int8": [-128, 127], "uint16": [0, 65535], "uint32": [0, 4294967295], "int64": [-2**53, 2**53],
        "uint64": [0, 2**53], "float64": [-1.5e300, 2.5], "uint8": [0, 255], "int16": [-32768, 32767],
        "int32": [-2**31, 2**31 - 1], "float32": [-3.5, 1e30]}
for name, (lo, hi) in vals.items():
    for order in "<>":
        dt = np.dtype(name).newbyteorder(order)
        data = np.zeros((6, 5, 4), dtype=dt)
        data.flat[0] = lo; data.flat[1] = hi; data.flat[7] = 3
        img = nib.Nifti1Image(data, np.eye(4), dtype=dt)
        img.header.set_slope_inter(1, 0)
        nib.save(img, f"{out}/dt-{name}-{'le' if order == '<' else 'be'}.nii")
`;
    const gen = await new Deno.Command(PYTHON, { args: ["-c", script, tmp] }).output();
    assertEquals(gen.success, true, new TextDecoder().decode(gen.stderr));
    for (
      const name of [
        "int8",
        "uint16",
        "uint32",
        "int64",
        "uint64",
        "float64",
        "uint8",
        "int16",
        "int32",
        "float32",
      ]
    ) {
      for (const order of ["le", "be"]) {
        const path = `${tmp}/dt-${name}-${order}.nii`;
        const ours = await readNifti(path);
        const d = await nib(DUMP, path);
        assertEquals(ours.datatype, name, path);
        // nibabel reads in Fortran order and returns float64; ours is in the file's (x fastest) order
        assertEquals(Array.from(ours.data), d.data, path);
      }
    }
  },
);
