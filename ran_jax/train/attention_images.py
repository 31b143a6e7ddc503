"""The soft masks of a few fixed eval images, written to TensorBoard at each evaluation.

`config.attention_images` images (the first ones of the eval split) go through the network
after each evaluation; the grid of `ran_jax.attention_grid` (each image with its top classes,
then each module's mask over it) is written as the image 'attention_masks'. Only process 0
computes it, from its own copy of the replicated state with a forward on one of its devices,
so no other process takes part.
"""

import logging
from typing import Any

import jax
import ml_collections

from ran_jax import attention_grid, inference
from ran_jax.data import synthetic
from ran_jax.models import ResidualAttentionNetwork
from ran_jax.train.state import TrainState

IMAGE_KEY = 'attention_masks'


class AttentionImages:
  """Renders and writes the mask grid of fixed eval images (on process 0)."""

  def __init__(self, model: ResidualAttentionNetwork, pipeline: Any, count: int):
    self.class_names = tuple(pipeline.builder.info.features['label'].names)
    self.inputs = inference.first_eval_examples(pipeline, count, self.class_names)
    self.forward = inference.make_forward(model, pipeline.device_input_fn())

  def render(self, state: TrainState) -> Any:
    """The grid of `state`'s network as (1, H, W, 3) uint8, from a copy of the state held on
    this process's first device."""
    variables = jax.tree.map(lambda x: x.addressable_data(0),
                             {'params': state.params, 'batch_stats': state.batch_stats})
    probabilities, masks = jax.device_get(self.forward(variables, self.inputs.batch))
    rows = inference.grid_rows(self.inputs, probabilities, masks, self.class_names)
    return attention_grid.render(rows, self.inputs.pixels.shape[1])[None]

  def write(self, writer: Any, step: int, state: TrainState) -> None:
    writer.write_images(step, {IMAGE_KEY: self.render(state)})


def make(config: ml_collections.ConfigDict, model: ResidualAttentionNetwork,
         pipeline: Any) -> AttentionImages | None:
  """The writer of `config.attention_images` mask images, or None when there is nothing to
  write here: 0 images asked, synthetic data, a process other than 0, or a network without
  attention masks."""
  if (config.attention_images == 0 or config.dataset == synthetic.NAME or
      jax.process_index() > 0):
    return None
  if not model.has_soft_masks:
    logging.info('The network has no attention masks; no mask images are written.')
    return None
  return AttentionImages(model, pipeline, config.attention_images)
