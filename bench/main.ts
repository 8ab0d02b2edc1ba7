/**
 * `deno task bench [case ...] [--json] [--steps N] [--backends cpu,cpu-js,webgpu] [--torch]`
 *
 * Speed and memory benchmarks. Each (case, backend) pair runs in its own process so that peak
 * memory (VmHWM) is the case's own. Backends: `cpu` (tfjs cpu with the oneDNN kernels),
 * `cpu-js` (the pure-JavaScript kernels, `UHF_NATIVE_KERNELS=0`), `webgpu`, `tensorflow`.
 * Where Debian's python3-torch is installed, the reference U-Net also runs in PyTorch and the
 * table shows the ratio. GFLOP/s counts convolution arithmetic only, against the machine's
 * practical fp32 peak measured by a 1024^2 sgemm in oneDNN (case `peak`).
 */
import * as tf from "@tensorflow/tfjs-core";
import { type CommandSpec, runCommand, UsageError } from "../lib/cli.ts";
import { initBackend } from "../lib/backend.ts";
import { peakRssMiB } from "../lib/memory.ts";
import { adam } from "../lib/nn/module.ts";
import { oneDnn, sgemm } from "../lib/native/onednn.ts";
import { fusedConvFlops } from "../lib/native/kernels.ts";
import { bceWithLogits, ReferenceUNet } from "./reference_unet.ts";
import { CASE_MODELS } from "./models.ts";
import { medianSeconds } from "./timing.ts";
import { profileDefaultSteps, profileTable, type StepProfile } from "./profile.ts";

export interface CaseResult {
  case: string;
  backend: string;
  /** Median seconds per training step (or per run for non-training cases). */
  step_s?: number;
  infer_s?: number;
  gflops?: number;
  peak_rss_mib?: number;
  note?: string;
  /** Case `profile`: where each default-profile step's time goes. */
  profile?: StepProfile[];
}

interface Case {
  name: string;
  description: string;
  /** Long cases run only when named. */
  heavy?: boolean;
  /** Backends this case runs on by default. */
  backends: string[];
  /** Runs inside a child process on an initialised backend. */
  run(steps: number): Promise<Omit<CaseResult, "case" | "backend" | "peak_rss_mib">>;
  /** The same case in PyTorch, where it exists: [D, H, W]. */
  torchShape?: [number, number, number];
}

const CONV_KERNELS = [
  "Conv3D",
  "Conv3DBackpropInputV2",
  "Conv3DBackpropFilterV2",
  "Conv2D",
  "Conv2DBackpropInput",
  "Conv2DBackpropFilter",
];

/**
 * Convolution FLOPs (2 per multiply-add) of everything `f` runs, read from a tf.profile of it:
 * each of the forward, data-gradient and weight-gradient kernels costs 2 * outputVoxels * |W|.
 */
export async function convFlops(f: () => tf.TensorContainer): Promise<number> {
  const fusedBefore = fusedConvFlops.value;
  const prof = await tf.profile(f);
  // convolutions fused with their bias and activation run outside tfjs's kernels and count their own
  let flops = fusedConvFlops.value - fusedBefore;
  for (const k of prof.kernels) {
    if (!CONV_KERNELS.includes(k.name)) continue;
    const filter = k.name.endsWith("Filter") || k.name.endsWith("FilterV2")
      ? k.outputShapes[0]
      : k.inputShapes[1];
    const dy = k.name === "Conv3D" || k.name === "Conv2D"
      ? k.outputShapes[0]
      : k.inputShapes[k.name.includes("Input") ? 0 : 1];
    const cout = filter![filter!.length - 1];
    const outVoxels = dy!.reduce((a, b) => a * b, 1) / cout;
    flops += 2 * outVoxels * filter!.reduce((a, b) => a * b, 1);
  }
  return flops;
}

async function timeTraining(
  apply: () => tf.Scalar,
  params: tf.Variable[],
  steps: number,
): Promise<number> {
  const opt = adam(1e-3);
  const t = await medianSeconds(async () => {
    const cost = opt.minimize(apply, true, params)!;
    await cost.data();
    cost.dispose();
  }, steps);
  opt.dispose();
  return t;
}

function timeInference(apply: () => tf.Tensor, steps: number): Promise<number> {
  return medianSeconds(async () => {
    const y = tf.tidy(apply);
    await y.data();
    y.dispose();
  }, steps);
}

