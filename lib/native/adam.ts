/**
 * Adam whose update runs as one typed-array loop per parameter on the cpu backend with the native
 * kernels on. tfjs's `AdamOptimizer` spends about 14 kernel calls per parameter and step (moments,
 * bias corrections, square root, division, assignment), each with the engine's bookkeeping: for
 * the default profile's KKN that is over 1,000 calls of mostly tiny tensors a step. Here each
 * parameter costs one loop that reads the gradient, the two moments and the value once.
 *
 * The update is tfjs's (and PyTorch's, `eps` outside the square root):
 *   m = b1 m + (1 - b1) g,  v = b2 v + (1 - b2) g^2,
 *   x = x - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps).
 * The state is tfjs's too: `getWeights` gives the iteration count, then every first moment
 * (`<variable>/m`), then every second moment (`<variable>/v`), so checkpoints written by either
 * optimizer resume in the other. The bias corrections use b^t in double precision where tfjs keeps
 * a float32 running product: results agree to float32 rounding (tested against `tf.train.adam`).
 *
 * Off the cpu backend, or with the native kernels off, the update is tfjs's own tensor ops.
 */
import * as tf from "@tensorflow/tfjs-core";
import { nativeKernelsActive } from "./kernels.ts";

/** A tensor with a name (tfjs-core's `NamedTensor`, not re-exported by its index). */
interface NamedTensor {
  name: string;
  tensor: tf.Tensor;
}

interface Moment {
  originalName: string;
  variable: tf.Variable;
}

export class FusedAdam extends tf.Optimizer {
  static get className(): string {
    return "Adam";
  }
  private firstMoments: Moment[] = [];
  private secondMoments: Moment[] = [];

  constructor(
    readonly learningRate: number,
    readonly beta1 = 0.9,
    readonly beta2 = 0.999,
    readonly epsilon = 1e-8,
  ) {
    super();
  }

  applyGradients(variableGradients: tf.NamedTensorMap | NamedTensor[]): void {
    const entries: [string, tf.Tensor | undefined][] = Array.isArray(variableGradients)
      ? variableGradients.map((g) => [g.name, g.tensor])
      : Object.entries(variableGradients);
    const t = this.iterations + 1;
    const c1 = 1 - this.beta1 ** t, c2 = 1 - this.beta2 ** t;
    const fused = nativeKernelsActive() && tf.getBackend() === "cpu";
    entries.forEach(([name, gradient], i) => {
      const value = tf.engine().registeredVariables[name];
      this.firstMoments[i] ??= { originalName: `${name}/m`, variable: zeroVariable(value) };
      this.secondMoments[i] ??= { originalName: `${name}/v`, variable: zeroVariable(value) };
      if (gradient == null) return;
      const m = this.firstMoments[i].variable, v = this.secondMoments[i].variable;
      if (fused && gradient.dtype === "float32" && value.dtype === "float32") {
        this.fusedUpdate(value, m, v, gradient, c1, c2);
      } else {
        this.tensorUpdate(value, m, v, gradient, c1, c2);
      }
    });
    this.incrementIterations();
  }

  /**
   * One pass over the parameter. The moments, which only this optimizer holds, are updated in place
   * when no other tensor shares their buffers (the cpu backend's reference count is 1); the
   * parameter always gets a new buffer, so a clone or a slice view of it taken before the step
   * keeps its values, as with tfjs's optimizer.
   */
  private fusedUpdate(x: tf.Variable, m: tf.Variable, v: tf.Variable, g: tf.Tensor, c1: number, c2: number) {
    const gv = g.dataSync() as Float32Array;
    const xv = x.dataSync() as Float32Array, xn = new Float32Array(xv.length);
    const [mv, mn] = target(m), [vv, vn] = target(v);
    const { beta1: b1, beta2: b2, epsilon: eps, learningRate: lr } = this;
    const a1 = 1 - b1, a2 = 1 - b2;
    for (let j = 0; j < gv.length; j++) {
      const gj = gv[j];
      const mj = b1 * mv[j] + a1 * gj;
      const vj = b2 * vv[j] + a2 * gj * gj;
      mn[j] = mj;
      vn[j] = vj;
      xn[j] = xv[j] - (lr * (mj / c1)) / (Math.sqrt(vj / c2) + eps);
    }
    for (const [t, old, next] of [[x, xv, xn], [m, mv, mn], [v, vv, vn]] as const) {
      if (next !== old) assignArray(t, next);
    }
  }

  private tensorUpdate(x: tf.Variable, m: tf.Variable, v: tf.Variable, g: tf.Tensor, c1: number, c2: number) {
    tf.tidy(() => {
      const mn = tf.add(tf.mul(m, this.beta1), tf.mul(g, 1 - this.beta1));
      const vn = tf.add(tf.mul(v, this.beta2), tf.mul(tf.square(g), 1 - this.beta2));
      m.assign(mn);
      v.assign(vn);
      const step = tf.div(tf.div(mn, c1), tf.add(tf.sqrt(tf.div(vn, c2)), this.epsilon));
      x.assign(tf.sub(x, tf.mul(step, this.learningRate)));
    });
  }

  override dispose(): void {
    tf.dispose([...this.firstMoments, ...this.secondMoments].map((s) => s.variable));
    this.firstMoments = [];
    this.secondMoments = [];
  }

  override async getWeights(): Promise<NamedTensor[]> {
    const moments = [...this.firstMoments, ...this.secondMoments];
    return [await this.saveIterations()].concat(
      moments.map((s) => ({ name: s.originalName, tensor: s.variable })),
    );
  }

  override async setWeights(weightValues: NamedTensor[]): Promise<void> {
    const rest = await this.extractIterations(weightValues);
    const half = rest.length / 2;
    tf.dispose([...this.firstMoments, ...this.secondMoments].map((s) => s.variable));
    const moment = (w: NamedTensor) => ({ originalName: w.name, variable: w.tensor.variable(false) });
    this.firstMoments = rest.slice(0, half).map(moment);
    this.secondMoments = rest.slice(half).map(moment);
  }

  getConfig(): tf.serialization.ConfigDict {
    return {
      learningRate: this.learningRate,
      beta1: this.beta1,
      beta2: this.beta2,
      epsilon: this.epsilon,
    };
  }
}

function zeroVariable(like: tf.Tensor): tf.Variable {
  return tf.tidy(() => tf.zerosLike(like).variable(false));
}

/** A moment's current values and the array its new values go to (the same one when unshared). */
function target(t: tf.Variable): [Float32Array, Float32Array] {
  const values = t.dataSync() as Float32Array;
  const refs = (tf.backend() as unknown as { refCount(id: object): number }).refCount(t.dataId);
  return [values, refs === 1 ? values : new Float32Array(values.length)];
}

function assignArray(target: tf.Variable, data: Float32Array): void {
  const t = tf.tensor(data, target.shape, "float32");
  target.assign(t);
  t.dispose();
}
