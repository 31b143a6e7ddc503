"""The train state and its creation directly onto the mesh."""

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state
from jax.sharding import Mesh

from ran_jax.train.compiler_options import QUICK_COMPILE
from ran_jax.train.mesh import replicated


class TrainState(train_state.TrainState):
  """Step, parameters and optimizer state, plus BatchNorm statistics."""
  batch_stats: Any = None

  @property
  def variables(self) -> dict[str, Any]:
    """The network's variables, as `model.apply` takes them."""
    return {'params': self.params, 'batch_stats': self.batch_stats}

  def averaged(self) -> dict[str, Any] | None:
    """The moving average of the variables (`AveragedTrainState`); None: none is kept."""
    return None

  def with_variables(self, variables: dict[str, Any]) -> 'TrainState':
    """This state with the network's variables replaced (same structure: the same compiled
    eval step evaluates it)."""
    return self.replace(params=variables['params'], batch_stats=variables['batch_stats'])


class AveragedTrainState(TrainState):
  """A train state that also keeps an exponential moving average of the network's variables
  (parameters and BatchNorm statistics, `config.ema_decay`), placed like them."""
  ema: Any = None

  def averaged(self) -> dict[str, Any]:
    return self.ema


def abstract_variables(model: nn.Module, image_shape: tuple[int, int, int]) -> dict[str, Any]:
  """The shapes and dtypes of `model`'s variables for images of `image_shape` (traced once,
  nothing computed)."""
  images = jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)
  return jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), images)


def train_state_factory(model: nn.Module, tx: optax.GradientTransformation, mesh: Mesh,
                        image_shape: tuple[int, int, int], seed: int,
                        variables: dict[str, Any] | None = None, *, averaged: bool = False
                        ) -> tuple[Callable[[], TrainState], TrainState]:
  """A jitted initialiser placing the state replicated on `mesh`, and the abstract state.

  The abstract state (shape structs carrying the target shardings) is also the restore target
  of checkpoints, so nothing is initialised when resuming. `variables`: the model's abstract
  variables when already traced (`abstract_variables`); the model is then not traced again.
  `averaged`: an `AveragedTrainState`, its average starting at the initial variables.
  """
  def create(given: dict[str, Any]) -> TrainState:
    return _state(model, tx, given, averaged)

  def init() -> TrainState:
    images = jnp.zeros((1, *image_shape), jnp.float32)
    return create(model.init(jax.random.key(seed), images, train=False))

  abstract = jax.eval_shape(init) if variables is None else jax.eval_shape(create, variables)
  shardings = jax.tree.map(lambda _: replicated(mesh), abstract)
  target = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        abstract, shardings)
  return jax.jit(init, out_shardings=shardings, compiler_options=QUICK_COMPILE), target


def _state(model: nn.Module, tx: optax.GradientTransformation, variables: dict[str, Any],
           averaged: bool) -> TrainState:
  fields = dict(apply_fn=model.apply, params=variables['params'], tx=tx,
                batch_stats=variables.get('batch_stats', {}))
  if not averaged:
    return TrainState.create(**fields)
  return AveragedTrainState.create(**fields, ema={'params': fields['params'],
                                                  'batch_stats': fields['batch_stats']})


def shardings_of(target: TrainState) -> Any:
  """The shardings carried by an abstract state."""
  return jax.tree.map(lambda x: x.sharding, target)
