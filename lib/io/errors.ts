/**
 * Named error types for volume input/output. Every message starts with the offending file (or
 * option) so a researcher can find it without a stack trace.
 */

/** Base class of every volume I/O or geometry error. `file` names the file (or pair) at fault. */
export class VolumeError extends Error {
  override name = "VolumeError";
  constructor(readonly file: string, readonly problem: string) {
    super(`${file}: ${problem}`);
  }
}

/** The file does not exist or cannot be read. */
export class VolumeNotFoundError extends VolumeError {
  override name = "VolumeNotFoundError";
}

/** The file is damaged: a truncated or corrupt gzip stream, or fewer voxel bytes than the header promises. */
export class CorruptVolumeError extends VolumeError {
  override name = "CorruptVolumeError";
}

/** The file is not NIfTI-1 (wrong magic or header size). */
export class NotNiftiError extends VolumeError {
  override name = "NotNiftiError";
}

/** The voxel datatype is not one this project reads (uint8, int16, int32, float32, float64). */
export class UnsupportedDatatypeError extends VolumeError {
  override name = "UnsupportedDatatypeError";
}

/** The volume has the wrong number of dimensions (e.g. 4D where 3D is expected). */
export class DimensionError extends VolumeError {
  override name = "DimensionError";
}

/** Two volumes that must share a grid (an image and its labels) disagree in shape or affine. */
export class GridMismatchError extends VolumeError {
  override name = "GridMismatchError";
}
