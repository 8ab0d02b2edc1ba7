import * as tf from "@tensorflow/tfjs-core";
import { assertEquals, assertRejects, assertStringIncludes, assertThrows } from "@std/assert";
import { BackendError, initBackend, parseBackendName } from "../lib/mod.ts";

Deno.test("backend names: wasm refused with the reason, unknown names listed", () => {
  assertStringIncludes(assertThrows(() => parseBackendName("wasm"), BackendError).message, "wrong 3D");
  const e = assertThrows(() => parseBackendName("cuda", "TFJS_BACKEND"), BackendError);
  assertStringIncludes(e.message, "TFJS_BACKEND");
  assertStringIncludes(e.message, "auto, tensorflow, webgpu, cpu");
  assertEquals(parseBackendName("webgpu"), "webgpu");
});

Deno.test("auto takes tensorflow when its binding loads, else cpu, and says why", async () => {
  const info = await initBackend("auto", { quiet: true });
  assertEquals(tf.getBackend(), info.name);
  if (info.name === "cpu") assertStringIncludes(info.reason, "tensorflow unavailable");
  else assertEquals(info.name, "tensorflow");
});

Deno.test("TFJS_BACKEND selects the backend when no option is given", async () => {
  Deno.env.set("TFJS_BACKEND", "cpu");
  try {
    const info = await initBackend(undefined, { quiet: true });
    assertEquals([info.name, info.requested], ["cpu", "cpu"]);
    assertStringIncludes(info.reason, "requested explicitly; ");
    // the kernel line says which kernels run: oneDNN where Debian's libdnnl2 is installed
    assertStringIncludes(info.reason, "kernels");
  } finally {
    Deno.env.delete("TFJS_BACKEND");
  }
});

Deno.test("explicit tensorflow without a loadable binding is an error naming the backend", async () => {
  const probe = await initBackend("auto", { quiet: true });
  if (probe.name === "tensorflow") return; // a machine with libtensorflow: nothing to refuse
  await assertRejects(() => initBackend("tensorflow", { quiet: true }), BackendError, "--backend tensorflow");
});
