/**
 * Plotly figures as plain JSON specs ({data, layout}), built in TypeScript (plotly.js itself needs
 * a DOM), rendered offline to PNG and SVG by headless Chromium loading plotly.js-dist-min from
 * node_modules, and displayed in notebooks as `application/vnd.plotly.v1+json` with PNG and HTML
 * fallbacks (JupyterLab and VS Code draw the interactive figure; exported HTML shows the PNG).
 */
import { encodeBase64 } from "./base64.ts";
import { chromiumPath, runChromium } from "./chromium.ts";

export { chromiumPath };

export interface PlotlyFigure {
  data: Record<string, unknown>[];
  layout: Record<string, unknown>;
}

const FONT = { family: "DejaVu Sans, Arial, sans-serif", size: 13 };

function baseLayout(title: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    title: { text: title },
    font: FONT,
    template: "plotly_white",
    margin: { t: 60, l: 70, r: 70, b: 100 },
    legend: { orientation: "h", yanchor: "top", y: -0.18, x: 0 },
    ...extra,
  };
}

/** Grouped box plots: one trace per series, x = category of each value. */
export function boxPlot(
  title: string,
  series: { name: string; categories: string[]; values: number[] }[],
  yTitle: string,
): PlotlyFigure {
  return {
    data: series.map((s) => ({
      type: "box",
      name: s.name,
      x: s.categories,
      y: s.values,
      boxpoints: "all",
      jitter: 0.3,
    })),
    layout: baseLayout(title, { boxmode: "group", yaxis: { title: { text: yTitle } } }),
  };
}

/** Lines (e.g. training curves). */
export function linePlot(
  title: string,
  series: { name: string; x: number[]; y: number[]; yaxis?: "y" | "y2"; dashed?: boolean }[],
  xTitle: string,
  yTitle: string,
  y2Title?: string,
): PlotlyFigure {
  return {
    data: series.map((s) => ({
      type: "scatter",
      // a dashed series is a reference line (a floor, a threshold): no markers
      mode: s.dashed ? "lines" : "lines+markers",
      ...(s.dashed ? { line: { dash: "dash" } } : {}),
      name: s.name,
      x: s.x,
      y: s.y,
      yaxis: s.yaxis ?? "y",
    })),
    layout: baseLayout(title, {
      xaxis: { title: { text: xTitle } },
      yaxis: { title: { text: yTitle } },
      ...(y2Title ? { yaxis2: { title: { text: y2Title }, overlaying: "y", side: "right" } } : {}),
    }),
  };
}

/** Grouped bars. */
export function barPlot(
  title: string,
  series: { name: string; x: string[]; y: number[]; error?: number[] }[],
  yTitle: string,
): PlotlyFigure {
  return {
    data: series.map((s) => ({
      type: "bar",
      name: s.name,
      x: s.x,
      y: s.y,
      ...(s.error ? { error_y: { type: "data", array: s.error, visible: true } } : {}),
    })),
    layout: baseLayout(title, { barmode: "group", yaxis: { title: { text: yTitle } } }),
  };
}

/** Number of plotted values across a figure's traces (a figure with none is an error). */
export function pointCount(fig: PlotlyFigure): number {
  return fig.data.reduce((n, t) => n + ((t.y as unknown[] | undefined)?.length ?? 0), 0);
}

const PLOTLY_JS = new URL("../../node_modules/plotly.js-dist-min/plotly.min.js", import.meta.url);

/**
 * Renders figures to PNG bytes and SVG text in one headless Chromium run (about 3 s plus a
 * fraction of a second per figure). Throws, naming the figure, if one has no data.
 */
export async function renderFigures(
  figs: PlotlyFigure[],
  { width = 760, height = 460 }: { width?: number; height?: number } = {},
): Promise<{ png: Uint8Array; svg: string }[]> {
  figs.forEach((f, i) => {
    if (pointCount(f) === 0) throw new Error(`figure ${i} ("${JSON.stringify(f.layout.title)}") has no data`);
  });
  if (!chromiumPath()) throw new Error("rendering plots needs Chromium (Debian package `chromium`)");
  const dir = await Deno.makeTempDir({ prefix: "plotly-" });
  try {
    const page = `${dir}/render.html`;
    await Deno.writeTextFile(
      page,
      `<html><body><pre id="out">pending</pre><script src="${PLOTLY_JS.href}"></script><script>
(async () => {
  const figs = ${JSON.stringify(figs)};
  const out = [];
  for (const f of figs) {
    const o = {width: ${width}, height: ${height}};
    out.push({ png: await Plotly.toImage(f, {...o, format: "png"}), svg: await Plotly.toImage(f, {...o, format: "svg"}) });
  }
  document.getElementById("out").textContent = JSON.stringify(out);
})().catch((e) => (document.getElementById("out").textContent = "ERROR " + e));
</script></body></html>`,
    );
    const html = await runChromium(page, [
      "--allow-file-access-from-files",
      `--virtual-time-budget=${20000 + 2000 * figs.length}`,
      "--dump-dom",
    ]);
    const m = html.match(/<pre id="out">([\s\S]*?)<\/pre>/);
    const text = m
      ? m[1].replaceAll("&quot;", '"').replaceAll("&amp;", "&").replaceAll("&lt;", "<").replaceAll(
        "&gt;",
        ">",
      )
      : "";
    if (!text.startsWith("[")) {
      throw new Error(`Chromium did not render the figures: ${text.slice(0, 200) || "no output"}`);
    }
    const parsed = JSON.parse(text) as { png: string; svg: string }[];
    return parsed.map((p) => ({
      png: Uint8Array.from(atob(p.png.slice(p.png.indexOf(",") + 1)), (c) => c.charCodeAt(0)),
      svg: decodeURIComponent(p.svg.slice(p.svg.indexOf(",") + 1)),
    }));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

interface JupyterDisplay {
  display(bundle: Record<string, unknown>, options: { raw: boolean }): Promise<void>;
}

function jupyter(): JupyterDisplay | null {
  return ((Deno as unknown as { jupyter?: JupyterDisplay }).jupyter) ?? null;
}

/**
 * Shows a figure in a notebook: the interactive plotly JSON, a PNG rendered by Chromium (when
 * available) and an HTML fallback. Outside Jupyter it does nothing.
 */
export async function showFigure(fig: PlotlyFigure): Promise<void> {
  const j = jupyter();
  if (!j) return;
  const bundle: Record<string, unknown> = { "application/vnd.plotly.v1+json": fig };
  if (chromiumPath()) {
    const [{ png }] = await renderFigures([fig]);
    bundle["image/png"] = encodeBase64(png);
  }
  bundle["text/plain"] = `plotly figure: ${JSON.stringify(fig.layout.title)} (${pointCount(fig)} values)`;
  await j.display(bundle, { raw: true });
}

/** Shows a PNG image (bytes) in a notebook. */
export async function showPng(png: Uint8Array, caption = "image"): Promise<void> {
  const j = jupyter();
  if (!j) return;
  await j.display({ "image/png": encodeBase64(png), "text/plain": caption }, { raw: true });
}

/** Shows HTML (e.g. a table) in a notebook. */
export async function showHtml(html: string, text = "table"): Promise<void> {
  const j = jupyter();
  if (!j) return;
  await j.display({ "text/html": html, "text/plain": text }, { raw: true });
}
