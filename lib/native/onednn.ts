/**
 * A thin Deno FFI binding to oneDNN (Debian `libdnnl2`, the library PyTorch uses for CPU
 * convolutions) with just what the native TensorFlow.js kernels need: forward and backward
 * convolutions and max pooling on channels-last (NHWC / NDHWC) float32 tensors, and sgemm.
 *
 * oneDNN's C API 2.x is used directly: enum values and argument ids below are those of
 * `oneapi/dnnl/dnnl_types.h` 2.6 (checked against the header; the major version is checked at
 * load). Primitives are built once per shape and cached (building one JIT-compiles its code);
 * activations are passed in place through `dnnl_memory_set_data_handle`, so nothing is copied
 * except weights that oneDNN wants in a blocked layout (reordered per call, they are small).
 * Threads: oneDNN's OpenMP runtime uses every core (`OMP_NUM_THREADS` overrides).
 */

const LIBRARY_NAMES = ["libdnnl.so.2", "libdnnl.so.3", "libdnnl.so"];

const SYMBOLS = {
  dnnl_version: { parameters: [], result: "pointer" },
  dnnl_engine_create: { parameters: ["buffer", "i32", "usize"], result: "i32" },
  dnnl_stream_create: { parameters: ["buffer", "pointer", "u32"], result: "i32" },
  dnnl_memory_desc_init_by_tag: { parameters: ["buffer", "i32", "buffer", "i32", "i32"], result: "i32" },
  dnnl_memory_desc_equal: { parameters: ["pointer", "pointer"], result: "i32" },
  dnnl_memory_desc_get_size: { parameters: ["pointer"], result: "usize" },
  dnnl_dilated_convolution_forward_desc_init: {
    parameters: [
      "buffer",
      "i32",
      "i32",
      "buffer",
      "buffer",
      "pointer",
      "buffer",
      "buffer",
      "buffer",
      "buffer",
      "buffer",
    ],
    result: "i32",
  },
  dnnl_dilated_convolution_backward_data_desc_init: {
    parameters: ["buffer", "i32", "buffer", "buffer", "buffer", "buffer", "buffer", "buffer", "buffer"],
    result: "i32",
  },
  dnnl_dilated_convolution_backward_weights_desc_init: {
    parameters: [
      "buffer",
      "i32",
      "buffer",
      "buffer",
      "pointer",
      "buffer",
      "buffer",
      "buffer",
      "buffer",
      "buffer",
    ],
    result: "i32",
  },
  dnnl_pooling_v2_forward_desc_init: {
    parameters: [
      "buffer",
      "i32",
      "i32",
      "buffer",
      "buffer",
      "buffer",
      "buffer",
      "buffer",
      "buffer",
      "buffer",
    ],
    result: "i32",
  },
  dnnl_pooling_v2_backward_desc_init: {
    parameters: ["buffer", "i32", "buffer", "buffer", "buffer", "buffer", "buffer", "buffer", "buffer"],
    result: "i32",
  },
  dnnl_primitive_desc_create: {
    parameters: ["buffer", "buffer", "pointer", "pointer", "pointer"],
    result: "i32",
  },
  dnnl_primitive_desc_query_md: { parameters: ["pointer", "i32", "i32"], result: "pointer" },
  dnnl_primitive_desc_query: { parameters: ["pointer", "i32", "i32", "buffer"], result: "i32" },
  dnnl_primitive_create: { parameters: ["buffer", "pointer"], result: "i32" },
  dnnl_reorder_primitive_desc_create: {
    parameters: ["buffer", "pointer", "pointer", "pointer", "pointer", "pointer"],
    result: "i32",
  },
  dnnl_primitive_attr_create: { parameters: ["buffer"], result: "i32" },
  dnnl_post_ops_create: { parameters: ["buffer"], result: "i32" },
  dnnl_post_ops_append_eltwise: { parameters: ["pointer", "f32", "i32", "f32", "f32"], result: "i32" },
  dnnl_primitive_attr_set_post_ops: { parameters: ["pointer", "pointer"], result: "i32" },
  dnnl_concat_primitive_desc_create: {
    parameters: ["buffer", "buffer", "i32", "i32", "buffer", "pointer", "pointer"],
    result: "i32",
  },
  dnnl_memory_desc_init_submemory: { parameters: ["buffer", "buffer", "buffer", "buffer"], result: "i32" },
  dnnl_memory_create: { parameters: ["buffer", "pointer", "pointer", "pointer"], result: "i32" },
  dnnl_memory_set_data_handle: { parameters: ["pointer", "buffer"], result: "i32" },
  dnnl_primitive_execute: { parameters: ["pointer", "pointer", "i32", "buffer"], result: "i32" },
  dnnl_stream_wait: { parameters: ["pointer"], result: "i32" },
  dnnl_sgemm: {
    parameters: [
      "u8",
      "u8",
      "i64",
      "i64",
      "i64",
      "f32",
      "buffer",
      "i64",
      "buffer",
      "i64",
      "f32",
      "buffer",
      "i64",
    ],
    result: "i32",
  },
} as const;