function referenceUNetCase(name: string, shape: [number, number, number], backends: string[]): Case {
  return {
    name,
    description: `reference 3D U-Net (2 levels, base 8, BCE, Adam 1e-3), batch 1, ${shape.join("x")}`,
    backends,
    torchShape: shape,
    async run(steps) {
      const net = new ReferenceUNet(0);
      const x = tf.randomUniform([1, ...shape, 1], 0, 1, "float32", 3) as tf.Tensor5D;
      const y = tf.tidy(() => tf.cast(tf.greater(x, 0.5), "float32"));
      const loss = () => bceWithLogits(net.apply(x), y);
      const flops = await convFlops(() => tf.variableGrads(loss, net.parameters()));
      const step = await timeTraining(loss, net.parameters(), steps);
      const infer = await timeInference(() => tf.sigmoid(net.apply(x)), steps);
      return { step_s: step, infer_s: infer, gflops: flops / step / 1e9 };
    },
  };
}

const CASES: Case[] = [
  {
    name: "peak",
    description: "oneDNN sgemm 1024x1024x1024: the practical fp32 peak of this machine",
    backends: ["cpu"],
    async run() {
      if (!oneDnn()) return { note: "oneDNN not available" };
      const n = 1024;
      const a = Float32Array.from({ length: n * n }, (_, i) => (i % 7) / 7);
      const b = Float32Array.from({ length: n * n }, (_, i) => (i % 5) / 5);
      const c = new Float32Array(n * n);
      const t = await medianSeconds(() => sgemm(false, false, n, n, n, a, b, c), 10);
      return { step_s: t, gflops: (2 * n ** 3) / t / 1e9 };
    },
  },
  {
    name: "conv3d",
    description: "conv3d 3x3x3, 16 -> 16 channels, 64^3: forward, and forward + both gradients",
    backends: ["cpu", "cpu-js"],
    async run(steps) {
      const x = tf.randomNormal([1, 64, 64, 64, 16], 0, 1, "float32", 1) as tf.Tensor5D;
      const w = tf.variable(tf.randomNormal([3, 3, 3, 16, 16], 0, 0.1, "float32", 2));
      const flops = 2 * 64 ** 3 * 27 * 16 * 16;
      const infer = await timeInference(() => tf.conv3d(x, w as tf.Tensor5D, 1, "same"), steps);
      const grads = tf.grads((a: tf.Tensor, b: tf.Tensor) =>
        tf.sum(tf.conv3d(a as tf.Tensor5D, b as tf.Tensor5D, 1, "same"))
      );
      const step = await medianSeconds(async () => {
        const gs = grads([x, w]);
        await Promise.all(gs.map((g) => g.data()));
        tf.dispose(gs);
      }, steps);
      return {
        step_s: step,
        infer_s: infer,
        gflops: flops / infer / 1e9,
        note: `forward+backward ${(3 * flops / step / 1e9).toFixed(1)} GFLOP/s`,
      };
    },
  },
  {
    name: "profile",
    description:
      "default-profile teacher, KKN, patch discriminator and 3D U-Net steps on a 32^3 patch and the whole-brain 2D U-Net step on a batch of 64^2 slices, with the time per kernel and outside kernels",
    backends: ["cpu"],
    async run(steps) {
      const profile = await profileDefaultSteps(steps);
      return {
        step_s: profile.reduce((s, p) => s + p.step_s, 0),
        note: profile.map((p) => `${p.network} ${(p.step_s * 1000).toFixed(0)} ms`).join(", "),
        profile,
      };
    },
  },
  referenceUNetCase("unet32", [32, 32, 32], ["cpu", "cpu-js", "webgpu"]),
  referenceUNetCase("unet96", [96, 112, 96], ["cpu"]),
  ...CASE_MODELS,
];

const BENCH_COMMAND: CommandSpec = {
  name: "deno task bench",
  summary: "time training steps, inference and peak memory per backend (see bench/main.ts)",
  usage: "deno task bench [case ...] [--json] [--steps N] [--backends LIST] [--torch]",
  options: [
    {
      name: "json",
      description: "print the results as JSON instead of a table",
      type: "boolean",
      default: false,
    },
    { name: "steps", description: "timed steps per case (after one warm-up)", type: "integer", default: 3 },
    { name: "backends", description: "comma-separated backends, overriding each case's defaults" },
    { name: "no-torch", description: "skip the PyTorch comparison", type: "boolean", default: false },
    { name: "child", description: "(internal) run one case on one backend and print JSON" },
    { name: "out", description: "also write the JSON to this file" },
  ],
  notes: [
    `Cases: ${CASES.map((c) => `${c.name}${c.heavy ? "*" : ""} (${c.description})`).join("; ")}.`,
    "* long: runs only when named.",
  ],
};

async function runChild(caseName: string, backend: string, steps: number): Promise<void> {
  const c = CASES.find((x) => x.name === caseName)!;
  await initBackend(backend === "cpu-js" ? "cpu" : backend, { quiet: true });
  const r = await c.run(steps);
  console.log(JSON.stringify({ case: caseName, backend, ...r, peak_rss_mib: peakRssMiB() }));
}

