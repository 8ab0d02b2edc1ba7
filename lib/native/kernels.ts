/**
 * Native CPU kernels for the TensorFlow.js `cpu` backend, executed by oneDNN through Deno FFI.
 *
 * Models stay plain TensorFlow.js code: `installNativeKernels()` re-registers the `cpu` kernels
 * that dominate 2D/3D CNN training (Conv2D/Conv3D and their two backprops, MaxPool/MaxPool3D and
 * their gradients, BatchMatMul) with versions that call oneDNN's JIT-compiled, multithreaded
 * implementations. Anything a native kernel does not cover (NCHW data, dtypes other than
 * float32, broadcasting batch matmuls, a shape oneDNN rejects) is handed to the original
 * pure-JavaScript kernel, so results never depend on coverage, only speed does.
 *
 * `setNativeKernels(false)` routes every call back to the JavaScript kernels (the tests compare
 * the two on random shapes).
 */
import * as tf from "@tensorflow/tfjs-core";
import "@tensorflow/tfjs-backend-cpu";
import {
  ConcatPrimitive,
  type ConvDirection,
  type ConvGeometry,
  ConvPrimitive,
  MaxPoolPrimitive,
  oneDnn,
  oneDnnUnavailableReason,
  type PoolGeometry,
  sgemm,
  SplitPrimitive,
} from "./onednn.ts";

type KernelFunc = tf.KernelConfig["kernelFunc"];
// deno-lint-ignore no-explicit-any
type Attrs = any;

interface CpuBackend {
  data: { get(id: unknown): { values: unknown } };
  makeTensorInfo(
    shape: number[],
    dtype: "float32" | "int32",
    values: Float32Array | Int32Array,
  ): tf.TensorInfo;
}

/** The kernels this module accelerates. */
export const NATIVE_KERNEL_NAMES = [
  "Conv2D",
  "Conv2DBackpropInput",
  "Conv2DBackpropFilter",
  "Conv3D",
  "Conv3DBackpropInputV2",
  "Conv3DBackpropFilterV2",
  "MaxPool",
  "MaxPoolGrad",
  "MaxPool3D",
  "MaxPool3DGrad",
  "BatchMatMul",
  "SplitV",
  "Slice",
  "Sum",
  "Mean",
  "Add",
  "Sub",
  "Multiply",
  "RealDiv",
  "Neg",
  "Exp",
  "Log1p",
  "Abs",
  "Sqrt",
  "Square",
  "Relu",
  "Sigmoid",
  "Softmax",
  "Concat",
] as const;

const jsKernels = new Map<string, KernelFunc>();
let enabled = true;
let installed: { version: string; path: string } | null = null;
const convCache = new Map<string, ConvPrimitive | null>();
const poolCache = new Map<string, MaxPoolPrimitive | null>();
const concatCache = new Map<string, ConcatPrimitive | null>();
const splitCache = new Map<string, SplitPrimitive | null>();
/** Concatenations and splits of at least this many elements go to oneDNN (FFI costs a few microseconds). */
const NATIVE_COPY_MIN = 16384;

/** Convolution arithmetic (2 per multiply-add) of the fused convolutions run so far (the benchmark). */
export const fusedConvFlops = { value: 0 };

/** Counts of calls served natively and handed to JavaScript, per kernel (for the benchmark). */
export const nativeKernelStats = new Map<string, { native: number; js: number }>();

function count(name: string, native: boolean): void {
  const s = nativeKernelStats.get(name) ?? { native: 0, js: 0 };
  if (native) s.native++;
  else s.js++;
  nativeKernelStats.set(name, s);
}

/** Turns the native kernels on or off (they must have been installed to turn on). */
export function setNativeKernels(on: boolean): void {
  enabled = on;
}

/** Whether calls currently go to oneDNN. */
export function nativeKernelsActive(): boolean {
  return enabled && installed !== null;
}

/** Whether a fused op may take these tensors: native kernels on, the cpu backend, every one float32. */
function fastPathFor(...ts: tf.Tensor[]): boolean {
  return nativeKernelsActive() && tf.getBackend() === "cpu" && ts.every((t) => t.dtype === "float32");
}

function values(backend: CpuBackend, t: tf.TensorInfo): Float32Array | null {
  const v = backend.data.get(t.dataId).values;
  return v instanceof Float32Array ? v : null;
}

function cached<T>(cache: Map<string, T | null>, key: string, build: () => T): T | null {
  if (cache.has(key)) return cache.get(key)!;
  let prim: T | null = null;
  try {
    prim = build();
  } catch {
    prim = null; // a geometry oneDNN does not implement: the JavaScript kernel serves it
  }
  cache.set(key, prim);
  return prim;
}

function conv3dGeometry(info: tf.backend_util.Conv3DInfo): ConvGeometry {
  const p = info.padInfo;
  return {
    batch: info.batchSize,
    inChannels: info.inChannels,
    outChannels: info.outChannels,
    inSize: [info.inDepth, info.inHeight, info.inWidth],
    outSize: [info.outDepth, info.outHeight, info.outWidth],
    kernel: [info.filterDepth, info.filterHeight, info.filterWidth],
    strides: [info.strideDepth, info.strideHeight, info.strideWidth],
    dilations: [info.dilationDepth, info.dilationHeight, info.dilationWidth],
    padBefore: [p.front, p.top, p.left],
    padAfter: [p.back, p.bottom, p.right],
  };
}

function conv2dGeometry(info: tf.backend_util.Conv2DInfo): ConvGeometry {
  const p = info.padInfo;
  return {
    batch: info.batchSize,
    inChannels: info.inChannels,
    outChannels: info.outChannels,
    inSize: [info.inHeight, info.inWidth],
    outSize: [info.outHeight, info.outWidth],
    kernel: [info.filterHeight, info.filterWidth],
    strides: [info.strideHeight, info.strideWidth],
    dilations: [info.dilationHeight, info.dilationWidth],
    padBefore: [p.top, p.left],
    padAfter: [p.bottom, p.right],
  };
}

function runConv(
  backend: CpuBackend,
  g: ConvGeometry,
  direction: ConvDirection,
  a: tf.TensorInfo,
  b: tf.TensorInfo,
  outShape: number[],
): tf.TensorInfo | null {
  const av = values(backend, a), bv = values(backend, b);
  if (!av || !bv || av.length === 0 || bv.length === 0) return null;
  const prim = cached(convCache, `${direction}|${JSON.stringify(g)}`, () => new ConvPrimitive(g, direction));
  if (!prim) return null;
  const out = new Float32Array(outShape.reduce((x, y) => x * y, 1));
  prim.run(av, bv, out);
  return backend.makeTensorInfo(outShape, "float32", out);
}

function runPool(
  backend: CpuBackend,
  g: PoolGeometry,
  x: tf.TensorInfo,
  dy: tf.TensorInfo | null,
  outShape: number[],
): tf.TensorInfo | null {
  const xv = values(backend, x);
  const dyv = dy ? values(backend, dy) : null;
  if (!xv || xv.length === 0 || (dy && !dyv)) return null;
  const prim = cached(poolCache, JSON.stringify(g), () => new MaxPoolPrimitive(g));
  if (!prim) return null;
  const out = new Float32Array(outShape.reduce((a, b) => a * b, 1));
  if (dyv) prim.backward(xv, dyv, out);
  else prim.forward(xv, out);
  return backend.makeTensorInfo(outShape, "float32", out);
}