type Lib = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

// oneapi/dnnl/dnnl_types.h 2.6
const F32 = 3;
const TAG_ANY = 1;
const TAG = { a: 2, ab: 3, nhwc: 20, ndhwc: 21, hwio: 30, dhwio: 32 } as const;
const ENGINE_CPU = 1;
const STREAM_DEFAULT = 1;
export const PROP = {
  forwardTraining: 64,
  forwardInference: 96,
  backwardData: 160,
  backwardWeights: 192,
} as const;
const CONV_DIRECT = 1;
const ELTWISE_RELU = 0x1f;
const POOL_MAX = 511;
const QUERY = {
  implInfoStr: 8,
  srcMd: 129,
  diffSrcMd: 130,
  weightsMd: 131,
  diffWeightsMd: 132,
  dstMd: 133,
  diffDstMd: 134,
  workspaceMd: 135,
} as const;
export const ARG = {
  src: 1,
  dst: 17,
  weights: 33,
  bias: 41,
  workspace: 64,
  diffSrc: 129,
  diffDst: 145,
  diffWeights: 161,
  diffBias: 169,
  multipleSrc: 1024,
} as const;
const MEMORY_DESC_BYTES = 696;
const OP_DESC_BYTES = 8192; // sizeof(dnnl_convolution_desc_t) is 5976, pooling 3288
const MEMORY_ALLOCATE = Deno.UnsafePointer.create(0xffffffffffffffffn);
const STATUS = [
  "success",
  "out_of_memory",
  "invalid_arguments",
  "unimplemented",
  "iterator_ends",
  "runtime_error",
];

/** Raised when a oneDNN call fails; `status` is oneDNN's status code. */
export class OneDnnError extends Error {
  override name = "OneDnnError";
  constructor(readonly call: string, readonly status: number) {
    super(`oneDNN ${call} failed: ${STATUS[status] ?? `status ${status}`}`);
  }
}

interface Runtime {
  lib: Lib;
  engine: Deno.PointerValue;
  stream: Deno.PointerValue;
  version: string;
  path: string;
}

let runtime: Runtime | null | undefined;
let loadError = "";

function check(call: string, status: number): void {
  if (status !== 0) throw new OneDnnError(call, status);
}

function outPointer(): BigUint64Array {
  return new BigUint64Array(1);
}

function ptr(cell: BigUint64Array): Deno.PointerValue {
  return Deno.UnsafePointer.create(cell[0]);
}

function readVersion(lib: Lib): { major: number; text: string } {
  const p = lib.dnnl_version();
  if (!p) return { major: 0, text: "unknown" };
  const view = new Deno.UnsafePointerView(p);
  const [major, minor, patch] = [view.getInt32(0), view.getInt32(4), view.getInt32(8)];
  return { major, text: `${major}.${minor}.${patch}` };
}

/**
 * Loads oneDNN once. Returns null (and remembers why, see `oneDnnUnavailableReason`) when the
 * library is missing, is not version 2.x, or FFI is not permitted.
 */
export function oneDnn(): Runtime | null {
  if (runtime !== undefined) return runtime;
  runtime = null;
  const failures: string[] = [];
  for (const path of LIBRARY_NAMES) {
    let handle: Deno.DynamicLibrary<typeof SYMBOLS>;
    try {
      handle = Deno.dlopen(path, SYMBOLS);
    } catch (err) {
      failures.push(`${path}: ${String((err as Error).message).split("\n")[0]}`);
      continue;
    }
    const lib = handle.symbols;
    const version = readVersion(lib);
    if (version.major !== 2) {
      failures.push(`${path}: version ${version.text}, this binding needs 2.x`);
      handle.close();
      continue;
    }
    const engine = outPointer();
    check("dnnl_engine_create", lib.dnnl_engine_create(engine, ENGINE_CPU, 0n));
    const stream = outPointer();
    check("dnnl_stream_create", lib.dnnl_stream_create(stream, ptr(engine), STREAM_DEFAULT));
    runtime = { lib, engine: ptr(engine), stream: ptr(stream), version: version.text, path };
    return runtime;
  }
  loadError = failures.join("; ");
  return runtime;
}

