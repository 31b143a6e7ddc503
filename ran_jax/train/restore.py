"""The model and the latest checkpoint of a run: one path for training and for inference.

`restore_train_state` builds the network, the optimizer and the train state's restore target
from the config exactly as training does (so the checkpoint's structure check applies), and
restores the newest good checkpoint. Training resumes from it (`ran_jax.train.loop`);
`load_for_inference` keeps the variables and adds what inference needs: the input
normalisation, the class names, the channel count and the eval image size.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import optax
import orbax.checkpoint as ocp
from jax.sharding import Mesh

from ran_jax.data import builders, normalize, pipeline as pipeline_lib, synthetic
from ran_jax.data.datasets import get_spec
from ran_jax.models import ResidualAttentionNetwork
from ran_jax.train import checkpoint, experiment, optim
from ran_jax.train import mesh as mesh_lib
from ran_jax.train.state import TrainState, train_state_factory


class MissingCheckpointError(FileNotFoundError):
  """The work directory holds no checkpoint to restore."""


@dataclasses.dataclass
class RestoredState:
  """The network and optimizer of a config, and its latest checkpoint if there is one.

  Attributes:
    model: the network.
    schedule: the learning-rate schedule; num_train_steps: the run's length in steps.
    init: a jitted initialiser of a fresh state, replicated on the mesh.
    target: the abstract state (shapes, dtypes, shardings) checkpoints are restored to.
    state: the restored state, or None when there is no checkpoint.
    input_state: what the checkpoint says about the data order (None without one).
  """
  model: ResidualAttentionNetwork
  schedule: optax.Schedule
  num_train_steps: int
  init: Callable[[], TrainState]
  target: TrainState
  state: TrainState | None
  input_state: dict | None


def restore_train_state(config: ml_collections.ConfigDict, manager: ocp.CheckpointManager,
                        mesh: Mesh, *, num_classes: int, channels: int,
                        steps_per_epoch: float, set_aside: bool = True) -> RestoredState:
  """Builds what `config` trains and restores the newest good checkpoint of `manager` onto
  `mesh` (replicated). `steps_per_epoch` is the train split's size over the batch size.
  Damaged newer checkpoints are moved aside, or only skipped when `set_aside` is False."""
  model = experiment.build_model(config, num_classes)
  total_steps = experiment.num_train_steps(config, steps_per_epoch)
  schedule = optim.learning_rate_schedule(config, steps_per_epoch, total_steps)
  tx = optim.make_optimizer(config, schedule)
  init, target = train_state_factory(
      model, tx, mesh, (config.image_size, config.image_size, channels), config.seed)
  restored = checkpoint.restore_latest(manager, target, set_aside=set_aside)
  state, input_state = restored if restored is not None else (None, None)
  return RestoredState(model, schedule, total_steps, init, target, state, input_state)


@dataclasses.dataclass(frozen=True)
class InferenceModel:
  """A trained network and what its input needs.

  Attributes:
    model: the network; variables: its 'params' and 'batch_stats'; step: the checkpoint's.
    normalizer: turns a batch of pixels (0-255, with 'crop' for the 'small' recipe) into
      the network's input, as in evaluation.
    class_names: one name per class (from the dataset info).
    channels: image channels (1 for digits, 3 otherwise).
    image_size: the side of the network's evaluation input.
    recipe: 'imagenet' (centre crop and resize) or 'small' (images used at their own size).
    pad: the 'small' recipe's crop padding (the 'crop' of an evaluation image is its centre).
  """
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


def _data_info(config: ml_collections.ConfigDict, pipeline: Any) -> _DataInfo:
  """What inference needs from the dataset; the 'small' recipe needs its mean image."""
  if pipeline is not None:
    names = pipeline.builder.info.features['label'].names
    return _DataInfo(tuple(names), pipeline.channels, pipeline.spec.recipe, pipeline.spec.pad,
                     pipeline.device_input_fn(),
                     pipeline.num_train_examples / config.batch_size)
  if config.dataset == synthetic.NAME:
    return _DataInfo(tuple(str(i) for i in range(synthetic.NUM_CLASSES)),
                     synthetic.SyntheticInput.channels, 'imagenet', 0,
                     normalize.imagenet_normalizer(),
                     synthetic.NUM_TRAIN_EXAMPLES / config.batch_size)
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
  normalizer = pipeline_lib.input_normalizer(spec, mean)
  # The optimizer state's structure does not depend on the schedule's values; without the
  # split sizes (ImageNet not prepared here) any positive epoch length builds the same target.
  prepared = builders.is_prepared(builder)
  examples = pipeline_lib.count_examples(builder, spec.train_split) if prepared else 1
  return _DataInfo(tuple(builder.info.features['label'].names),
                   builder.info.features['image'].shape[-1], spec.recipe, spec.pad, normalizer,
                   examples / config.batch_size)


def check_has_checkpoint(workdir: str) -> None:
  """Raises MissingCheckpointError when `workdir` holds no checkpoint (nothing is read)."""
  if not checkpoint.has_steps(workdir):
    raise _missing(workdir)


def _missing(workdir: str) -> MissingCheckpointError:
  return MissingCheckpointError(
      f'no checkpoint in {workdir}/checkpoints; give the --workdir of a training run (with '
      'the --config it was trained with), or train one first with python3 -m ran_jax.main')


def load_for_inference(config: ml_collections.ConfigDict, workdir: str,
                       pipeline: Any = None) -> InferenceModel:
  """The network of the latest checkpoint in `workdir`, on this host's first device.

  `pipeline`: the run's `InputPipeline` when one is built anyway (its normalisation and
  dataset info are used). Raises MissingCheckpointError when `workdir` holds no checkpoint,
  `DatasetUnavailableError` when the 'small' recipe's dataset is not prepared, and
  `CheckpointError` when the checkpoint is of another model or damaged.
  """
  check_has_checkpoint(workdir)  # before any data or model work
  info = _data_info(config, pipeline)
  mesh = mesh_lib.make_mesh(jax.local_devices()[:1])
  manager = checkpoint.make_manager(workdir, keep=config.keep_checkpoints)
  try:
    restored = restore_train_state(config, manager, mesh, num_classes=len(info.class_names),
                                   channels=info.channels, steps_per_epoch=info.steps_per_epoch,
                                   set_aside=False)  # a reader leaves the run's files as they are
  finally:
    checkpoint.close_manager(manager)
  if restored.state is None:
    raise _missing(workdir)
  state = restored.state
  return InferenceModel(
      model=restored.model, variables={'params': state.params, 'batch_stats': state.batch_stats},
      step=int(jax.device_get(state.step)), normalizer=info.normalizer,
      class_names=info.class_names, channels=info.channels, image_size=config.eval_image_size,
      recipe=info.recipe, pad=info.pad)
