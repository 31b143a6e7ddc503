"""The trainer's jitted train step as the benchmark scripts build it.

SGD with Nesterov momentum at a constant learning rate, and uint8 images normalised on the
devices with ImageNet's mean and standard deviation, as in training.
"""

from collections.abc import Callable

import flax.linen as nn
import optax
from jax.sharding import Mesh

from ran_jax.data.normalize import imagenet_normalizer
from ran_jax.train import mesh as mesh_lib
from ran_jax.train.state import TrainState, shardings_of, train_state_factory
from ran_jax.train.steps import jit_steps


def build_train_step(model: nn.Module, mesh: Mesh, image_size: int, grad_accum_steps: int = 1
                     ) -> tuple[Callable, Callable[[], TrainState], TrainState]:
  """(jitted train step, state initialiser, abstract state) for RGB images of `image_size`,
  each update over `grad_accum_steps` micro-batches."""
  schedule = optax.constant_schedule(0.1)
  tx = optax.sgd(schedule, momentum=0.9, nesterov=True)
  init, target = train_state_factory(model, tx, mesh, (image_size, image_size, 3), seed=0)
  step, _ = jit_steps(shardings_of(target), mesh_lib.data_sharding(mesh),
                      mesh_lib.replicated(mesh), schedule, input_fn=imagenet_normalizer(),
                      grad_accum_steps=grad_accum_steps)
  return step, init, target
