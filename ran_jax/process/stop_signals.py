"""Stopping cleanly on SIGTERM, SIGINT and SIGHUP.

Until a run's first training step there is nothing to save, so a stop signal ends the process
at once with one stop line and exit status 75: from the first line of `ran_jax.main` (before
JAX and TensorFlow are imported), and inside `StopSignals` while the run starts (loading or
preparing the dataset, restoring, compiling; `phase` names which). The handler writes the line
and calls `os._exit`, so it works wherever Python runs it (inside JAX's garbage-collection
callback too), and the main thread waits for the start-up work, run in another thread
(`run_interruptibly`), in short waits: a signal is taken at once even while a compile or a
restore runs in C++. Checkpoints are only read then; what is written (the run's record,
`init_from.json`, a prepared dataset) is written atomically, so nothing is left half-written.
Once training starts (`training_started`), a signal is only recorded: the training loop asks
`requested(step)` after every step and then saves, waits for the save and exits.

One process: the three signals are handled here, but for those the process was started to
ignore (`nohup` ignores SIGHUP). Several processes (after `jax.distributed.initialize()`):
JAX's preemption service owns SIGTERM and agrees with every process on one step to stop at
(`reached_preemption_sync_point`); SIGINT and SIGHUP are forwarded to it as a SIGTERM, so
Ctrl-C or a closed terminal on one host stops all of them at the same step (the first, when
it arrives while they start).

Imports only the standard library at the top, so that `install_early_handlers` can run before
anything heavy.
"""

import contextlib
import logging
import os
import signal
import sys
import threading
import types
from collections.abc import Callable, Iterator
from typing import TypeVar

from ran_jax.process.errors import EXIT_PREEMPTED

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def stop_line(signal_name: str, during: str) -> str:
  """The line of a stop before training started."""
  return (f'Stopped by {signal_name} {during}; nothing needed saving. Run the same command to '
          'resume.')


def _exit_now(signal_name: str, during: str, release: Callable[[], None] | None = None) -> None:
  """Runs `release`, writes the stop line and ends the process with status 75 at once."""
  if release is not None:
    with contextlib.suppress(Exception):
      release()
  sys.stderr.write(stop_line(signal_name, during) + '\n')
  sys.stderr.flush()
  os._exit(EXIT_PREEMPTED)  # pylint: disable=protected-access


def _exit_at_once(signum: int, frame: types.FrameType | None) -> None:
  del frame
  _exit_now(signal.Signals(signum).name, 'while starting')


def _handled_signals() -> list[int]:
  """The stop signals not ignored by whoever started the process (`nohup` ignores SIGHUP)."""
  return [s for s in STOP_SIGNALS if signal.getsignal(s) is not signal.SIG_IGN]


def install_early_handlers() -> None:
  """Makes SIGTERM, SIGINT and SIGHUP end the process at once with the stop line and exit
  status 75 (call first thing in a CLI, before a run holds anything)."""
  for signum in _handled_signals():
    signal.signal(signum, _exit_at_once)


class StopSignals:
  """Context manager of a run's stop signals: until `training_started`, a signal ends the
  process at once (see the module docstring); from then on it is recorded until the context
  exits (after the last save)."""

  def __init__(self):
    import jax  # here, not at the top: see the module docstring
    self.received: str | None = None
    self.coordinated = jax.distributed.is_initialized()
    self._previous: dict[int, object] = {}
    self._phase: str | None = 'while starting'  # None once training has started
    self._release: Callable[[], None] | None = None

  def __enter__(self) -> 'StopSignals':
    if threading.current_thread() is not threading.main_thread():
      return self  # Python delivers signals to the main thread only.
    signums = [s for s in _handled_signals() if not (self.coordinated and s == signal.SIGTERM)]
    for signum in signums:
      self._previous[signum] = signal.signal(signum, self._on_signal)
    return self

  def __exit__(self, *exc_info) -> None:
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    self._previous.clear()

  def release_on_exit(self, release: Callable[[], None]) -> None:
    """`release` runs when a signal ends the process before training starts (the lock)."""
    self._release = release

  @contextlib.contextmanager
  def phase(self, during: str) -> Iterator[None]:
    """Names what the run is doing (`during`: 'while compiling', ...) in the stop line of a
    signal that arrives within it, before training starts."""
    previous, self._phase = self._phase, during
    try:
      yield
    finally:
      self._phase = previous if self._phase == during else self._phase

  def training_started(self) -> None:
    """From now on a signal is recorded, and the loop stops after the step with a save."""
    self._phase = None

  def _on_signal(self, signum: int, frame: types.FrameType | None) -> None:
    del frame
    name = signal.Signals(signum).name
    if self._phase is not None and not self.coordinated:
      _exit_now(name, self._phase, self._release)
    if self.received is not None:
      logging.warning('%s received again: still stopping; waiting for the checkpoint.', name)
      return
    self.received = name
    logging.warning('%s received: stopping after the current step with a checkpoint.', name)
    if self.coordinated and signum != signal.SIGTERM:
      os.kill(os.getpid(), signal.SIGTERM)  # JAX's preemption service tells every process

  def requested(self, step: int) -> bool:
    """Whether to stop after `step`; call after every step (a sync point on several hosts)."""
    if self.coordinated:
      from jax.experimental import multihost_utils
      try:
        reached = multihost_utils.reached_preemption_sync_point(step)
      except RuntimeError:  # the preemption service is turned off (jax_enable_preemption_service)
        reached = False
      if reached:
        self.received = self.received or 'a preemption notice (SIGTERM)'
        return True
      return False
    return self.received is not None

  @property
  def pending_locally(self) -> bool:
    """A signal this process can act on at once (one process: abandon an evaluation)."""
    return not self.coordinated and self.received is not None


T = TypeVar('T')


def run_interruptibly(work: Callable[[], T]) -> T:
  """`work()` run in another thread while the main thread waits in short waits, so that a stop
  signal is handled at once even while `work` runs in C++ (a compile, a restore); its result,
  or its exception raised here."""
  if threading.current_thread() is not threading.main_thread():
    return work()
  outcome: dict[str, object] = {}

  def target() -> None:
    try:
      outcome['result'] = work()
    except BaseException as error:  # re-raised in the main thread
      outcome['error'] = error

  thread = threading.Thread(target=target, name='ran_jax start-up', daemon=True)
  thread.start()
  while thread.is_alive():
    thread.join(0.05)
  if 'error' in outcome:
    raise outcome['error']
  return outcome['result']
