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
import errno
import gc
import hashlib
import logging
import os
import re
import shutil
import sys
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

from ran_jax.models import layout
from ran_jax.process.errors import (CheckpointError, CheckpointSaveError, NonFiniteError, chain,
                                    describe_os_error, os_error_in)

__all__ = ['CheckpointError', 'CheckpointSaveError', 'close_manager', 'has_steps',
           'make_manager', 'restore_latest', 'save', 'state_digest', 'wait_for_saves']

DAMAGED_DIR = 'checkpoints_damaged'
# Free space needed to start a save, in sizes of the last checkpoint: their sizes vary (up to
# 1.8x from one step to the next, measured on a small model), and a save that runs out of
# space half-way is a mess of failing writers.
ROOM_FACTOR = 2.0
# The OS errors of a full disk (or of a full quota on it).
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
# TensorStore raises a ValueError for a failed file operation and names the OS error only in
# its message: '...: No space left on device [os_error_code='28']'.
_TENSORSTORE_OS_ERROR = re.compile(r"\[os_error_code='(\d+)'\]")


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
# The bytes of one checkpoint of each manager's run, measured once (`_check_room`).
_checkpoint_sizes: 'weakref.WeakKeyDictionary[ocp.CheckpointManager, int]' = (
    weakref.WeakKeyDictionary())


def wait_for_saves(manager: ocp.CheckpointManager) -> None:
  """Waits for the save in flight; raises CheckpointSaveError (one line) if it failed."""
  try:
    manager.wait_until_finished()
  except Exception as error:  # Orbax raises what the file system raised, often wrapped
    raise _save_failed(manager, _in_flight.pop(manager, None), error) from error
  _in_flight.pop(manager, None)


def _save_failed(manager: ocp.CheckpointManager, step: int | None,
                 error: Exception) -> CheckpointSaveError:
  """The one-line error of a failed save of `step`, naming the last good checkpoint."""
  cause = os_error_in(error)
  if cause is not None:
    return _cannot_save(manager, step, describe_os_error(cause), cause.errno in _DISK_FULL)
  reported = _tensorstore_os_error(error)
  if reported is None:
    return _cannot_save(manager, step, _reason(error), False)
  code, error = reported
  return _cannot_save(manager, step, f'{describe_os_error(OSError(code, os.strerror(code)))} '
                      f'({_reason(error)})', code in _DISK_FULL)


def _tensorstore_os_error(error: BaseException) -> tuple[int, BaseException] | None:
  """(errno, error) of the first TensorStore error in `error`'s chain that names an OS error."""
  for current in chain(error):
    found = _TENSORSTORE_OS_ERROR.search(str(current))
    if found:
      return int(found[1]), current
  return None


def _cannot_save(manager: ocp.CheckpointManager, step: int | None, reason: str,
                 full: bool) -> CheckpointSaveError:
  directory = epath.Path(manager.directory)
  try:
    good = sorted((int(p.name) for p in directory.iterdir() if p.name.isdigit()
                   and p.name != str(step)), reverse=True)
  except OSError:
    good = []
  kept = (f'the last good checkpoint, of step {good[0]}, is kept' if good else
          'no checkpoint was saved before it')
  fix = 'free space there' if full else 'make it writable'
  what = f'of step {step}' if step is not None else 'in flight'
  return CheckpointSaveError(
      f'Could not save the checkpoint {what} in {directory}: {reason}; {kept}. Then {fix} '
      '(or copy the work directory to a place that has room) and run the same command to '
      'resume from it.')


def _checkpoint_bytes(directory: epath.Path, step: int) -> int:
  total = 0
  for root, _, files in os.walk(directory / str(step)):
    total += sum(os.path.getsize(os.path.join(root, name)) for name in files)
  return total


