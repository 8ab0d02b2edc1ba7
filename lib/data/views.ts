/**
 * The 2D three-view pipeline's geometry (paper section 3; the released code's `data.py` and
 * `utils.py`), written once: how a volume becomes the slices of a view and back, which labels the
 * sagittal view merges, and how the three views' predictions are aggregated into one volume.
 *
 * Volumes are stored as the cohorts store them: voxel order [k, j, i] (i fastest) over the NIfTI
 * axes (a2, a1, a0), assumed RAS-like as the released code assumes (a0 left-right, a1
 * posterior-anterior, a2 inferior-superior; the phantom's grids are). A view's slice stack has
 * shape [n, h, w]:
 *
 * | view     | slices along | n  | slice [h, w] |
 * | -------- | ------------ | -- | ------------ |
 * | axial    | a2 (k)       | nk | [nj, ni]     |
 * | coronal  | a1 (j)       | nj | [nk, ni]     |
 * | sagittal | a0 (i)       | ni | [nk, nj]     |
 *
 * so superior-inferior runs down the rows of coronal and sagittal slices.
 */

export type View = "axial" | "coronal" | "sagittal";

/** The three views, in the order they are trained and reported. */
export const VIEWS: readonly View[] = ["axial", "coronal", "sagittal"];

/** Volume shape [nk, nj, ni]. */
export type Shape3 = [number, number, number];

/** The shape [n, h, w] of a view's slice stack of a [nk, nj, ni] volume. */
export function sliceShape(shape: Shape3, view: View): Shape3 {
  const [nk, nj, ni] = shape;
  if (view === "axial") return [nk, nj, ni];
  if (view === "coronal") return [nj, nk, ni];
  if (view === "sagittal") return [ni, nk, nj];
  throw new RangeError(`unknown view "${view}" (expected ${VIEWS.join(", ")})`);
}

/**
 * The volume index of position (s, r, c) of a view's stack (slice s, row r, column c) as
 * [k, j, i] components, for a volume [nk, nj, ni].
 */
function volumeIndex(view: View, s: number, r: number, c: number): [number, number, number] {
  if (view === "axial") return [s, r, c];
  if (view === "coronal") return [r, s, c];
  return [r, c, s];
}

/**
 * Every voxel's position in a view's stack: `order[p]` is the volume index (k, j, i flattened)
 * of stack position p (s, r, c flattened). Computed once per shape and view.
 */
function stackOrder(shape: Shape3, view: View): Int32Array {
  const [, nj, ni] = shape;
  const [n, h, w] = sliceShape(shape, view);
  const order = new Int32Array(n * h * w);
  let p = 0;
  for (let s = 0; s < n; s++) {
    for (let r = 0; r < h; r++) {
      for (let c = 0; c < w; c++) {
        const [k, j, i] = volumeIndex(view, s, r, c);
        order[p++] = (k * nj + j) * ni + i;
      }
    }
  }
  return order;
}

const orders = new Map<string, Int32Array>();
function cachedOrder(shape: Shape3, view: View): Int32Array {
  const key = `${view}:${shape.join("x")}`;
  let o = orders.get(key);
  if (!o) {
    o = stackOrder(shape, view);
    orders.set(key, o);
  }
  return o;
}

/** A volume [nk, nj, ni] (`channels` values per voxel, channels last) as a view's slice stack. */
export function toSlices(volume: Float32Array, shape: Shape3, view: View, channels = 1): Float32Array {
  const order = cachedOrder(shape, view);
  if (volume.length !== order.length * channels) {
    throw new RangeError(
      `toSlices: ${volume.length} values for a ${shape.join("x")} volume of ${channels} channel(s)`,
    );
  }
  const out = new Float32Array(volume.length);
  if (channels === 1) {
    for (let p = 0; p < order.length; p++) out[p] = volume[order[p]];
  } else {
    for (let p = 0; p < order.length; p++) {
      out.set(volume.subarray(order[p] * channels, (order[p] + 1) * channels), p * channels);
    }
  }
  return out;
}

