"""The network of a trained run, loaded for inference: the one loader of `ran_jax.predict`,
`ran_jax.visualize` and the training loop's mask images.

`load_for_inference` restores the latest checkpoint through the loader training resumes with
(`ran_jax.train.restore.restore_train_state`), and adds what inference needs: the input
normalisation, the class names, the channel count and the eval image size. `load_files` reads
image files as its evaluation would.
"""

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from ran_jax.data import builders, normalize, saved_dataset, synthetic
from ran_jax.data import images as images_lib
from ran_jax.data import pipeline as pipeline_lib
from ran_jax.data.datasets import FOLDER, get_spec
from ran_jax.masks.forward import Inputs
from ran_jax.models import ResidualAttentionNetwork
from ran_jax.train import checkpoint, experiment, init_from, restore, run_record
from ran_jax.train import mesh as mesh_lib


class MissingCheckpointError(FileNotFoundError):
  """The work directory holds no checkpoint to restore."""


@dataclasses.dataclass(frozen=True)
class InferenceModel:
  """A trained network and what its input needs.

  Attributes:
    config: the run's config, as inference uses it.
    model: the network; variables: its 'params' and 'batch_stats'; step: the checkpoint's.
    normalizer: turns a batch of pixels (0-255, with 'crop' for the 'small' recipe) into
      the network's input, as in evaluation.
    class_names: one name per class (from the dataset info).
    channels: image channels (1 for digits, 3 otherwise).
    image_size: the side of the network's evaluation input.
    recipe: 'imagenet' (centre crop and resize) or 'small' (images used at their own size).
    pad: the 'small' recipe's crop padding (the 'crop' of an evaluation image is its centre).
  """
  config: ml_collections.ConfigDict
  model: ResidualAttentionNetwork
  variables: dict[str, Any]
  step: int
  normalizer: normalize.InputNormalizer
  class_names: tuple[str, ...]
  channels: int
  image_size: int
  recipe: str
  pad: int


@dataclasses.dataclass(frozen=True)
class _DataInfo:
  class_names: tuple[str, ...]
  channels: int
  recipe: str
  pad: int
  normalizer: normalize.InputNormalizer
  steps_per_epoch: float
  image_size: int
  eval_image_size: int


def _data_info(config: ml_collections.ConfigDict, workdir: str,
               pipeline: pipeline_lib.InputPipeline | None) -> _DataInfo:
  """What inference needs from the dataset; the 'small' recipe needs its mean image, a folder of
  images what the run saved of it."""
  if pipeline is not None:
    return _DataInfo(pipeline.class_names, pipeline.channels, pipeline.spec.recipe,
                     pipeline.spec.pad, pipeline.device_input_fn(),
                     pipeline.num_train_examples / config.batch_size, pipeline.image_size,
                     pipeline.eval_image_size)
  sizes = config.image_size, config.eval_image_size
  if config.dataset == synthetic.NAME:
    fake = synthetic.SyntheticInput
    return _DataInfo(fake.class_names, fake.channels, 'imagenet', 0,
                     normalize.imagenet_normalizer(), fake.num_train_examples / config.batch_size,
                     *sizes)
  if config.dataset == FOLDER:
    saved = saved_dataset.load(workdir)
    return _DataInfo(saved.class_names, saved.spec.channels, saved.spec.recipe, saved.spec.pad,
                     saved.normalizer(), saved.spec.num_train_examples / config.batch_size,
                     saved.image_size, saved.eval_image_size)
  spec = get_spec(config.dataset)
  mean = None
  if spec.recipe == 'imagenet':  # the class names are in the code: no data needed
    builder = builders.make_builder(spec, config.data_dir)
  else:
    try:  # an embedded dataset is prepared in seconds; the others are downloads
      builder = builders.load_builder(spec, config.data_dir, prepare_if_needed=spec.embedded)
    except builders.DatasetUnavailableError as error:
      raise builders.DatasetUnavailableError(
          f'the {config.dataset} network normalises its input with the mean image of the '
          f'training split, so the dataset must be prepared: {error}') from error
    mean = pipeline_lib.mean_image(builder, spec).numpy()
  normalizer = normalize.for_dataset(spec, mean)
  # The optimizer state's structure does not depend on the schedule's values; without the
  # split sizes (ImageNet not prepared here) any positive epoch length builds the same target.
  prepared = builders.is_prepared(builder)
  examples = pipeline_lib.count_examples(builder, spec.train_split) if prepared else 1
  return _DataInfo(tuple(builder.info.features['label'].names),
                   builder.info.features['image'].shape[-1], spec.recipe, spec.pad, normalizer,
                   examples / config.batch_size, *sizes)


