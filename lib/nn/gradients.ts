/**
 * Gradients TensorFlow.js lacks, registered once in its global gradient registry (so they hold
 * on every backend). Imported by `lib/backend.ts`.
 *
 * - `Conv3DBackpropInputV2`, the kernel behind `tf.conv3dTranspose`: without its gradient a
 *   transposed 3D convolution cannot be trained (the 3D U-Net, VoxResNet and RP-Net baselines
 *   upsample with it). As for the 2D case in tfjs: for dx = conv3dBackpropInput(dy, W),
 *   d/d(dy) = conv3d(ddx, W) and d/dW = conv3dBackpropFilter(ddx, dy).
 *   Checked against finite differences in tests/native_kernels_test.ts.
 */
import * as tf from "@tensorflow/tfjs-core";

let registered = false;

export function registerMissingGradients(): void {
  if (registered) return;
  registered = true;
  if (!tf.getGradient("Conv3DBackpropInputV2")) {
    tf.registerGradient({
      kernelName: "Conv3DBackpropInputV2",
      inputsToSave: ["dy", "filter"],
      gradFunc: (ddx, saved, attrs) => {
        const [dy, filter] = saved as [tf.Tensor5D, tf.Tensor5D];
        const { strides, pad } = attrs as unknown as {
          strides: [number, number, number];
          pad: "same" | "valid";
        };
        return {
          dy: () => tf.conv3d(ddx as tf.Tensor5D, filter, strides, pad),
          filter: () =>
            tf.engine().runKernel("Conv3DBackpropFilterV2", { x: ddx as tf.Tensor5D, dy }, {
              strides,
              pad,
              filterShape: filter.shape,
            }) as tf.Tensor5D,
        };
      },
    });
  }
}
