/**
 * Checkpoints: a module's parameters (in construction order) and, for resuming, its optimizers'
 * state. One checkpoint is one unit with a single commit point:
 *
 * 1. the tensors go to a new data file `<path>.<sha256 prefix>.bin` (written to a temporary name,
 *    then renamed);
 * 2. the index `<path>.json` (metadata, tensor index, the data file's name, size and SHA-256) is
 *    written to a temporary name and renamed over the old index: the commit;
 * 3. data files the index no longer names are removed.
 *
 * A process killed at any instant leaves the old index naming its own, still present data file, or
 * the new index naming the new one; loading verifies size and checksum, so a damaged or mismatched
 * data file is named instead of loaded. Checkpoints written before this scheme (`<path>.bin`, no
 * checksum) still load.
 */
import * as tf from "@tensorflow/tfjs-core";
import { basename, dirname, join } from "node:path";
import type { Module } from "../nn/module.ts";
import { sha256Hex } from "../io/hash.ts";

/**
 * File operations of a checkpoint save, counted so tests can stop a save between any two of them
 * (`failAfterOps`), as a kill would.
 */
export const checkpointFaults = { failAfterOps: Infinity, ops: 0 };
async function op<T>(f: () => Promise<T>): Promise<T> {
  if (checkpointFaults.ops >= checkpointFaults.failAfterOps) {
    throw new Error("injected fault (checkpoint write)");
  }
  checkpointFaults.ops++;
  return await f();
}

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

/** Saves `module`'s parameters and the optimizers' state as the checkpoint `<path>` (see above). */
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
  const sha256 = await sha256Hex(bytes);
  const dataName = `${basename(path)}.${sha256.slice(0, 16)}.bin`;
  const dataPath = join(dirname(path), dataName);
  const tmp = (p: string) => `${p}.${crypto.randomUUID().slice(0, 8)}.tmp`;
  const dataTmp = tmp(dataPath), indexTmp = tmp(`${path}.json`);
  try {
    await op(() => Deno.writeFile(dataTmp, bytes));
    await op(() => Deno.rename(dataTmp, dataPath));
    const info = {
      meta,
      params: params.length,
      optimizers: optCounts,
      data: dataName,
      bytes: bytes.length,
      sha256,
      index,
    };
    await op(() => Deno.writeTextFile(indexTmp, JSON.stringify(info, null, 1)));
    await op(() => Deno.rename(indexTmp, `${path}.json`)); // the commit
  } catch (err) {
    await Deno.remove(dataTmp).catch(() => {});
    await Deno.remove(indexTmp).catch(() => {});
    throw err;
  }
  // data files of earlier saves of this checkpoint (and the pre-checksum `<path>.bin`)
  const base = basename(path);
  const isOwnData = (name: string) =>
    name === `${base}.bin` ||
    (name.startsWith(`${base}.`) && name.endsWith(".bin") &&
      /^[0-9a-f]{16}$/.test(name.slice(base.length + 1, -4)));
  for await (const e of Deno.readDir(dirname(path) || ".")) {
    if (e.isFile && isOwnData(e.name) && e.name !== dataName) {
      await op(() => Deno.remove(join(dirname(path), e.name))).catch(() => {});
    }
  }
}

/** Copies the checkpoint `from` (its index and the data file it names) to `to`, index last. */
export async function copyCheckpoint(from: string, to: string): Promise<void> {
  const data = JSON.parse(await Deno.readTextFile(`${from}.json`)).data;
  if (data) await Deno.copyFile(join(dirname(from), data), join(dirname(to), data));
  else await Deno.copyFile(`${from}.bin`, `${to}.bin`); // written before the hashed data files
  await Deno.copyFile(`${from}.json`, `${to}.json`);
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
    data?: string;
    bytes?: number;
    sha256?: string;
  };
  try {
    info = JSON.parse(await Deno.readTextFile(`${path}.json`));
  } catch (err) {
    throw new Error(`checkpoint ${path}.json: cannot read (${(err as Error).message})`);
  }
  const dataPath = info.data ? join(dirname(path), info.data) : `${path}.bin`;
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(dataPath);
  } catch (err) {
    throw new Error(
      `checkpoint ${path}: its data file ${dataPath} cannot be read (${(err as Error).message})`,
    );
  }
  if (
    info.sha256 !== undefined && (bytes.length !== info.bytes || (await sha256Hex(bytes)) !== info.sha256)
  ) {
    throw new Error(
      `checkpoint ${path}: ${dataPath} does not match its index (size or SHA-256 differs): the checkpoint is damaged`,
    );
  }
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

/** `m` with the weights of checkpoint `path` (names under `prefix`), for chaining after building it. */
export async function loaded<M extends Module>(m: M, path: string, prefix = ""): Promise<M> {
  await loadCheckpoint(path, m, {}, prefix);
  return m;
}