/** Why `oneDnn()` returned null ("" if it loaded or was not tried). */
export function oneDnnUnavailableReason(): string {
  return loadError;
}

function rt(): Runtime {
  const r = oneDnn();
  if (!r) throw new Error(`oneDNN is not available: ${loadError}`);
  return r;
}

function dims(values: readonly number[]): BigInt64Array {
  // dnnl_dims_t is int64_t[12]; unused entries are ignored.
  const out = new BigInt64Array(12);
  values.forEach((v, i) => out[i] = BigInt(v));
  return out;
}

/** A memory descriptor built from logical dims and a format tag (or "any"). */
function memoryDesc(logical: readonly number[], tag: number): Uint8Array {
  const md = new Uint8Array(MEMORY_DESC_BYTES);
  check(
    "dnnl_memory_desc_init_by_tag",
    rt().lib.dnnl_memory_desc_init_by_tag(md, logical.length, dims(logical), F32, tag),
  );
  return md;
}

/** A pointer to a memory descriptor built in JavaScript (oneDNN copies what it keeps). */
function mdPointer(md: Uint8Array): Deno.PointerValue {
  return Deno.UnsafePointer.of(md as Uint8Array<ArrayBuffer>);
}

function createPrimitiveDesc(
  opDesc: Uint8Array,
  hint: Deno.PointerValue = null,
  attr: Deno.PointerValue = null,
): Deno.PointerValue {
  const r = rt();
  const pd = outPointer();
  check("dnnl_primitive_desc_create", r.lib.dnnl_primitive_desc_create(pd, opDesc, attr, r.engine, hint));
  return ptr(pd);
}

/** Primitive attributes with one post-op: leaky ReLU of slope `slope` (oneDNN's relu with alpha). */
function reluAttr(slope: number): Deno.PointerValue {
  const lib = rt().lib;
  const attr = outPointer(), po = outPointer();
  check("dnnl_primitive_attr_create", lib.dnnl_primitive_attr_create(attr));
  check("dnnl_post_ops_create", lib.dnnl_post_ops_create(po));
  check("dnnl_post_ops_append_eltwise", lib.dnnl_post_ops_append_eltwise(ptr(po), 1, ELTWISE_RELU, slope, 0));
  check("dnnl_primitive_attr_set_post_ops", lib.dnnl_primitive_attr_set_post_ops(ptr(attr), ptr(po)));
  return ptr(attr);
}

function createPrimitive(pd: Deno.PointerValue): Deno.PointerValue {
  const prim = outPointer();
  check("dnnl_primitive_create", rt().lib.dnnl_primitive_create(prim, pd));
  return ptr(prim);
}

function createMemory(md: Deno.PointerValue, handle: Deno.PointerValue): Deno.PointerValue {
  const r = rt();
  const mem = outPointer();
  check("dnnl_memory_create", r.lib.dnnl_memory_create(mem, md, r.engine, handle));
  return ptr(mem);
}

function implName(pd: Deno.PointerValue): string {
  const out = outPointer();
  if (rt().lib.dnnl_primitive_desc_query(pd, QUERY.implInfoStr, 0, out) !== 0 || out[0] === 0n) return "?";
  return Deno.UnsafePointerView.getCString(ptr(out)!);
}

/**
 * A tensor argument of a primitive in a plain channels-last layout supplied by the caller, or,
 * when oneDNN prefers another layout (weights), a library-owned buffer plus a reorder to or
 * from the caller's layout.
 */
class Operand {
  readonly user: Deno.PointerValue;
  private readonly internal: Deno.PointerValue | null = null;
  private readonly reorder: Deno.PointerValue | null = null;

