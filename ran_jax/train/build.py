"""Building what a config trains: the network, its schedule and optimizer, the train state's
initialiser and restore target, and the jitted steps.

`build_network`, `build_training` and `jit_config_steps` are what every run compiles: the
trainer (`ran_jax.train.loop`, once per start) and the memory planner (`ran_jax.plan`, once
per compile) build through them.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

import ml_collections
import optax
from jax.sharding import Mesh

from ran_jax.data.normalize import InputNormalizer
from ran_jax.experiments.checks import check_model, field_value, set_field
from ran_jax.experiments.network import build_model
from ran_jax.models import ResidualAttentionNetwork
from ran_jax.train import mesh as mesh_lib
from ran_jax.train import optim
from ran_jax.train.optim import epochs_to_steps
from ran_jax.train.state import TrainState, abstract_variables, shardings_of, train_state_factory
from ran_jax.train.steps import jit_steps


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
class Network:
  """A config's network and its abstract variables (shapes and dtypes, traced once)."""
  model: ResidualAttentionNetwork
  variables: dict[str, Any]
  image_shape: tuple[int, int, int]


def build_network(config: ml_collections.ConfigDict, num_classes: int,
                  channels: int) -> Network:
  """The network of `config` for `num_classes` classes of `channels`-channel images."""
  model = build_model(config, num_classes)
  shape = (config.image_size, config.image_size, channels)
  return Network(model, abstract_variables(model, shape), shape)


@dataclasses.dataclass(frozen=True)
class Training:
  """What a config trains, before any state exists.

  Attributes:
    model: the network; schedule: the learning-rate schedule; num_train_steps: the length.
    init: a jitted initialiser of a fresh state, replicated on the mesh.
    target: the abstract state (shapes, dtypes, shardings): the restore target of
      checkpoints and the argument the steps are compiled for.
    other_layout_target: builds the target of the other variable layout (`model.scan`), for a
      checkpoint saved in it.
  """
  model: ResidualAttentionNetwork
  schedule: optax.Schedule
  num_train_steps: int
  init: Callable[[], TrainState]
  target: TrainState
  other_layout_target: Callable[[], TrainState]


def build_training(config: ml_collections.ConfigDict, mesh: Mesh, network: Network, *,
                   steps_per_epoch: float, groups: optim.ParamGroups | None = None) -> Training:
  """The schedule, optimizer and state of `config` for `network`, replicated on `mesh`.

  `steps_per_epoch` is the whole train split's size over the global batch size; `groups`: the
  parameters a fine-tuned run treats apart (None: none).
  """
  total_steps = num_train_steps(config, steps_per_epoch)
  schedule = optim.learning_rate_schedule(config, steps_per_epoch, total_steps)
  tx = optim.make_optimizer(config, schedule, groups)

  def factory(model: ResidualAttentionNetwork, variables: dict[str, Any] | None):
    return train_state_factory(model, tx, mesh, network.image_shape, config.seed, variables,
                               averaged=config.get('ema_decay') is not None)

  def other_layout_target() -> TrainState:
    return factory(network.model.clone(scan=not network.model.scan), None)[1]

  init, target = factory(network.model, network.variables)
  return Training(network.model, schedule, total_steps, init, target, other_layout_target)


def jit_config_steps(config: ml_collections.ConfigDict, training: Training, mesh: Mesh,
                     normalizer: InputNormalizer) -> tuple[Callable, Callable]:
  """The jitted train and eval steps of `config` on `mesh` (batch split over the devices)."""
  return jit_steps(shardings_of(training.target), mesh_lib.data_sharding(mesh),
                   mesh_lib.replicated(mesh), training.schedule, config.label_smoothing,
                   input_fn=normalizer, grad_accum_steps=config.get('grad_accum_steps', 1),
                   ema_decay=config.get('ema_decay'))


def with_data_defaults(config: ml_collections.ConfigDict, defaults: dict[str, Any], *,
                       replace: bool = False) -> ml_collections.ConfigDict:
  """`config` with the fields its data decides (`DataSource.data_defaults`: {dotted field:
  value}) set where they are unset (everywhere with `replace`: what a trained run saved),
  then checked; `config` itself when there are none."""
  if not defaults:
    return config
  config = config.copy_and_resolve_references()
  for field, value in defaults.items():
    if replace or field_value(config, field) is None:
      set_field(config, field, value)
  check_model(config)
  return config
