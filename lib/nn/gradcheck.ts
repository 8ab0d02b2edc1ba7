/**
 * Finite-difference gradient checking for custom layers and losses.
 *
 * TensorFlow.js computes in float32, so the check uses central differences with a step of about
 * 1e-2 on a scalar projection `sum(f(x) * r)` (fixed random `r`), and compares a seeded random
 * subset of coordinates with a relative tolerance.
 */
import * as tf from "@tensorflow/tfjs-core";
import { mulberry32 } from "../random.ts";

export interface GradCheckOptions {
  /** Finite-difference step. */
  eps?: number;
  /** Coordinates checked per input (all when the input is smaller). */
  samples?: number;
  /** Seed for the projection and the sampled coordinates. */
  seed?: number;
}

export interface GradCheckResult {
  /** Largest |analytic - numeric| / max(1, |analytic|, |numeric|) over the checked coordinates. */
  maxRelError: number;
  checked: number;
  worst: { input: number; index: number; analytic: number; numeric: number };
}

/**
 * Compares the autodiff gradient of `f` with central finite differences for every input in
 * `xs`. `f` may return any shape; it is reduced to a scalar with a fixed random projection.
 */
export function gradCheck(
  f: (...xs: tf.Tensor[]) => tf.Tensor,
  xs: tf.Tensor[],
  { eps = 1e-2, samples = 24, seed = 1 }: GradCheckOptions = {},
): GradCheckResult {
  const rand = mulberry32(seed);
  const probe = tf.tidy(() => f(...xs));
  const rValues = Float32Array.from({ length: probe.size }, () => rand() * 2 - 1);
  const r = tf.tensor(rValues, probe.shape);
  probe.dispose();
  const scalar = (...args: tf.Tensor[]) => tf.sum(tf.mul(f(...args), r)) as tf.Scalar;

  const grads = tf.tidy(() => tf.grads(scalar)(xs));
  let result: GradCheckResult = {
    maxRelError: 0,
    checked: 0,
    worst: { input: -1, index: -1, analytic: 0, numeric: 0 },
  };
  xs.forEach((x, n) => {
    const g = grads[n].dataSync();
    const base = x.dataSync().slice() as Float32Array;
    const count = Math.min(samples, x.size);
    const indices = x.size <= samples
      ? Array.from({ length: x.size }, (_, i) => i)
      : Array.from({ length: count }, () => Math.floor(rand() * x.size));
    for (const idx of indices) {
      const evalAt = (delta: number) =>
        tf.tidy(() => {
          const v = base.slice();
          v[idx] += delta;
          const args = xs.map((t, m) => (m === n ? tf.tensor(v, x.shape, x.dtype) : t));
          return scalar(...args).dataSync()[0];
        });
      const numeric = (evalAt(eps) - evalAt(-eps)) / (2 * eps);
      const analytic = g[idx];
      const rel = Math.abs(analytic - numeric) / Math.max(1, Math.abs(analytic), Math.abs(numeric));
      result.checked++;
      if (rel > result.maxRelError) {
        result = { ...result, maxRelError: rel, worst: { input: n, index: idx, analytic, numeric } };
      }
    }
  });
  grads.forEach((g) => g.dispose());
  r.dispose();
  return result;
}
