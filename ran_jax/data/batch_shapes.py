"""The arrays of a batch as the input sends them to the devices: names, shapes and dtypes.

Known without reading any data and without TensorFlow, so that the steps can be compiled
ahead of time for devices this host does not have (`ran_jax.plan`); tests check them against
the batches of the pipelines and of the synthetic input.
"""

import jax
import numpy as np

from ran_jax.data import synthetic
from ran_jax.data.datasets import get_spec


def batch_shapes(dataset: str, batch_size: int, image_size: int, *,
                 train: bool) -> dict[str, jax.ShapeDtypeStruct]:
  """The global batch of `dataset` for the train step (`train`) or the eval step.

  Images are uint8; the 'small' recipe adds each example's crop (top, left, flipped);
  evaluation batches add `mask`.
  """
  if dataset == synthetic.NAME:
    channels, small = synthetic.SyntheticInput.channels, False
  else:
    spec = get_spec(dataset)
    channels, small = spec.channels, spec.recipe == 'small'
  shapes = {'image': jax.ShapeDtypeStruct((batch_size, image_size, image_size, channels),
                                          np.uint8),
            'label': jax.ShapeDtypeStruct((batch_size,), np.int32)}
  if small:
    shapes['crop'] = jax.ShapeDtypeStruct((batch_size, 3), np.int32)
  if not train:
    shapes['mask'] = jax.ShapeDtypeStruct((batch_size,), np.bool_)
  return shapes
