/**
 * An interactive volume viewer built on niivue (`@niivue/niivue`, the WebGL2 viewer of the
 * neuroimaging community), for `deno task view`, static exports and notebook cells.
 *
 * A `ViewerScene` is plain data: views (one per subject: a title, notes such as Dice, panels), each
 * panel a background volume with optional overlays (label maps drawn with a lookup table whose
 * names show under the cursor, or heat maps), and the volumes by key with the URL they load from.
 * Panels of a view share one cursor. The page is one HTML file whose script reads the scene either
 * from the server (`scene.json`, volumes under `volumes/`) or from the page itself (`viewerHtml`:
 * volumes and niivue inlined, so it opens from disk, in a notebook output and in exported HTML).
 * Nothing is fetched from outside: niivue comes from the project's node_modules.
 */
import { encodeBase64 } from "./base64.ts";
import { chromiumPath, runChromium } from "./chromium.ts";

/** A label lookup table in niivue's form: parallel arrays over the label values `I`. */
export interface LabelTable {
  R: number[];
  G: number[];
  B: number[];
  A: number[];
  I: number[];
  labels: string[];
}

export interface ViewerLayer {
  /** Key into `ViewerScene.volumes`. */
  volume: string;
  /** What the toggle lists and the cursor line names. */
  label: string;
  /** A label map drawn with `ViewerScene.luts[lut]`, or a heat map (niivue colormap name). */
  lut?: string;
  colormap?: string;
}

export interface ViewerPanel {
  title: string;
  image: ViewerLayer;
  overlays?: ViewerLayer[];
}

export interface ViewerView {
  title: string;
  /** Lines shown above the panels (e.g. per-subject Dice). */
  notes?: string[];
  panels: ViewerPanel[];
}

export interface ViewerScene {
  title: string;
  views: ViewerView[];
  /** Volumes by key: the URL the page loads (relative, or a data: URL) and a NIfTI file name. */
  volumes: Record<string, { url: string; name: string }>;
  luts: Record<string, LabelTable>;
}

/**
 * The tissue labels in colours of FreeSurfer's lookup table: CSF as Left-Lateral-Ventricle (4),
 * grey matter as Left-Cerebral-Cortex (3), white matter as Left-Cerebellum-White-Matter (7) (its
 * Cerebral-White-Matter is near-white, invisible over a T1); background transparent.
 */
export const TISSUE_LUT: LabelTable = {
  I: [0, 1, 2, 3],
  labels: ["background", "CSF", "GM", "WM"],
  R: [0, 120, 205, 220],
  G: [0, 18, 62, 248],
  B: [0, 134, 78, 164],
  A: [0, 255, 255, 255],
};

/**
 * A lookup table for a label map with labels 0..max and no names of its own: "label k", hues
 * spread by the golden angle, background transparent.
 */
export function genericLut(max: number): LabelTable {
  const I = Array.from({ length: max + 1 }, (_, k) => k);
  const rgb = I.map((k) => {
    const h = (k * 137.508) % 360,
      f = (n: number) => {
        const c = (n + h / 30) % 12;
        return Math.round(255 * (0.55 - 0.45 * Math.max(-1, Math.min(c - 3, 9 - c, 1))));
      };
    return [f(0), f(8), f(4)];
  });
  return {
    I,
    labels: I.map((k) => (k === 0 ? "background" : `label ${k}`)),
    R: rgb.map((c) => c[0]),
    G: rgb.map((c) => c[1]),
    B: rgb.map((c) => c[2]),
    A: I.map((k) => (k === 0 ? 0 : 255)),
  };
}

/** The niivue bundle the page loads: one ES module exporting its own source, URL-encoded, as `esm`. */
export const NIIVUE_BUNDLE =
  new URL("../../node_modules/@niivue/niivue/build/index.min.js", import.meta.url).pathname;

/** The URL-encoded module source inside niivue's bundle (what the page imports from a Blob). */
export async function niivueEsm(bundle = NIIVUE_BUNDLE): Promise<string> {
  const text = await Deno.readTextFile(bundle);
  const m = /export const esm\s*=\s*"([^"]*)"/.exec(text);
  if (!m) throw new Error(`${bundle}: not niivue's bundle (no \`export const esm\`)`);
  return m[1];
}