function poolGeometry(info: tf.backend_util.Conv2DInfo | tf.backend_util.Conv3DInfo): PoolGeometry | null {
  if ("inDepth" in info) {
    if (info.dilationDepth !== 1 || info.dilationHeight !== 1 || info.dilationWidth !== 1) return null;
    const p = info.padInfo;
    return {
      batch: info.batchSize,
      channels: info.inChannels,
      inSize: [info.inDepth, info.inHeight, info.inWidth],
      outSize: [info.outDepth, info.outHeight, info.outWidth],
      kernel: [info.filterDepth, info.filterHeight, info.filterWidth],
      strides: [info.strideDepth, info.strideHeight, info.strideWidth],
      padBefore: [p.front, p.top, p.left],
      padAfter: [p.back, p.bottom, p.right],
    };
  }
  if (info.dilationHeight !== 1 || info.dilationWidth !== 1) return null;
  const p = info.padInfo;
  return {
    batch: info.batchSize,
    channels: info.inChannels,
    inSize: [info.inHeight, info.inWidth],
    outSize: [info.outHeight, info.outWidth],
    kernel: [info.filterHeight, info.filterWidth],
    strides: [info.strideHeight, info.strideWidth],
    padBefore: [p.top, p.left],
    padAfter: [p.bottom, p.right],
  };
}

function channelsLast(format: string | undefined): boolean {
  return format === undefined || format === "NHWC" || format === "NDHWC" || format === "channelsLast";
}

type BinaryLoops = (
  av: Float32Array,
  bv: Float32Array,
  out: Float32Array,
  smallA: boolean,
  outer: number,
  mid: number,
  inner: number,
) => void;

/**
 * Loops for one elementwise expression of `x` and `y`, generated per operation so that V8
 * inlines the arithmetic (a shared loop calling a closure per element runs several times slower).
 * Cases: equal sizes, a scalar on either side, or one side broadcast along one block of
 * consecutive axes: the output viewed as `[outer, mid, inner]` and the small side as
 * `[outer, 1, inner]` (`smallA`: the small side is `x`). That covers a per-channel bias
 * (`outer` 1), a per-voxel gate over channels (`inner` 1) and per-sample channel statistics of a
 * batch (`[B, 1, 1, 1, C]` against `[B, D, H, W, C]`).
 */
function binaryLoops(expr: string): BinaryLoops {
  const block = (big: string, small: string) =>
    `for (let o = 0, i = 0; o < outer; o++) { const base = o * inner;
      for (let m = 0; m < mid; m++) for (let k = 0; k < inner; k++, i++) {
        const ${big} = bv_big[i], ${small} = bv_small[base + k]; out[i] = ${expr}; } }`;
  return new Function(
    "av",
    "bv",
    "out",
    "smallA",
    "outer",
    "mid",
    "inner",
    `const n = out.length, na = av.length, nb = bv.length;
    if (na === n && nb === n) { for (let i = 0; i < n; i++) { const x = av[i], y = bv[i]; out[i] = ${expr}; } }
    else if (nb === 1) { const y = bv[0]; for (let i = 0; i < n; i++) { const x = av[i]; out[i] = ${expr}; } }
    else if (na === 1) { const x = av[0]; for (let i = 0; i < n; i++) { const y = bv[i]; out[i] = ${expr}; } }
    else if (smallA) { const bv_big = bv, bv_small = av; ${block("y", "x")} }
    else { const bv_big = av, bv_small = bv; ${block("x", "y")} }`,
  ) as BinaryLoops;
}

/**
 * The broadcast of `small` against `out` (left-padded with 1s as tfjs does) as one block of
 * consecutive axes: `[outer, mid, inner]` sizes, or null for any other pattern (two separate
 * blocks, or no broadcast). Axes of size 1 in `out` are ignored.
 */
export function broadcastBlock(
  small: readonly number[],
  out: readonly number[],
): { outer: number; mid: number; inner: number } | null {
  const s = [...new Array(out.length - small.length).fill(1), ...small];
  let state = 0; // 0: before the block, 1: inside it, 2: after it
  let outer = 1, mid = 1, inner = 1;
  for (let a = 0; a < out.length; a++) {
    if (out[a] === 1) continue;
    if (s[a] === 1) {
      if (state === 2) return null;
      state = 1;
      mid *= out[a];
    } else if (s[a] !== out[a]) return null;
    else if (state === 0) outer *= out[a];
    else {
      state = 2;
      inner *= out[a];
    }
  }
  return state === 0 ? null : { outer, mid, inner };
}

/**
 * Elementwise float32 binary op for equal shapes, a scalar on either side, or one side broadcast
 * along one block of consecutive axes (`broadcastBlock`). Other broadcasts go to the JavaScript
 * kernel, whose general path indexes every element.
 */
function binary(
  backend: CpuBackend,
  a: tf.TensorInfo,
  b: tf.TensorInfo,
  loops: BinaryLoops,
): tf.TensorInfo | null {
  if (a.dtype !== "float32" || b.dtype !== "float32") return null;
  const outShape = tf.backend_util.assertAndGetBroadcastShape(a.shape, b.shape);
  const av = values(backend, a), bv = values(backend, b);
  if (!av || !bv) return null;
  const n = outShape.reduce((x, y) => x * y, 1);
  const out = new Float32Array(n);
  if ((av.length === n && bv.length === n) || av.length === 1 || bv.length === 1) {
    loops(av, bv, out, false, 0, 0, 0);
    return backend.makeTensorInfo(outShape, "float32", out);
  }
  const smallA = bv.length === n;
  if (!smallA && av.length !== n) return null; // both sides broadcast
  const block = broadcastBlock(smallA ? a.shape : b.shape, outShape);
  if (!block) return null;
  loops(av, bv, out, smallA, block.outer, block.mid, block.inner);
  return backend.makeTensorInfo(outShape, "float32", out);
}

type UnaryLoop = (xv: Float32Array, out: Float32Array) => void;

function unaryLoop(expr: string): UnaryLoop {
  return new Function(
    "xv",
    "out",
    `for (let i = 0; i < xv.length; i++) { const x = xv[i]; out[i] = ${expr}; }`,
  ) as UnaryLoop;
}

function unary(backend: CpuBackend, x: tf.TensorInfo, loop: UnaryLoop): tf.TensorInfo | null {
  const xv = x.dtype === "float32" ? values(backend, x) : null;
  if (!xv) return null;
  const out = new Float32Array(xv.length);
  loop(xv, out);
  return backend.makeTensorInfo(x.shape, "float32", out);
}

const BINARY = {
  Add: binaryLoops("x + y"),
  Sub: binaryLoops("x - y"),
  Multiply: binaryLoops("x * y"),
  RealDiv: binaryLoops("x / y"),
};
/**
 * Softmax over each row of `c` values (the last axis) with the JavaScript kernel's roundings (it
 * runs max, subtract, exp, sum and divide as float32 tensors, the sum accumulated in float64), so
 * results are bit-identical to it, in one pass over each row instead of five over the tensor.
 */
function softmaxRows(xv: Float32Array, c: number): Float32Array {
  const out = new Float32Array(xv.length);
  const f = Math.fround;
  for (let i = 0; i < xv.length; i += c) {
    let max = -Infinity;
    for (let k = 0; k < c; k++) max = Math.max(max, xv[i + k]);
    let sum = 0;
    for (let k = 0; k < c; k++) sum += out[i + k] = f(Math.exp(f(xv[i + k] - max)));
    const total = f(sum);
    for (let k = 0; k < c; k++) out[i + k] /= total;
  }
  return out;
}

const UNARY = {
  Neg: unaryLoop("-x"),
  Exp: unaryLoop("Math.exp(x)"),
  Log1p: unaryLoop("Math.log1p(x)"),
  Abs: unaryLoop("Math.abs(x)"),
  Sqrt: unaryLoop("Math.sqrt(x)"),
  Square: unaryLoop("x * x"),
  Relu: unaryLoop("x > 0 ? x : 0"),
  Sigmoid: unaryLoop("1 / (1 + Math.exp(-x))"),
};