/** A view's slice stack (`channels` values per position) back as a volume [nk, nj, ni]: `toSlices` undone. */
export function fromSlices(stack: Float32Array, shape: Shape3, view: View, channels = 1): Float32Array {
  const order = cachedOrder(shape, view);
  if (stack.length !== order.length * channels) {
    throw new RangeError(
      `fromSlices: ${stack.length} values for a ${shape.join("x")} volume of ${channels} channel(s)`,
    );
  }
  const out = new Float32Array(stack.length);
  if (channels === 1) {
    for (let p = 0; p < order.length; p++) out[order[p]] = stack[p];
  } else {
    for (let p = 0; p < order.length; p++) {
      out.set(stack.subarray(p * channels, (p + 1) * channels), order[p] * channels);
    }
  }
  return out;
}

/**
 * Thick slices (FastSurfer-CNN's input): for each slice index of `picks` in a view's stack
 * ([n, h, w] values), the slice and its `thick` neighbours on each side as channels, channels-last
 * `[picks.length, h, w, 2 * thick + 1]` in slice order (the picked slice is the middle channel).
 * Neighbours beyond the volume repeat its first or last slice (FastSurfer's edge padding; the
 * released code's unused option pads with zeros).
 */
export function thickSlices(
  stack: Float32Array,
  shape: Shape3,
  picks: number[],
  thick: number,
): Float32Array {
  const [n, h, w] = shape;
  if (stack.length !== n * h * w) {
    throw new RangeError(`thickSlices: ${stack.length} values for a ${shape.join("x")} stack`);
  }
  if (!(Number.isInteger(thick) && thick >= 0)) throw new RangeError(`thickSlices: thick ${thick}`);
  const c = 2 * thick + 1, area = h * w;
  const out = new Float32Array(picks.length * area * c);
  picks.forEach((slice, b) => {
    if (!(Number.isInteger(slice) && slice >= 0 && slice < n)) {
      throw new RangeError(`thickSlices: slice ${slice} outside 0..${n - 1}`);
    }
    for (let o = 0; o < c; o++) {
      const src = Math.min(n - 1, Math.max(0, slice + o - thick)) * area;
      const dst = b * area * c + o;
      for (let p = 0; p < area; p++) out[dst + p * c] = stack[src + p];
    }
  });
  return out;
}

/**
 * The sagittal view cannot tell left from right, so its model predicts the 27 structures with
 * each left/right pair merged (16 classes, as the released code): for `pairs` (left, right) of a
 * label table with `classes` labels, `merge[label]` is the merged class of a label (pairs take
 * the class of their right member, then labels are renumbered in increasing order:
 * background 0, then the unpaired and right labels), and `split[class]` the labels a merged class
 * stands for.
 */
export interface MergedLabels {
  merge: Int32Array;
  split: number[][];
}

export function mergeLeftRight(classes: number, pairs: readonly (readonly [number, number])[]): MergedLabels {
  const target = Array.from({ length: classes }, (_, l) => l);
  for (const [left, right] of pairs) {
    if (!(left > 0 && right > 0 && left < classes && right < classes && left !== right)) {
      throw new RangeError(`left/right pair (${left}, ${right}) outside labels 1..${classes - 1}`);
    }
    target[left] = right;
  }
  const kept = [...new Set(target)].sort((a, b) => a - b);
  const merge = Int32Array.from(target, (t) => kept.indexOf(t));
  const split = kept.map(() => [] as number[]);
  merge.forEach((m, l) => split[m].push(l));
  return { merge, split };
}

/** A label array with every label replaced by its merged class. */
export function mergeLabels(labels: Float32Array, merged: MergedLabels): Float32Array {
  return labels.map((l) => merged.merge[l]);
}

/**
 * Per-voxel class scores of a merged (sagittal) prediction spread back to the full label set:
 * each merged class's score goes to every label it stands for (the released code copies the
 * sagittal one-hot vote to both hemispheres the same way), so the sagittal view votes for a
 * structure and leaves left against right to the other views.
 */
