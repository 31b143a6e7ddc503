"""Orbax checkpoints: the train state plus what the input needs to continue its order.

Each step also stores a digest of the state and a signature of its structure (paths, shapes,
dtypes). On restore, a step whose files can't be read, whose contents don't match its digest
or that holds non-finite values is damaged: it is moved aside to `checkpoints_damaged/`
(never deleted) and the step before it is tried. A step written for another model or
optimizer is not damaged; it stops the run with a message instead. A step written in the other
variable layout (`model.scan`, see `ran_jax.models.layout`) is read in its own layout and
converted.
"""

import contextlib
import gc
import logging
import sys
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

from ran_jax.models import layout
from ran_jax.workdir import save_failures
from ran_jax.workdir.digest import state_digest, structure_signature
from ran_jax.process.errors import CheckpointError, CheckpointSaveError, NonFiniteError

__all__ = ['CheckpointError', 'CheckpointSaveError', 'close_manager', 'has_steps',
           'make_manager', 'restore_latest', 'save', 'state_digest', 'wait_for_saves']

DAMAGED_DIR = 'checkpoints_damaged'


def make_manager(workdir: str, *, keep: int) -> ocp.CheckpointManager:
  """A manager of `workdir/checkpoints` that saves asynchronously and keeps `keep` steps."""
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                         enable_async_checkpointing=True)
  return ocp.CheckpointManager(
      epath.Path(workdir) / 'checkpoints', options=options,
      item_handlers={'state': ocp.StandardCheckpointHandler(),
                     'input': ocp.JsonCheckpointHandler()})


def has_steps(workdir: str) -> bool:
  """Whether `workdir/checkpoints` holds any step directory (without reading them)."""
  directory = epath.Path(workdir) / 'checkpoints'
  return directory.is_dir() and any(p.name.isdigit() for p in directory.iterdir())


def close_manager(manager: ocp.CheckpointManager) -> None:
  """Waits for saves in flight, then closes the manager (also on error paths).

  Raises CheckpointSaveError when the last save failed and was not reported yet.
  """
  try:
    if manager in _in_flight:
      wait_for_saves(manager)
    else:  # a failure was reported already, by the save or wait that met it
      with contextlib.suppress(Exception):
        manager.wait_until_finished()
  finally:
    with contextlib.suppress(Exception):  # what failed was reported by wait_for_saves
      manager.close()


# The step each manager is saving in the background, until the save is known to be written.
_in_flight: 'weakref.WeakKeyDictionary[ocp.CheckpointManager, int]' = weakref.WeakKeyDictionary()


def wait_for_saves(manager: ocp.CheckpointManager) -> None:
  """Waits for the save in flight; raises CheckpointSaveError (one line) if it failed."""
  try:
    manager.wait_until_finished()
  except Exception as error:  # Orbax raises what the file system raised, often wrapped
    raise save_failures.save_failed(manager, _in_flight.pop(manager, None), error) from error
  _in_flight.pop(manager, None)


def _num_params(params: Any) -> int:
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(params))


def save(manager: ocp.CheckpointManager, step: int, state: Any, input_state: dict) -> None:
  """Starts saving `state` and `input_state` as `step` (finishes in the background).

  Raises NonFiniteError, saving nothing, when the state holds non-finite values.
  """
  digest, finite = state_digest(state)
  if not finite:
    raise NonFiniteError(f'The parameters became non-finite by step {step}; they were not '
                         f'saved, and the last good checkpoint (step {manager.latest_step()}) '
                         'is kept. Lower the learning rate or check the input data.')
  meta = dict(input_state, state_digest=digest, state_signature=structure_signature(state),
              num_params=_num_params(state.params), state_layout=layout.layout_of(state.params),
              state_averaged=state.averaged() is not None)
  wait_for_saves(manager)  # a failure of the save before this one is reported as its own
  save_failures.check_room(manager, step)
  _in_flight[manager] = step
  try:
    manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), input=ocp.args.JsonSave(meta)), force=True)
  except Exception as error:
    raise save_failures.save_failed(manager, _in_flight.pop(manager), error) from error


@contextlib.contextmanager
def _quiet_failed_reads() -> Iterator[None]:
  """Keeps the tracebacks of Orbax's abandoned read coroutines off stderr.

  A failed restore leaves coroutines that raised; Python prints them as "Exception ignored
  in ..." when they are collected. The failure itself is reported once, by the caller.
  """
  previous = sys.unraisablehook
  sys.unraisablehook = lambda unraisable: logging.debug(
      'Ignored after a failed read: %s', unraisable.exc_value)
  try:
    yield
  finally:
    gc.collect()
    sys.unraisablehook = previous


