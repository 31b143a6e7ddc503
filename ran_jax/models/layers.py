"""Caffe-exact spatial operations: ceil-mode max pooling and align-corners bilinear resize.

The official models were trained in Caffe, whose pooling rounds the output size up and
whose `Interp` layer resizes bilinearly with the corner pixels aligned. Both are
reproduced here for any input size, odd and non-square included.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

POOL_WINDOW = 3
POOL_STRIDE = 2


def caffe_pool_size(size: int, window: int = POOL_WINDOW, stride: int = POOL_STRIDE) -> int:
  """Output length of Caffe max pooling (no padding, rounding up)."""
  return math.ceil((size - window) / stride) + 1


def caffe_max_pool(x: jax.Array, window: int = POOL_WINDOW, stride: int = POOL_STRIDE) -> jax.Array:
  """3x3/2 max pooling over NHWC input with Caffe's output size (rounded up).

  Windows that run past the bottom or right edge see only the valid pixels, and the
  gradient goes to the first maximum of each window in row-major order, both as in Caffe.
  Written as a running maximum over the window's strided slices: XLA fuses it, where a
  `reduce_window` needs a slow select-and-scatter for its gradient on CPUs and GPUs.
  """
  _, height, width, _ = x.shape
  out_h, out_w = caffe_pool_size(height, window, stride), caffe_pool_size(width, window, stride)
  pad_h = max(0, (out_h - 1) * stride + window - height)
  pad_w = max(0, (out_w - 1) * stride + window - width)
  x = jnp.pad(x, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), constant_values=-jnp.inf)
  result = None
  for dy in range(window):
    for dx in range(window):
      candidate = jax.lax.slice(
          x, (0, dy, dx, 0), (x.shape[0], dy + (out_h - 1) * stride + 1,
                              dx + (out_w - 1) * stride + 1, x.shape[3]), (1, stride, stride, 1))
      # Strictly greater: on ties the earlier position keeps the maximum and its gradient.
      result = candidate if result is None else jnp.where(candidate > result, candidate, result)
  return result


@functools.cache
def align_corners_matrix(in_size: int, out_size: int) -> np.ndarray:
  """(out_size, in_size) bilinear interpolation weights with aligned corners (Caffe Interp)."""
  weights = np.zeros((out_size, in_size), np.float32)
  scale = (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
  for i in range(out_size):
    src = i * scale
    lo = min(int(math.floor(src)), in_size - 1)
    hi = min(lo + 1, in_size - 1)
    frac = src - lo
    weights[i, lo] += 1.0 - frac
    weights[i, hi] += frac
  return weights


def interp_like(x: jax.Array, height: int, width: int) -> jax.Array:
  """Bilinearly resizes NHWC `x` to (height, width) exactly as Caffe's Interp layer.

  Implemented as two small interpolation matrices applied with einsum, which is exact,
  differentiable and fast on accelerators (unlike `jax.image.resize`, which uses
  half-pixel centres).
  """
  _, in_h, in_w, _ = x.shape
  if (in_h, in_w) == (height, width):
    return x
  rows = jnp.asarray(align_corners_matrix(in_h, height), x.dtype)
  cols = jnp.asarray(align_corners_matrix(in_w, width), x.dtype)
  x = jnp.einsum('oh,bhwc->bowc', rows, x)
  return jnp.einsum('pw,bowc->bopc', cols, x)
