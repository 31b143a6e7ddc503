"""Synthetic input held on the devices: the whole trainer with no input pipeline at all.

`dataset='fake'` (configs/fake_data_benchmark.py) trains on one random global batch of uint8
images, made once and kept on the devices, so the run's images/second is what the trainer
adds to the bare jitted step (benchmarks/train_step.py). Imports only JAX and NumPy.
"""

import itertools
from collections.abc import Iterator

import jax
import numpy as np
from jax.sharding import NamedSharding

from ran_jax.data import device_batches, normalize
from ran_jax.data.source import InputFacts

NAME = 'fake'
NUM_CLASSES = 1000
NUM_TRAIN_EXAMPLES = 1_281_167  # epochs are counted as for ImageNet
CLASS_NAMES = tuple(str(i) for i in range(NUM_CLASSES))
CHANNELS = 3


def facts(image_size: int, eval_image_size: int) -> InputFacts:
  """The facts of synthetic input at these sizes (normalised as ImageNet is)."""
  return InputFacts(CLASS_NAMES, CHANNELS, normalize.imagenet_normalizer(), image_size,
                    eval_image_size, NUM_TRAIN_EXAMPLES)


class SyntheticInput:
  """Random ImageNet-shaped batches, transferred once (an `InputSource`)."""

  num_classes = NUM_CLASSES
  class_names = CLASS_NAMES
  channels = CHANNELS
  num_train_examples = NUM_TRAIN_EXAMPLES

  def __init__(self, global_batch_size: int, eval_batch_size: int, image_size: int,
               eval_image_size: int, seed: int = 0):
    self.global_batch_size = global_batch_size
    self.eval_batch_size = eval_batch_size
    self.image_size = image_size
    self.eval_image_size = eval_image_size
    self.rng = np.random.default_rng([seed, jax.process_index()])

  def _local_batch(self, global_size: int, image_size: int) -> dict[str, np.ndarray]:
    size = global_size // jax.process_count()
    return {'image': self.rng.integers(0, 256, (size, image_size, image_size, self.channels),
                                       dtype=np.uint8),
            'label': self.rng.integers(0, self.num_classes, size).astype(np.int32)}

  @property
  def facts(self) -> InputFacts:
    return facts(self.image_size, self.eval_image_size)

  def normalizer(self) -> normalize.InputNormalizer:
    """ImageNet's normalisation, as for real ImageNet batches."""
    return normalize.imagenet_normalizer()

  def eval_examples(self, count: int) -> dict[str, np.ndarray]:
    """Synthetic input has no eval images (`SyntheticSource.has_eval_images`)."""
    raise ValueError(f'the {NAME!r} dataset has no eval images to show')

  def train_batches(self, start_step: int, sharding: NamedSharding,
                    prefetch: int = 2) -> Iterator[dict[str, jax.Array]]:
    """The same device-resident batch at every step (`start_step` and `prefetch` unused)."""
    del start_step, prefetch
    batch = self._local_batch(self.global_batch_size, self.image_size)
    return itertools.repeat(device_batches.to_global(batch, sharding))

  def eval_batches(self, sharding: NamedSharding) -> Iterator[dict[str, jax.Array]]:
    """One device-resident eval batch, every example counted."""
    batch = self._local_batch(self.eval_batch_size, self.eval_image_size)
    batch['mask'] = np.ones(batch['label'].shape, bool)
    return iter([device_batches.to_global(batch, sharding)])