def check_has_checkpoint(workdir: str) -> None:
  """Raises MissingCheckpointError when `workdir` holds no checkpoint (nothing is read)."""
  if not checkpoint.has_steps(workdir):
    raise _missing(workdir)


def _missing(workdir: str) -> MissingCheckpointError:
  return MissingCheckpointError(
      f'no checkpoint in {workdir}/checkpoints; give the --workdir of a training run, or train '
      'one first with python3 -m ran_jax.main')


def _recorded_info(record: run_record.RunRecord, config: ml_collections.ConfigDict) -> _DataInfo:
  """What inference needs of the data, from the run's record (no dataset is read). No
  optimizer is built for a recorded run, so no epoch length is needed (1.0 stands for it)."""
  normalizer = record.normalizer
  return _DataInfo(record.class_names, record.channels, normalizer.recipe, normalizer.pad,
                   normalizer, 1.0, config.image_size, config.eval_image_size)


def load_for_inference(config: ml_collections.ConfigDict | None, workdir: str,
                       pipeline: pipeline_lib.InputPipeline | None = None) -> InferenceModel:
  """The network of the latest checkpoint in `workdir`, on this host's first device.

  `config`: fields to use at inference (`run_record.resolve`); None for the run's own.
  `pipeline`: the run's `InputPipeline` when one is built anyway (its normalisation and
  dataset info are used). A run that recorded itself needs no dataset. Raises MissingCheckpointError when
  `workdir` holds no checkpoint, `DatasetUnavailableError` when an unrecorded 'small' run's
  dataset is not prepared, and `CheckpointError` when the checkpoint is of another model or
  damaged.
  """
  check_has_checkpoint(workdir)  # before any data or model work
  config, record = run_record.resolve(config, workdir)
  record = record if pipeline is None else None  # a pipeline built anyway says it all
  info = (_recorded_info(record, config) if record is not None else
          _data_info(config, workdir, pipeline))
  config = experiment.with_data_defaults(config, recipe=info.recipe, image_size=info.image_size,
                                         eval_image_size=info.eval_image_size)
  mesh = mesh_lib.make_mesh(jax.local_devices()[:1])
  if record is not None:
    return _load_variables(config, workdir, info, mesh)
  finetuned = init_from.read_record(workdir)
  manager = checkpoint.make_manager(workdir, keep=config.keep_checkpoints)
  try:
    restored = restore.restore_train_state(
        config, manager, mesh, num_classes=len(info.class_names), channels=info.channels,
        steps_per_epoch=info.steps_per_epoch, groups=finetuned and finetuned.param_groups(),
        set_aside=False)  # a reader leaves the run's files as they are
  finally:
    checkpoint.close_manager(manager)
  if restored.state is None:
    raise _missing(workdir)
  state = restored.state
  return InferenceModel(
      config=config, model=restored.model, variables=state.variables,
      step=int(jax.device_get(state.step)), normalizer=info.normalizer,
      class_names=info.class_names, channels=info.channels, image_size=info.eval_image_size,
      recipe=info.recipe, pad=info.pad)


def _load_variables(config: ml_collections.ConfigDict, workdir: str, info: _DataInfo,
                    mesh: jax.sharding.Mesh) -> InferenceModel:
  """The network with only its params and batch_stats read from the latest checkpoint: no
  optimizer or schedule is built, and the optimizer state is not read."""
  model = experiment.build_model(config, len(info.class_names))
  replicated = mesh_lib.replicated(mesh)

  def target(network: ResidualAttentionNetwork) -> dict[str, Any]:
    images = jnp.zeros((1, info.image_size, info.image_size, info.channels))
    shapes = jax.eval_shape(lambda: network.init(jax.random.key(0), images, train=False))
    return {key: jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(
        leaf.shape, leaf.dtype, sharding=replicated), shapes[key])
            for key in ('params', 'batch_stats')}

  manager = checkpoint.make_manager(workdir, keep=config.keep_checkpoints)
  try:
    restored = checkpoint.restore_latest_variables(
        manager, target(model), lambda: target(model.clone(scan=not model.scan)))
  finally:
    checkpoint.close_manager(manager)
  if restored is None:
    raise _missing(workdir)
  step, variables = restored
  return InferenceModel(
      config=config, model=model, variables=variables, step=step, normalizer=info.normalizer,
      class_names=info.class_names, channels=info.channels, image_size=info.eval_image_size,
      recipe=info.recipe, pad=info.pad)


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
