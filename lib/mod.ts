/**
 * Public entry point of the library: notebooks and scripts import from here.
 *
 * Glossary (paper symbol -> name in this library):
 * - F^T  teacher features (7T), levels 1..L
 * - F^K  7T-like features produced by the knowledge keeper network (KKN) from 3T
 * - F^S  segmentation-network (low-field) features
 * - G    general guidance, D feature-combined refinement, A channel-wise refined guidance (AFM)
 *
 * Tensor layout everywhere: channels-last, `[batch, depth, height, width, channels]` (3D) and
 * `[batch, height, width, channels]` (2D). A volume's voxel order maps to depth=k, height=j,
 * width=i (see `volumeToTensor`).
 * @module
 */

export * from "./io/errors.ts";
export * from "./io/nifti.ts";
export * from "./io/dicom.ts";
export * from "./volume/affine.ts";
export * from "./volume/volume.ts";
export * from "./volume/geometry.ts";
export * from "./volume/tensor.ts";
export * from "./backend.ts";
export * from "./nn/ops.ts";
export * from "./nn/gradcheck.ts";
export * from "./random.ts";
export * from "./stats.ts";
export * from "./tables.ts";
export * from "./tissue/atropos.ts";
export * from "./cli.ts";
export * from "./metrics.ts";
export * from "./losses.ts";
export * from "./models/networks.ts";
export * from "./models/teacher.ts";
export * from "./models/keeper.ts";
export * from "./models/fusion.ts";
export * from "./phantom/physics.ts";
export * from "./data/cohort.ts";
export * from "./data/preprocess.ts";
export * from "./data/clahe.ts";
export * from "./data/importers.ts";
export * from "./train/augment.ts";
export * from "./report.ts";
export * from "./notebook.ts";
export * from "./viz/plotly.ts";
export * from "./viz/table.ts";
export * from "./viz/viewer.ts";
export * from "./data/views.ts";
export * from "./report_wholebrain.ts";
export { STRUCTURES_KEY, trainWholeBrain, WholeBrainModels } from "./train/wholebrain.ts";
export {
  collectRun,
  formatPlan,
  type Job,
  type JobPlan,
  type JobResult,
  planJobs,
  readPlan,
  runJob,
} from "./train/jobs.ts";
export { resubmitRun, runStatus, SlurmError, type SlurmResources, submitRun } from "./train/slurm.ts";