/** Concatenation of float32 tensors as row copies (the JavaScript kernel copies per element). */
function concatRows(backend: CpuBackend, inputs: tf.TensorInfo[], axis: number): tf.TensorInfo | null {
  const vals = inputs.map((t) => (t.dtype === "float32" ? values(backend, t) : null));
  if (vals.some((v) => !v) || inputs.length < 2) return null;
  const shape = inputs[0].shape.slice();
  shape[axis] = inputs.reduce((s, t) => s + t.shape[axis], 0);
  const outer = shape.slice(0, axis).reduce((a, b) => a * b, 1);
  const inner = shape.slice(axis + 1).reduce((a, b) => a * b, 1);
  const rowOut = shape[axis] * inner;
  const out = new Float32Array(outer * rowOut);
  const cols = inputs.map((t) => t.shape[axis] * inner);
  if (out.length >= NATIVE_COPY_MIN) {
    const prim = cached(concatCache, `${outer}|${cols}`, () => new ConcatPrimitive(outer, cols));
    if (prim) {
      prim.run(vals as Float32Array[], out);
      return backend.makeTensorInfo(shape, "float32", out);
    }
  }
  let offset = 0;
  inputs.forEach((t, j) => {
    const v = vals[j]!;
    const row = t.shape[axis] * inner;
    if (row >= 64) {
      for (let o = 0; o < outer; o++) out.set(v.subarray(o * row, (o + 1) * row), o * rowOut + offset);
    } else {
      for (let o = 0, src = 0, dst = offset; o < outer; o++, dst += rowOut - row) {
        for (let e = 0; e < row; e++) out[dst++] = v[src++];
      }
    }
    offset += row;
  });
  return backend.makeTensorInfo(shape, "float32", out);
}

type Native = (
  inputs: Record<string, tf.TensorInfo>,
  backend: CpuBackend,
  attrs: Attrs,
) => tf.TensorInfo | tf.TensorInfo[] | null;

/**
 * SplitV as row copies (the JavaScript kernel slices element by element; splitting the channel
 * axis, the gradient of every skip concatenation, was a third of a U-Net step).
 */
function splitRows(
  backend: CpuBackend,
  x: tf.TensorInfo,
  sizes: number[],
  axis: number,
): tf.TensorInfo[] | null {
  const xv = values(backend, x);
  if (!xv) return null;
  const outer = x.shape.slice(0, axis).reduce((a, b) => a * b, 1);
  const inner = x.shape.slice(axis + 1).reduce((a, b) => a * b, 1);
  const rowIn = x.shape[axis] * inner;
  const shapeOf = (s: number) => x.shape.map((d, a) => (a === axis ? s : d));
  if (xv.length >= NATIVE_COPY_MIN) {
    const cols = sizes.map((s) => s * inner);
    const prim = cached(splitCache, `${outer}|${cols}`, () => new SplitPrimitive(outer, cols));
    if (prim) {
      const outs = cols.map((c) => new Float32Array(outer * c));
      prim.run(xv, outs);
      return outs.map((o, i) => backend.makeTensorInfo(shapeOf(sizes[i]), "float32", o));
    }
  }
  let offset = 0;
  return sizes.map((s) => {
    const row = s * inner;
    const out = new Float32Array(outer * row);
    if (row >= 64) {
      for (let o = 0; o < outer; o++) {
        out.set(xv.subarray(o * rowIn + offset, o * rowIn + offset + row), o * row);
      }
    } else {
      for (let o = 0, src = offset, dst = 0; o < outer; o++, src += rowIn - row) {
        for (let e = 0; e < row; e++) out[dst++] = xv[src++];
      }
    }
    offset += row;
    const shape = x.shape.slice();
    shape[axis] = s;
    return backend.makeTensorInfo(shape, "float32", out);
  });
}

/**
 * A non-contiguous float32 or int32 slice as runs of contiguous copies. The JavaScript kernel maps
 * every element through index arithmetic on TensorBuffers: the soft Dice loss's foreground classes
 * of a 32^3 patch's probabilities and one-hot labels cost 50 ms a slice, a third of a 3D U-Net
 * step. Contiguous slices stay with the JavaScript kernel, which returns a view without copying.
 */
function sliceRuns(
  backend: CpuBackend,
  x: tf.TensorInfo,
  begin: number[],
  size: number[],
): tf.TensorInfo | null {
  if (tf.slice_util.isSliceContinous(x.shape, begin, size)) return null;
  const xv = backend.data.get(x.dataId).values;
  if (!(xv instanceof Float32Array || xv instanceof Int32Array)) return null;
  const shape = x.shape, r = shape.length;
  const strides = tf.util.computeStrides(shape);
  const stride = (a: number) => (a === r - 1 ? 1 : strides[a]);
  // the innermost axis j below which every axis is whole: each run copies size[j] * (axes > j)
  let j = r - 1;
  while (j > 0 && size[j] === shape[j] && begin[j] === 0) j--;
  const run = size[j] * (j === r - 1 ? 1 : strides[j]);
  const outer = size.slice(0, j).reduce((a, b) => a * b, 1);
  const out = xv instanceof Float32Array ? new Float32Array(outer * run) : new Int32Array(outer * run);
  const idx = new Array<number>(j).fill(0);
  for (let o = 0; o < outer; o++) {
    let src = begin[j] * stride(j);
    for (let a = 0; a < j; a++) src += (begin[a] + idx[a]) * stride(a);
    const dst = o * run;
    if (run >= 64) out.set(xv.subarray(src, src + run) as Float32Array & Int32Array, dst);
    else for (let e = 0; e < run; e++) out[dst + e] = xv[src + e];
    for (let a = j - 1; a >= 0; a--) {
      if (++idx[a] < size[a]) break;
      idx[a] = 0;
    }
  }
  return backend.makeTensorInfo(size, xv instanceof Float32Array ? "float32" : "int32", out);
}

/**
 * Sum over one block of consecutive axes (size-1 axes aside): the tensor viewed as
 * `[outer, mid, inner]`, summed over `mid`. Covers per-channel sums of a channels-last tensor
 * (bias gradients, batch-norm statistics: `outer` 1), per-sample channel sums (`[B, D, H, W, C]`
 * over the spatial axes) and sums over the last axis (`inner` 1). Accumulates in float64. The
 * JavaScript kernel transposes the whole tensor first.
 */
function blockSums(
  backend: CpuBackend,
  x: tf.TensorInfo,
  axes: number[],
  keepDims: boolean,
): tf.TensorInfo | null {
  const kept = x.shape.map((d, a) => (axes.includes(a) ? 1 : d));
  const block = broadcastBlock(kept, x.shape);
  if (!block) return null;
  const xv = values(backend, x);
  if (!xv) return null;
  const { outer, mid, inner } = block;
  const out = new Float32Array(outer * inner);
  const acc = new Float64Array(inner);
  for (let o = 0, i = 0; o < outer; o++) {
    acc.fill(0);
    for (let m = 0; m < mid; m++) for (let k = 0; k < inner; k++, i++) acc[k] += xv[i];
    out.set(acc, o * inner);
  }
  const shape = keepDims ? kept : x.shape.filter((_, a) => !axes.includes(a));
  return backend.makeTensorInfo(shape, "float32", out);
}

