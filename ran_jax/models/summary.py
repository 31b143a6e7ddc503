"""Parameter and multiply-add counts, per stage, without running the network.

Multiply-adds count convolutions and the classifier (as the paper and the official
counts do); they are read off each layer's shapes under `jax.eval_shape`, so even the
largest model is summarised in seconds on a CPU.
"""

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class LayerCost:
  path: tuple[str, ...]
  params: int
  macs: int


@dataclasses.dataclass(frozen=True)
class ModelCosts:
  """Per-layer MACs, and parameters per top-level block, for one input size."""
  layers: tuple[LayerCost, ...]
  block_params: dict[str, int]
  image_size: tuple[int, int]

  @property
  def total_params(self) -> int:
    return sum(self.block_params.values())

  @property
  def total_macs(self) -> int:
    return sum(layer.macs for layer in self.layers)

  def block_macs(self) -> dict[str, int]:
    totals = {name: 0 for name in self.block_params}
    for layer in self.layers:
      totals[layer.path[0]] = totals.get(layer.path[0], 0) + layer.macs
    return totals


def count_params(tree: Any) -> int:
  """Number of scalars in a pytree of arrays (or shape structs)."""
  return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))


def _layer_cost(module: nn.Module, inputs: jax.Array, outputs: jax.Array) -> LayerCost:
  in_features = inputs.shape[-1]
  if isinstance(module, nn.Conv):
    kernel = math.prod(module.kernel_size) * in_features // module.feature_group_count
    macs = math.prod(outputs.shape[1:]) * kernel
    params = kernel * module.features + (module.features if module.use_bias else 0)
  else:
    macs = in_features * module.features
    params = macs + (module.features if module.use_bias else 0)
  return LayerCost(tuple(module.path), params, macs)


def model_costs(model: nn.Module, image_size: int | Sequence[int], channels: int = 3) -> ModelCosts:
  """Counts `model`'s parameters and multiply-adds for one image of `image_size`."""
  height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
  layers, order, calling = [], {}, set()
  if getattr(model, 'scan', False):  # a scanned run is traced once: count its blocks unrolled
    model = model.clone(scan=False)

  def record(next_fun, args, kwargs, context):
    module_id = id(context.module)
    if context.method_name != '__call__' or module_id in calling:  # e.g. a super() call
      return next_fun(*args, **kwargs)
    calling.add(module_id)
    try:
      out = next_fun(*args, **kwargs)
    finally:
      calling.discard(module_id)
    if context.module.path:
      order.setdefault(context.module.path[0], len(order))
      if isinstance(context.module, (nn.Conv, nn.Dense)):
        layers.append(_layer_cost(context.module, args[0], out))
    return out

  images = jnp.zeros((1, height, width, channels), jnp.float32)
  with nn.intercept_methods(record):
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), images, train=False))
  names = sorted(variables['params'], key=lambda name: order.get(name, len(order)))
  block_params = {name: count_params(variables['params'][name]) for name in names}
  return ModelCosts(tuple(layers), block_params, (height, width))


def format_costs(costs: ModelCosts, title: str = '') -> str:
  """A per-block table of parameters and multiply-adds."""
  macs = costs.block_macs()
  rows = [f'{title} at {costs.image_size[0]}x{costs.image_size[1]}'.strip(),
          f'{"block":<14}{"params":>14}{"GMACs":>12}']
  for name, params in costs.block_params.items():
    rows.append(f'{name:<14}{params:>14,}{macs.get(name, 0) / 1e9:>12.4f}')
  rows.append(f'{"total":<14}{costs.total_params:>14,}{costs.total_macs / 1e9:>12.4f}')
  rows.append(f'multiply-adds: {costs.total_macs:,}')
  return '\n'.join(rows)


def activation_bytes_per_image(model: nn.Module, image_size: int, channels: int = 3) -> int:
  """Bytes per image that training keeps from the forward pass for the backward pass.

  Counted from JAX's saved residuals (shapes only, nothing is computed) as the difference
  between batches of 2 and 1 images, so parameters are left out. It is what rematerialisation
  reduces; XLA may fuse some of it away, and a rematerialised block also holds its own
  activations briefly while it is recomputed.
  """
  image_shape = (image_size, image_size, channels)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0),
                                                jnp.zeros((1, *image_shape)), train=False))
  others = {k: v for k, v in variables.items() if k != 'params'}

  def residual_bytes(batch: int) -> int:
    images = jnp.zeros((batch, *image_shape), jnp.float32)

    def saved_for_backward(params, others):
      def loss(params):
        logits, _ = model.apply({**others, 'params': params}, images, train=True,
                                mutable=['batch_stats'])
        return jnp.sum(logits)
      return jax.vjp(loss, params)[1]

    saved = jax.eval_shape(saved_for_backward, variables['params'], others)
    return sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(saved))

  return residual_bytes(2) - residual_bytes(1)
