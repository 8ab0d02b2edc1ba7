import { assertEquals, assertStringIncludes, assertThrows } from "@std/assert";
import { formatHelp, parseArgs, UsageError } from "../lib/mod.ts";
import { TRAIN_COMMAND } from "../scripts/train.ts";

Deno.test("deno task train --help documents every option", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "scripts/train.ts", "--help"],
    stdout: "piped",
  }).output();
  assertEquals(out.code, 0);
  const text = new TextDecoder().decode(out.stdout);
  for (const name of ["phase", "profile", "backend", "epochs", "folds", "out", "config", "seed"]) {
    assertStringIncludes(text, `--${name}`);
  }
  assertStringIncludes(text, "teacher, keeper, fusion, all");
  assertStringIncludes(text, "TFJS_BACKEND");
});

Deno.test("option parsing: values, defaults, env, and errors that name the option", () => {
  const a = parseArgs(TRAIN_COMMAND, ["--phase", "keeper", "--epochs=3", "--backend", "cpu"]);
  assertEquals(a.options.phase, "keeper");
  assertEquals(a.options.epochs, 3);
  assertEquals(a.options.profile, "default");
  assertStringIncludes(
    assertThrows(() => parseArgs(TRAIN_COMMAND, ["--epochs", "two"]), UsageError).message,
    "--epochs",
  );
  assertStringIncludes(
    assertThrows(() => parseArgs(TRAIN_COMMAND, ["--backend", "wasm"]), UsageError).message,
    "--backend",
  );
  assertStringIncludes(
    assertThrows(() => parseArgs(TRAIN_COMMAND, ["--nope"]), UsageError).message,
    "--nope",
  );
  assertStringIncludes(
    assertThrows(() => parseArgs(TRAIN_COMMAND, ["--out"]), UsageError).message,
    "needs a value",
  );
  Deno.env.set("TFJS_BACKEND", "webgpu");
  try {
    assertEquals(parseArgs(TRAIN_COMMAND, []).options.backend, "webgpu");
    assertEquals(parseArgs(TRAIN_COMMAND, ["--backend", "cpu"]).options.backend, "cpu");
  } finally {
    Deno.env.delete("TFJS_BACKEND");
  }
  assertStringIncludes(formatHelp(TRAIN_COMMAND), "Usage: deno task train");
});

Deno.test("deno task segment: a missing input is one line naming the file, exit code 1", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "scripts/segment.ts",
      "/nonexistent/t1.nii.gz",
      "/tmp/never-written.nii.gz",
      "--backend",
      "cpu",
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assertEquals(out.code, 1);
  const err = new TextDecoder().decode(out.stderr).trim();
  assertEquals(err, "deno task segment: VolumeNotFoundError: /nonexistent/t1.nii.gz: file not found");
});

Deno.test("deno task segment: a folder that is not a finished run is named, exit code 64", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "scripts/segment.ts",
      "data-prep/atlas/colin27_gm.nii.gz",
      "/tmp/never.nii.gz",
      "--run",
      "/nonexistent-run",
      "--backend",
      "cpu",
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assertEquals(out.code, 64);
  assertStringIncludes(new TextDecoder().decode(out.stderr), "--run /nonexistent-run: no config.json");
});

Deno.test("an unexpected error is one line (exit 1) unless --debug asks for the stack trace", async () => {
  const script = `
    import { runCommand } from "./lib/cli.ts";
    await runCommand({ name: "demo", summary: "", usage: "", options: [] }, () => {
      throw new Error("disk full\\nsecond line");
    });`;
  const run = async (...argv: string[]) => {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["eval", script, ...argv],
      stdout: "piped",
      stderr: "piped",
    }).output();
    return { code: out.code, err: new TextDecoder().decode(out.stderr).trim() };
  };
  const plain = await run();
  assertEquals(plain.code, 1);
  assertEquals(plain.err, "demo: Error: disk full (run again with --debug for the stack trace)");
  const debug = await run("--debug");
  assertEquals(debug.code, 1);
  assertStringIncludes(debug.err, "at ");
});
