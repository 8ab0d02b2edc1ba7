/**
 * Checkpoints are one unit: a save stopped between any two of its file operations (as a kill
 * would) leaves the old or the new checkpoint, never a mix; a damaged data file is named on load.
 */
import * as tf from "@tensorflow/tfjs-core";
import { assert, assertEquals, assertRejects } from "@std/assert";
import { join } from "node:path";
import { initBackend } from "../lib/mod.ts";
import { Module } from "../lib/nn/module.ts";
import { checkpointFaults, loadCheckpoint, saveCheckpoint } from "../lib/train/state.ts";

await initBackend("cpu");

class Pair extends Module {
  readonly a: tf.Variable;
  readonly b: tf.Variable;
  constructor(v: number) {
    super();
    this.a = this.param("a", tf.fill([3, 4], v));
    this.b = this.param("b", tf.fill([5], -v));
  }
}

const values = (m: Pair) => [...m.a.dataSync(), ...m.b.dataSync()];

Deno.test("a checkpoint save stopped after any number of file operations leaves the old or the new one, whole", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = join(dir, "net-last");
    let committedAtLeastOnce = false;
    for (let n = 0; n <= 6; n++) {
      const old = new Pair(1), next = new Pair(2);
      await saveCheckpoint(path, old, {}, { epoch: 1 });
      checkpointFaults.ops = 0;
      checkpointFaults.failAfterOps = n;
      let failed = false;
      try {
        await saveCheckpoint(path, next, {}, { epoch: 2 });
      } catch {
        failed = true;
      } finally {
        checkpointFaults.failAfterOps = Infinity;
      }
      const back = new Pair(0);
      const meta = await loadCheckpoint(path, back);
      const got = values(back);
      const want = meta.epoch === 2 ? values(next) : values(old);
      assertEquals(got, want, `stopped after ${n} operations: weights and metadata disagree`);
      if (meta.epoch === 2) committedAtLeastOnce = true;
      // before the commit (4 operations) the old checkpoint stays; after it, the new one
      assertEquals(meta.epoch, n >= 4 ? 2 : 1, `stopped after ${n} operations`);
      if (!failed) assert(n >= 4);
      const names = [...Deno.readDirSync(dir)].map((e) => e.name);
      assert(!names.some((f) => f.endsWith(".tmp")), `temporary files left: ${names}`);
      [old, next, back].forEach((m) => m.dispose());
    }
    assert(committedAtLeastOnce);
    // a complete save leaves one data file beside the index
    const bins = [...Deno.readDirSync(dir)].filter((e) => e.name.endsWith(".bin"));
    assertEquals(bins.length, 1);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a damaged or missing checkpoint data file is named on load; pre-checksum checkpoints still load", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = join(dir, "net-best");
    await saveCheckpoint(path, new Pair(3));
    const info = JSON.parse(await Deno.readTextFile(`${path}.json`));
    const data = join(dir, info.data);
    const bytes = await Deno.readFile(data);
    bytes[5] ^= 0xff;
    await Deno.writeFile(data, bytes);
    await assertRejects(() => loadCheckpoint(path, new Pair(0)), Error, "does not match its index");
    await Deno.remove(data);
    await assertRejects(() => loadCheckpoint(path, new Pair(0)), Error, "cannot be read");
    // the earlier layout: <path>.bin and an index without checksum
    const m = new Pair(4);
    const legacy = Float32Array.from(values(m));
    await Deno.writeFile(`${path}.bin`, new Uint8Array(legacy.buffer));
    const { data: _d, bytes: _b, sha256: _s, ...rest } = info;
    await Deno.writeTextFile(`${path}.json`, JSON.stringify(rest));
    const back = new Pair(0);
    await loadCheckpoint(path, back);
    assertEquals(values(back), values(m));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