def _check_structure(meta: dict, target: Any, path: epath.Path) -> None:
  saved = meta.get('state_signature')
  if saved is not None and saved != structure_signature(target):
    count = meta.get('num_params')
    count = f'{count:,}' if isinstance(count, int) else 'an unknown number of'
    raise CheckpointError(
        f'The checkpoint at {path} was written for another model or optimizer '
        f'({count} parameters; this config has '
        f'{_num_params(target.params):,}). Run with the config it was written with, or use a fresh '
        '--workdir.')


def _to_layout(state: Any, target: Any) -> Any:
  """`state` converted to `target`'s variable layout, placed as `target`'s shardings say."""
  shardings = jax.tree.map(lambda leaf: leaf.sharding, target)
  return jax.jit(lambda tree: layout.convert(tree, target), out_shardings=shardings)(state)


def _read_meta(manager: ocp.CheckpointManager, step: int) -> dict | str:
  """What `step` says of its state (digest, signature, layout, data order), or why that could
  not be read."""
  try:
    return dict(manager.restore(step, args=ocp.args.Composite(
        input=ocp.args.JsonRestore())).input)
  except Exception as error:  # Orbax/TensorStore raise many types for bad files
    return f'its metadata could not be read ({save_failures.reason(error)})'


def _read_target(meta: dict, target: Any, path: epath.Path,
                 other_layout: Callable[[], Any] | None) -> Any:
  """The target to read the step with: `target`, or its counterpart in the step's layout.
  `target` is a train state, or a mapping with its 'params'."""
  saved = meta.get('state_layout', layout.UNROLLED)  # steps from before the layouts: unrolled
  params = target['params'] if isinstance(target, dict) else target.params
  wanted = layout.layout_of(params)
  if saved == wanted:
    return target
  if other_layout is None:
    raise CheckpointError(f'The checkpoint at {path} holds {saved} variables and this reader '
                          f'builds {wanted} ones; set --config.model.scan='
                          f'{saved == layout.SCANNED}.')
  return other_layout()


def _try_restore(manager: ocp.CheckpointManager, step: int, target: Any,
                 other_layout: Callable[[], Any] | None = None) -> tuple[Any, dict] | str:
  """(state, meta) of `step`, or the reason it is damaged."""
  path = epath.Path(manager.directory) / str(step)
  meta = _read_meta(manager, step)
  if isinstance(meta, str):
    return meta
  wanted, target = target, _read_target(meta, target, path, other_layout)
  _check_structure(meta, target, path)
  try:
    state = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target))).state
  except Exception as error:
    if meta.get('state_signature') is None:  # no signature: can't tell damage from mismatch
      raise CheckpointError(f'The checkpoint at {path} could not be restored '
                            f'({save_failures.reason(error)}).') from error
    return f'its state could not be read ({save_failures.reason(error)})'
  digest, finite = state_digest(state)
  if not finite:
    return 'it holds non-finite values'
  if meta.get('state_digest', digest) != digest:
    return 'its contents do not match the digest saved with it'
  if target is not wanted:
    state = _to_layout(state, wanted)
    logging.info('Converted the checkpoint of step %d from the %s to the %s variable layout.',
                 step, meta.get('state_layout', layout.UNROLLED), layout.layout_of(state.params))
  return state, meta


def _set_aside(manager: ocp.CheckpointManager, damaged: list[tuple[int, str]]) -> list[str]:
  """Moves damaged steps to `<workdir>/checkpoints_damaged/` (process 0); their new paths."""
  root = epath.Path(manager.directory)
  aside = root.parent / DAMAGED_DIR
  moved = []
  for step, _ in damaged:
    destination = aside / f'{step}-{time.strftime("%Y%m%d-%H%M%S")}'
    if jax.process_index() == 0:
      aside.mkdir(parents=True, exist_ok=True)
      (root / str(step)).rename(destination)
    moved.append(str(destination))
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices('ran_jax: damaged checkpoints set aside')
  manager.reload()
  return moved


