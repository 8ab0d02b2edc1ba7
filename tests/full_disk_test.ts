/**
 * A full disk, for real: a 256 KiB tmpfs mounted for the test (root only; ignored elsewhere, with
 * the reason printed), and a read-only one. A write that runs out of space must fail with the system's error, leave the
 * file that was there before intact and readable, and leave no temporary file behind, for volumes
 * and for checkpoints alike.
 */
import * as tf from "@tensorflow/tfjs-core";
import { assert, assertEquals, assertRejects } from "@std/assert";
import { join } from "node:path";
import { initBackend, makeVolume, readNifti, writeNifti } from "../lib/mod.ts";
import { DEFAULT_TEACHER, Teacher } from "../lib/models/teacher.ts";
import { loadCheckpoint, saveCheckpoint } from "../lib/train/state.ts";
import { checkOutputPath } from "../scripts/segment.ts";
import { UsageError } from "../lib/cli.ts";

async function run(cmd: string, args: string[]): Promise<boolean> {
  try {
    return (await new Deno.Command(cmd, { args, stdout: "null", stderr: "null" }).output()).success;
  } catch {
    return false;
  }
}

/** Mounts a small tmpfs (read-only with `ro`), or says why it cannot. */
async function smallDisk(ro = false): Promise<{ dir: string; release: () => Promise<void> } | string> {
  if (Deno.build.os !== "linux" || Deno.uid?.() !== 0) return "needs root on Linux to mount a tmpfs";
  const dir = await Deno.makeTempDir({ prefix: "full-disk-" });
  if (!(await run("mount", ["-t", "tmpfs", "-o", `size=256k${ro ? ",ro" : ""}`, "tmpfs", dir]))) {
    await Deno.remove(dir);
    return "mount -t tmpfs failed (no permission in this container)";
  }
  return {
    dir,
    release: async () => {
      await run("umount", [dir]);
      await Deno.remove(dir, { recursive: true });
    },
  };
}

const probe = await smallDisk();
const ignore = typeof probe === "string";
if (ignore) console.error(`full-disk tests ignored: ${probe}`);
else await probe.release();

const EYE = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]];

/** Fills a file system to the last byte (4 KiB chunks until the write fails). */
async function fill(dir: string): Promise<void> {
  const f = await Deno.open(join(dir, "filler"), { write: true, create: true });
  try {
    for (;;) await f.write(new Uint8Array(4096));
  } catch {
    /* full */
  } finally {
    f.close();
  }
}

async function leftovers(dir: string): Promise<string[]> {
  const names: string[] = [];
  for await (const e of Deno.readDir(dir)) if (e.name.endsWith(".tmp")) names.push(e.name);
  return names;
}

Deno.test(
  { name: "full disk: a volume that does not fit fails and the previous file stays whole", ignore },
  async () => {
    const disk = await smallDisk();
    if (typeof disk === "string") throw new Error(disk);
    try {
      const path = join(disk.dir, "labels.nii");
      const small = makeVolume(Float32Array.from({ length: 8 ** 3 }, (_, i) => i % 7), [8, 8, 8], EYE);
      await writeNifti(path, small);
      const big = makeVolume(new Float32Array(64 ** 3).fill(1), [64, 64, 64], EYE); // 1 MiB
      const err = await assertRejects(() => writeNifti(path, big));
      assert(/space/i.test((err as Error).message), (err as Error).message);
      assertEquals(Array.from((await readNifti(path)).data), Array.from(small.data));
      assertEquals(await leftovers(disk.dir), []);
    } finally {
      await disk.release();
    }
  },
);

Deno.test({
  name: "full disk: a checkpoint save that runs out of space keeps the previous checkpoint",
  ignore,
}, async () => {
  await initBackend("cpu", { quiet: true });
  const disk = await smallDisk();
  if (typeof disk === "string") throw new Error(disk);
  try {
    const teacher = new Teacher({ ...DEFAULT_TEACHER, nf: 2, levels: 2 }, 1);
    const path = join(disk.dir, "teacher-last");
    await saveCheckpoint(path, teacher, {}, { epoch: 0 });
    const before = teacher.namedParameters().map(([, v]) => Array.from(v.dataSync()));
    // fill the disk, then change the weights and save again
    await fill(disk.dir);
    for (const [, v] of teacher.namedParameters()) v.assign(tf.add(v, 1));
    await assertRejects(() => saveCheckpoint(path, teacher, {}, { epoch: 1 }));
    const fresh = new Teacher({ ...DEFAULT_TEACHER, nf: 2, levels: 2 }, 9);
    const meta = await loadCheckpoint(path, fresh);
    assertEquals(meta.epoch, 0);
    assertEquals(fresh.namedParameters().map(([, v]) => Array.from(v.dataSync())), before);
    assertEquals(await leftovers(disk.dir), []);
  } finally {
    await disk.release();
  }
});

Deno.test(
  { name: "read-only disk: segment's output folder is refused before anything runs", ignore },
  async () => {
    const disk = await smallDisk(true);
    if (typeof disk === "string") throw new Error(disk);
    try {
      const out = join(disk.dir, "labels.nii.gz");
      const err = await assertRejects(() => checkOutputPath("in.nii.gz", out, false), UsageError);
      assert(err.message.startsWith(out) && err.message.includes("is not writable"), err.message);
    } finally {
      await disk.release();
    }
  },
);
