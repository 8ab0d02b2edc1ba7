/**
 * `deno task view <run folder | image.nii.gz [labels.nii.gz ...]>`: an interactive viewer (niivue)
 * served on localhost, or written as a self-contained folder with `--export DIR`.
 *
 * - A run folder: per paired test subject the 3T input, the KKN's synthesis, the real 7T and the
 *   teacher's reconstruction with linked cursors, and the KKN's features per level; per tissue test
 *   subject the ground-truth, baseline and guided labels (a toggle) with the subject's Dice, and
 *   the first AFM's guidance. The volumes are computed from the run's checkpoints into
 *   `<run>/view/` first.
 * - NIfTI files: the first is the image, the others label maps over it (a toggle between them),
 *   drawn with the tissue lookup table when their labels are 0-3, else one colour per label.
 *
 * The server binds to 127.0.0.1 (a free port unless `--port`) and serves only the page, niivue
 * from node_modules, the scene and the volumes it names: any other path is 404.
 */
import { existsSync } from "node:fs";
import { basename, join, resolve } from "node:path";
import { type CommandSpec, runCommand, UsageError } from "../lib/cli.ts";
import { backendOption, initBackend } from "../lib/backend.ts";
import { readNifti, writeFileAtomic, writeNifti } from "../lib/io/nifti.ts";
import { loadModels, loadRun, runViewer } from "../lib/report.ts";
import {
  genericLut,
  inlineScene,
  NIIVUE_BUNDLE,
  niivueEsm,
  TISSUE_LUT,
  viewerPage,
  type ViewerScene,
} from "../lib/viz/viewer.ts";

export const VIEW_COMMAND: CommandSpec = {
  name: "deno task view",
  summary: "browse a run's volumes, syntheses, labels and features, or NIfTI files, in a local web viewer",
  usage: "deno task view <run folder | image.nii.gz [labels.nii.gz ...]> [--port N] [--export DIR]",
  options: [
    { name: "port", description: "port to serve on (0: a free one)", type: "integer", default: 0 },
    {
      name: "hostname",
      description: "address to bind (localhost only unless changed)",
      default: "127.0.0.1",
    },
    { name: "export", description: "write a self-contained viewer folder here instead of serving" },
    backendOption(),
  ],
  notes: [
    "The page works offline: niivue is served from node_modules. In a notebook, `viewerHtml` from lib/mod.ts gives the same viewer as a cell output.",
  ],
};

/** A scene and where each of its volumes is on disk. */
export interface ServedScene {
  scene: ViewerScene;
  files: Record<string, string>;
}

/** The scene of NIfTI files: the first the image, the rest label maps over it. */
export async function filesScene(paths: string[]): Promise<ServedScene> {
  const files: Record<string, string> = {};
  const luts: ViewerScene["luts"] = { tissue: TISSUE_LUT };
  const overlays = [];
  for (const [k, path] of paths.entries()) {
    if (!/\.nii(\.gz)?$/.test(path)) throw new UsageError(`${path}: not a NIfTI file (.nii or .nii.gz)`);
    const vol = await readNifti(path); // a clear error naming the file when it is not one
    files[`v${k}`] = path;
    if (k === 0) continue;
    let max = 0, integral = true;
    for (const v of vol.data) (max = Math.max(max, v)), (integral &&= Number.isInteger(v) && v >= 0);
    if (!integral) throw new UsageError(`${path}: a label map must hold non-negative integers`);
    if (max > 255) throw new UsageError(`${path}: labels above 255 (${max}) are not supported`);
    const lut = max <= 3 ? "tissue" : `labels${k}`;
    if (lut !== "tissue") luts[lut] = genericLut(max);
    overlays.push({ volume: `v${k}`, label: basename(path), lut });
  }
  const name = (p: string) => basename(p).replace(/[^A-Za-z0-9._-]/g, "_");
  return {
    scene: {
      title: basename(paths[0]),
      views: [{
        title: basename(paths[0]),
        panels: [{ title: basename(paths[0]), image: { volume: "v0", label: basename(paths[0]) }, overlays }],
      }],
      volumes: Object.fromEntries(
        Object.keys(files).map((
          k,
        ) => [k, { url: `volumes/${k}-${name(files[k])}`, name: `${k}-${name(files[k])}` }]),
      ),
      luts,
    },
    files,
  };
}