async function spawnChild(caseName: string, backend: string, steps: number): Promise<CaseResult> {
  const env: Record<string, string> = backend === "cpu-js" ? { UHF_NATIVE_KERNELS: "0" } : {};
  const cmd = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      new URL(import.meta.url).pathname,
      "--child",
      caseName,
      "--backends",
      backend,
      "--steps",
      String(steps),
    ],
    env,
    stdout: "piped",
    stderr: "piped",
  });
  const out = await cmd.output();
  const text = new TextDecoder().decode(out.stdout).trim().split("\n").pop() ?? "";
  if (!out.success || !text.startsWith("{")) {
    const err = new TextDecoder().decode(out.stderr).trim().split("\n").slice(-3).join(" | ");
    return { case: caseName, backend, note: `failed: ${err.slice(0, 200)}` };
  }
  return JSON.parse(text) as CaseResult;
}

async function torchReference(shape: [number, number, number], steps: number): Promise<CaseResult | null> {
  const script = new URL("./reference_unet.py", import.meta.url).pathname;
  try {
    const out = await new Deno.Command("/usr/bin/python3", {
      args: [script, ...shape.map(String), String(steps)],
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!out.success) return null;
    const r = JSON.parse(new TextDecoder().decode(out.stdout).trim());
    return {
      case: "",
      backend: `pytorch ${r.torch} (${r.threads} threads)`,
      step_s: r.step_s,
      infer_s: r.infer_s,
    };
  } catch {
    return null; // python3 or torch absent
  }
}

function table(rows: CaseResult[], peak: number | undefined): string {
  const fmt = (v: number | undefined, d = 3) => (v === undefined || Number.isNaN(v) ? "-" : v.toFixed(d));
  const head = ["case", "backend", "step s", "infer s", "GFLOP/s", "% peak", "peak RSS MiB", "note"];
  const body = rows.map((r) => [
    r.case,
    r.backend,
    fmt(r.step_s),
    fmt(r.infer_s),
    fmt(r.gflops, 1),
    r.gflops && peak && r.case !== "peak" ? fmt((100 * r.gflops) / peak, 1) : "-",
    fmt(r.peak_rss_mib, 0),
    r.note ?? "",
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i])).join("  ").trimEnd();
  return [line(head), line(widths.map((w) => "-".repeat(w))), ...body.map(line)].join("\n");
}

if (import.meta.main) {
  await runCommand(BENCH_COMMAND, async (args) => {
    const steps = Number(args.options.steps);
    if (args.options.child) {
      await runChild(String(args.options.child), String(args.options.backends), steps);
      return;
    }
    const names = args.positional.length ? args.positional : CASES.filter((c) => !c.heavy).map((c) => c.name);
    for (const n of names) {
      if (!CASES.some((c) => c.name === n)) {
        throw new UsageError(`unknown case "${n}"; cases: ${CASES.map((c) => c.name).join(", ")}`);
      }
    }
    const rows: CaseResult[] = [];
    let peak: number | undefined;
    for (const c of CASES.filter((x) => names.includes(x.name))) {
      const backends = args.options.backends ? String(args.options.backends).split(",") : c.backends;
      for (const b of backends) {
        const r = await spawnChild(c.name, b, steps);
        if (c.name === "peak" && r.gflops) peak = r.gflops;
        rows.push(r);
        if (!args.options.json) console.error(`  ${c.name} on ${b}: ${r.step_s?.toFixed(3) ?? r.note} s`);
      }
      if (c.torchShape && !args.options["no-torch"]) {
        const t = await torchReference(c.torchShape, steps);
        if (t) {
          t.case = c.name;
          const ours = rows.find((r) => r.case === c.name && r.backend === "cpu");
          if (ours?.step_s && t.step_s) {
            t.note = `cpu/pytorch step ratio ${(ours.step_s / t.step_s).toFixed(2)}`;
          }
          rows.push(t);
        }
      }
    }
    const report = { machine: `${navigator.hardwareConcurrency} cores`, peak_gflops: peak, results: rows };
    if (args.options.out) {
      await Deno.writeTextFile(String(args.options.out), JSON.stringify(report, null, 2) + "\n");
    }
    console.log(args.options.json ? JSON.stringify(report, null, 2) : table(rows, peak));
    if (!args.options.json) {
      for (const r of rows.filter((r) => r.profile)) {
        console.log(`\n${r.case} (${r.backend}):\n${profileTable(r.profile!)}`);
      }
    }
  }, { allowPositional: true });
}
