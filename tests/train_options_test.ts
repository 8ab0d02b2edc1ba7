/** `deno task train` refuses bad options and configurations with errors that name them. */
import { assertRejects } from "@std/assert";
import { join } from "node:path";
import { UsageError } from "../lib/cli.ts";
import { runTraining } from "../lib/train/run.ts";

const base = { profile: "quick", seed: 0, phase: "all", progress: false };

Deno.test("train: a config file with bad JSON or an unknown setting is named in the error", async () => {
  const dir = await Deno.makeTempDir();
  const bad = join(dir, "bad.json"), unknown = join(dir, "unknown.json");
  await Deno.writeTextFile(bad, "{ not json");
  await Deno.writeTextFile(unknown, JSON.stringify({ teacher: { widthh: 3 } }));
  await assertRejects(() => runTraining({ ...base, out: dir, config: bad }), UsageError, `--config ${bad}`);
  await assertRejects(
    () => runTraining({ ...base, out: dir, config: unknown }),
    UsageError,
    `unknown setting "widthh"`,
  );
  await assertRejects(() => runTraining({ ...base, out: dir, epochs: 0 }), UsageError, "--epochs");
  await assertRejects(() => runTraining({ ...base, out: dir, folds: 0 }), UsageError, "--folds");
  await Deno.remove(dir, { recursive: true });
});

Deno.test("train: a missing cohort, or a run folder holding another configuration, is refused", async () => {
  const dir = await Deno.makeTempDir();
  await assertRejects(
    () => runTraining({ ...base, out: dir, data: join(dir, "nowhere") }),
    UsageError,
    "no paired/manifest.json",
  );
  // a folder that looks like a cohort, and a run with a different recorded configuration
  await Deno.mkdir(join(dir, "cohort", "paired"), { recursive: true });
  await Deno.writeTextFile(join(dir, "cohort", "paired", "manifest.json"), "{}");
  await Deno.mkdir(join(dir, "runs", "r"), { recursive: true });
  await Deno.writeTextFile(
    join(dir, "runs", "r", "config.json"),
    JSON.stringify({ profile: "quick", seed: 99 }),
  );
  await assertRejects(
    () => runTraining({ ...base, out: join(dir, "runs"), name: "r", data: join(dir, "cohort") }),
    UsageError,
    "different configuration",
  );
  await Deno.remove(dir, { recursive: true });
});
