"""The input a training run needs, whatever makes it: `InputPipeline` (TFDS, tf.data) and
`SyntheticInput` (device-resident random batches) both provide it. Imports no TensorFlow."""

from collections.abc import Iterator
from typing import Protocol

import jax
from jax.sharding import NamedSharding

from ran_jax.data.normalize import InputNormalizer


class InputSource(Protocol):
  """The batches of one process, as global arrays on the devices, and what they hold.

  Attributes:
    num_classes: classes of the labels; channels: of the images.
    num_train_examples: the size of the whole train split (epochs count it).
    class_names: one name per class, in label order.
  """
  num_classes: int
  channels: int
  num_train_examples: int
  class_names: tuple[str, ...]

  def device_input_fn(self) -> InputNormalizer:
    """The normalisation the devices apply to these batches (inside the jitted steps)."""

  def train_batches(self, start_step: int, sharding: NamedSharding,
                    prefetch: int = 2) -> Iterator[dict[str, jax.Array]]:
    """Global training batches from step `start_step` on, `prefetch` in flight."""

  def eval_batches(self, sharding: NamedSharding) -> Iterator[dict[str, jax.Array]]:
    """Global eval batches; examples with `mask` False are padding."""