  constructor(readonly arg: number, userMd: Uint8Array, primitiveMd: Deno.PointerValue, toUser: boolean) {
    const r = rt();
    const userMdPtr = mdPointer(userMd);
    this.user = createMemory(userMdPtr, null);
    if (!primitiveMd || r.lib.dnnl_memory_desc_equal(userMdPtr, primitiveMd) === 1) return;
    this.internal = createMemory(primitiveMd, MEMORY_ALLOCATE);
    const pd = outPointer();
    const [from, to] = toUser ? [primitiveMd, userMdPtr] : [userMdPtr, primitiveMd];
    check(
      "dnnl_reorder_primitive_desc_create",
      r.lib.dnnl_reorder_primitive_desc_create(pd, from, r.engine, to, r.engine, null),
    );
    this.reorder = createPrimitive(ptr(pd));
  }

  /** The memory object the primitive reads or writes. */
  get memory(): Deno.PointerValue {
    return this.internal ?? this.user;
  }

  bind(data: Float32Array): void {
    check("dnnl_memory_set_data_handle", rt().lib.dnnl_memory_set_data_handle(this.user, data));
  }

  /** Copies caller data into the primitive's layout (inputs) ... */
  reorderIn(): void {
    if (this.reorder) execute(this.reorder, [[ARG.src, this.user], [ARG.dst, this.internal!]]);
  }

  /** ... or the primitive's result out to the caller's layout (outputs). */
  reorderOut(): void {
    if (this.reorder) execute(this.reorder, [[ARG.src, this.internal!], [ARG.dst, this.user]]);
  }
}

function execute(primitive: Deno.PointerValue, args: [number, Deno.PointerValue][]): void {
  const r = rt();
  const buf = new BigUint64Array(args.length * 2);
  args.forEach(([id, mem], i) => {
    buf[2 * i] = BigInt(id);
    buf[2 * i + 1] = BigInt(Deno.UnsafePointer.value(mem));
  });
  check("dnnl_primitive_execute", r.lib.dnnl_primitive_execute(primitive, r.stream, args.length, buf));
  check("dnnl_stream_wait", r.lib.dnnl_stream_wait(r.stream));
}

/** Geometry of a 2D or 3D convolution on channels-last data (tfjs conventions). */
export interface ConvGeometry {
  batch: number;
  inChannels: number;
  outChannels: number;
  /** Spatial sizes, outermost first ([d,] h, w). */
  inSize: number[];
  outSize: number[];
  kernel: number[];
  strides: number[];
  /** Dilation factors as tfjs gives them (1 = none). */
  dilations: number[];
  padBefore: number[];
  padAfter: number[];
}

export type ConvDirection = "forward" | "backwardData" | "backwardWeights";

/** A cached convolution primitive for one geometry and direction. */
export class ConvPrimitive {
  readonly impl: string;
  private readonly primitive: Deno.PointerValue;
  private readonly operands: Operand[];
  private readonly workspace: Deno.PointerValue | null = null;
  /** The bias (forward) or its gradient (backwardWeights), when the primitive has one. */
  private readonly biasMemory: Deno.PointerValue | null = null;

