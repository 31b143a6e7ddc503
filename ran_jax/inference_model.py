"""The network of a trained run, loaded for inference: the one loader of `ran_jax.predict`,
`ran_jax.visualize` and `ran_jax.export`.

`load_for_inference` reads the network's variables (parameters and BatchNorm statistics, not
the optimizer's state; their moving average where the run kept one, unless asked for the
weights themselves) from the latest checkpoint, and adds what inference needs of the input:
the normalisation, the class names, the channel count and the eval image size, from the run's
record (`run.json`), or, for a run started before runs recorded themselves, from its data
source. `load_files` reads image files as its evaluation would.
"""

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections

from ran_jax.data import images as images_lib
from ran_jax.data import normalize, sources
from ran_jax.data.source import InputFacts
from ran_jax.experiments.network import build_model
from ran_jax.masks.forward import Inputs
from ran_jax.models import ResidualAttentionNetwork
from ran_jax.train import build
from ran_jax.train import mesh as mesh_lib
from ran_jax.train.state import abstract_variables
from ran_jax.workdir import checkpoints, run_record


class MissingCheckpointError(FileNotFoundError):
  """The work directory holds no checkpoint to restore."""


@dataclasses.dataclass(frozen=True)
class InferenceModel:
  """A trained network and what its input needs.

  Attributes:
    config: the run's config, as inference uses it.
    model: the network; variables: its 'params' and 'batch_stats'; step: the checkpoint's.
    averaged: whether `variables` are the moving average of the weights (`config.ema_decay`).
    normalizer: turns a batch of pixels (0-255, with 'crop' for the 'small' recipe) into
      the network's input, as in evaluation.
    class_names: one name per class (from the dataset info).
    channels: image channels (1 for digits, 3 otherwise).
    image_size: the side of the network's evaluation input.
  """
  config: ml_collections.ConfigDict
  model: ResidualAttentionNetwork
  variables: dict[str, Any]
  step: int
  averaged: bool
  normalizer: normalize.InputNormalizer
  class_names: tuple[str, ...]
  channels: int
  image_size: int

  @property
  def recipe(self) -> str:
    """'imagenet' (centre crop and resize) or 'small' (images used at their own size)."""
    return self.normalizer.recipe

  @property
  def pad(self) -> int:
    """The 'small' recipe's crop padding (the 'crop' of an evaluation image is its centre)."""
    return self.normalizer.pad


def check_has_checkpoint(workdir: str) -> None:
  """Raises MissingCheckpointError when `workdir` holds no checkpoint (nothing is read)."""
  if not checkpoints.has_steps(workdir):
    raise _missing(workdir)


def _missing(workdir: str) -> MissingCheckpointError:
  return MissingCheckpointError(
      f'no checkpoint in {workdir}/checkpoints; give the --workdir of a training run, or train '
      'one first with python3 -m ran_jax.main')


def load_for_inference(config: ml_collections.ConfigDict | None, workdir: str, *,
                       average: bool = True) -> InferenceModel:
  """The network of the latest checkpoint in `workdir`, on this host's first device.

  `config`: fields to use at inference (`run_record.resolve`); None for the run's own.
  `average`: the moving average of the weights where the run kept one (else the weights). A run
  that recorded itself needs no dataset. Raises MissingCheckpointError when `workdir` holds no
  checkpoint, `DatasetUnavailableError` when an unrecorded 'small' run's dataset is not
  prepared, and `CheckpointError` when the checkpoint is of another model or damaged.
  """
  check_has_checkpoint(workdir)  # before any data or model work
  config, record = run_record.resolve(config, workdir)
  source = sources.source_of(config)
  if record is not None:
    facts = InputFacts(record.class_names, record.channels, record.normalizer,
                       config.image_size, config.eval_image_size)
  else:
    facts = source.trained_run_facts(workdir)
  config = build.with_data_defaults(config, source.data_defaults(facts), replace=record is None)
  model = build_model(config, facts.num_classes)
  replicated = mesh_lib.replicated(mesh_lib.make_mesh(jax.local_devices()[:1]))

  def target(network: ResidualAttentionNetwork) -> dict[str, Any]:
    shapes = abstract_variables(network, (config.image_size, config.image_size, facts.channels))
    return {key: jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(
        leaf.shape, leaf.dtype, sharding=replicated), shapes[key])
            for key in ('params', 'batch_stats')}

  manager = checkpoints.make_manager(workdir, keep=config.keep_checkpoints)
  try:
    restored = checkpoints.restore_latest_variables(
        manager, target(model), lambda: target(model.clone(scan=not model.scan)),
        average=average)
  finally:
    checkpoints.close_manager(manager)
  if restored is None:
    raise _missing(workdir)
  step, variables, averaged = restored
  return InferenceModel(
      config=config, model=model, variables=variables, step=step, averaged=averaged,
      normalizer=facts.normalizer, class_names=facts.class_names, channels=facts.channels,
      image_size=config.eval_image_size)


def load_files(paths: Sequence[str], loaded: InferenceModel) -> Inputs:
  """Reads and preprocesses image files for `loaded` (as its evaluation does).

  Raises `ImageFileError` naming the first file that is missing, not an image, or smaller
  than the network's minimum input side (checked before any resizing).
  """
  images = []
  for path in paths:
    pixels = images_lib.read_image(path, loaded.channels)
    images_lib.check_min_side(pixels, path, loaded.model.min_input_size)
    images.append(images_lib.eval_pixels(pixels, loaded.recipe, loaded.image_size))
  batch = images_lib.eval_batch(images, loaded.pad)
  return Inputs(batch, batch['image'], tuple(paths))
