"""A trained network as a directory that any JAX project loads (`python -m ran_jax.export`
writes it):

    model, variables, preprocess = ran_jax.models.load('exported/')
    probabilities = jax.nn.softmax(model.apply(variables, preprocess(images), train=False))

- `weights.npz`: the float32 'params' and 'batch_stats', one array per variable path
  ('params/stem_conv/kernel', ...), in the default (unrolled) variable layout;
- `model.json`: `create_model`'s name, number of classes and overrides, the input (image size,
  channels, recipe), the normalisation arrays' names, class names, the training step and the
  run's evaluation results;
- `inference.jax` (written by the export tool): the whole inference function serialised with
  `jax.export`, uint8 images -> probabilities, run with nothing but JAX and NumPy.

`preprocess` takes uint8 (or 0-255 float) images of the network's input size, (N, S, S, C),
and returns the network's float32 input: `(images / divisor - mean) / std` with the run's
statistics (the 'small' recipe's mean image, per-channel ImageNet or measured statistics).
Imports only JAX, Flax and NumPy.
"""

import json
import os
import zipfile
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np

from ran_jax.models.network import ResidualAttentionNetwork
from ran_jax.models.presets import create_model

FORMAT_VERSION = 1
MODEL_JSON = 'model.json'
WEIGHTS = 'weights.npz'
FUNCTION = 'inference.jax'
NORMALIZATION = ('input_divisor', 'input_mean', 'input_std')  # arrays in weights.npz


class ExportError(ValueError):
  """An export directory that cannot be loaded; the message names the file and what to do."""


def save(directory: str, description: dict[str, Any], variables: dict[str, Any],
         normalization: dict[str, np.ndarray]) -> None:
  """Writes `model.json` (`description` and the format version) and `weights.npz` (the
  variables and the `NORMALIZATION` arrays) into `directory`."""
  os.makedirs(directory, exist_ok=True)
  flat = flax.traverse_util.flatten_dict(jax.device_get(variables), sep='/')
  arrays = {path: np.asarray(value, np.float32) for path, value in flat.items()}
  arrays.update({name: np.asarray(normalization[name], np.float32) for name in NORMALIZATION})
  np.savez(os.path.join(directory, WEIGHTS), **arrays)
  with open(os.path.join(directory, MODEL_JSON), 'w', encoding='utf-8') as file:
    json.dump({'format_version': FORMAT_VERSION, **description}, file, indent=1)


def read_description(directory: str) -> dict[str, Any]:
  """`model.json` of an export directory, checked for its format version."""
  path = os.path.join(directory, MODEL_JSON)
  try:
    with open(path, encoding='utf-8') as file:
      description = json.load(file)
  except FileNotFoundError:
    raise ExportError(f'{path} is missing: give a directory written by python -m '
                      'ran_jax.export') from None
  except (OSError, ValueError) as error:
    raise ExportError(f'{path} cannot be read ({error}); export the run again') from None
  version = description.get('format_version') if isinstance(description, dict) else None
  if version != FORMAT_VERSION:
    raise ExportError(f'{path} is of export format {version!r}; this ran_jax reads format '
                      f'{FORMAT_VERSION}: export the run again with this version')
  return description


def load(directory: str) -> tuple[ResidualAttentionNetwork, dict[str, Any],
                                  Callable[[Any], jax.Array]]:
  """(model, variables, preprocess) of an export directory (see the module docstring).

  Raises ExportError naming the file when the directory is incomplete, damaged or of another
  format version.
  """
  description = read_description(directory)
  path = os.path.join(directory, WEIGHTS)
  try:
    with np.load(path) as stored:
      arrays = {name: stored[name] for name in stored.files}
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
    raise ExportError(f'{path} cannot be read ({error}); export the run again') from None
  missing = [name for name in NORMALIZATION if name not in arrays]
  try:
    spec = description['model']
    model = create_model(spec['name'], num_classes=spec['num_classes'], **spec['overrides'])
  except (KeyError, TypeError, ValueError) as error:
    raise ExportError(f'{os.path.join(directory, MODEL_JSON)} does not describe a network '
                      f'({type(error).__name__}: {error}); export the run again') from None
  images = jnp.zeros((1, description['input']['image_size'], description['input']['image_size'],
                      description['input']['channels']), jnp.float32)
  expected = flax.traverse_util.flatten_dict(
      jax.eval_shape(lambda: model.init(jax.random.key(0), images, train=False)), sep='/')
  missing += [name for name in expected if name not in arrays]
  if missing:
    raise ExportError(f'{path} lacks {len(missing)} arrays ({", ".join(missing[:3])}, ...); '
                      'export the run again')
  for name, shape in expected.items():
    if arrays[name].shape != shape.shape:
      raise ExportError(f'{path}: {name} is {arrays[name].shape}, the network needs '
                        f'{shape.shape}; export the run again')
  variables = flax.traverse_util.unflatten_dict(
      {name: jnp.asarray(arrays[name]) for name in expected}, sep='/')
  divisor, mean, std = (jnp.asarray(arrays[name]) for name in NORMALIZATION)

  def preprocess(images: Any) -> jax.Array:
    return (jnp.asarray(images, jnp.float32) / divisor - mean) / std

  return model, variables, preprocess
