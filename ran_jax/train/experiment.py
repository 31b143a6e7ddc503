"""Turning an experiment config into a model and input settings, with clear errors."""

from typing import Any

import jax
import ml_collections

from ran_jax.data.pipeline import InputConfig
from ran_jax.models import ResidualAttentionNetwork, create_model

def build_model(config: ml_collections.ConfigDict, num_classes: int) -> ResidualAttentionNetwork:
  """The network named by `config.model.name`; its other set fields override the preset."""
  overrides: dict[str, Any] = {
      key: value for key, value in config.model.items() if key != 'name' and value is not None}
  return create_model(config.model.name, num_classes=num_classes, dtype=config.dtype, **overrides)


def num_train_steps(config: ml_collections.ConfigDict, steps_per_epoch: int) -> int:
  """`num_train_steps` when > 0, else `num_epochs` worth of steps."""
  if config.num_train_steps > 0:
    return int(config.num_train_steps)
  if config.num_epochs <= 0:
    raise ValueError('Set num_train_steps > 0 or num_epochs > 0; got num_train_steps='
                     f'{config.num_train_steps}, num_epochs={config.num_epochs}.')
  return max(1, int(config.num_epochs * steps_per_epoch))


def input_config(config: ml_collections.ConfigDict) -> InputConfig:
  """The input settings of this process."""
  for key in ('batch_size', 'eval_batch_size', 'image_size', 'eval_image_size',
              'log_every_steps', 'eval_every_steps', 'checkpoint_every_steps'):
    if config[key] <= 0:
      raise ValueError(f'{key} must be positive, got {config[key]}.')
  return InputConfig(
      dataset=config.dataset, global_batch_size=config.batch_size,
      eval_batch_size=config.eval_batch_size, image_size=config.image_size,
      eval_image_size=config.eval_image_size, seed=config.seed, data_dir=config.data_dir,
      shuffle_buffer=config.shuffle_buffer, process_index=jax.process_index(),
      process_count=jax.process_count())
