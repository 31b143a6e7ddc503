"""The model and the latest checkpoint of a run: one path for training and for inference.

`restore_train_state` builds the network, the optimizer and the train state's restore target
from the config exactly as training does (so the checkpoint's structure check applies), and
restores the newest good checkpoint (in either variable layout, `model.scan`: a step in the
other one is converted). Training resumes from it (`ran_jax.train.loop`), and
`ran_jax.inference_model.load_for_inference` loads trained networks through it. Imports no
TensorFlow.
"""

import dataclasses

import ml_collections
import orbax.checkpoint as ocp
from jax.sharding import Mesh

from ran_jax.models import ResidualAttentionNetwork
from ran_jax.train import checkpoint, experiment
from ran_jax.train.optim import ParamGroups
from ran_jax.train.state import TrainState


@dataclasses.dataclass
class RestoredState:
  """What a config trains (`experiment.Training`) and its latest checkpoint, if any.

  Attributes:
    training: the network, schedule, initialiser and restore target.
    state: the restored state, or None when there is no checkpoint.
    input_state: what the checkpoint says about the data order (None without one).
  """
  training: experiment.Training
  state: TrainState | None
  input_state: dict | None

  @property
  def model(self) -> ResidualAttentionNetwork:
    return self.training.model


def restore_train_state(config: ml_collections.ConfigDict, manager: ocp.CheckpointManager,
                        mesh: Mesh, *, num_classes: int, channels: int,
                        steps_per_epoch: float, set_aside: bool = True,
                        groups: ParamGroups | None = None) -> RestoredState:
  """Builds what `config` trains and restores the newest good checkpoint of `manager` onto
  `mesh` (replicated). `steps_per_epoch` is the train split's size over the batch size;
  `groups`: those of a fine-tuned run (`init_from.param_groups`). Damaged newer checkpoints are
  moved aside, or only skipped when `set_aside` is False."""
  def build(config: ml_collections.ConfigDict) -> experiment.Training:
    return experiment.build_training(config, mesh, num_classes=num_classes, channels=channels,
                                     steps_per_epoch=steps_per_epoch, groups=groups)

  def other_layout() -> TrainState:
    other = config.copy_and_resolve_references()
    with other.unlocked():
      other.model.scan = not config.model.get('scan', False)
    return build(other).target

  training = build(config)
  restored = checkpoint.restore_latest(manager, training.target, set_aside=set_aside,
                                       other_layout=other_layout)
  state, input_state = restored if restored is not None else (None, None)
  return RestoredState(training, state, input_state)
