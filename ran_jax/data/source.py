"""The input of a run: what every kind of data source opens (`InputSource`) and the facts about
it that the model, the schedule, planning and inference need (`InputFacts`). Imports no
TensorFlow."""

import dataclasses
from collections.abc import Iterator
from typing import Protocol

import jax
import numpy as np
from jax.sharding import NamedSharding

from ran_jax.data.normalize import InputNormalizer


@dataclasses.dataclass(frozen=True)
class InputFacts:
  """What a run's input is, as the network and its inference see it.

  Attributes:
    class_names: one name per class, in label order.
    channels: of the images.
    normalizer: the normalisation the devices apply (its recipe and pad included).
    image_size / eval_image_size: the sides of the training and evaluation images.
    num_train_examples: the size of the whole train split (epochs count it); None where it is
      not known (a run's record does not keep it).
  """
  class_names: tuple[str, ...]
  channels: int
  normalizer: InputNormalizer
  image_size: int
  eval_image_size: int
  num_train_examples: int | None = None

  @property
  def num_classes(self) -> int:
    return len(self.class_names)


def batch_shapes(facts: InputFacts, batch_size: int, image_size: int, *,
                 train: bool) -> dict[str, jax.ShapeDtypeStruct]:
  """The global batch of an input with `facts` for the train step (`train`) or the eval step:
  uint8 images and labels; the 'small' recipe adds each example's crop (top, left, flipped),
  evaluation `mask`."""
  shapes = {'image': jax.ShapeDtypeStruct(
      (batch_size, image_size, image_size, facts.channels), np.uint8),
            'label': jax.ShapeDtypeStruct((batch_size,), np.int32)}
  if facts.normalizer.crops:
    shapes['crop'] = jax.ShapeDtypeStruct((batch_size, 3), np.int32)
  if not train:
    shapes['mask'] = jax.ShapeDtypeStruct((batch_size,), np.bool_)
  return shapes


class InputSource(Protocol):
  """The opened input of one process: its batches, as global arrays on the devices.

  Attributes:
    num_classes: classes of the labels; channels: of the images; class_names: one per class.
    num_train_examples: the size of the whole train split (epochs count it).
    image_size / eval_image_size: the sides of the training and evaluation images.
  """
  num_classes: int
  channels: int
  num_train_examples: int
  class_names: tuple[str, ...]
  image_size: int
  eval_image_size: int

  @property
  def facts(self) -> InputFacts:
    """What this input is (see `InputFacts`)."""

  def normalizer(self) -> InputNormalizer:
    """The normalisation the devices apply to these batches (inside the jitted steps)."""

  def train_batches(self, start_step: int, sharding: NamedSharding,
                    prefetch: int = 2) -> Iterator[dict[str, jax.Array]]:
    """Global training batches from step `start_step` on, `prefetch` in flight."""

  def eval_batches(self, sharding: NamedSharding) -> Iterator[dict[str, jax.Array]]:
    """Global eval batches; examples with `mask` False are padding."""

  def eval_examples(self, count: int) -> dict[str, np.ndarray]:
    """The first `count` (or fewer) real examples of this process's part of the eval split,
    stacked: 'image', 'label' and, for the 'small' recipe, 'crop'."""
