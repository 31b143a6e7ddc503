"""Stopping cleanly on SIGTERM, SIGINT and SIGHUP.

From the first line of `ran_jax.main` (before JAX and TensorFlow are imported), a stop signal
ends the process at once with the stop line and exit status 75: there is nothing to save yet.
Once a run has set up its checkpoints, `StopSignals` only records the signal, since a handler
that raises can land anywhere (inside JAX's garbage-collection callback, in the middle of an
Orbax save); the training loop asks `requested(step)` after every step and then saves, waits
for the save and exits. Within `StopSignals.interruptible(...)` (preparing a dataset: nothing
to save, possibly hours of work) a signal raises `StopRequested` again.

One process: the three signals are handled here, but for those the process was started to
ignore (`nohup` ignores SIGHUP). Several processes (after `jax.distributed.initialize()`):
JAX's preemption service owns SIGTERM and agrees with every process on one step to stop at
(`reached_preemption_sync_point`); SIGINT and SIGHUP are forwarded to it as a SIGTERM, so
Ctrl-C or a closed terminal on one host stops all of them at the same step.

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
from collections.abc import Iterator

from ran_jax.process.errors import EXIT_PREEMPTED

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class StopRequested(BaseException):
  """A stop signal arrived while there was nothing to save.

  A BaseException, like KeyboardInterrupt, so that code catching Exception (a dataset
  download's retries, say) does not swallow it.
  """

  def __init__(self, signal_name: str, during: str):
    super().__init__(f'Stopped by {signal_name} {during}; nothing needed saving. Run the same '
                     'command to resume.')


def _exit_at_once(signum: int, frame: types.FrameType | None) -> None:
  del frame
  sys.stderr.write(f'{StopRequested(signal.Signals(signum).name, "while starting")}\n')
  sys.stderr.flush()
  os._exit(EXIT_PREEMPTED)  # nothing is held yet that needs releasing


def _handled_signals() -> list[int]:
  """The stop signals not ignored by whoever started the process (`nohup` ignores SIGHUP)."""
  return [s for s in STOP_SIGNALS if signal.getsignal(s) is not signal.SIG_IGN]


def install_early_handlers() -> None:
  """Makes SIGTERM, SIGINT and SIGHUP end the process at once with the stop line and exit
  status 75 (call first thing in a CLI, before a run holds anything)."""
  for signum in _handled_signals():
    signal.signal(signum, _exit_at_once)


class StopSignals:
  """Context manager that records stop signals until it exits (after the last save)."""

  def __init__(self):
    import jax  # here, not at the top: see the module docstring
    self.received: str | None = None
    self.coordinated = jax.distributed.is_initialized()
    self._previous: dict[int, object] = {}
    self._interrupting: str | None = None

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

  @contextlib.contextmanager
  def interruptible(self, during: str) -> Iterator[None]:
    """Within it, a stop signal raises `StopRequested` (`during` says what was stopped)."""
    if self.received is not None and not self.coordinated:
      raise StopRequested(self.received, during)
    self._interrupting = during
    try:
      yield
    finally:
      self._interrupting = None

  def _on_signal(self, signum: int, frame: types.FrameType | None) -> None:
    del frame
    name = signal.Signals(signum).name
    if self._interrupting is not None and self.received is None:
      self.received = name
      raise StopRequested(name, self._interrupting)
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