const NATIVE: Record<(typeof NATIVE_KERNEL_NAMES)[number], Native> = {
  Conv3D: ({ x, filter }, backend, { strides, pad, dilations, dataFormat }) => {
    if (!channelsLast(dataFormat)) return null;
    const info = tf.backend_util.computeConv3DInfo(
      x.shape as [number, number, number, number, number],
      filter.shape as [number, number, number, number, number],
      strides,
      dilations,
      pad,
    );
    return runConv(backend, conv3dGeometry(info), "forward", x, filter, info.outShape);
  },
  Conv3DBackpropInputV2: ({ dy, filter }, backend, { strides, pad, inputShape }) => {
    const info = tf.backend_util.computeConv3DInfo(
      inputShape,
      filter.shape as typeof inputShape,
      strides,
      1,
      pad,
    );
    return runConv(backend, conv3dGeometry(info), "backwardData", dy, filter, inputShape);
  },
  Conv3DBackpropFilterV2: ({ x, dy }, backend, { strides, pad, filterShape }) => {
    const info = tf.backend_util.computeConv3DInfo(
      x.shape as [number, number, number, number, number],
      filterShape,
      strides,
      1,
      pad,
    );
    return runConv(backend, conv3dGeometry(info), "backwardWeights", x, dy, filterShape);
  },
  Conv2D: ({ x, filter }, backend, { strides, pad, dataFormat, dilations, dimRoundingMode }) => {
    if (!channelsLast(dataFormat)) return null;
    const info = tf.backend_util.computeConv2DInfo(
      x.shape as [number, number, number, number],
      filter.shape as [number, number, number, number],
      strides,
      dilations,
      pad,
      dimRoundingMode,
    );
    return runConv(backend, conv2dGeometry(info), "forward", x, filter, info.outShape);
  },
  Conv2DBackpropInput: (
    { dy, filter },
    backend,
    { inputShape, strides, pad, dataFormat, dimRoundingMode },
  ) => {
    if (!channelsLast(dataFormat)) return null;
    const info = tf.backend_util.computeConv2DInfo(
      inputShape,
      filter.shape as [number, number, number, number],
      strides,
      1,
      pad,
      dimRoundingMode,
    );
    return runConv(backend, conv2dGeometry(info), "backwardData", dy, filter, inputShape);
  },
  Conv2DBackpropFilter: ({ x, dy }, backend, { strides, pad, dataFormat, dimRoundingMode, filterShape }) => {
    if (!channelsLast(dataFormat)) return null;
    const info = tf.backend_util.computeConv2DInfo(
      x.shape as [number, number, number, number],
      filterShape,
      strides,
      1,
      pad,
      dimRoundingMode,
    );
    return runConv(backend, conv2dGeometry(info), "backwardWeights", x, dy, filterShape);
  },
  MaxPool: ({ x }, backend, { filterSize, strides, pad, dimRoundingMode }) => {
    const info = tf.backend_util.computePool2DInfo(
      x.shape as [number, number, number, number],
      filterSize,
      strides,
      1,
      pad,
      dimRoundingMode,
    );
    const g = poolGeometry(info);
    return g && runPool(backend, g, x, null, info.outShape);
  },
  MaxPoolGrad: ({ dy, input }, backend, { filterSize, strides, pad, dimRoundingMode }) => {
    const info = tf.backend_util.computePool2DInfo(
      input.shape as [number, number, number, number],
      filterSize,
      strides,
      1,
      pad,
      dimRoundingMode,
    );
    const g = poolGeometry(info);
    return g && runPool(backend, g, input, dy, input.shape);
  },
  MaxPool3D: ({ x }, backend, { filterSize, strides, pad, dimRoundingMode, dataFormat }) => {
    if (!channelsLast(dataFormat)) return null;
    const info = tf.backend_util.computePool3DInfo(
      x.shape as [number, number, number, number, number],
      filterSize,
      strides,
      1,
      pad,
      dimRoundingMode,
    );
    const g = poolGeometry(info);
    return g && runPool(backend, g, x, null, info.outShape);
  },
  MaxPool3DGrad: ({ dy, input }, backend, { filterSize, strides, pad, dimRoundingMode }) => {
    const info = tf.backend_util.computePool3DInfo(
      input.shape as [number, number, number, number, number],
      filterSize,
      strides,
      1,
      pad,
      dimRoundingMode,
    );
    const g = poolGeometry(info);
    return g && runPool(backend, g, input, dy, input.shape);
  },
  SplitV: ({ x }, backend, { numOrSizeSplits, axis }) => {
    if (x.dtype !== "float32") return null;
    const ax = tf.util.parseAxisParam(axis, x.shape)[0];
    const sizes = tf.backend_util.prepareSplitSize(x as tf.Tensor, numOrSizeSplits, ax);
    return splitRows(backend, x, sizes, ax);
  },
  Slice: ({ x }, backend, { begin, size }) => {
    if (x.dtype !== "float32" && x.dtype !== "int32") return null;
    const [b, z] = tf.slice_util.parseSliceParams(x, begin as number[], size as number[]);
    if (z.some((d, a) => b[a] < 0 || d < 0 || b[a] + d > x.shape[a])) return null; // the JS kernel raises
    if (z.some((d) => d === 0)) return null;
    return sliceRuns(backend, x, b, z);
  },
  Sum: ({ x }, backend, { axis, keepDims }) => {
    if (x.dtype !== "float32") return null;
    return blockSums(backend, x, tf.util.parseAxisParam(axis, x.shape), keepDims);
  },
  Mean: ({ x }, backend, { axis, keepDims }) => {
    if (x.dtype !== "float32") return null;
    const axes = tf.util.parseAxisParam(axis, x.shape);
    const count = axes.reduce((p, a) => p * x.shape[a], 1);
    if (axes.length === x.shape.length) {
      const xv = values(backend, x);
      if (!xv) return null;
      let s = 0;
      for (let i = 0; i < xv.length; i++) s += xv[i];
      const shape = keepDims ? x.shape.map(() => 1) : [];
      return backend.makeTensorInfo(shape, "float32", Float32Array.of(s / count));
    }
    const sums = blockSums(backend, x, axes, keepDims);
    if (!sums) return null;
    const v = values(backend, sums)!;
    for (let i = 0; i < v.length; i++) v[i] /= count;
    return sums;
  },
  Add: ({ a, b }, backend) => binary(backend, a, b, BINARY.Add),
  Sub: ({ a, b }, backend) => binary(backend, a, b, BINARY.Sub),
  Multiply: ({ a, b }, backend) => binary(backend, a, b, BINARY.Multiply),
  RealDiv: ({ a, b }, backend) => binary(backend, a, b, BINARY.RealDiv),
  Neg: ({ x }, backend) => unary(backend, x, UNARY.Neg),
  Exp: ({ x }, backend) => unary(backend, x, UNARY.Exp),
  Log1p: ({ x }, backend) => unary(backend, x, UNARY.Log1p),
  Abs: ({ x }, backend) => unary(backend, x, UNARY.Abs),
  Sqrt: ({ x }, backend) => unary(backend, x, UNARY.Sqrt),
  Square: ({ x }, backend) => unary(backend, x, UNARY.Square),
  Relu: ({ x }, backend) => unary(backend, x, UNARY.Relu),
  Sigmoid: ({ x }, backend) => unary(backend, x, UNARY.Sigmoid),
  Softmax: ({ logits }, backend, { dim }) => {
    const xv = logits.dtype === "float32" ? values(backend, logits) : null;
    const last = logits.shape.length - 1;
    if (!xv || (dim !== -1 && dim !== last)) return null;
    return backend.makeTensorInfo(logits.shape, "float32", softmaxRows(xv, logits.shape[last]));
  },
  Concat: (inputs, backend, { axis }) => {
    const list = Object.values(inputs);
    return concatRows(backend, list, tf.util.parseAxisParam(axis, list[0].shape)[0]);
  },
  BatchMatMul: ({ a, b }, backend, { transposeA, transposeB }) => {
    // Equal batch shapes only (broadcasting goes to JavaScript).
    const ra = a.shape.length, rb = b.shape.length;
    if (ra !== rb || ra < 2 || a.shape.slice(0, -2).some((d, i) => d !== b.shape[i])) return null;
    const av = values(backend, a), bv = values(backend, b);
    if (!av || !bv) return null;
    const [a0, a1] = a.shape.slice(-2), [b0, b1] = b.shape.slice(-2);
    const m = transposeA ? a1 : a0, k = transposeA ? a0 : a1;
    const n = transposeB ? b0 : b1;
    if ((transposeB ? b1 : b0) !== k) return null; // the JS kernel raises the shape error
    const batch = a.shape.slice(0, -2).reduce((x, y) => x * y, 1);
    const out = new Float32Array(batch * m * n);
    if (m * n * k === 0) return backend.makeTensorInfo([...a.shape.slice(0, -2), m, n], "float32", out);
    for (let i = 0; i < batch; i++) {
      sgemm(
        transposeA,
        transposeB,
        m,
        n,
        k,
        av.subarray(i * m * k, (i + 1) * m * k),
        bv.subarray(i * k * n, (i + 1) * k * n),
        out.subarray(i * m * n, (i + 1) * m * n),
      );
    }
    return backend.makeTensorInfo([...a.shape.slice(0, -2), m, n], "float32", out);
  },
};

