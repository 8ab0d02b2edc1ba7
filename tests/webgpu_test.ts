/**
 * The webgpu backend, where Deno finds an adapter (here: llvmpipe, software Vulkan).
 * Ignored where there is none.
 */
import * as tf from "@tensorflow/tfjs-core";
import { assert, assertAlmostEquals, assertRejects } from "@std/assert";
import { initBackend, mulberry32, webgpuBufferLimit, WebGPUBufferLimitError } from "../lib/mod.ts";

const adapter = await (navigator as unknown as { gpu?: { requestAdapter(): Promise<unknown> } }).gpu
  ?.requestAdapter().catch(() => null);
const ignore = !adapter;

Deno.test(
  { name: "webgpu: a tensor above maxStorageBufferBindingSize is refused, not zeroed", ignore },
  async () => {
    await initBackend("webgpu", { quiet: true });
    const limit = webgpuBufferLimit();
    assert(Number.isFinite(limit) && limit > 0);
    const n = Math.floor(limit / 4) + 1024; // float32 elements just past the limit
    // Uploading a large input and allocating a large kernel output are both refused.
    const big = new Float32Array(n).fill(1);
    const err = await assertRejects(() => tf.tensor1d(big).mul(2).data(), WebGPUBufferLimitError);
    await assertRejects(() => tf.sqrt(tf.tensor1d(big)).data(), WebGPUBufferLimitError);
    assert(err.message.includes("maxStorageBufferBindingSize"));
    // Below the limit everything works and a conv3d agrees with cpu.
    const r = mulberry32(5);
    const xv = Float32Array.from({ length: 2 * 6 * 6 * 6 * 3 }, () => r() - 0.5);
    const wv = Float32Array.from({ length: 27 * 3 * 4 }, () => r() - 0.5);
    const run = () =>
      tf.conv3d(tf.tensor5d(xv, [2, 6, 6, 6, 3]), tf.tensor5d(wv, [3, 3, 3, 3, 4]), 1, "same");
    const gpu = await run().data();
    await initBackend("cpu", { quiet: true });
    const cpu = await run().data();
    for (let i = 0; i < cpu.length; i += 7) assertAlmostEquals(gpu[i], cpu[i], 1e-4);
  },
);
