/**
 * `deno task notebooks` as the test suite runs it: every notebook executes headless on the quick
 * profile, and what a reader sees is checked: no error output, no blank image, no plot without
 * data, and a non-blank screenshot of each exported page. Ignored (saying why) where Jupyter with
 * the Deno kernel or Chromium is not installed.
 */
import { assert, assertEquals } from "@std/assert";
import { listNotebooks, runNotebooks } from "../scripts/notebooks.ts";
import { chromiumPath } from "../lib/viz/plotly.ts";

function hasDenoKernel(): boolean {
  try {
    const out = new Deno.Command("jupyter", { args: ["kernelspec", "list"], stdout: "piped", stderr: "null" })
      .outputSync();
    return out.success && /\bdeno\b/.test(new TextDecoder().decode(out.stdout));
  } catch {
    return false;
  }
}

const ready = hasDenoKernel() && chromiumPath() !== null;
if (!ready) {
  console.warn("notebook test ignored: needs jupyter (nbconvert) with the Deno kernel, and Chromium");
}

Deno.test({
  name: "notebooks execute headless and show non-blank figures with data",
  ignore: !ready,
  async fn() {
    const out = await Deno.makeTempDir({ prefix: "notebooks-" });
    const names = listNotebooks();
    assertEquals(names.length, 6);
    const reports = await runNotebooks(names, out);
    for (const r of reports) {
      assertEquals(r.problems, [], `${r.notebook}: ${r.problems.join("; ")}`);
      assert(r.images >= 1, `${r.notebook}: no images shown`);
    }
    assert(reports.reduce((s, r) => s + r.plots, 0) >= 8, "expected plotly figures in the notebooks");
    await Deno.remove(out, { recursive: true });
  },
});