/**
 * Registers the oneDNN kernels on the `cpu` backend (once). Returns a line describing what
 * runs: the oneDNN version, or why the pure-JavaScript kernels run instead.
 */
export function installNativeKernels(): { active: boolean; description: string } {
  if (Deno.env.get("UHF_NATIVE_KERNELS") === "0") {
    enabled = false;
    return { active: false, description: "pure-JavaScript kernels (UHF_NATIVE_KERNELS=0)" };
  }
  if (!installed) {
    const rt = oneDnn();
    if (!rt) {
      return {
        active: false,
        description: `pure-JavaScript kernels: oneDNN not found (${oneDnnUnavailableReason()}); ` +
          "install Debian libdnnl2 for native speed",
      };
    }
    for (const name of NATIVE_KERNEL_NAMES) {
      const original = tf.getKernel(name, "cpu");
      if (!original) continue;
      jsKernels.set(name, original.kernelFunc);
      const native = NATIVE[name];
      const kernelFunc: KernelFunc = (args) => {
        if (enabled) {
          const out = native(
            args.inputs as Record<string, tf.TensorInfo>,
            args.backend as unknown as CpuBackend,
            args.attrs,
          );
          if (out) {
            count(name, true);
            return out;
          }
        }
        count(name, false);
        return original.kernelFunc(args);
      };
      tf.unregisterKernel(name, "cpu");
      tf.registerKernel({ ...original, kernelFunc });
    }
    installed = { version: rt.version, path: rt.path };
  }
  enabled = true;
  return {
    active: true,
    description:
      `oneDNN ${installed.version} kernels (${installed.path}) for convolutions (bias and activation fused), max pooling, matmul, concatenation`,
  };
}

/** Source indices and weights per output sample along one axis. */
export interface AxisTable {
  i0: Int32Array;
  i1: Int32Array;
  w1: Float32Array;
}

/** Resamples one axis of a row-major array viewed as [outer, n, inner]. */
function resampleAxis(x: Float32Array, outer: number, n: number, inner: number, t: AxisTable): Float32Array {
  const m = t.i0.length;
  const y = new Float32Array(outer * m * inner);
  for (let o = 0; o < outer; o++) {
    const src = o * n * inner;
    for (let d = 0; d < m; d++) {
      const a = src + t.i0[d] * inner, b = src + t.i1[d] * inner, w = t.w1[d];
      let dst = (o * m + d) * inner;
      if (w === 0) y.set(x.subarray(a, a + inner), dst);
      else for (let i = 0; i < inner; i++) y[dst++] = x[a + i] + (x[b + i] - x[a + i]) * w;
    }
  }
  return y;
}

/** The adjoint of `resampleAxis`: scatters [outer, m, inner] back to [outer, n, inner]. */
function resampleAxisGrad(
  dy: Float32Array,
  outer: number,
  n: number,
  inner: number,
  t: AxisTable,
): Float32Array {
  const m = t.i0.length;
  const dx = new Float32Array(outer * n * inner);
  for (let o = 0; o < outer; o++) {
    const dst = o * n * inner;
    for (let d = 0; d < m; d++) {
      const a = dst + t.i0[d] * inner, b = dst + t.i1[d] * inner, w = t.w1[d];
      let src = (o * m + d) * inner;
      if (w === 0) { for (let i = 0; i < inner; i++) dx[a + i] += dy[src++]; }
      else {
        for (let i = 0; i < inner; i++, src++) {
          dx[a + i] += dy[src] * (1 - w);
          dx[b + i] += dy[src] * w;
        }
      }
    }
  }
  return dx;
}

/**
 * Separable resampling of a channels-last float32 tensor on the cpu backend, one table per
 * spatial axis (linear: two taps; nearest: one tap with weight 0), as row loops over typed arrays
 * with a matching adjoint for the gradient. Returns null on other backends or when the native
 * kernels are switched off: callers then use their tfjs-op version (gather-based, whose
 * gradient, a scatter-add, took two thirds of a U-Net training step on cpu).
 */
export function fastResample<T extends tf.Tensor4D | tf.Tensor5D>(x: T, tables: AxisTable[]): T | null {
  if (!fastPathFor(x)) return null;
  const inShape = x.shape.slice();
  const shapes: number[][] = [inShape];
  tables.forEach((t, a) => {
    const s = shapes[a].slice();
    s[a + 1] = t.i0.length;
    shapes.push(s);
  });
  // per axis: its [outer, n, inner] view; axes a table leaves unchanged are skipped
  const steps = tables.map((t, a) => {
    const sh = shapes[a];
    return {
      t,
      outer: sh.slice(0, a + 1).reduce((p, q) => p * q, 1),
      n: sh[a + 1],
      inner: sh.slice(a + 2).reduce((p, q) => p * q, 1),
    };
  }).filter(({ t, n }) => t.i0.length !== n || t.w1.some((w, d) => w !== 0 || t.i0[d] !== d));
  const op = tf.customGrad(
    ((input: tf.Tensor) => {
      const xv = input.dataSync() as Float32Array;
      let y = xv;
      for (const { t, outer, n, inner } of steps) y = resampleAxis(y, outer, n, inner, t);
      count("Resample", true);
      return {
        value: tf.tensor(y === xv ? y.slice() : y, shapes[tables.length]),
        gradFunc: (dy: tf.Tensor) => {
          const dyv = dy.dataSync() as Float32Array;
          let g = dyv;
          for (let k = steps.length - 1; k >= 0; k--) {
            const { t, outer, n, inner } = steps[k];
            g = resampleAxisGrad(g, outer, n, inner, t);
          }
          count("ResampleGrad", true);
          return tf.tensor(g === dyv ? g.slice() : g, inShape);
        },
      };
      // deno-lint-ignore no-explicit-any
    }) as any,
  );
  return op(x) as T;
}

/** `x > 0 ? x : x * slope` elementwise, into a new array (leaky ReLU and PReLU forward). */
function leakyValues(x: Float32Array, slope: number): Float32Array {
  const y = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) y[i] = x[i] > 0 ? x[i] : x[i] * slope;
  return y;
}

/**
 * Leaky ReLU (slope 0 gives ReLU) on the cpu backend in one pass forward and one backward
 * (tfjs computes its gradient from a mask, a select and a product: four passes); null elsewhere.
 */
