"""Spatial-size bookkeeping: which input sizes a network's stem and mask branches can handle."""

import math
from collections.abc import Sequence

from ran_jax.models.layers import caffe_pool_size

MAX_CHECKED_SIZE = 4096


def _stem_output(size: int, stem: str) -> int:
  """The side after the stem; 0 if the stem's pooling gets fewer than 2 pixels."""
  if stem == 'imagenet':  # 7x7/2 convolution, then 3x3/2 Caffe max pooling
    size = math.ceil(size / 2)
    return caffe_pool_size(size) if size >= 2 else 0
  return size  # 3x3/1 convolution


def fits(size: int, stem: str, mask_poolings: Sequence[int]) -> bool:
  """Whether one spatial side of `size` survives the stem and every mask pooling.

  Each Caffe pooling needs an input of at least 2 pixels (it rounds up, so 2 -> 1).
  A network whose masks do not pool passes zeros: then only the stem limits the size.
  """
  size = _stem_output(size, stem)
  if size < 1:
    return False
  for stage, poolings in enumerate(mask_poolings):
    if stage > 0:
      size = math.ceil(size / 2)  # transition unit with stride 2
    level = size
    for _ in range(poolings):
      if level < 2:
        return False
      level = caffe_pool_size(level)
  return True


def min_input_size(stem: str, mask_poolings: Sequence[int]) -> int:
  """The smallest image side the network accepts (`fits` is monotone in the size)."""
  for size in range(1, MAX_CHECKED_SIZE):
    if fits(size, stem, mask_poolings):
      return size
  raise ValueError(f'No input size up to {MAX_CHECKED_SIZE} fits mask_poolings={mask_poolings}.')
