"""A network on images: its class probabilities and the soft mask of each attention module,
for image files (`ran_jax.inference_model.load_files`) or the first examples of the eval split.

Shared by `ran_jax.predict`, `ran_jax.visualize` and the training loop's mask images.
"""

import dataclasses
import re
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from ran_jax.data.source import InputSource
from ran_jax.masks.grid import PREDICTIONS_SHOWN, Row
from ran_jax.models import layout

REDUCTIONS = ('mean', 'max')
TOP_K = 5

# (probabilities (N, classes), {module name: mask (N, h, w)}) of (variables, batch).
Forward = Callable[[Any, dict[str, Any]], tuple[jax.Array, dict[str, jax.Array]]]


@dataclasses.dataclass(frozen=True)
class Inputs:
  """Images ready for the network: `batch` as the devices take it, `pixels` (N, S, S, C) the
  same images before normalisation (0-255) for display, `captions` one label per image."""
  batch: dict[str, np.ndarray]
  pixels: np.ndarray
  captions: tuple[str, ...]


def first_eval_examples(source: InputSource, count: int) -> Inputs:
  """The first `count` (or fewer, if the split is smaller) examples of this process's part of
  the eval split of `source`, captioned with their labels."""
  examples = source.eval_examples(count)
  batch = {key: value for key, value in examples.items() if key in ('image', 'crop')}
  captions = tuple(f'eval {i}: label {source.class_names[label]}'
                   for i, label in enumerate(examples['label']))
  return Inputs(batch, examples['image'].astype(np.float32), captions)


def soft_masks(intermediates: Any) -> dict[str, jax.Array]:
  """The sown soft masks by module name ('stage1/module1', ...); empty for attention='none'."""
  flat = flax.traverse_util.flatten_dict(dict(intermediates))
  masks = {}
  for path, values in flat.items():
    if path[-1] == 'soft_mask':  # a scanned run of modules sowed its masks stacked
      masks.update(layout.split_sown('/'.join(path[:-1]), values[-1]))
  return masks


def reduce_channels(mask: jax.Array, reduce: str) -> jax.Array:
  """(N, h, w, C) -> (N, h, w) float32: the mean or the max over channels."""
  mask = mask.astype(jnp.float32)
  if reduce == 'mean':
    return jnp.mean(mask, axis=-1)
  if reduce == 'max':
    return jnp.max(mask, axis=-1)
  raise ValueError(f'reduce={reduce!r} is not valid; choose one of {REDUCTIONS}.')


def make_forward(model: nn.Module, normalizer: Callable, reduce: str = 'mean') -> Forward:
  """A jitted (variables, batch) -> (probabilities, reduced masks) of `model` in eval mode."""
  if reduce not in REDUCTIONS:
    raise ValueError(f'reduce={reduce!r} is not valid; choose one of {REDUCTIONS}.')
  model = model.clone(remat='none')  # the same parameters; no lifted transform to read through

  def forward(variables, batch):
    logits, state = model.apply(variables, normalizer(batch), train=False,
                                mutable=['intermediates'])
    masks = {name: reduce_channels(mask, reduce)
             for name, mask in soft_masks(state.get('intermediates', {})).items()}
    return jax.nn.softmax(logits.astype(jnp.float32), axis=-1), masks

  return jax.jit(forward)


def natural_key(name: str) -> list:
  """Sorts module names in the network's order (stage1/module2 before stage1/module10)."""
  return [int(part) if part.isdigit() else part for part in re.split(r'(\d+)', name)]


def in_network_order(masks: dict[str, Any]) -> list[tuple[str, np.ndarray]]:
  """(name, mask) pairs in the network's order (stage1/module2 before stage1/module10)."""
  return [(name, np.asarray(masks[name])) for name in sorted(masks, key=natural_key)]


def top_classes(probabilities: np.ndarray, class_names: Sequence[str],
                k: int = TOP_K) -> list[tuple[int, str, float]]:
  """The `k` most probable (class, name, probability) of one image, most probable first."""
  order = np.argsort(-np.asarray(probabilities), kind='stable')[:k]
  return [(int(i), class_names[i], float(probabilities[i])) for i in order]


def grid_rows(inputs: Inputs, probabilities: Any, masks: dict[str, Any],
              class_names: Sequence[str]) -> list[Row]:
  """The rows of the attention grid (`ran_jax.masks.grid.render`) of a forward's output."""
  probabilities = np.asarray(probabilities)
  ordered = in_network_order(masks)
  return [Row(pixels, caption,
              [(name, p) for _, name, p in top_classes(probs, class_names, PREDICTIONS_SHOWN)],
              [(name, mask[i]) for name, mask in ordered])
          for i, (pixels, caption, probs) in enumerate(
              zip(inputs.pixels, inputs.captions, probabilities, strict=True))]