/** The scene of a run: its volumes computed from the checkpoints into `<run>/view/`. */
export async function runScene(dir: string): Promise<ServedScene> {
  const run = await loadRun(dir);
  if (!run.metrics.fusion) throw new UsageError(`${dir}: no phase 3 results (view needs a finished run)`);
  const models = await loadModels(run);
  const { scene, volumes } = await runViewer(run, models);
  for (const m of Object.values(models)) m.dispose();
  const out = join(dir, "view");
  await Deno.mkdir(out, { recursive: true });
  const files: Record<string, string> = {};
  for (const [key, vol] of Object.entries(volumes)) {
    files[key] = join(out, `${key}.nii.gz`);
    await writeNifti(files[key], vol, "deno task view");
  }
  return { scene, files };
}

/** The page, niivue, the scene and its volumes; every other path is 404. */
export function viewerHandler({ scene, files }: ServedScene): (req: Request) => Promise<Response> {
  const byUrl = new Map(Object.entries(scene.volumes).map(([k, v]) => [`/${v.url}`, files[k]]));
  return async (req) => {
    const path = new URL(req.url).pathname;
    const send = (body: BodyInit, type: string) =>
      new Response(body, { headers: { "content-type": type, "cache-control": "no-store" } });
    if (req.method !== "GET") return new Response("method not allowed", { status: 405 });
    if (path === "/" || path === "/index.html") {
      return send(viewerPage(scene.title), "text/html; charset=utf-8");
    }
    if (path === "/scene.json") return send(JSON.stringify(scene), "application/json");
    if (path === "/niivue.js") return send(await Deno.readFile(NIIVUE_BUNDLE), "text/javascript");
    const file = byUrl.get(path);
    if (file) return send(await Deno.readFile(file), "application/octet-stream");
    return new Response("not found", { status: 404 });
  };
}

/**
 * A self-contained viewer folder: `index.html` with niivue and the volumes inlined (opens from
 * disk or any static host), and the volumes as files beside it.
 */
export async function exportViewer({ scene, files }: ServedScene, dir: string): Promise<string[]> {
  await Deno.mkdir(join(dir, "volumes"), { recursive: true });
  const bytes: Record<string, Uint8Array> = {};
  for (const [key, path] of Object.entries(files)) {
    bytes[key] = await Deno.readFile(path);
    await writeFileAtomic(join(dir, scene.volumes[key].url), bytes[key]);
  }
  await writeFileAtomic(join(dir, "scene.json"), JSON.stringify(scene, null, 1));
  const page = viewerPage(scene.title, { scene: inlineScene(scene, bytes), esm: await niivueEsm() });
  await writeFileAtomic(join(dir, "index.html"), page);
  return ["index.html", "scene.json", ...Object.values(scene.volumes).map((v) => v.url)];
}

/** The scene the arguments name: a run folder, or NIfTI files. */
export async function sceneOf(inputs: string[]): Promise<ServedScene> {
  if (!inputs.length) throw new UsageError("give a run folder or NIfTI files to view");
  for (const p of inputs) if (!existsSync(p)) throw new UsageError(`${p}: not found`);
  if (inputs.length === 1 && Deno.statSync(inputs[0]).isDirectory) {
    if (!existsSync(join(inputs[0], "metrics.json"))) {
      throw new UsageError(`${inputs[0]}: a folder but not a finished run (no metrics.json)`);
    }
    return await runScene(inputs[0]);
  }
  return await filesScene(inputs);
}

if (import.meta.main) {
  await runCommand(VIEW_COMMAND, async (args) => {
    await initBackend(String(args.options.backend), { quiet: true });
    const served = await sceneOf(args.positional);
    if (args.options.export) {
      const dir = String(args.options.export);
      const written = await exportViewer(served, dir);
      console.log(`wrote ${written.length} files to ${dir}; open ${resolve(dir, "index.html")}`);
      return;
    }
    const server = Deno.serve({
      hostname: String(args.options.hostname),
      port: Number(args.options.port),
      onListen: ({ hostname, port }) => console.log(`viewer: http://${hostname}:${port}/ (Ctrl-C to stop)`),
    }, viewerHandler(served));
    await server.finished;
  }, { allowPositional: true });
}