  /**
   * `bias`: the forward adds a per-channel bias and the weights gradient also gives the bias's
   * gradient (the sum of dy over positions). `slope`: the forward ends in a leaky ReLU of that
   * slope (0: ReLU) as a oneDNN post-op.
   */
  constructor(
    readonly g: ConvGeometry,
    readonly direction: ConvDirection,
    readonly bias = false,
    readonly slope: number | null = null,
  ) {
    const r = rt();
    const nd = g.inSize.length;
    const actTag = nd === 3 ? TAG.ndhwc : TAG.nhwc;
    const wTag = nd === 3 ? TAG.dhwio : TAG.hwio;
    const src = memoryDesc([g.batch, g.inChannels, ...g.inSize], actTag);
    const dst = memoryDesc([g.batch, g.outChannels, ...g.outSize], actTag);
    const wLogical = [g.outChannels, g.inChannels, ...g.kernel];
    const wUser = memoryDesc(wLogical, wTag);
    const wAny = memoryDesc(wLogical, TAG_ANY);
    const strides = dims(g.strides);
    const dil = dims(g.dilations.map((d) => d - 1));
    const padL = dims(g.padBefore);
    const padR = dims(g.padAfter);
    const biasMd = memoryDesc([g.outChannels], TAG.a);
    const biasPtr = bias ? mdPointer(biasMd) : null;

    const fwdDesc = new Uint8Array(OP_DESC_BYTES);
    check(
      "dnnl_dilated_convolution_forward_desc_init",
      r.lib.dnnl_dilated_convolution_forward_desc_init(
        fwdDesc,
        direction === "forward" ? PROP.forwardInference : PROP.forwardTraining,
        CONV_DIRECT,
        src,
        wAny,
        biasPtr,
        dst,
        strides,
        dil,
        padL,
        padR,
      ),
    );
    const attr = direction === "forward" && slope !== null ? reluAttr(slope) : null;
    const fwdPd = createPrimitiveDesc(fwdDesc, null, attr);
    let pd = fwdPd;
    if (direction === "backwardData") {
      const desc = new Uint8Array(OP_DESC_BYTES);
      check(
        "dnnl_dilated_convolution_backward_data_desc_init",
        r.lib.dnnl_dilated_convolution_backward_data_desc_init(
          desc,
          CONV_DIRECT,
          src,
          wAny,
          dst,
          strides,
          dil,
          padL,
          padR,
        ),
      );
      pd = createPrimitiveDesc(desc, fwdPd);
    } else if (direction === "backwardWeights") {
      const desc = new Uint8Array(OP_DESC_BYTES);
      check(
        "dnnl_dilated_convolution_backward_weights_desc_init",
        r.lib.dnnl_dilated_convolution_backward_weights_desc_init(
          desc,
          CONV_DIRECT,
          src,
          wAny,
          biasPtr,
          dst,
          strides,
          dil,
          padL,
          padR,
        ),
      );
      pd = createPrimitiveDesc(desc, fwdPd);
    }
    if (bias && direction !== "backwardData") this.biasMemory = createMemory(biasPtr, null);
    this.impl = implName(pd);
    this.primitive = createPrimitive(pd);
    const q = (what: number) => r.lib.dnnl_primitive_desc_query_md(pd, what, 0);
    // operands in the order of `run`'s arguments: two inputs, then the output
    if (direction === "forward") {
      this.operands = [
        new Operand(ARG.src, src, q(QUERY.srcMd), false),
        new Operand(ARG.weights, wUser, q(QUERY.weightsMd), false),
        new Operand(ARG.dst, dst, q(QUERY.dstMd), true),
      ];
    } else if (direction === "backwardData") {
      this.operands = [
        new Operand(ARG.diffDst, dst, q(QUERY.diffDstMd), false),
        new Operand(ARG.weights, wUser, q(QUERY.weightsMd), false),
        new Operand(ARG.diffSrc, src, q(QUERY.diffSrcMd), true),
      ];
    } else {
      this.operands = [
        new Operand(ARG.src, src, q(QUERY.srcMd), false),
        new Operand(ARG.diffDst, dst, q(QUERY.diffDstMd), false),
        new Operand(ARG.diffWeights, wUser, q(QUERY.diffWeightsMd), true),
      ];
    }
    const ws = q(QUERY.workspaceMd);
    if (ws && Number(r.lib.dnnl_memory_desc_get_size(ws)) > 0) {
      this.workspace = createMemory(ws, MEMORY_ALLOCATE);
    }
  }

  /**
   * forward: (x, filter[, bias]) -> y; backwardData: (dy, filter) -> dx; backwardWeights: (x, dy)
   * -> dw [and the bias gradient into `bias`].
   * Arrays are channels-last float32 in tfjs layout; `out` is written in full.
   */
  run(a: Float32Array, b: Float32Array, out: Float32Array, bias?: Float32Array): void {
    const [opA, opB, opOut] = this.operands;
    opA.bind(a);
    opB.bind(b);
    opOut.bind(out);
    opA.reorderIn();
    opB.reorderIn();
    const args: [number, Deno.PointerValue][] = this.operands.map((o) => [o.arg, o.memory]);
    if (this.workspace) args.push([ARG.workspace, this.workspace]);
    if (this.biasMemory) {
      if (!bias || bias.length !== this.g.outChannels) {
        throw new RangeError("ConvPrimitive: bias array missing");
      }
      check("dnnl_memory_set_data_handle", rt().lib.dnnl_memory_set_data_handle(this.biasMemory, bias));
      args.push([this.direction === "forward" ? ARG.bias : ARG.diffBias, this.biasMemory]);
    }
    execute(this.primitive, args);
    opOut.reorderOut();
  }
}

