/**
 * Checkpoints: a module's parameters (in construction order) and, for resuming, its optimizers'
 * state, in one binary file plus a JSON index, written atomically (temporary file, then rename).
 */
import * as tf from "@tensorflow/tfjs-core";
import type { Module } from "../nn/module.ts";
import { writeFileAtomic } from "../io/nifti.ts";

interface Entry {
  name: string;
  shape: number[];
  offset: number;
}

async function pack(
  tensors: { name: string; tensor: tf.Tensor }[],
): Promise<{ index: Entry[]; bytes: Uint8Array }> {
  const total = tensors.reduce((s, t) => s + t.tensor.size, 0);
  const data = new Float32Array(total);
  const index: Entry[] = [];
  let offset = 0;
  for (const { name, tensor } of tensors) {
    data.set(await tensor.data() as Float32Array, offset);
    index.push({ name, shape: tensor.shape, offset });
    offset += tensor.size;
  }
  return { index, bytes: new Uint8Array(data.buffer) };
}

/** Saves `module`'s parameters and the optimizers' state to `<path>.bin` / `<path>.json`. */
export async function saveCheckpoint(
  path: string,
  module: Module,
  optimizers: Record<string, tf.Optimizer> = {},
  meta: Record<string, unknown> = {},
): Promise<void> {
  const params = module.namedParameters().map(([name, v]) => ({ name, tensor: v as tf.Tensor }));
  const opt: { name: string; tensor: tf.Tensor }[] = [];
  const optCounts: Record<string, number> = {};
  const fresh: tf.Tensor[] = [];
  for (const [key, o] of Object.entries(optimizers)) {
    const w = await o.getWeights();
    // getWeights() creates a new scalar for the iteration count ("iter"); the other entries are
    // the optimizer's own variables and must stay
    fresh.push(...w.filter((t) => t.name === "iter").map((t) => t.tensor));
    optCounts[key] = w.length;
    w.forEach((t, i) => opt.push({ name: `${key}/${i}`, tensor: t.tensor }));
  }
  const { index, bytes } = await pack([...params, ...opt]);
  tf.dispose(fresh);
  await writeFileAtomic(`${path}.bin`, bytes);
  await writeFileAtomic(
    `${path}.json`,
    JSON.stringify({ meta, params: params.length, optimizers: optCounts, index }, null, 1),
  );
}

/** A checkpoint's metadata alone (epoch, scores and, for segmenters, the network spec). */
export async function readCheckpointMeta(path: string): Promise<Record<string, unknown>> {
  try {
    return JSON.parse(await Deno.readTextFile(`${path}.json`)).meta ?? {};
  } catch (err) {
    throw new Error(`checkpoint ${path}.json: cannot read (${(err as Error).message})`);
  }
}

/**
 * Loads parameters (by name, each looked up as `prefix + name`, so a sub-module can be read from
 * a checkpoint of its parent) into `module` and, when given, the optimizers' state; returns meta.
 */
export async function loadCheckpoint(
  path: string,
  module: Module,
  optimizers: Record<string, tf.Optimizer> = {},
  prefix = "",
): Promise<Record<string, unknown>> {
  let info: {
    meta: Record<string, unknown>;
    params: number;
    optimizers: Record<string, number>;
    index: Entry[];
  };
  try {
    info = JSON.parse(await Deno.readTextFile(`${path}.json`));
  } catch (err) {
    throw new Error(`checkpoint ${path}.json: cannot read (${(err as Error).message})`);
  }
  const bytes = await Deno.readFile(`${path}.bin`);
  const data = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
  const byName = new Map(info.index.map((e) => [e.name, e]));
  const read = (e: Entry) => {
    const n = e.shape.reduce((a, b) => a * b, 1);
    if (e.offset + n > data.length) throw new Error(`checkpoint ${path}.bin is truncated at ${e.name}`);
    return tf.tensor(data.slice(e.offset, e.offset + n), e.shape);
  };
  for (const [name, v] of module.namedParameters()) {
    const e = byName.get(prefix + name);
    if (!e) {
      throw new Error(
        `checkpoint ${path}: no parameter "${name}" (saved from a different model configuration?)`,
      );
    }
    if (e.shape.join() !== v.shape.join()) {
      throw new Error(`checkpoint ${path}: "${name}" has shape [${e.shape}], the model expects [${v.shape}]`);
    }
    const t = read(e);
    v.assign(t);
    t.dispose();
  }
  for (const [key, o] of Object.entries(optimizers)) {
    const count = info.optimizers[key];
    if (count === undefined) throw new Error(`checkpoint ${path}: no state for optimizer "${key}"`);
    const weights = Array.from(
      { length: count },
      (_, i) => ({ name: `${key}/${i}`, tensor: read(byName.get(`${key}/${i}`)!) }),
    );
    await o.setWeights(weights);
    weights.forEach((w) => w.tensor.dispose());
  }
  return info.meta;
}
