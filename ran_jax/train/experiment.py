"""Turning an experiment config into a model and input settings, with clear errors."""

import jax
import ml_collections

from ran_jax.data import synthetic
from ran_jax.data.pipeline import InputConfig, InputPipeline
from ran_jax.models import ResidualAttentionNetwork, create_model
from ran_jax.train.config_checks import model_overrides
from ran_jax.train.optim import epochs_to_steps


def build_model(config: ml_collections.ConfigDict, num_classes: int) -> ResidualAttentionNetwork:
  """The network named by `config.model.name`; its other set fields override the preset."""
  return create_model(config.model.name, num_classes=num_classes, dtype=config.dtype,
                      **model_overrides(config))


def num_train_steps(config: ml_collections.ConfigDict, steps_per_epoch: float) -> int:
  """`num_train_steps` when > 0, else `num_epochs` in steps (rounded to the nearest step).

  `steps_per_epoch` is the size of the whole train split over the global batch size.
  """
  if config.num_train_steps > 0:
    return int(config.num_train_steps)
  if config.num_epochs <= 0:
    raise ValueError('Set num_train_steps > 0 or num_epochs > 0; got num_train_steps='
                     f'{config.num_train_steps}, num_epochs={config.num_epochs}.')
  return max(1, epochs_to_steps(config.num_epochs, steps_per_epoch))


def input_config(config: ml_collections.ConfigDict) -> InputConfig:
  """The input settings of this process (the fields are checked by `config_checks`)."""
  return InputConfig(
      dataset=config.dataset, global_batch_size=config.batch_size,
      eval_batch_size=config.eval_batch_size, image_size=config.image_size,
      eval_image_size=config.eval_image_size, seed=config.seed, data_dir=config.data_dir,
      shuffle_buffer=config.shuffle_buffer, process_index=jax.process_index(),
      process_count=jax.process_count(), label_noise=config.label_noise,
      label_noise_seed=config.label_noise_seed)


def make_input(config: ml_collections.ConfigDict) -> InputPipeline | synthetic.SyntheticInput:
  """The input of this process: a TFDS pipeline, or device-resident synthetic batches."""
  if config.dataset == synthetic.NAME:
    return synthetic.SyntheticInput(config.batch_size, config.eval_batch_size,
                                    config.image_size, config.eval_image_size, config.seed)
  return InputPipeline(input_config(config))
