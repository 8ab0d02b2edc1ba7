/**
 * A minimal module system over TensorFlow.js variables, in the spirit of `torch.nn.Module`:
 * a module owns named parameters and child modules, and `apply` is a plain function of tensors,
 * so networks read like the paper's equations and autodiff gives their gradients.
 *
 * Parameters are initialised from a seeded generator (Kaiming-normal, fan-in, as the authors'
 * code does), so a model built with the same seed is bit-identical on every run and backend.
 */
import * as tf from "@tensorflow/tfjs-core";
import { gaussian, mulberry32 } from "../random.ts";
import { batchNorm, leakyRelu, relu } from "./ops.ts";
import { fastConvBias } from "../native/kernels.ts";
import { FusedAdam } from "../native/adam.ts";

/** A seeded source of initial weights. */
export class Init {
  private readonly rand: () => number;
  constructor(seed: number) {
    this.rand = mulberry32(seed);
  }
  /** Kaiming-normal, fan-in mode, gain sqrt(2) (PyTorch `kaiming_normal_(nonlinearity="leaky_relu")`, a=0). */
  kaiming(shape: number[], fanIn: number): tf.Tensor {
    const std = Math.sqrt(2) / Math.sqrt(fanIn);
    const n = shape.reduce((a, b) => a * b, 1);
    return tf.tensor(Float32Array.from({ length: n }, () => gaussian(this.rand) * std), shape);
  }
  /** Normal samples with the given mean and standard deviation. */
  normal(shape: number[], mean: number, std: number): tf.Tensor {
    const n = shape.reduce((a, b) => a * b, 1);
    return tf.tensor(Float32Array.from({ length: n }, () => mean + gaussian(this.rand) * std), shape);
  }
  /** PyTorch's default bias init: uniform(-1/sqrt(fanIn), 1/sqrt(fanIn)). */
  bias(n: number, fanIn: number): tf.Tensor {
    const b = 1 / Math.sqrt(fanIn);
    return tf.tensor(Float32Array.from({ length: n }, () => (this.rand() * 2 - 1) * b), [n]);
  }
}

export abstract class Module {
  private readonly ownParams = new Map<string, tf.Variable>();
  private readonly childModules = new Map<string, Module>();

  protected param(name: string, init: tf.Tensor): tf.Variable {
    const v = tf.variable(init, true);
    init.dispose();
    this.ownParams.set(name, v);
    return v;
  }

  /**
   * Registers a child module: its parameters become `<name>.<path>`. Public so that a layer
   * builder shared by two modules (e.g. the U-Net decoder) can register into either.
   */
  child<M extends Module>(name: string, m: M): M {
    this.childModules.set(name, m);
    return m;
  }

  /** Every parameter with its dotted path, in construction order. */
  namedParameters(prefix = ""): [string, tf.Variable][] {
    const out: [string, tf.Variable][] = [];
    for (const [n, v] of this.ownParams) out.push([prefix + n, v]);
    for (const [n, m] of this.childModules) out.push(...m.namedParameters(`${prefix}${n}.`));
    return out;
  }

  parameters(): tf.Variable[] {
    return this.namedParameters().map(([, v]) => v);
  }

  parameterCount(): number {
    return this.parameters().reduce((s, v) => s + v.size, 0);
  }

  dispose(): void {
    for (const v of this.parameters()) v.dispose();
  }

  /** Training mode: layers that act only while training (dropout) are on. Off by default. */
  get training(): boolean {
    return this.mode.training;
  }
  /** The seed of the current training step, for layers that draw (dropout). */
  get stepSeed(): number {
    return this.mode.seed;
  }
  private mode = { training: false, seed: 0 };
  /**
   * Turns training mode on (for one step, drawn from `seed`) or off, for this module and every
   * child (PyTorch's `module.train()` / `module.eval()`).
   */
  train(on: boolean, seed = 0): void {
    this.mode = { training: on, seed };
    for (const m of this.childModules.values()) m.train(on, seed);
  }
}

export type Nd = 2 | 3;
export type Padding = "same" | "valid";

export interface ConvOptions {
  /** One stride for every axis, or one per axis. */
  stride?: number | number[];
  padding?: Padding;
  bias?: boolean;
}

/**
 * A 2D or 3D convolution (channels-last; kernel `k` in every spatial axis, or one size per axis,
 * e.g. [1, 3, 3]; "same" padding keeps a size-1 axis unpadded).
 */
