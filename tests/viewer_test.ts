/**
 * The viewer (`deno task view`): the server serves the page, niivue, the scene and the volumes it
 * names and nothing else; headless Chromium loads the page, served and exported, and the page
 * itself reports the loaded volumes' dimensions and a canvas that is not blank.
 */
import { assert, assertEquals, assertRejects } from "@std/assert";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { UsageError } from "../lib/cli.ts";
import { initBackend } from "../lib/backend.ts";
import { readNifti, writeNifti } from "../lib/io/nifti.ts";
import { makeVolume } from "../lib/volume/volume.ts";
import { chromiumPath } from "../lib/viz/chromium.ts";
import { runTraining } from "../lib/train/run.ts";
import { exportViewer, filesScene, sceneOf, type ServedScene, viewerHandler } from "../scripts/view.ts";
import { genericLut, viewerHtml, type ViewerState, viewerStates } from "../lib/viz/viewer.ts";

await initBackend("cpu", { quiet: true });

/** The one viewer's state on a page, as headless Chromium sees it. */
async function pageState(url: string): Promise<ViewerState> {
  const states = await viewerStates(url);
  assertEquals(states.length, 1, `${url}: one viewer expected`);
  return states[0];
}

async function phantomFiles(dir: string): Promise<[string, string]> {
  // a small image with a 3-label map over it
  const shape: [number, number, number] = [16, 20, 24];
  const affine = [[2, 0, 0, -16], [0, 2, 0, -20], [0, 0, 2, -24], [0, 0, 0, 1]];
  const img = new Float32Array(16 * 20 * 24), lab = new Uint8Array(img.length);
  for (let i = 0; i < img.length; i++) {
    // NIfTI order: the first dimension (16) varies fastest
    const x = (i % 16) - 7.5, y = (Math.floor(i / 16) % 20) - 9.5, z = Math.floor(i / (16 * 20)) - 11.5;
    const r = Math.hypot(x, y, z);
    img[i] = r < 8 ? 1 - r / 10 : 0;
    lab[i] = r < 3 ? 3 : r < 6 ? 2 : r < 8 ? 1 : 0;
  }
  const a = join(dir, "image.nii.gz"), b = join(dir, "labels.nii.gz");
  await writeNifti(a, makeVolume(img, shape, affine));
  await writeNifti(b, makeVolume(lab, shape, affine));
  return [a, b];
}

function serve(served: ServedScene) {
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, viewerHandler(served));
  return { server, base: `http://127.0.0.1:${server.addr.port}` };
}

Deno.test("viewer server: the page, niivue, the scene and its volumes; every other path is refused", async () => {
  const dir = await Deno.makeTempDir();
  const [img, lab] = await phantomFiles(dir);
  const served = await filesScene([img, lab]);
  const { server, base } = await serve(served);
  try {
    const page = await fetch(`${base}/`);
    assertEquals(page.status, 200);
    assert((await page.text()).includes('<pre class="viewer-status">'));
    const scene = await (await fetch(`${base}/scene.json`)).json();
    assertEquals(scene.views[0].panels[0].overlays[0].lut, "tissue"); // labels 0-3
    const vol = await fetch(`${base}/${scene.volumes.v1.url}`);
    assertEquals(new Uint8Array(await vol.arrayBuffer()), await Deno.readFile(lab));
    const js = await fetch(`${base}/niivue.js`);
    assert((await js.text()).startsWith("export const esm"));
    for (
      const bad of [
        "/volumes/../../etc/passwd",
        "/etc/passwd",
        `/${img}`,
        "/volumes/v9",
        "/..%2f..%2fetc/passwd",
      ]
    ) {
      const r = await fetch(`${base}${bad}`);
      await r.body?.cancel();
      assertEquals(r.status, 404, bad);
    }
    const post = await fetch(`${base}/scene.json`, { method: "POST", body: "x" });
    await post.body?.cancel();
    assertEquals(post.status, 405);
  } finally {
    await server.shutdown();
  }
  await Deno.remove(dir, { recursive: true });
});