/** The viewer's script (runs in the browser). */
const PAGE_SCRIPT = String.raw`
const root = document.getElementById(ROOT_ID);
const $ = (cls) => root.querySelector("." + cls);
const status = $("viewer-status");
const report = (state) => { status.textContent = JSON.stringify(state); };
try {
  const inline = (window.UHF_VIEWERS ?? {})[ROOT_ID];
  const scene = inline?.scene ?? await (await fetch("scene.json")).json();
  const esm = inline?.esm ?? (await import("./niivue.js")).esm;
  const url = URL.createObjectURL(new Blob([decodeURIComponent(esm)], { type: "text/javascript" }));
  const { Niivue } = await import(url);
  $("viewer-title").textContent = scene.title;
  const picker = $("viewer-pick");
  scene.views.forEach((v, i) => picker.add(new Option(v.title, String(i))));
  let open = [];
  async function show(index) {
    report({ state: "loading", view: index });
    for (const nv of open) nv.gl?.getExtension("WEBGL_lose_context")?.loseContext();
    open = [];
    const view = scene.views[index];
    $("viewer-notes").textContent = (view.notes ?? []).join("\n");
    const grid = $("viewer-panels");
    grid.replaceChildren();
    const panels = [];
    for (const p of view.panels) {
      const box = document.createElement("div");
      box.className = "panel";
      const head = document.createElement("div");
      head.className = "head";
      head.textContent = p.title;
      const frame = document.createElement("div");
      frame.className = "frame";
      const canvas = document.createElement("canvas");
      frame.append(canvas);
      const where = document.createElement("div");
      where.className = "where";
      box.append(head, frame, where);
      grid.append(box);
      const layers = [p.image, ...(p.overlays ?? [])];
      const nv = new Niivue({ backColor: [0, 0, 0, 1], show3Dcrosshair: true, isResizeCanvas: true });
      await nv.attachToCanvas(canvas);
      await nv.loadVolumes(layers.map((l, k) => ({
        url: scene.volumes[l.volume].url,
        name: scene.volumes[l.volume].name,
        colormap: l.lut ? "gray" : (l.colormap ?? "gray"),
        opacity: k === 0 ? 1 : k === 1 ? 0.5 : 0,
      })));
      layers.forEach((l, k) => {
        if (!l.lut) return;
        nv.volumes[k].setColormapLabel(scene.luts[l.lut]);
      });
      nv.updateGLVolume();
      nv.onLocationChange = (d) => { where.textContent = d.string; };
      if ((p.overlays ?? []).length > 1) {
        const sel = document.createElement("select");
        p.overlays.forEach((o, k) => sel.add(new Option(o.label, String(k))));
        sel.onchange = () => {
          p.overlays.forEach((_, k) => nv.setOpacity(k + 1, String(k) === sel.value ? 0.5 : 0));
        };
        head.append(" ", sel);
      }
      open.push(nv);
      panels.push({ title: p.title, layers, nv, where });
    }
    open.forEach((a) => a.broadcastTo(open.filter((b) => b !== a), { "2d": true, "3d": true }));
    report({
      state: "loaded",
      view: index,
      panels: panels.map(({ title, layers, nv, where }) => {
        nv.drawScene();
        const gl = nv.gl, w = gl.drawingBufferWidth, h = gl.drawingBufferHeight;
        const px = new Uint8Array(w * h * 4);
        gl.readPixels(0, 0, w, h, gl.RGBA, gl.UNSIGNED_BYTE, px);
        let lit = 0;
        for (let i = 0; i < px.length; i += 4) if (px[i] + px[i + 1] + px[i + 2] > 30) lit++;
        // the cursor line at the crosshair (the centre at first): values, and label names of label maps
        nv.createOnLocationChange();
        return {
          title,
          volumes: nv.volumes.map((v, k) => ({ label: layers[k].label, dims: v.hdr.dims.slice(1, 4) })),
          litFraction: lit / (w * h),
          cursor: where.textContent,
        };
      }),
    });
  }
  picker.onchange = () => show(Number(picker.value));
  await show(0);
} catch (err) {
  report({ state: "error", error: String(err?.stack ?? err) });
}
`;

/** Styles scoped to the viewer's element, so that a notebook page keeps its own. */
const STYLE = `
.uhf-viewer { background: #111; color: #ddd; font: 14px sans-serif; padding: 8px; }
.uhf-viewer .viewer-panels { display: grid; grid-template-columns: repeat(auto-fill, minmax(320px, 1fr)); gap: 8px; }
.uhf-viewer .frame { height: 340px; position: relative; }
.uhf-viewer .frame canvas { width: 100%; height: 100%; display: block; }
.uhf-viewer .head, .uhf-viewer .where { font-size: 12px; padding: 2px 0; min-height: 1.2em; }
.uhf-viewer .viewer-notes { white-space: pre; font-size: 12px; }
.uhf-viewer .viewer-status { display: none; }
`;