export function unmergeScores(scores: Float32Array, merged: MergedLabels, classes: number): Float32Array {
  const m = merged.split.length, voxels = scores.length / m;
  if (!Number.isInteger(voxels)) {
    throw new RangeError(`unmergeScores: ${scores.length} values for ${m} classes`);
  }
  const out = new Float32Array(voxels * classes);
  for (let v = 0; v < voxels; v++) {
    for (let c = 0; c < m; c++) {
      const s = scores[v * m + c];
      for (const l of merged.split[c]) out[v * classes + l] = s;
    }
  }
  return out;
}

/**
 * How the three views' predictions become one:
 * - `average` (the paper, section 3: "averaged"): the mean of the views' softmax probabilities,
 *   then the argmax;
 * - `weighted-vote` (the released code): each view's argmax as a one-hot vote, weighted 0.4 axial,
 *   0.4 coronal, 0.2 sagittal, then the argmax (ties to the lowest label).
 */
export type ViewAggregation = "average" | "weighted-vote";

export const VIEW_AGGREGATIONS: readonly ViewAggregation[] = ["average", "weighted-vote"];

/** The released code's vote weights. */
export const VOTE_WEIGHTS: Record<View, number> = { axial: 0.4, coronal: 0.4, sagittal: 0.2 };

/**
 * Labels (as floats) from each view's per-voxel class probabilities over the full label set
 * (`classes` values per voxel, volume order; a sagittal prediction already unmerged), aggregated
 * as `mode` says. The argmax takes the lowest label on ties.
 */
export function aggregateViews(
  probabilities: Partial<Record<View, Float32Array>>,
  classes: number,
  mode: ViewAggregation,
): Float32Array {
  const views = VIEWS.filter((v) => probabilities[v]);
  if (!views.length) throw new RangeError("aggregateViews: no view given");
  const n = probabilities[views[0]]!.length;
  if (n % classes !== 0 || views.some((v) => probabilities[v]!.length !== n)) {
    throw new RangeError(
      `aggregateViews: the views' predictions differ in size or are not ${classes} per voxel`,
    );
  }
  if (!VIEW_AGGREGATIONS.includes(mode)) {
    throw new RangeError(`unknown view aggregation "${mode}" (expected ${VIEW_AGGREGATIONS.join(", ")})`);
  }
  const voxels = n / classes;
  const score = new Float64Array(classes);
  const out = new Float32Array(voxels);
  for (let p = 0; p < voxels; p++) {
    score.fill(0);
    for (const v of views) {
      const pr = probabilities[v]!;
      if (mode === "average") {
        for (let c = 0; c < classes; c++) score[c] += pr[p * classes + c] / views.length;
      } else {
        // the view's one-hot vote goes to the label with its top score; an unmerged sagittal
        // prediction holds that score on both labels of a pair, and both get the vote (the released
        // code's remap); exact ties between different classes of a softmax do not otherwise occur
        let best = -Infinity;
        for (let c = 0; c < classes; c++) best = Math.max(best, pr[p * classes + c]);
        for (let c = 0; c < classes; c++) if (pr[p * classes + c] === best) score[c] += VOTE_WEIGHTS[v];
      }
    }
    let arg = 0;
    for (let c = 1; c < classes; c++) if (score[c] > score[arg]) arg = c;
    out[p] = arg;
  }
  return out;
}

/** The mean of the views' volumes (the released code's aggregation of 2D reconstructions). */
export function meanOfViews(volumes: Float32Array[]): Float32Array {
  if (!volumes.length) throw new RangeError("meanOfViews: no volume given");
  const out = new Float32Array(volumes[0].length);
  for (const v of volumes) {
    if (v.length !== out.length) throw new RangeError("meanOfViews: volumes differ in size");
    for (let p = 0; p < out.length; p++) out[p] += v[p] / volumes.length;
  }
  return out;
}
