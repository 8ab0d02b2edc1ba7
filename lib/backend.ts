// deno-lint-ignore-file no-explicit-any
/**
 * The one place that chooses the TensorFlow.js compute backend.
 *
 * - `tensorflow`: `@tensorflow/tfjs-node-gpu` (native libtensorflow, CUDA when present), falling
 *   back to `@tensorflow/tfjs-node` (CPU build) when the GPU binding does not load.
 * - `webgpu`: Deno's `navigator.gpu` with `@tensorflow/tfjs-backend-webgpu`. Tensors larger than
 *   the adapter's `maxStorageBufferBindingSize` are refused (WebGPU would otherwise silently
 *   compute zeros for them).
 * - `cpu`: `@tensorflow/tfjs-backend-cpu`, always available, with its convolution, pooling,
 *   matmul and hot elementwise kernels replaced by oneDNN (Debian `libdnnl2`, through FFI) and
 *   layout-aware typed-array loops (`lib/native/kernels.ts`). Without the library, or with
 *   `UHF_NATIVE_KERNELS=0`, the pure-JavaScript kernels run (one line says which).
 * - `auto` (default): `tensorflow` if its native binding loads, else `cpu`.
 *
 * The wasm backend is deliberately not offered: it computes wrong 3D convolution and pooling
 * gradients and lacks Conv2DBackpropFilter.
 *
 * Choose with `--backend NAME` on any command, or the `TFJS_BACKEND` environment variable.
 */
import * as tf from "@tensorflow/tfjs-core";
import "@tensorflow/tfjs-backend-cpu";
// tfjs-core alone registers no gradients, and its ES build (which has register_all_gradients)
// does not load under Deno; the union package registers every gradient in the shared registry.
import "@tensorflow/tfjs";
import type { OptionSpec } from "./cli.ts";
import { installNativeKernels } from "./native/kernels.ts";
import { registerMissingGradients } from "./nn/gradients.ts";

registerMissingGradients();

export const BACKENDS = ["auto", "tensorflow", "webgpu", "cpu"] as const;
export type BackendName = (typeof BACKENDS)[number];

/** The `--backend` option every command that computes takes. */
export function backendOption(description = "compute backend"): OptionSpec {
  return { name: "backend", description, choices: BACKENDS, default: "auto", env: "TFJS_BACKEND" };
}

export interface BackendInfo {
  /** The backend that runs: "tensorflow", "webgpu" or "cpu". */
  name: Exclude<BackendName, "auto">;
  /** What was asked for. */
  requested: BackendName;
  /** One line saying which backend runs and why. */
  reason: string;
}

/** Raised for a bad backend name or a backend that was asked for explicitly and cannot start. */
export class BackendError extends Error {
  override name = "BackendError";
}

/** Raised on `webgpu` when a tensor would exceed the adapter's storage-buffer binding limit. */
export class WebGPUBufferLimitError extends Error {
  override name = "WebGPUBufferLimitError";
}

export function parseBackendName(value: string, source = "--backend"): BackendName {
  if ((BACKENDS as readonly string[]).includes(value)) return value as BackendName;
  if (value === "wasm") {
    throw new BackendError(
      `${source}: "wasm" is not offered: it computes wrong 3D convolution/pooling gradients. Use one of ${
        BACKENDS.join(", ")
      }`,
    );
  }
  throw new BackendError(`${source}: unknown backend "${value}"; expected one of ${BACKENDS.join(", ")}`);
}

async function tryTensorflow(): Promise<{ ok: true; pkg: string } | { ok: false; why: string }> {
  const failures: string[] = [];
  for (const pkg of ["@tensorflow/tfjs-node-gpu", "@tensorflow/tfjs-node"]) {
    try {
      // tfjs-node-gpu is a pinned dependency; the CPU build tfjs-node is used only where a user
      // installed it, so its specifier is built at run time (kept out of type checking).
      if (pkg === "@tensorflow/tfjs-node-gpu") await import("@tensorflow/tfjs-node-gpu");
      else await import(["npm:", pkg, "@4.22.0"].join(""));
      if (tf.findBackend("tensorflow")) return { ok: true, pkg };
      failures.push(`${pkg}: loaded but registered no "tensorflow" backend`);
    } catch (err) {
      const msg = String((err as Error).message ?? err).split("\n")[0];
      failures.push(`${pkg}: ${msg.length > 160 ? msg.slice(0, 157) + "..." : msg}`);
    }
  }
  return { ok: false, why: failures.join("; ") };
}