def _check_room(manager: ocp.CheckpointManager, step: int) -> None:
  """Refuses to start a save that the disk has no room for.

  A save that runs out of space half-way leaves Orbax's writers failing one by one, so one is
  started only with `ROOM_FACTOR` times the size of a checkpoint free. The size is measured
  once per run, on the first checkpoint it finds (a run's checkpoints are all the same size).
  Each process checks the file system it writes to, with no collective: on a shared one they
  see the same free space. Object stores (`gs://`, ...) are not checked.
  """
  directory = epath.Path(manager.directory)
  latest = manager.latest_step()
  if latest is None or '://' in str(directory):
    return  # a first save that fails is told apart by its error (`_save_failed`)
  if manager not in _checkpoint_sizes:
    _checkpoint_sizes[manager] = _checkpoint_bytes(directory, latest)
  needed = _checkpoint_sizes[manager] * ROOM_FACTOR
  free = shutil.disk_usage(directory).free
  if free < needed:
    raise _cannot_save(manager, step, f'no space left on device ({free / 2**20:.1f} MiB free; '
                       f'a save needs about {needed / 2**20:.1f} MiB, {ROOM_FACTOR:g} times a '
                       'checkpoint)', full=True)


def _as_uint32(x: jax.Array) -> jax.Array:
  """The bits of `x` as uint32 words, flattened (narrower types widened, 64-bit types split
  low word first)."""
  if x.dtype == jnp.bool_:
    return x.astype(jnp.uint32).reshape(-1)
  width = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}.get(x.dtype.itemsize, jnp.uint32)
  return jax.lax.bitcast_convert_type(x, width).astype(jnp.uint32).reshape(-1)


def _leaf_sum(leaf: jax.Array) -> tuple[jax.Array, jax.Array]:
  """The sum of `leaf`'s words times 1, 3, 5, ... (mod 2**32; integer sums wrap exactly, in
  any order of reduction), and whether its values are finite."""
  words = _as_uint32(leaf)
  weights = jnp.arange(words.size, dtype=jnp.uint32) * 2 + 1
  finite = (jnp.all(jnp.isfinite(leaf)) if jnp.issubdtype(leaf.dtype, jnp.inexact) else
            jnp.bool_(True))
  return jnp.sum(words * weights, dtype=jnp.uint32), finite


@jax.jit
def _state_sums(leaves: list[jax.Array]) -> tuple[jax.Array, jax.Array]:
  """`_leaf_sum` of every leaf, as one program: (sums, all finite)."""
  parts = [_leaf_sum(leaf) for leaf in leaves]
  return (jnp.stack([part[0] for part in parts]),
          jnp.all(jnp.stack([part[1] for part in parts])))


def _device_sums(leaves: list[jax.Array]) -> tuple[np.ndarray, bool]:
  """`_leaf_sum` of each leaf, computed where the leaves live: one program for the whole state
  (compiled once per state structure), one dispatch, one small transfer."""
  sums, finite = jax.device_get(_state_sums(leaves))
  return np.asarray(sums, np.uint32), bool(finite)


def _host_sums(leaves: list[Any]) -> tuple[np.ndarray, bool]:
  """The same sums computed in NumPy on the host."""
  sums, finite = [], True
  for leaf in jax.device_get(leaves):
    leaf = np.ascontiguousarray(leaf)
    words = (leaf.astype(np.uint32) if leaf.dtype == np.bool_ else leaf.view(
        {1: np.uint8, 2: np.uint16}.get(leaf.dtype.itemsize, np.uint32)).astype(np.uint32))
    weights = np.arange(words.size, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    sums.append(np.sum(words.reshape(-1) * weights, dtype=np.uint32))
    if np.issubdtype(leaf.dtype, np.inexact):
      finite = finite and bool(np.isfinite(leaf).all())
  return np.asarray(sums, np.uint32), finite


def _on_accelerators(leaves: list[Any]) -> bool:
  return any(device.platform != 'cpu' for leaf in leaves if isinstance(leaf, jax.Array)
             for device in leaf.devices())


def state_digest(state: Any) -> tuple[str, bool]:
  """(digest of every bit of `state`, whether all its floating-point values are finite).

  Per leaf, the sum of its uint32 words times 1, 3, 5, ... (mod 2**32), hashed; integer sums
  are exact, so the digest is the same whatever the device count or placement. A state on
  GPUs or TPUs is reduced there (only a word per leaf comes to the host, where fetching it
  all would copy the whole state at every save); on CPUs, where the state is in host memory
  already, NumPy does it without compiling anything (`benchmarks/checkpoint_digest.py`).
  """
  leaves = jax.tree.leaves(state)
  sums, finite = _device_sums(leaves) if _on_accelerators(leaves) else _host_sums(leaves)
  return hashlib.sha256(sums.tobytes()).hexdigest()[:32], finite


def structure_signature(state: Any) -> str:
  """A hash of the state's paths, shapes and dtypes (works on abstract states too)."""
  leaves = jax.tree_util.tree_flatten_with_path(state)[0]
  entries = [f'{jax.tree_util.keystr(path)} {np.shape(leaf)} {jnp.result_type(leaf).name}'
             for path, leaf in leaves]
  return hashlib.sha256('\n'.join(entries).encode()).hexdigest()[:16]


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
              num_params=_num_params(state.params), state_layout=layout.layout_of(state.params))
  wait_for_saves(manager)  # a failure of the save before this one is reported as its own
  _check_room(manager, step)
  _in_flight[manager] = step
  try:
    manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), input=ocp.args.JsonSave(meta)), force=True)
  except Exception as error:
    raise _save_failed(manager, _in_flight.pop(manager), error) from error