def restore_latest(manager: ocp.CheckpointManager, target: Any, *, set_aside: bool = True,
                   other_layout: Callable[[], Any] | None = None) -> tuple[Any, dict] | None:
  """(state, input_state) of the newest good checkpoint, placed as `target`'s shardings say.

  A step in the other variable layout is read with `other_layout()` (the same state's target
  in that layout) and converted to `target`'s. Damaged newer steps are moved aside with a
  warning (only skipped, when `set_aside` is False: readers that must not change the work
  directory). Returns None when there is no
  checkpoint; raises CheckpointError when every checkpoint is damaged (nothing is moved
  then) or when they were written for another model.
  """
  damaged: list[tuple[int, str]] = []
  for step in sorted(manager.all_steps(), reverse=True):
    with _quiet_failed_reads():
      restored = _try_restore(manager, step, target, other_layout)
    if isinstance(restored, str):
      logging.warning('Checkpoint of step %d is damaged: %s.', step, restored)
      damaged.append((step, restored))
      continue
    if damaged and set_aside:
      for (bad, reason), where in zip(damaged, _set_aside(manager, damaged), strict=True):
        logging.warning('Moved the damaged checkpoint of step %d (%s) to %s; resuming from '
                        'step %d.', bad, reason, where, step)
    logging.info('Restored checkpoint of step %d from %s', step, manager.directory)
    state, meta = restored
    return state, {k: v for k, v in meta.items() if not k.startswith(('state_', 'num_'))}
  if damaged:
    listed = '; '.join(f'step {step}: {reason}' for step, reason in damaged)
    raise CheckpointError(
        f'Every checkpoint in {manager.directory} is damaged ({listed}). Nothing was moved; '
        'move that directory away (or use a fresh --workdir) to start over.')
  return None


def _read_part(path: epath.Path, item: Any, restore_args: Any) -> Any:
  """The entries of `item` read from the saved tree at `path` as `restore_args` say; the rest
  of it is not read."""
  with ocp.PyTreeCheckpointer() as reader:
    try:
      args = ocp.args.PyTreeRestore(item=item, restore_args=restore_args, partial_restore=True)
    except TypeError:  # Orbax before partial_restore: an empty `transforms` reads the item's keys
      return reader.restore(path, item=item, restore_args=restore_args, transforms={})
    return reader.restore(path, args=args)


AVERAGE = 'ema'  # the train state's field holding the moving average of the variables


def holds_average(meta: dict) -> bool:
  """Whether a step whose metadata is `meta` holds a moving average of the variables."""
  return bool(meta.get('state_averaged', False))


def read_variables(path: epath.Path, item: Any, restore_args: Any, *,
                   averaged: bool) -> Any:
  """The network's variables (the entries of `item`) from the saved state at `path`: their
  moving average (`averaged`; see `holds_average`) or the weights themselves."""
  if not averaged:
    return _read_part(path, item, restore_args)
  return _read_part(path, {AVERAGE: item}, {AVERAGE: restore_args})[AVERAGE]


def _placed(target: dict[str, Any]) -> dict[str, Any]:
  """Restore arguments that place each entry as `target`'s shape structs say."""
  return jax.tree.map(lambda leaf: ocp.ArrayRestoreArgs(
      sharding=leaf.sharding, global_shape=leaf.shape, dtype=leaf.dtype), target)


def restore_latest_variables(manager: ocp.CheckpointManager, target: dict[str, Any],
                             other_layout: Callable[[], dict[str, Any]], *, average: bool = True
                             ) -> tuple[int, dict[str, Any], bool] | None:
  """(step, {'params', 'batch_stats'}, whether they are the moving average) of the newest
  readable checkpoint, read alone: the optimizer state is not read (for inference).

  `average`: read the moving average of the variables where the run kept one
  (`config.ema_decay`), else the variables themselves. `target`: the variables' shape structs
  with their shardings; a step in the other variable layout is read with `other_layout()` and
  converted. Steps that cannot be read, or hold non-finite values, are skipped with a warning
  (nothing is moved). Returns None when there is no checkpoint; raises CheckpointError when a
  checkpoint holds another number of parameters (another model) or none can be read.
  """
  skipped = []
  wanted = _num_params(target['params'])
  for step in sorted(manager.all_steps(), reverse=True):
    path = epath.Path(manager.directory) / str(step)
    meta = _read_meta(manager, step)
    if isinstance(meta, str):
      skipped.append((step, meta))
      continue
    if meta.get('num_params', wanted) != wanted:
      raise CheckpointError(
          f'The checkpoint at {path} was written for another model ({meta["num_params"]:,} '
          f'parameters; this config has {wanted:,}). Run with the config it was written with.')
    read_target = _read_target(meta, target, path, other_layout)
    averaged = average and holds_average(meta)
    try:
      with _quiet_failed_reads():
        variables = read_variables(path / 'state', read_target, _placed(read_target),
                                   averaged=averaged)
    except Exception as error:
      skipped.append((step, f'its variables could not be read ({save_failures.reason(error)})'))
      continue
    if not state_digest(variables)[1]:
      skipped.append((step, 'it holds non-finite values'))
      continue
    for bad, reason in skipped:
      logging.warning('Checkpoint of step %d is damaged: %s.', bad, reason)
    if read_target is not target:
      variables = _to_layout(variables, target)
    return step, {key: variables[key] for key in ('params', 'batch_stats')}, averaged
  if skipped:
    listed = '; '.join(f'step {step}: {reason}' for step, reason in skipped)
    raise CheckpointError(f'No checkpoint in {manager.directory} can be read ({listed}).')
  return None
