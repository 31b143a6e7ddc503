"""Orbax checkpoints: the train state plus what the input needs to continue its order."""

import logging
from typing import Any

import orbax.checkpoint as ocp
from etils import epath


class CheckpointError(RuntimeError):
  """A checkpoint exists but can't be used."""


def make_manager(workdir: str, *, keep: int) -> ocp.CheckpointManager:
  """A manager of `workdir/checkpoints` that saves asynchronously and keeps `keep` steps."""
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                         enable_async_checkpointing=True)
  return ocp.CheckpointManager(epath.Path(workdir) / 'checkpoints', options=options)


def save(manager: ocp.CheckpointManager, step: int, state: Any, input_state: dict) -> None:
  """Starts saving `state` and `input_state` as `step` (finishes in the background)."""
  manager.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state), input=ocp.args.JsonSave(input_state)), force=True)


def restore_latest(manager: ocp.CheckpointManager, target: Any) -> tuple[Any, dict] | None:
  """(state, input_state) of the latest checkpoint, placed as `target`'s shardings say.

  Returns None when there is no checkpoint; raises CheckpointError when the latest one can't
  be read or doesn't fit the model of this config.
  """
  step = manager.latest_step()
  if step is None:
    return None
  try:
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target), input=ocp.args.JsonRestore()))
  except Exception as error:  # Orbax/TensorStore raise many types for bad files
    path = epath.Path(manager.directory) / str(step)
    raise CheckpointError(
        f'The checkpoint at {path} could not be restored ({type(error).__name__}: '
        f'{str(error)[:300]}). If it was written for another model or config, use a fresh '
        '--workdir; if its files are damaged, delete that step directory to resume from the '
        'checkpoint before it; if the storage was unreachable, fix access and retry.') from error
  logging.info('Restored checkpoint of step %d from %s', step, manager.directory)
  return restored.state, dict(restored.input)