export function fastLeakyRelu<T extends tf.Tensor>(x: T, slope: number): T | null {
  if (!fastPathFor(x)) return null;
  const op = tf.customGrad(
    ((input: tf.Tensor) => {
      const xv = input.dataSync() as Float32Array;
      const y = leakyValues(xv, slope);
      return {
        value: tf.tensor(y, input.shape),
        gradFunc: (dy: tf.Tensor) => {
          const g = dy.dataSync() as Float32Array;
          const dx = new Float32Array(g.length);
          for (let i = 0; i < g.length; i++) dx[i] = xv[i] > 0 ? g[i] : g[i] * slope;
          return tf.tensor(dx, input.shape);
        },
      };
      // deno-lint-ignore no-explicit-any
    }) as any,
  );
  return op(x) as T;
}

/** The oneDNN implementation chosen for each cached convolution/pooling geometry. */
export function nativeImplementations(): { kernel: string; impl: string }[] {
  const rows: { kernel: string; impl: string }[] = [];
  for (const [key, prim] of convCache) rows.push({ kernel: key, impl: prim?.impl ?? "js (unsupported)" });
  for (const [key, prim] of poolCache) {
    rows.push({ kernel: `maxpool|${key}`, impl: prim?.impl ?? "js (unsupported)" });
  }
  for (const [key, prim] of concatCache) rows.push({ kernel: `concat|${key}`, impl: prim?.impl ?? "js" });
  for (const [key, prim] of splitCache) rows.push({ kernel: `split|${key}`, impl: prim ? "reorder" : "js" });
  return rows;
}

/**
 * Instance normalisation (each sample and channel over its spatial positions, biased variance),
 * optionally with a per-channel affine transform `gamma x^ + beta` (`affine`: batch normalisation
 * with per-sample statistics, QuickNAT's and FastSurfer-CNN's BN) and then a leaky ReLU of slope
 * `slope` (0: ReLU), on the cpu backend as typed-array loops: statistics in double precision, two
 * passes forward (mean, then variance and output) and two backward, where tfjs's `moments`,
 * arithmetic and activation take about twenty kernels and their gradients. Channels-last, any
 * rank >= 3 (`[N, ..., C]`). Backward: with g the gradient through the activation and the affine
 * scale (`g = gamma dy`) and x^ the normalised input, `dx = rstd (g - mean(g) - x^ mean(g x^))`
 * per sample and channel; `dgamma = sum(dy x^)`, `dbeta = sum(dy)` over samples and positions.
 * Null off the cpu backend or with the native kernels off: callers compose it from tfjs ops (the
 * reference it is tested against).
 */
export function fastInstanceNorm<T extends tf.Tensor>(
  x: T,
  eps: number,
  slope: number | null,
  affine: { gamma: tf.Tensor; beta: tf.Tensor } | null = null,
): T | null {
  if (!fastPathFor(x) || x.rank < 3) return null;
  const n = x.shape[0], c = x.shape[x.rank - 1];
  if (affine && (affine.gamma.size !== c || affine.beta.size !== c)) return null;
  const s = x.size / (n * c);
  const op = tf.customGrad(
    // (customGrad passes a `save` function after the inputs)
    ((input: tf.Tensor, gamma?: tf.Tensor, beta?: tf.Tensor) => {
      const xv = input.dataSync() as Float32Array;
      const gv = affine ? gamma!.dataSync() as Float32Array : null;
      const bv = affine ? beta!.dataSync() as Float32Array : new Float32Array(0);
      const xhat = new Float32Array(xv.length);
      const rstd = new Float64Array(n * c);
      const mean = new Float64Array(c), acc = new Float64Array(c);
      for (let b = 0; b < n; b++) {
        const start = b * s * c, end = start + s * c;
        mean.fill(0);
        for (let o = start; o < end; o += c) for (let k = 0; k < c; k++) mean[k] += xv[o + k];
        for (let k = 0; k < c; k++) mean[k] /= s;
        acc.fill(0);
        for (let o = start; o < end; o += c) {
          for (let k = 0; k < c; k++) {
            const d = xv[o + k] - mean[k];
            acc[k] += d * d;
          }
        }
        for (let k = 0; k < c; k++) rstd[b * c + k] = 1 / Math.sqrt(acc[k] / s + eps);
        for (let o = start; o < end; o += c) {
          for (let k = 0; k < c; k++) xhat[o + k] = (xv[o + k] - mean[k]) * rstd[b * c + k];
        }
      }
      // z: the activation's input (x^, or gamma x^ + beta)
      let z = xhat;
      if (gv) {
        z = new Float32Array(xhat.length);
        for (let o = 0; o < z.length; o += c) {
          for (let k = 0; k < c; k++) z[o + k] = gv[k] * xhat[o + k] + bv[k];
        }
      }
      const y = slope === null ? z : leakyValues(z, slope);
      count("InstanceNorm", true);
      return {
        value: tf.tensor(y, input.shape),
        gradFunc: (dy: tf.Tensor) => {
          const g = dy.dataSync() as Float32Array;
          // the gradient at z, then (affine) the parameters' gradients and the gradient at x^
          let gz = g;
          if (slope !== null) {
            gz = new Float32Array(g.length);
            for (let i = 0; i < g.length; i++) gz[i] = z[i] > 0 ? g[i] : g[i] * slope;
          }
          const dgamma = new Float64Array(c), dbeta = new Float64Array(c);
          let gx = gz;
          if (gv) {
            gx = new Float32Array(g.length);
            for (let o = 0; o < g.length; o += c) {
              for (let k = 0; k < c; k++) {
                dgamma[k] += gz[o + k] * xhat[o + k];
                dbeta[k] += gz[o + k];
                gx[o + k] = gz[o + k] * gv[k];
              }
            }
          }
          const dx = new Float32Array(g.length);
          const sg = new Float64Array(c), sgx = new Float64Array(c);
          for (let b = 0; b < n; b++) {
            const start = b * s * c, end = start + s * c;
            sg.fill(0);
            sgx.fill(0);
            for (let o = start; o < end; o += c) {
              for (let k = 0; k < c; k++) {
                sg[k] += gx[o + k];
                sgx[k] += gx[o + k] * xhat[o + k];
              }
            }
            for (let k = 0; k < c; k++) {
              sg[k] /= s;
              sgx[k] /= s;
            }
            for (let o = start; o < end; o += c) {
              for (let k = 0; k < c; k++) {
                dx[o + k] = rstd[b * c + k] * (gx[o + k] - sg[k] - xhat[o + k] * sgx[k]);
              }
            }
          }
          count("InstanceNormGrad", true);
          const dxt = tf.tensor(dx, input.shape);
          if (!gv) return dxt;
          return [
            dxt,
            tf.tensor(Float32Array.from(dgamma), gamma!.shape),
            tf.tensor(Float32Array.from(dbeta), beta!.shape),
          ];
        },
      };
      // deno-lint-ignore no-explicit-any
    }) as any,
  );
  return (affine ? op(x, affine.gamma, affine.beta) : op(x)) as T;
}

/**
 * A convolution with its bias and an optional leaky ReLU (slope >= 0; 0 is ReLU) as one oneDNN
 * primitive (bias and activation fused into the convolution's output pass), and its gradient with
 * the bias gradient from the weights-gradient primitive: where tfjs adds the bias, activates and,
 * backwards, masks and sums dy over every position in separate passes. The activation's gradient
 * is read from the output's sign. Channels-last 4D (2D) or 5D (3D) float32 on the cpu backend;
 * null elsewhere (callers compose tfjs ops, the reference this is tested against).
 */
