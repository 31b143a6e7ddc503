"""What a save that fails, or that the disk has no room for, tells the user: one line naming
the cause (a full disk, a read-only one, ...) and the last good checkpoint, which is kept."""

import errno
import os
import re
import shutil
import weakref

import orbax.checkpoint as ocp
from etils import epath

from ran_jax.process.errors import CheckpointSaveError, chain, describe_os_error, os_error_in

# Free space needed to start a save, in sizes of the last checkpoint: their sizes vary (up to
# 1.8x from one step to the next, measured on a small model), and a save that runs out of
# space half-way is a mess of failing writers.
ROOM_FACTOR = 2.0
# The OS errors of a full disk (or of a full quota on it).
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
# TensorStore raises a ValueError for a failed file operation and names the OS error only in
# its message: '...: No space left on device [os_error_code='28']'.
_TENSORSTORE_OS_ERROR = re.compile(r"\[os_error_code='(\d+)'\]")
# The bytes of one checkpoint of each manager's run, measured once (`check_room`).
_checkpoint_sizes: 'weakref.WeakKeyDictionary[ocp.CheckpointManager, int]' = (
    weakref.WeakKeyDictionary())


def save_failed(manager: ocp.CheckpointManager, step: int | None,
                 error: Exception) -> CheckpointSaveError:
  """The one-line error of a failed save of `step`, naming the last good checkpoint."""
  cause = os_error_in(error)
  if cause is not None:
    return cannot_save(manager, step, describe_os_error(cause), cause.errno in _DISK_FULL)
  reported = tensorstore_os_error(error)
  if reported is None:
    return cannot_save(manager, step, reason(error), False)
  code, error = reported
  return cannot_save(manager, step, f'{describe_os_error(OSError(code, os.strerror(code)))} '
                      f'({reason(error)})', code in _DISK_FULL)


def tensorstore_os_error(error: BaseException) -> tuple[int, BaseException] | None:
  """(errno, error) of the first TensorStore error in `error`'s chain that names an OS error."""
  for current in chain(error):
    found = _TENSORSTORE_OS_ERROR.search(str(current))
    if found:
      return int(found[1]), current
  return None


def cannot_save(manager: ocp.CheckpointManager, step: int | None, reason: str,
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


def check_room(manager: ocp.CheckpointManager, step: int) -> None:
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
    return  # a first save that fails is told apart by its error (`save_failed`)
  if manager not in _checkpoint_sizes:
    _checkpoint_sizes[manager] = _checkpoint_bytes(directory, latest)
  needed = _checkpoint_sizes[manager] * ROOM_FACTOR
  free = shutil.disk_usage(directory).free
  if free < needed:
    raise cannot_save(manager, step, f'no space left on device ({free / 2**20:.1f} MiB free; '
                       f'a save needs about {needed / 2**20:.1f} MiB, {ROOM_FACTOR:g} times a '
                       'checkpoint)', full=True)


def reason(error: BaseException) -> str:
  """'Type: message' of `error` on one line, cut short; of the error it was raised from when it
  is a plain Exception (Orbax's wrapper of a failed read, which adds only the array's index and
  the store's long spec)."""
  while type(error) is Exception and error.__cause__ is not None:
    error = error.__cause__
  return f'{type(error).__name__}: {" ".join(str(error).split())[:300]}'
