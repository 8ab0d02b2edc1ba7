/**
 * `deno task notebooks [--out notebooks/html] [NN ...]`: executes every notebook headless with the
 * Deno Jupyter kernel (nbconvert) on the quick profile, exports HTML, then looks at it as a reader
 * would: each exported page is rendered by headless Chromium to a screenshot, and each embedded
 * image (the plot PNGs and montages) is decoded. A blank screenshot or image, or a plot with no
 * data, is an error.
 */
import { join } from "node:path";
import { type CommandSpec, runCommand, UsageError } from "../lib/cli.ts";
import { chromiumPath, runChromium } from "../lib/viz/chromium.ts";
import { decodePng, isBlank } from "../lib/viz/png.ts";
import { viewerStates } from "../lib/viz/viewer.ts";

export const NOTEBOOKS_COMMAND: CommandSpec = {
  name: "deno task notebooks",
  summary: "execute the notebooks headless, export HTML, and check what a reader would see",
  usage: "deno task notebooks [--out DIR] [NAME ...]",
  options: [
    { name: "out", description: "where the executed HTML and screenshots go", default: "notebooks/html" },
    { name: "timeout", description: "seconds per cell", type: "integer", default: 900 },
  ],
  notes: ["Set UHF_RUN=runs/<name> to show a finished run instead of training the quick profile."],
};

const NOTEBOOK_DIR = new URL("../notebooks/", import.meta.url).pathname;

export interface NotebookReport {
  notebook: string;
  html: string;
  screenshot: string;
  images: number;
  plots: number;
  problems: string[];
}

/** Problems a reader would see in an executed notebook: blank images, plots without data, errors. */
export async function inspectNotebook(
  ipynb: string,
): Promise<{ images: number; plots: number; problems: string[] }> {
  const nb = JSON.parse(ipynb) as { cells: { outputs?: Record<string, unknown>[] }[] };
  const problems: string[] = [];
  let images = 0, plots = 0;
  for (const [c, cell] of nb.cells.entries()) {
    for (const o of cell.outputs ?? []) {
      if (o.output_type === "error") problems.push(`cell ${c + 1}: ${o.ename}: ${o.evalue}`);
      const data = (o.data ?? {}) as Record<string, unknown>;
      const fig = data["application/vnd.plotly.v1+json"] as { data?: { y?: unknown[] }[] } | undefined;
      if (fig) {
        plots++;
        const n = (fig.data ?? []).reduce((s, t) => s + (t.y?.length ?? 0), 0);
        if (n === 0) problems.push(`cell ${c + 1}: a plot has no data`);
      }
      const png = data["image/png"];
      if (typeof png === "string") {
        images++;
        const img = await decodePng(Uint8Array.from(atob(png.replace(/\s/g, "")), (ch) => ch.charCodeAt(0)));
        if (isBlank(img)) {
          problems.push(`cell ${c + 1}: image ${img.width}x${img.height} is blank`);
        }
      }
    }
  }
  return { images, plots, problems };
}

async function screenshot(htmlPath: string, pngPath: string): Promise<string | null> {
  if (!chromiumPath()) return "Chromium is not installed (no screenshot)";
  await runChromium(htmlPath, ["--hide-scrollbars", "--window-size=1100,1600", `--screenshot=${pngPath}`]);
  return isBlank(await decodePng(await Deno.readFile(pngPath))) ? `screenshot ${pngPath} is blank` : null;
}

export async function runNotebooks(
  names: string[],
  outDir: string,
  timeout = 900,
): Promise<NotebookReport[]> {
  await Deno.mkdir(outDir, { recursive: true });
  const out = Deno.realPathSync(outDir); // jupyter runs in the notebooks' folder
  const reports: NotebookReport[] = [];
  for (const name of names) {
    const path = join(NOTEBOOK_DIR, name);
    const t0 = performance.now();
    const nbconvert = async (args: string[]) => {
      const r = await new Deno.Command("jupyter", {
        args: ["nbconvert", ...args],
        cwd: NOTEBOOK_DIR,
        stdout: "piped",
        stderr: "piped",
      })
        .output().catch((err) => {
          throw new Error(`jupyter is not available (${(err as Error).message}); install jupyter-nbconvert`);
        });
      if (!r.success) {
        const err = new TextDecoder().decode(r.stderr).trim().split("\n").slice(-15).join("\n");
        throw new Error(`${name}: nbconvert ${args[1]} failed:\n${err}`);
      }
    };
    const executed = join(out, name);
    await nbconvert([
      "--to",
      "notebook",
      "--execute",
      `--ExecutePreprocessor.timeout=${timeout}`,
      "--ExecutePreprocessor.kernel_name=deno",
      "--output-dir",
      out,
      path,
    ]);
    await nbconvert(["--to", "html", "--output-dir", out, executed]);
    const html = join(out, name.replace(/\.ipynb$/, ".html"));
    const shot = html.replace(/\.html$/, ".png");
    const inspected = await inspectNotebook(await Deno.readTextFile(executed));
    const shotProblem = await screenshot(html, shot);
    // an embedded volume viewer must load its volumes in the exported page
    const viewers = (await Deno.readTextFile(html)).includes('class="viewer-status"') && chromiumPath()
      ? await viewerStates(`file://${html}`)
      : [];
    const viewerProblems = viewers.filter((v) => v.state !== "loaded").map((v) =>
      `volume viewer ${v.state}${v.error ? `: ${v.error.split("\n")[0]}` : ""}`
    );
    reports.push({
      notebook: name,
      html,
      screenshot: shot,
      images: inspected.images,
      plots: inspected.plots,
      problems: [...inspected.problems, ...(shotProblem ? [shotProblem] : []), ...viewerProblems],
    });
    console.log(
      `${name}: ${
        ((performance.now() - t0) / 1000).toFixed(0)
      } s, ${inspected.images} images, ${inspected.plots} plots`,
    );
  }
  return reports;
}

export function listNotebooks(): string[] {
  return [...Deno.readDirSync(NOTEBOOK_DIR)].map((e) => e.name).filter((n) => /^\d\d_.*\.ipynb$/.test(n))
    .sort();
}

if (import.meta.main) {
  await runCommand(NOTEBOOKS_COMMAND, async (args) => {
    const all = listNotebooks();
    const names = args.positional.length
      ? args.positional.map((p) => {
        const hit = all.find((n) => n.startsWith(p) || n === p);
        if (!hit) throw new UsageError(`no notebook matches "${p}" (have: ${all.join(", ")})`);
        return hit;
      })
      : all;
    const reports = await runNotebooks(names, String(args.options.out), Number(args.options.timeout));
    const bad = reports.filter((r) => r.problems.length);
    for (const r of bad) console.error(`${r.notebook}: ${r.problems.join("; ")}`);
    if (bad.length) Deno.exit(1);
    console.log(`all ${reports.length} notebooks executed; HTML and screenshots in ${args.options.out}/`);
  }, { allowPositional: true });
}