/** Geometry of a max pooling on channels-last data. */
export interface PoolGeometry {
  batch: number;
  channels: number;
  inSize: number[];
  outSize: number[];
  kernel: number[];
  strides: number[];
  padBefore: number[];
  padAfter: number[];
}

/**
 * Max pooling forward (training, keeping oneDNN's argmax workspace) and backward. The backward
 * pass recomputes the forward to obtain the workspace, because tfjs hands the gradient kernel
 * only (dy, x, y).
 */
export class MaxPoolPrimitive {
  readonly impl: string;
  private readonly fwd: Deno.PointerValue;
  private readonly bwd: Deno.PointerValue;
  private readonly src: Deno.PointerValue;
  private readonly dst: Deno.PointerValue;
  private readonly diffSrc: Deno.PointerValue;
  private readonly diffDst: Deno.PointerValue;
  private readonly workspace: Deno.PointerValue;
  private readonly scratchDst: Float32Array;

  constructor(readonly g: PoolGeometry) {
    const r = rt();
    const tag = g.inSize.length === 3 ? TAG.ndhwc : TAG.nhwc;
    const srcMd = memoryDesc([g.batch, g.channels, ...g.inSize], tag);
    const dstMd = memoryDesc([g.batch, g.channels, ...g.outSize], tag);
    const args = [
      dims(g.strides),
      dims(g.kernel),
      dims(g.kernel.map(() => 0)),
      dims(g.padBefore),
      dims(g.padAfter),
    ] as const;
    const fdesc = new Uint8Array(OP_DESC_BYTES);
    check(
      "dnnl_pooling_v2_forward_desc_init",
      r.lib.dnnl_pooling_v2_forward_desc_init(fdesc, PROP.forwardTraining, POOL_MAX, srcMd, dstMd, ...args),
    );
    const fpd = createPrimitiveDesc(fdesc);
    const bdesc = new Uint8Array(OP_DESC_BYTES);
    check(
      "dnnl_pooling_v2_backward_desc_init",
      r.lib.dnnl_pooling_v2_backward_desc_init(bdesc, POOL_MAX, srcMd, dstMd, ...args),
    );
    const bpd = createPrimitiveDesc(bdesc, fpd);
    this.impl = implName(fpd);
    this.fwd = createPrimitive(fpd);
    this.bwd = createPrimitive(bpd);
    this.src = createMemory(mdPointer(srcMd), null);
    this.dst = createMemory(mdPointer(dstMd), null);
    this.diffSrc = createMemory(mdPointer(srcMd), null);
    this.diffDst = createMemory(mdPointer(dstMd), null);
    this.workspace = createMemory(
      r.lib.dnnl_primitive_desc_query_md(fpd, QUERY.workspaceMd, 0),
      MEMORY_ALLOCATE,
    );
    this.scratchDst = new Float32Array(g.batch * g.channels * g.outSize.reduce((a, b) => a * b, 1));
  }

  forward(x: Float32Array, y: Float32Array): void {
    const lib = rt().lib;
    check("dnnl_memory_set_data_handle", lib.dnnl_memory_set_data_handle(this.src, x));
    check("dnnl_memory_set_data_handle", lib.dnnl_memory_set_data_handle(this.dst, y));
    execute(this.fwd, [[ARG.src, this.src], [ARG.dst, this.dst], [ARG.workspace, this.workspace]]);
  }

  backward(x: Float32Array, dy: Float32Array, dx: Float32Array): void {
    this.forward(x, this.scratchDst);
    const lib = rt().lib;
    check("dnnl_memory_set_data_handle", lib.dnnl_memory_set_data_handle(this.diffDst, dy));
    check("dnnl_memory_set_data_handle", lib.dnnl_memory_set_data_handle(this.diffSrc, dx));
    execute(this.bwd, [[ARG.diffDst, this.diffDst], [ARG.diffSrc, this.diffSrc], [
      ARG.workspace,
      this.workspace,
    ]]);
  }
}

/**
 * Row-major C[m,n] = op(A) op(B) (oneDNN's multithreaded sgemm); op transposes when asked.
 * A is m x k (k x m when transposed), B is k x n (n x k when transposed).
 */
