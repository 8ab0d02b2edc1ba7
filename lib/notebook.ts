/**
 * What the notebooks share: which run to show, trained on demand.
 *
 * A notebook shows the run named by the `UHF_RUN` environment variable (a finished
 * `deno task train` run: it only loads and plots). Without it, it uses `runs/notebook-<profile>`
 * (profile `UHF_PROFILE`, default `quick`), training it first when it is missing: a few seconds
 * on the quick profile.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { initBackend } from "./backend.ts";
import { ensureCohorts, type PhantomProfile } from "./phantom/cohort.ts";
import { runTraining } from "./train/run.ts";

export function notebookProfile(): PhantomProfile["name"] {
  return (Deno.env.get("UHF_PROFILE") ?? "quick") as PhantomProfile["name"];
}

/** The project root (notebooks run with their own folder as working directory). */
export const ROOT = new URL("../", import.meta.url).pathname;

/** The cohort root for a profile, generated when absent. */
export async function ensureCohort(profile = notebookProfile()): Promise<string> {
  const dir = join(ROOT, "data", "generated", profile);
  await ensureCohorts(profile, dir, { seed: 0 });
  return dir;
}

/**
 * The run folder to show: `UHF_RUN`, or `runs/notebook-<profile>` trained now if missing. With
 * `phase: "wholebrain"`: `UHF_WHOLEBRAIN_RUN`, or `runs/notebook-<profile>-wholebrain`.
 */
export async function notebookRun({ phase = "all" }: { phase?: "all" | "wholebrain" } = {}): Promise<string> {
  await initBackend(undefined, { quiet: true });
  const variable = phase === "wholebrain" ? "UHF_WHOLEBRAIN_RUN" : "UHF_RUN";
  const given = Deno.env.get(variable);
  if (given) {
    if (!existsSync(join(given, "metrics.json"))) {
      throw new Error(`${variable}=${given}: no metrics.json there`);
    }
    return given;
  }
  const profile = notebookProfile();
  const name = phase === "wholebrain" ? `notebook-${profile}-wholebrain` : `notebook-${profile}`;
  const dir = join(ROOT, "runs", name);
  if (!existsSync(join(dir, "metrics.json"))) {
    const data = await ensureCohort(profile);
    await runTraining({
      profile,
      seed: 0,
      out: join(ROOT, "runs"),
      name,
      phase,
      data,
      progress: false,
    });
  }
  return dir;
}
