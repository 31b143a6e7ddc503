"""Turning an experiment config into a model, its train state and steps, and its input.

`build_training` and `jit_config_steps` are what every run compiles: the trainer
(`ran_jax.train.loop`), the inference loader and the memory planner (`ran_jax.plan`) all
build the model, optimizer, schedule, state and steps through them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING

import jax
import ml_collections
import optax
from jax.sharding import Mesh

from ran_jax.data import synthetic
from ran_jax.data.normalize import InputNormalizer
from ran_jax.models import ResidualAttentionNetwork, create_model
from ran_jax.train import mesh as mesh_lib
from ran_jax.train import optim
from ran_jax.data.datasets import FOLDER
from ran_jax.train.config_checks import check_model, model_overrides
from ran_jax.train.optim import epochs_to_steps
from ran_jax.train.state import TrainState, shardings_of, train_state_factory
from ran_jax.train.steps import jit_steps

if TYPE_CHECKING:  # TensorFlow is imported only when a TFDS pipeline is built
  from ran_jax.data.pipeline import InputConfig, InputPipeline


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


@dataclasses.dataclass(frozen=True)
class Training:
  """What a config trains, before any state exists.

  Attributes:
    model: the network; schedule: the learning-rate schedule; num_train_steps: the length.
    init: a jitted initialiser of a fresh state, replicated on the mesh.
    target: the abstract state (shapes, dtypes, shardings): the restore target of
      checkpoints and the argument the steps are compiled for.
  """
  model: ResidualAttentionNetwork
  schedule: optax.Schedule
  num_train_steps: int
  init: Callable[[], TrainState]
  target: TrainState


def build_training(config: ml_collections.ConfigDict, mesh: Mesh, *, num_classes: int,
                   channels: int, steps_per_epoch: float,
                   groups: optim.ParamGroups | None = None) -> Training:
  """The network, schedule, optimizer and state of `config`, replicated on `mesh`.

  `steps_per_epoch` is the whole train split's size over the global batch size; `groups`: the
  parameters a fine-tuned run treats apart (None: none).
  """
  model = build_model(config, num_classes)
  total_steps = num_train_steps(config, steps_per_epoch)
  schedule = optim.learning_rate_schedule(config, steps_per_epoch, total_steps)
  tx = optim.make_optimizer(config, schedule, groups)
  init, target = train_state_factory(
      model, tx, mesh, (config.image_size, config.image_size, channels), config.seed)
  return Training(model, schedule, total_steps, init, target)


def jit_config_steps(config: ml_collections.ConfigDict, training: Training, mesh: Mesh,
                     input_fn: InputNormalizer) -> tuple[Callable, Callable]:
  """The jitted train and eval steps of `config` on `mesh` (batch split over the devices)."""
  return jit_steps(shardings_of(training.target), mesh_lib.data_sharding(mesh),
                   mesh_lib.replicated(mesh), training.schedule, config.label_smoothing,
                   input_fn=input_fn)


def input_config(config: ml_collections.ConfigDict) -> InputConfig:
  """The input settings of this process (the fields are checked by `config_checks`)."""
  from ran_jax.data.image_folder import FolderOptions
  from ran_jax.data.pipeline import InputConfig
  folder = None
  if config.dataset == FOLDER:
    folder = FolderOptions(config.folder, config.val_fraction, config.split_seed,
                           config.image_layout, config.flip)
  return InputConfig(
      dataset=config.dataset, global_batch_size=config.batch_size,
      eval_batch_size=config.eval_batch_size, image_size=config.image_size,
      eval_image_size=config.eval_image_size, seed=config.seed, data_dir=config.data_dir,
      shuffle_buffer=config.shuffle_buffer, process_index=jax.process_index(),
      process_count=jax.process_count(), label_noise=config.label_noise,
      label_noise_seed=config.label_noise_seed, folder=folder)


def with_data_defaults(config: ml_collections.ConfigDict, *, recipe: str, image_size: int,
                       eval_image_size: int) -> ml_collections.ConfigDict:
  """`config` with the fields an image folder leaves to its data set: the image sizes and the
  network of the recipe ('small': attention56_cifar, 'imagenet': attention56); then checked.

  Other datasets' configs are returned as they are.
  """
  if config.dataset != FOLDER:
    return config
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.image_size, config.eval_image_size = image_size, eval_image_size
    if config.model.name is None:
      config.model.name = 'attention56_cifar' if recipe == 'small' else 'attention56'
  if recipe == 'small' and eval_image_size != image_size:
    raise ValueError(f'eval_image_size={eval_image_size} is not allowed: the small-image layout '
                     f'evaluates at its training size; leave it unset (or set it to '
                     f'image_size={image_size})')
  check_model(config)
  return config


def make_input(config: ml_collections.ConfigDict) -> InputPipeline | synthetic.SyntheticInput:
  """The input of this process: a TFDS pipeline, or device-resident synthetic batches."""
  if config.dataset == synthetic.NAME:
    return synthetic.SyntheticInput(config.batch_size, config.eval_batch_size,
                                    config.image_size, config.eval_image_size, config.seed)
  from ran_jax.data.pipeline import InputPipeline, hide_accelerators_from_tensorflow
  hide_accelerators_from_tensorflow()
  return InputPipeline(input_config(config))