export function sgemm(
  transA: boolean,
  transB: boolean,
  m: number,
  n: number,
  k: number,
  a: Float32Array,
  b: Float32Array,
  c: Float32Array,
): void {
  const T = "T".charCodeAt(0), N = "N".charCodeAt(0);
  check(
    "dnnl_sgemm",
    rt().lib.dnnl_sgemm(
      transA ? T : N,
      transB ? T : N,
      BigInt(m),
      BigInt(n),
      BigInt(k),
      1,
      a,
      BigInt(transA ? m : k),
      b,
      BigInt(transB ? k : n),
      0,
      c,
      BigInt(n),
    ),
  );
}

/**
 * Concatenation along the columns of row-major [rows, cols_j] matrices (any tensor concatenated
 * along one axis is this, with rows the product of the outer axes), as oneDNN's concat primitive:
 * multithreaded row copies, where a JavaScript loop copies the short channel runs of a
 * channels-last concatenation element by element.
 */
export class ConcatPrimitive {
  readonly impl: string;
  private readonly primitive: Deno.PointerValue;
  private readonly srcs: Deno.PointerValue[];
  private readonly dst: Deno.PointerValue;

  constructor(readonly rows: number, readonly cols: number[]) {
    const r = rt();
    const total = cols.reduce((a, b) => a + b, 0);
    const srcMds = cols.map((c) => memoryDesc([rows, c], TAG.ab));
    const packed = new Uint8Array(MEMORY_DESC_BYTES * cols.length);
    srcMds.forEach((md, i) => packed.set(md, i * MEMORY_DESC_BYTES));
    const dstMd = memoryDesc([rows, total], TAG.ab);
    const pd = outPointer();
    check(
      "dnnl_concat_primitive_desc_create",
      r.lib.dnnl_concat_primitive_desc_create(pd, dstMd, cols.length, 1, packed, null, r.engine),
    );
    this.impl = implName(ptr(pd));
    this.primitive = createPrimitive(ptr(pd));
    this.srcs = srcMds.map((md) => createMemory(mdPointer(md), null));
    this.dst = createMemory(mdPointer(dstMd), null);
  }

  run(srcs: Float32Array[], out: Float32Array): void {
    const lib = rt().lib;
    srcs.forEach((v, i) =>
      check("dnnl_memory_set_data_handle", lib.dnnl_memory_set_data_handle(this.srcs[i], v))
    );
    check("dnnl_memory_set_data_handle", lib.dnnl_memory_set_data_handle(this.dst, out));
    execute(this.primitive, [
      ...this.srcs.map((m, i): [number, Deno.PointerValue] => [ARG.multipleSrc + i, m]),
      [
        ARG.dst,
        this.dst,
      ],
    ]);
  }
}

/**
 * The inverse: a row-major [rows, sum cols_j] matrix split into its column blocks, one oneDNN
 * reorder per block from a sub-memory view of the input.
 */
export class SplitPrimitive {
  private readonly parts: { reorder: Deno.PointerValue; src: Deno.PointerValue; dst: Deno.PointerValue }[];

  constructor(readonly rows: number, readonly cols: number[]) {
    const r = rt();
    const total = cols.reduce((a, b) => a + b, 0);
    const parentMd = memoryDesc([rows, total], TAG.ab);
    let offset = 0;
    this.parts = cols.map((c) => {
      const sub = new Uint8Array(MEMORY_DESC_BYTES);
      check(
        "dnnl_memory_desc_init_submemory",
        r.lib.dnnl_memory_desc_init_submemory(sub, parentMd, dims([rows, c]), dims([0, offset])),
      );
      offset += c;
      const dstMd = memoryDesc([rows, c], TAG.ab);
      const pd = outPointer();
      check(
        "dnnl_reorder_primitive_desc_create",
        r.lib.dnnl_reorder_primitive_desc_create(
          pd,
          mdPointer(sub),
          r.engine,
          mdPointer(dstMd),
          r.engine,
          null,
        ),
      );
      return {
        reorder: createPrimitive(ptr(pd)),
        src: createMemory(mdPointer(sub), null),
        dst: createMemory(mdPointer(dstMd), null),
      };
    });
  }

  run(x: Float32Array, outs: Float32Array[]): void {
    const lib = rt().lib;
    this.parts.forEach((p, i) => {
      check("dnnl_memory_set_data_handle", lib.dnnl_memory_set_data_handle(p.src, x));
      check("dnnl_memory_set_data_handle", lib.dnnl_memory_set_data_handle(p.dst, outs[i]));
      execute(p.reorder, [[ARG.src, p.src], [ARG.dst, p.dst]]);
    });
  }
}