export function fastConvBias<T extends tf.Tensor4D | tf.Tensor5D>(
  x: T,
  weight: tf.Tensor,
  bias: tf.Tensor1D,
  strides: number | number[],
  padding: "same" | "valid",
  slope: number | null,
): T | null {
  if (!fastPathFor(x)) return null;
  if (slope !== null && !(slope >= 0)) return null;
  const g = x.rank === 5
    ? conv3dGeometry(
      tf.backend_util.computeConv3DInfo(
        x.shape as [number, number, number, number, number],
        weight.shape as [number, number, number, number, number],
        strides as number | [number, number, number],
        1,
        padding,
      ),
    )
    : conv2dGeometry(
      tf.backend_util.computeConv2DInfo(
        x.shape as [number, number, number, number],
        weight.shape as [number, number, number, number],
        strides as number | [number, number],
        1,
        padding,
      ),
    );
  // the data-gradient primitive is the plain convolution's (same cache key as `runConv`'s)
  const geometry = JSON.stringify(g);
  const fwd = cached(
    convCache,
    `forward+bias|${slope}|${geometry}`,
    () => new ConvPrimitive(g, "forward", true, slope),
  );
  if (!fwd) return null;
  const data = cached(
    convCache,
    `backwardData|${geometry}`,
    () => new ConvPrimitive(g, "backwardData"),
  );
  const weights = cached(
    convCache,
    `backwardWeights+bias|${geometry}`,
    () => new ConvPrimitive(g, "backwardWeights", true),
  );
  if (!data || !weights) return null;
  const outShape = [g.batch, ...g.outSize, g.outChannels];
  const macs = outShape.reduce((p, q) => p * q, 1) * g.inChannels * g.kernel.reduce((p, q) => p * q, 1);
  const op = tf.customGrad(
    ((input: tf.Tensor, w: tf.Tensor, b: tf.Tensor) => {
      const xv = input.dataSync() as Float32Array, wv = w.dataSync() as Float32Array;
      const y = new Float32Array(outShape.reduce((p, q) => p * q, 1));
      fwd.run(xv, wv, y, b.dataSync() as Float32Array);
      count("ConvBias", true);
      fusedConvFlops.value += 2 * macs;
      return {
        value: tf.tensor(y, outShape),
        gradFunc: (dy: tf.Tensor) => {
          let gv = dy.dataSync() as Float32Array;
          if (slope !== null) {
            const masked = new Float32Array(gv.length);
            for (let i = 0; i < gv.length; i++) masked[i] = y[i] > 0 ? gv[i] : gv[i] * slope;
            gv = masked;
          }
          const dx = new Float32Array(xv.length), dw = new Float32Array(wv.length);
          const db = new Float32Array(g.outChannels);
          data.run(gv, wv, dx);
          weights.run(xv, gv, dw, db);
          count("ConvBiasGrad", true);
          fusedConvFlops.value += 4 * macs;
          return [tf.tensor(dx, input.shape), tf.tensor(dw, w.shape), tf.tensor(db, b.shape)];
        },
      };
      // deno-lint-ignore no-explicit-any
    }) as any,
  );
  return op(x, weight, bias) as T;
}

/**
 * PReLU with one learnable slope for every element (`alpha` of size 1, PyTorch's `nn.PReLU()`) on
 * the cpu backend in one pass forward and one backward, the slope's gradient summed in double
 * precision: tfjs's kernel broadcasts the slope element by element and differentiates through a
 * comparison, two selects and products (over half of a QuickNAT step). Null elsewhere, or for a
 * per-channel slope: callers use `tf.prelu`, the reference this is tested against.
 */
export function fastPrelu<T extends tf.Tensor>(x: T, alpha: tf.Tensor): T | null {
  if (!fastPathFor(x) || alpha.size !== 1) return null;
  const op = tf.customGrad(
    ((input: tf.Tensor, slope: tf.Tensor) => {
      const xv = input.dataSync() as Float32Array;
      const a = slope.dataSync()[0];
      const y = leakyValues(xv, a);
      count("Prelu", true);
      return {
        value: tf.tensor(y, input.shape),
        gradFunc: (dy: tf.Tensor) => {
          const g = dy.dataSync() as Float32Array;
          const dx = new Float32Array(g.length);
          let da = 0;
          for (let i = 0; i < g.length; i++) {
            if (xv[i] > 0) dx[i] = g[i];
            else {
              dx[i] = g[i] * a;
              da += g[i] * xv[i];
            }
          }
          count("PreluGrad", true);
          return [tf.tensor(dx, input.shape), tf.tensor([da], slope.shape)];
        },
      };
      // deno-lint-ignore no-explicit-any
    }) as any,
  );
  return op(x, alpha) as T;
}

/**
 * The 2x pooling windows of a channels-last `[B, H, W, C]` (2D: height and width pooled) or
 * `[B, D, H, W, C]` (3D) grid: `offsets[k]` is window position k's offset from its window's first
 * element (raster order over the pooled axes), `each(f)` calls `f(o, base)` for every window with
 * `o` the pooled element's offset (channel 0) and `base` its window's first element's. Odd sizes
 * drop the last row (`floor(n / 2)` windows).
 */
function poolWindows(full: number[]): {
  pooled: number[];
  offsets: number[];
  each(f: (o: number, base: number) => void): void;
} {
  const d = full.length - 2;
  const [b, c] = [full[0], full[full.length - 1]];
  const [dd, h, w] = d === 3 ? full.slice(1, 4) : [1, full[1], full[2]];
  const fd = d === 3 ? 2 : 1;
  const [pd, ph, pw] = [Math.floor(dd / fd), Math.floor(h / 2), Math.floor(w / 2)];
  const offsets: number[] = [];
  for (let a = 0; a < fd; a++) {
    for (let i = 0; i < 2; i++) for (let j = 0; j < 2; j++) offsets.push(((a * h + i) * w + j) * c);
  }
  return {
    pooled: d === 3 ? [b, pd, ph, pw, c] : [b, ph, pw, c],
    offsets,
    each(f) {
      let o = 0;
      for (let n = 0; n < b; n++) {
        for (let a = 0; a < pd; a++) {
          for (let i = 0; i < ph; i++) {
            for (let j = 0; j < pw; j++, o += c) f(o, (((n * dd + fd * a) * h + 2 * i) * w + 2 * j) * c);
          }
        }
      }
    },
  };
}

/**
 * The first-maximum masks of 2x max pooling (`maxPoolWithMask`'s, PyTorch's `return_indices`):
 * one 0/1 tensor per window position on the pooled grid, marking the first position (raster
 * order) holding the window's maximum, in one pass over `x` (tfjs: six gathers and a comparison
 * chain per level). `[B, H, W, C]` or `[B, D, H, W, C]` float32 on the cpu backend; null
 * elsewhere. Not differentiable (the masks come from a comparison).
 */
export function fastPoolMasks(x: tf.Tensor): tf.Tensor[] | null {
  if (!fastPathFor(x)) return null;
  if (x.rank !== 4 && x.rank !== 5) return null;
  const xv = x.dataSync() as Float32Array;
  const c = x.shape[x.rank - 1];
  const win = poolWindows(x.shape);
  const size = win.pooled.reduce((a, v) => a * v, 1);
  const masks = win.offsets.map(() => new Float32Array(size));
  win.each((o, base) => {
    for (let k = 0; k < c; k++) {
      let best = xv[base + k], arg = 0;
      for (let p = 1; p < win.offsets.length; p++) {
        const v = xv[base + win.offsets[p] + k];
        if (v > best) {
          best = v;
          arg = p;
        }
      }
      masks[arg][o + k] = 1;
    }
  });
  count("PoolMasks", true);
  return masks.map((m) => tf.tensor(m, win.pooled));
}

