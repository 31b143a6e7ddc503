"""The soft masks of a few fixed eval images, written to TensorBoard at each evaluation.

`config.attention_images` images (the first ones of the eval split) go through the network
after each evaluation; the grid of `ran_jax.masks.grid` (each image with its top classes, then
each module's mask over it) is written as the image 'attention_masks'. Only process 0 computes
it, on one of its devices, with a forward compiled when the run starts (while every process
compiles its steps), so that no evaluation waits for a compile on process 0 alone.
"""

import logging
from typing import Any

import jax
import ml_collections
import numpy as np

from ran_jax.data.source import InputSource
from ran_jax.masks import forward as forward_lib
from ran_jax.masks import grid as grid_lib
from ran_jax.models import ResidualAttentionNetwork
from ran_jax.reporting.writers import MetricWriter

IMAGE_KEY = 'attention_masks'


class AttentionImages:
  """Renders and writes the mask grid of fixed eval images (on process 0)."""

  def __init__(self, model: ResidualAttentionNetwork, source: InputSource, count: int,
               variables: Any):
    """`variables`: the network's abstract variables (shapes and dtypes) the forward is
    compiled for."""
    self.class_names = source.class_names
    self.inputs = forward_lib.first_eval_examples(source, count)
    self.device = jax.local_devices()[0]
    self.batch = jax.device_put(self.inputs.batch, self.device)
    on_device = jax.sharding.SingleDeviceSharding(self.device)
    variables = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=on_device), variables)
    self.forward = forward_lib.make_forward(model, source.normalizer()).lower(
        variables, self.batch).compile()

  def render(self, variables: Any) -> np.ndarray:
    """The grid of the network with `variables` as (1, H, W, 3) uint8, from a copy of them held
    on this process's first device."""
    variables = jax.tree.map(lambda x: jax.device_put(x.addressable_data(0), self.device),
                             variables)
    probabilities, masks = jax.device_get(self.forward(variables, self.batch))
    rows = forward_lib.grid_rows(self.inputs, probabilities, masks, self.class_names)
    return grid_lib.render(rows, self.inputs.pixels.shape[1])[None]

  def write(self, writer: MetricWriter, step: int, variables: Any) -> None:
    writer.write_images(step, {IMAGE_KEY: self.render(variables)})


def make(config: ml_collections.ConfigDict, model: ResidualAttentionNetwork,
         source: InputSource, variables: Any) -> AttentionImages | None:
  """The writer of `config.attention_images` mask images from `source`'s eval images, or None
  when there is nothing to write here: 0 images asked, a process other than 0, or a network
  without attention masks."""
  if config.attention_images == 0 or jax.process_index() > 0:
    return None
  if not model.has_soft_masks:
    logging.info('The network has no attention masks; no mask images are written.')
    return None
  return AttentionImages(model, source, config.attention_images, variables)
