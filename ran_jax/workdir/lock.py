"""One run per work directory: a lock file that a killed run does not leave stuck.

Process 0 writes `<workdir>/run.lock` (host, pid, heartbeat) and refreshes the heartbeat while
the run lives. A new run refuses to start while the holder is alive: on the same host, while
its pid exists; on another host (a shared bucket or file system), while its heartbeat is
younger than `STALE_AFTER_SECONDS`. A lock whose holder is gone is taken over, so a run killed
with SIGKILL on this host can be restarted at once, and one on another host after at most
`STALE_AFTER_SECONDS`. Every process of a multi-host run gets process 0's answer.
"""

import contextlib
import datetime
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator

import jax
import numpy as np
from etils import epath
from jax.experimental import multihost_utils

from ran_jax.process.errors import WorkdirBusyError, WorkdirError, describe_os_error

LOCK_NAME = 'run.lock'
HEARTBEAT_SECONDS = 30.0
STALE_AFTER_SECONDS = 120.0


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def holder_alive(holder: dict, now: float) -> bool:
  """Whether the run described by a lock file's contents still holds it."""
  if holder.get('host') == socket.gethostname():
    pid = holder.get('pid')
    return isinstance(pid, int) and pid != os.getpid() and _pid_alive(pid)
  return now - float(holder.get('heartbeat', 0)) < STALE_AFTER_SECONDS


def _write(path: epath.Path, record: dict, exclusive: bool) -> None:
  text = json.dumps(record)
  if exclusive and '://' not in str(path):  # local: atomic against a simultaneous start
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    with os.fdopen(fd, 'w') as f:
      f.write(text)
    return
  staging = path.with_name(f'{path.name}.{os.getpid()}.tmp')
  staging.write_text(text)
  staging.replace(path)


def _try_acquire(path: epath.Path) -> tuple[str, dict]:
  """('', our record) once the lock is ours, or (why not, {})."""
  now = time.time()
  if path.exists():
    try:
      holder = json.loads(path.read_text())
    except (OSError, ValueError):
      holder = {}
    if holder and holder_alive(holder, now):
      started = datetime.datetime.fromtimestamp(holder.get('started', now))
      started = started.isoformat(' ', 'seconds')
      return (f'{path.parent} is in use by another run (host {holder.get("host")}, pid '
              f'{holder.get("pid")}, started {started}); stop it first, or use another '
              f'--workdir. A killed run on another host releases it after '
              f'{STALE_AFTER_SECONDS:.0f} s.'), {}
    logging.warning('Taking over the lock of a run that is gone: %s', holder or 'unreadable')
    path.unlink(missing_ok=True)
  record = {'host': socket.gethostname(), 'pid': os.getpid(), 'started': now, 'heartbeat': now}
  try:
    _write(path, record, exclusive=True)
  except FileExistsError:
    return f'{path.parent} is in use by another run that started just now.', {}
  return '', record


def _agree(problem: str) -> str:
  """Process 0's answer, on every process."""
  if jax.process_count() == 1:
    return problem
  busy = multihost_utils.broadcast_one_to_all(np.int32(bool(problem)))
  if problem or not int(busy):
    return problem
  return ('Process 0 could not take the lock of the work directory: it is in use by another '
          'run or cannot be written (see the log of process 0).')


@contextlib.contextmanager
def hold(workdir: str) -> Iterator[Callable[[], None]]:
  """Holds the lock of `workdir` for the enclosed run; raises WorkdirBusyError if taken.

  Gives a function that releases it at once, for a process about to end without unwinding.
  """
  path = epath.Path(workdir) / LOCK_NAME
  failure = None
  try:
    problem, record = _try_acquire(path) if jax.process_index() == 0 else ('', {})
  except OSError as error:  # told to the other processes too, not raised before _agree
    failure = WorkdirError(f'Cannot write the lock file of the work directory {workdir}: '
                           f'{describe_os_error(error)}. The work directory must be writable; '
                           'give another --workdir.')
    problem, record = str(failure), {}
  problem = _agree(problem)
  if problem:
    raise failure or WorkdirBusyError(problem)
  stop = threading.Event()

  def beat() -> None:
    while not stop.wait(HEARTBEAT_SECONDS):
      try:
        _write(path, dict(record, heartbeat=time.time()), exclusive=False)
      except OSError as error:  # transient storage errors: try again at the next beat
        logging.warning('Could not refresh %s: %s', path, error)

  heart = threading.Thread(target=beat, name='workdir-lock-heartbeat', daemon=True)
  if record:
    heart.start()

  def release() -> None:
    stop.set()
    if record:
      path.unlink(missing_ok=True)

  try:
    yield release
  finally:
    stop.set()
    if record:
      heart.join()
      path.unlink(missing_ok=True)