def _reason(error: BaseException) -> str:
  """'Type: message' of `error` on one line, cut short; of the error it was raised from when it
  is a plain Exception (Orbax's wrapper of a failed read, which adds only the array's index and
  the store's long spec)."""
  while type(error) is Exception and error.__cause__ is not None:
    error = error.__cause__
  return f'{type(error).__name__}: {" ".join(str(error).split())[:300]}'


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
    return f'its metadata could not be read ({_reason(error)})'


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
                            f'({_reason(error)}).') from error
    return f'its state could not be read ({_reason(error)})'
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


def _read_part(path: epath.Path, target: dict[str, Any]) -> dict[str, Any]:
  """The entries of `target` (shape structs with shardings) read from the saved tree at
  `path`; the rest of it is not read."""
  restore_args = jax.tree.map(lambda leaf: ocp.ArrayRestoreArgs(
      sharding=leaf.sharding, global_shape=leaf.shape, dtype=leaf.dtype), target)
  with ocp.PyTreeCheckpointer() as reader:
    try:
      args = ocp.args.PyTreeRestore(item=target, restore_args=restore_args,
                                    partial_restore=True)
    except TypeError:  # Orbax before partial_restore: an empty `transforms` reads the item's keys
      return reader.restore(path, item=target, restore_args=restore_args, transforms={})
    return reader.restore(path, args=args)


def restore_latest_variables(manager: ocp.CheckpointManager, target: dict[str, Any],
                             other_layout: Callable[[], dict[str, Any]]
                             ) -> tuple[int, dict[str, Any]] | None:
  """(step, {'params', 'batch_stats'}) of the newest readable checkpoint, read alone: the
  optimizer state is not read (for inference).

  `target`: the variables' shape structs with their shardings; a step in the other variable
  layout is read with `other_layout()` and converted. Steps that cannot be read, or hold
  non-finite values, are skipped with a warning (nothing is moved). Returns None when there is
  no checkpoint; raises CheckpointError when a checkpoint holds another number of parameters
  (another model) or none can be read.
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
    try:
      with _quiet_failed_reads():
        variables = _read_part(path / 'state', read_target)
    except Exception as error:
      skipped.append((step, f'its variables could not be read ({_reason(error)})'))
      continue
    if not state_digest(variables)[1]:
      skipped.append((step, 'it holds non-finite values'))
      continue
    for bad, reason in skipped:
      logging.warning('Checkpoint of step %d is damaged: %s.', bad, reason)
    if read_target is not target:
      variables = _to_layout(variables, target)
    return step, {key: variables[key] for key in ('params', 'batch_stats')}
  if skipped:
    listed = '; '.join(f'step {step}: {reason}' for step, reason in skipped)
    raise CheckpointError(f'No checkpoint in {manager.directory} can be read ({listed}).')
  return None