export class Conv extends Module {
  readonly weight: tf.Variable;
  readonly bias?: tf.Variable;
  readonly stride: number | number[];
  readonly padding: Padding;

  constructor(
    init: Init,
    readonly nd: Nd,
    readonly inChannels: number,
    readonly outChannels: number,
    readonly k: number | number[],
    { stride = 1, padding = "same", bias = false }: ConvOptions = {},
  ) {
    super();
    const kernel: number[] = typeof k === "number" ? Array(nd).fill(k) : k;
    if (kernel.length !== nd) throw new RangeError(`Conv: kernel ${JSON.stringify(k)} for ${nd}D`);
    const fanIn = inChannels * kernel.reduce((a, b) => a * b, 1);
    this.weight = this.param("weight", init.kaiming([...kernel, inChannels, outChannels], fanIn));
    if (bias) this.bias = this.param("bias", init.bias(outChannels, fanIn));
    this.stride = stride;
    this.padding = padding;
  }

  apply<T extends tf.Tensor4D | tf.Tensor5D>(x: T): T {
    if (this.bias) {
      const fast = fastConvBias(x, this.weight, this.bias as tf.Tensor1D, this.stride, this.padding, null);
      if (fast) return fast;
    }
    let y = this.nd === 3
      ? tf.conv3d(x as tf.Tensor5D, this.weight as tf.Tensor5D, this.stride as number, this.padding)
      : tf.conv2d(x as tf.Tensor4D, this.weight as tf.Tensor4D, this.stride as number, this.padding);
    if (this.bias) y = tf.add(y, this.bias);
    return y as T;
  }

  /**
   * Leaky ReLU (slope `slope`; 0 is ReLU) of the convolution plus bias: on the cpu backend one
   * oneDNN primitive with the bias and activation fused (`fastConvBias`), else `apply` then the
   * activation.
   */
  applyActivated<T extends tf.Tensor4D | tf.Tensor5D>(x: T, slope: number): T {
    if (this.bias) {
      const fast = fastConvBias(x, this.weight, this.bias as tf.Tensor1D, this.stride, this.padding, slope);
      if (fast) return fast;
    }
    const y = this.apply(x);
    return slope === 0 ? relu(y) : leakyRelu(y, slope);
  }
}

/**
 * Batch normalisation with learnable per-channel scale and shift (`batchNorm`), initialised as the
 * authors' `weights_init_normal`: scale ~ N(1, 0.02), shift 0. At batch 1 it is instance norm
 * with an affine transform, the substitute for the BatchNorm of the baselines' released code. The
 * shift matters where a ReLU follows: without it, ReLU(norm(x)) of a one-channel image keeps only
 * the voxels above the mean.
 */
export class BatchNorm extends Module {
  readonly gamma: tf.Variable;
  readonly beta: tf.Variable;
  /**
   * `statistics` "batch" normalises over the batch (and space), "sample" each sample over its own
   * positions: a 2D network's slice then never depends on the slices batched with it.
   */
  constructor(init: Init, readonly channels: number, readonly statistics: "batch" | "sample" = "batch") {
    super();
    this.gamma = this.param("gamma", init.normal([channels], 1, 0.02));
    this.beta = this.param("beta", tf.zeros([channels]));
  }
  apply<T extends tf.Tensor4D | tf.Tensor5D>(x: T): T {
    return batchNorm(
      x,
      this.gamma as tf.Tensor1D,
      this.beta as tf.Tensor1D,
      1e-5,
      this.statistics === "sample",
    );
  }
}

/** A fully connected layer `y = x W + b` on the last axis. */
export class Linear extends Module {
  readonly weight: tf.Variable;
  readonly bias: tf.Variable;
  constructor(init: Init, readonly inFeatures: number, readonly outFeatures: number) {
    super();
    this.weight = this.param("weight", init.kaiming([inFeatures, outFeatures], inFeatures));
    this.bias = this.param("bias", init.bias(outFeatures, inFeatures));
  }
  apply(x: tf.Tensor2D): tf.Tensor2D {
    return tf.add(tf.matMul(x, this.weight), this.bias);
  }
}

/**
 * Adam as in PyTorch (betas 0.9/0.999, eps 1e-8), one fused loop per parameter on the cpu backend
 * (`FusedAdam`); its state is tfjs's `AdamOptimizer`'s, so checkpoints resume in either.
 */
export function adam(learningRate: number): FusedAdam {
  return new FusedAdam(learningRate, 0.9, 0.999, 1e-8);
}