/**
 * Max-unpooling 2x (`maxUnpool`): each value of `y` goes to every window position whose mask marks
 * it (times the mask), zeros elsewhere; the gradient gathers back from those positions. One pass
 * each way where tfjs multiplies, concatenates and transposes. `y` and the masks (not
 * differentiated) `[B, h, w, C]` or `[B, d, h, w, C]`; the output has twice the size along each
 * pooled axis. Float32 on the cpu backend; null elsewhere.
 */
export function fastUnpool<T extends tf.Tensor>(y: T, masks: tf.Tensor[]): T | null {
  if (!fastPathFor(y)) return null;
  if (y.rank !== 4 && y.rank !== 5) return null;
  const c = y.shape[y.rank - 1];
  const full = [y.shape[0], ...y.shape.slice(1, -1).map((n) => 2 * n), c];
  const win = poolWindows(full);
  if (masks.length !== win.offsets.length) return null;
  const mv = masks.map((m) => m.dataSync() as Float32Array);
  const op = tf.customGrad(
    ((input: tf.Tensor) => {
      const yv = input.dataSync() as Float32Array;
      const out = new Float32Array(full.reduce((a, v) => a * v, 1));
      win.each((o, base) => {
        for (let p = 0; p < win.offsets.length; p++) {
          const m = mv[p], at = base + win.offsets[p];
          for (let k = 0; k < c; k++) if (m[o + k] !== 0) out[at + k] = m[o + k] * yv[o + k];
        }
      });
      count("Unpool", true);
      return {
        value: tf.tensor(out, full),
        gradFunc: (dout: tf.Tensor) => {
          const g = dout.dataSync() as Float32Array;
          const dy = new Float32Array(yv.length);
          win.each((o, base) => {
            for (let p = 0; p < win.offsets.length; p++) {
              const m = mv[p], at = base + win.offsets[p];
              for (let k = 0; k < c; k++) if (m[o + k] !== 0) dy[o + k] += m[o + k] * g[at + k];
            }
          });
          count("UnpoolGrad", true);
          return tf.tensor(dy, input.shape);
        },
      };
      // deno-lint-ignore no-explicit-any
    }) as any,
  );
  return op(y) as T;
}

/**
 * The elementwise maximum of two same-shaped tensors (maxout) in one pass each way, its gradient
 * going to `a` where `a >= b` and to `b` elsewhere, as `tf.maximum`'s (whose gradient takes a
 * comparison, a cast and a product per input). Float32 on the cpu backend; null elsewhere or for
 * shapes that would broadcast.
 */
export function fastMaximum<T extends tf.Tensor>(a: T, b: T): T | null {
  if (!fastPathFor(a, b) || a.shape.join() !== b.shape.join()) return null;
  const op = tf.customGrad(
    ((p: tf.Tensor, q: tf.Tensor) => {
      const pv = p.dataSync() as Float32Array, qv = q.dataSync() as Float32Array;
      const y = new Float32Array(pv.length);
      for (let i = 0; i < y.length; i++) y[i] = pv[i] >= qv[i] ? pv[i] : qv[i];
      count("Maximum", true);
      return {
        value: tf.tensor(y, p.shape),
        gradFunc: (dy: tf.Tensor) => {
          const g = dy.dataSync() as Float32Array;
          const dp = new Float32Array(g.length), dq = new Float32Array(g.length);
          for (let i = 0; i < g.length; i++) {
            if (pv[i] >= qv[i]) dp[i] = g[i];
            else dq[i] = g[i];
          }
          count("MaximumGrad", true);
          return [tf.tensor(dp, p.shape), tf.tensor(dq, q.shape)];
        },
      };
      // deno-lint-ignore no-explicit-any
    }) as any,
  );
  return op(a, b) as T;
}

/**
 * The released whole-brain loss (`segmentationLoss` "wce+dice": `weightedCrossEntropy` +
 * `sampleDiceLoss`) from `[..., C]` logits in one pass forward and one backward, statistics in
 * double precision: where tfjs takes a log-softmax, a softmax, one-hot maps and a dozen reductions
 * and their gradients. With p = softmax(z), g the one-hot label, w the voxel weight, N voxels, B
 * samples: `dL/dz = w (p - g) / N + p (q - sum_k p_k q_k)`, q the Dice term's gradient in p,
 * `q_c = -(a_bc g_c - e_bc) / (B C)` with `a = 2 / den`, `e = (2 I + s) / den^2`,
 * `den = P + G + s` per sample and class. Labels and weights are not differentiated. Null off the
 * cpu backend, with the native kernels off, or with a label outside 0..C-1: the caller composes
 * the tfjs ops (the reference this is tested against).
 */
export function fastWceDice(
  logits: tf.Tensor,
  labels: tf.Tensor,
  weights: tf.Tensor,
  smooth: number,
): tf.Scalar | null {
  if (!fastPathFor(logits)) return null;
  const c = logits.shape[logits.rank - 1], n = logits.size / c, batch = logits.shape[0];
  if (labels.size !== n || weights.size !== n || n % batch !== 0) return null;
  const yv = labels.dataSync(), wv = weights.dataSync();
  for (let i = 0; i < n; i++) if (!(yv[i] >= 0 && yv[i] < c && Number.isInteger(yv[i]))) return null;
  const s = n / batch;
  const op = tf.customGrad(
    ((z: tf.Tensor) => {
      const zv = z.dataSync() as Float32Array;
      const p = new Float32Array(zv.length);
      // per sample and class: sum p (P), sum p g (I), sum g (G)
      const P = new Float64Array(batch * c), I = new Float64Array(batch * c), G = new Float64Array(batch * c);
      let ce = 0;
      const ex = new Float64Array(c);
      for (let i = 0; i < n; i++) {
        const o = i * c, bc = Math.floor(i / s) * c, y = yv[i];
        let m = -Infinity;
        for (let k = 0; k < c; k++) if (zv[o + k] > m) m = zv[o + k];
        // each exponential once (in double precision), then normalised
        let se = 0;
        for (let k = 0; k < c; k++) se += ex[k] = Math.exp(zv[o + k] - m);
        for (let k = 0; k < c; k++) {
          const pk = ex[k] / se;
          p[o + k] = pk;
          P[bc + k] += pk;
        }
        ce += wv[i] * (m + Math.log(se) - zv[o + y]);
        I[bc + y] += p[o + y];
        G[bc + y] += 1;
      }
      let dice = 0;
      const a = new Float64Array(batch * c), e = new Float64Array(batch * c);
      for (let j = 0; j < batch * c; j++) {
        const den = P[j] + G[j] + smooth;
        dice += (2 * I[j] + smooth) / den;
        a[j] = 2 / den;
        e[j] = (2 * I[j] + smooth) / (den * den);
      }
      count("WceDice", true);
      return {
        value: tf.scalar(ce / n + 1 - dice / (batch * c)),
        gradFunc: (dy: tf.Tensor) => {
          const up = dy.dataSync()[0];
          const dz = new Float32Array(zv.length);
          const q = new Float64Array(c), scale = -1 / (batch * c);
          for (let i = 0; i < n; i++) {
            const o = i * c, bc = Math.floor(i / s) * c, y = yv[i];
            let pq = 0;
            for (let k = 0; k < c; k++) {
              q[k] = scale * ((k === y ? a[bc + k] : 0) - e[bc + k]);
              pq += p[o + k] * q[k];
            }
            const wn = wv[i] / n;
            for (let k = 0; k < c; k++) {
              dz[o + k] = up * (wn * (p[o + k] - (k === y ? 1 : 0)) + p[o + k] * (q[k] - pq));
            }
          }
          count("WceDiceGrad", true);
          return tf.tensor(dz, z.shape);
        },
      };
      // deno-lint-ignore no-explicit-any
    }) as any,
  );
  return op(logits) as tf.Scalar;
}