function escapeHtml(s: string): string {
  return s.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;");
}

/** JSON safe inside a <script> element. */
function scriptJson(value: unknown): string {
  return JSON.stringify(value).replaceAll("<", "\\u003c");
}

/**
 * The viewer: one element with its own styles and script (ids made unique, so that a notebook can
 * show several). Without `inline` it loads `scene.json` and `niivue.js` from where it is served;
 * with it the element carries the scene (volumes as data: URLs) and niivue itself. The page's
 * state (loading, loaded with each panel's volume dimensions and lit fraction, or the error) is
 * written as JSON into its `.viewer-status` element.
 */
export function viewerElement(inline?: { scene: ViewerScene; esm: string }): string {
  const id = `uhf-viewer-${crypto.randomUUID().slice(0, 8)}`;
  const data = inline
    ? `<script>(window.UHF_VIEWERS ??= {})[${JSON.stringify(id)}] = { scene: ${
      scriptJson(inline.scene)
    }, esm: "${inline.esm}" };</script>\n`
    : "";
  return `<div class="uhf-viewer" id="${id}"><style>${STYLE}</style>
<div><b class="viewer-title"></b> <select class="viewer-pick"></select></div>
<div class="viewer-notes"></div>
<div class="viewer-panels"></div>
<pre class="viewer-status">{"state":"starting"}</pre>
${data}<script type="module">const ROOT_ID = ${JSON.stringify(id)};${PAGE_SCRIPT}</script>
</div>`;
}

/** A whole page around `viewerElement`. */
export function viewerPage(title: string, inline?: { scene: ViewerScene; esm: string }): string {
  return `<!doctype html>
<html><head><meta charset="utf-8"><title>${escapeHtml(title)}</title></head>
<body style="margin:0;background:#111">
${viewerElement(inline)}
</body></html>
`;
}

/** A scene with every volume's bytes inlined as a data: URL (for `viewerHtml`). */
export function inlineScene(scene: ViewerScene, bytes: Record<string, Uint8Array>): ViewerScene {
  const volumes: ViewerScene["volumes"] = {};
  for (const [key, v] of Object.entries(scene.volumes)) {
    const b = bytes[key];
    if (!b) throw new Error(`viewer: no bytes for volume "${key}"`);
    volumes[key] = { name: v.name, url: `data:application/octet-stream;base64,${encodeBase64(b)}` };
  }
  return { ...scene, volumes };
}

/**
 * A self-contained viewer element (niivue and the volumes inside): a notebook cell's HTML output
 * that keeps working in exported HTML.
 */
export async function viewerHtml(scene: ViewerScene, bytes: Record<string, Uint8Array>): Promise<string> {
  return viewerElement({ scene: inlineScene(scene, bytes), esm: await niivueEsm() });
}

/** What a viewer reports in its `.viewer-status` element. */
export interface ViewerState {
  state: "starting" | "loading" | "loaded" | "error";
  error?: string;
  view?: number;
  panels?: {
    title: string;
    volumes: { label: string; dims: number[] }[];
    litFraction: number;
    cursor: string;
  }[];
}

/**
 * The state of every viewer on a page (a served URL or a file:// URL) once headless Chromium has
 * loaded it, with software WebGL2 (SwiftShader). Chromium gets a budget of virtual time for the
 * volumes to load; on a busy machine a viewer can still be loading when it runs out, so the page is
 * loaded again with a larger budget (up to three times) until no viewer is still loading.
 */
export async function viewerStates(url: string): Promise<ViewerState[]> {
  if (!chromiumPath()) throw new Error("checking the viewer needs Chromium (Debian package `chromium`)");
  const unescape = (t: string) =>
    t.replaceAll("&quot;", '"').replaceAll("&lt;", "<").replaceAll("&gt;", ">").replaceAll("&amp;", "&");
  let states: ViewerState[] = [];
  for (const budget of [30_000, 120_000, 480_000]) {
    const dom = await runChromium(url, [
      "--use-angle=swiftshader",
      "--enable-unsafe-swiftshader",
      `--virtual-time-budget=${budget}`,
      "--window-size=1200,900",
      "--dump-dom",
    ]);
    states = [...dom.matchAll(/<pre class="viewer-status">([^<]*)<\/pre>/g)].map((m) =>
      JSON.parse(unescape(m[1]))
    );
    if (states.every((s) => s.state === "loaded" || s.state === "error")) break;
  }
  return states;
}