let webgpuLimit = Infinity;

async function startWebgpu(): Promise<{ ok: true; adapter: string } | { ok: false; why: string }> {
  const gpu = (navigator as unknown as { gpu?: { requestAdapter(): Promise<any> } }).gpu;
  if (!gpu) return { ok: false, why: "navigator.gpu is not available in this Deno" };
  const adapter = await gpu.requestAdapter();
  if (!adapter) return { ok: false, why: "navigator.gpu.requestAdapter() returned no adapter" };
  try {
    await import("@tensorflow/tfjs-backend-webgpu");
    if (!(await tf.setBackend("webgpu"))) return { ok: false, why: "tf.setBackend('webgpu') failed" };
  } catch (err) {
    return { ok: false, why: (err as Error).message };
  }
  const backend = tf.backend() as any;
  webgpuLimit = Number(
    backend.device?.limits?.maxStorageBufferBindingSize ?? adapter.limits.maxStorageBufferBindingSize,
  );
  const manager = backend.bufferManager;
  const acquire = manager.acquireBuffer.bind(manager);
  manager.acquireBuffer = (size: number, ...rest: unknown[]) => {
    if (size > webgpuLimit) {
      throw new WebGPUBufferLimitError(
        `webgpu: a tensor of ${
          (size / 2 ** 20).toFixed(1)
        } MiB exceeds this adapter's maxStorageBufferBindingSize of ${
          (webgpuLimit / 2 ** 20).toFixed(1)
        } MiB (WebGPU would silently compute zeros). Use a smaller input/batch or another backend.`,
      );
    }
    return acquire(size, ...rest);
  };
  const info = adapter.info ?? {};
  return {
    ok: true,
    adapter: [info.vendor, info.architecture, info.device, info.description].filter(Boolean).join(" ") ||
      "unknown adapter",
  };
}

/** The adapter's storage-buffer binding limit in bytes once `webgpu` runs (Infinity otherwise). */
export function webgpuBufferLimit(): number {
  return webgpuLimit;
}

async function useCpu(): Promise<string> {
  await tf.setBackend("cpu");
  // The cpu backend prints a banner recommending tfjs-node on its first upload under Node-like
  // runtimes; this module already reports the backend choice in one line.
  (tf.backend() as unknown as { firstUse: boolean }).firstUse = false;
  return installNativeKernels().description;
}

let current: BackendInfo | undefined;

/** The backend chosen by the last `initBackend` call, if any. */
export function currentBackend(): BackendInfo | undefined {
  return current;
}

/**
 * Starts a backend. `requested` defaults to `TFJS_BACKEND` or `auto`. Prints one line saying
 * which backend runs and why, unless `quiet`.
 */
export async function initBackend(
  requested?: BackendName | string,
  { quiet = false }: { quiet?: boolean } = {},
): Promise<BackendInfo> {
  const fromEnv = requested === undefined ? Deno.env.get("TFJS_BACKEND") : undefined;
  const name = parseBackendName(
    requested ?? fromEnv ?? "auto",
    requested === undefined && fromEnv ? "TFJS_BACKEND" : "--backend",
  );
  let info: BackendInfo;
  if (name === "cpu") {
    const kernels = await useCpu();
    info = { name: "cpu", requested: name, reason: `requested explicitly; ${kernels}` };
  } else if (name === "webgpu") {
    const r = await startWebgpu();
    if (!r.ok) throw new BackendError(`--backend webgpu: cannot start: ${r.why}`);
    info = {
      name: "webgpu",
      requested: name,
      reason: `requested explicitly; adapter: ${r.adapter}; maxStorageBufferBindingSize ${
        (webgpuLimit / 2 ** 20).toFixed(0)
      } MiB`,
    };
  } else {
    const r = await tryTensorflow();
    if (r.ok) {
      await tf.setBackend("tensorflow");
      info = { name: "tensorflow", requested: name, reason: `native binding of ${r.pkg} loaded` };
    } else if (name === "tensorflow") {
      throw new BackendError(
        `--backend tensorflow: the native binding does not load (${r.why}). See README, "Backends".`,
      );
    } else {
      const kernels = await useCpu();
      info = { name: "cpu", requested: name, reason: `${kernels}; tensorflow unavailable (${r.why})` };
    }
  }
  await tf.ready();
  current = info;
  if (!quiet) console.log(`backend: ${info.name} (${info.requested}: ${info.reason})`);
  return info;
}