Deno.test("viewer inputs: a non-NIfTI file, a fractional label map and a missing path are named", async () => {
  const dir = await Deno.makeTempDir();
  const [img] = await phantomFiles(dir);
  const txt = join(dir, "notes.txt");
  await Deno.writeTextFile(txt, "x");
  await assertRejects(() => filesScene([img, txt]), UsageError, `${txt}: not a NIfTI file`);
  const frac = join(dir, "frac.nii.gz");
  const v = await readNifti(img);
  await writeNifti(frac, makeVolume(Float32Array.from(v.data), v.shape, v.affine));
  await assertRejects(
    () => filesScene([img, frac]),
    UsageError,
    `${frac}: a label map must hold non-negative integers`,
  );
  await assertRejects(() => sceneOf([join(dir, "nope.nii.gz")]), UsageError, "nope.nii.gz: not found");
  await assertRejects(() => sceneOf([dir]), UsageError, "not a finished run");
  // label maps beyond the tissue labels get one colour per label, background transparent
  const lut = genericLut(27);
  assertEquals(lut.I.length, 28);
  assertEquals(lut.A[0], 0);
  assertEquals(new Set(lut.R.map((r, k) => `${r},${lut.G[k]},${lut.B[k]}`)).size, 28);
  await Deno.remove(dir, { recursive: true });
});

Deno.test({
  name:
    "viewer in Chromium: served and exported pages load the volumes with their dimensions, canvases not blank",
  ignore: !chromiumPath(),
  fn: async () => {
    const dir = await Deno.makeTempDir();
    const [img, lab] = await phantomFiles(dir);
    const served = await filesScene([img, lab]);
    const { server, base } = await serve(served);
    let state: ViewerState;
    try {
      state = await pageState(`${base}/`);
    } finally {
      await server.shutdown();
    }
    assertEquals(state.state, "loaded", JSON.stringify(state).slice(0, 400));
    const panel = state.panels![0];
    assertEquals(panel.volumes.map((v) => v.dims), [[16, 20, 24], [16, 20, 24]]);
    assertEquals(panel.volumes[1].label, "labels.nii.gz");
    // the crosshair starts at the centre, inside the sphere's core: label 3, named by the lookup table
    assert(panel.cursor.includes("WM"), panel.cursor);
    assert(panel.litFraction > 0.01, `canvas nearly blank: ${panel.litFraction}`);
    // exported: a folder that opens from disk, niivue and volumes inside the page
    const out = join(dir, "export");
    await exportViewer(served, out);
    const exported = await pageState(`file://${join(out, "index.html")}`);
    assertEquals(exported.state, "loaded", JSON.stringify(exported).slice(0, 400));
    assertEquals(exported.panels![0].volumes.map((v) => v.dims), [[16, 20, 24], [16, 20, 24]]);
    // and the check can fail: a volume that is not a NIfTI image is reported, not shown as loaded
    const broken = join(dir, "broken.html");
    const bytes = { v0: await Deno.readFile(img), v1: new TextEncoder().encode("not a nifti image") };
    await Deno.writeTextFile(broken, await viewerHtml(served.scene, bytes));
    const state2 = await pageState(`file://${broken}`);
    assert(state2.state !== "loaded", JSON.stringify(state2).slice(0, 300));
    await Deno.remove(dir, { recursive: true });
  },
});

Deno.test({
  name: "viewer of a run: synthesis and segmentation views of the test subjects, loaded in Chromium",
  ignore: !chromiumPath(),
  fn: async () => {
    const out = await Deno.makeTempDir();
    const run = await runTraining({
      profile: "quick",
      seed: 0,
      phase: "all",
      progress: false,
      out,
      name: "v",
      epochs: 1,
    });
    const served = await sceneOf([run]);
    const { views } = served.scene;
    // quick: one paired test subject, one tissue test subject
    assertEquals(views.length, 2);
    assertEquals(views[0].panels.slice(0, 4).map((p) => p.title), [
      "3T input",
      "KKN 7T-like synthesis",
      "real 7T",
      "teacher reconstruction of 7T",
    ]);
    const labels = views[1].panels.find((p) => p.title === "tissue labels")!;
    assertEquals(labels.overlays!.map((o) => o.label), ["ground truth", "baseline", "AFM-guided"]);
    assert(views[1].notes!.some((n) => n.startsWith("Dice AFM-guided: CSF")));
    for (const f of Object.values(served.files)) assert(existsSync(f), f);
    const { server, base } = await serve(served);
    try {
      const state = await pageState(`${base}/`);
      assertEquals(state.state, "loaded", JSON.stringify(state).slice(0, 400));
      assertEquals(state.panels!.length, views[0].panels.length);
      assert(state.panels!.every((p) => p.volumes[0].dims.length === 3 && p.litFraction > 0.01));
    } finally {
      await server.shutdown();
    }
    await Deno.remove(out, { recursive: true });
  },
});
