"""The metric writer and progress report of a run: clu's, or log lines where clu can't load.

clu's writers (TensorBoard event files and log lines) and its `ReportProgress` import
TensorFlow. A run on synthetic data needs no TensorFlow otherwise, so on a machine without it
(a bare GPU host measuring the trainer) metrics go to the log alone, one line per log step,
with the same progress and ETA.
"""

import contextlib
import importlib.util
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any


def clu_usable() -> bool:
  """True when clu's writers can be imported (they need TensorFlow)."""
  return all(importlib.util.find_spec(name) is not None for name in ('clu', 'tensorflow'))


class LogWriter:
  """Scalars and texts as log lines; hyperparameters and images are dropped."""

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    logging.info('[%d] %s', step, ', '.join(f'{k}={float(v):.6g}' for k, v in scalars.items()))

  def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
    del step, texts  # the loop logs the same lines itself

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    del hparams

  def write_images(self, step: int, images: Mapping[str, Any]) -> None:
    del step, images

  def flush(self) -> None:
    pass

  def close(self) -> None:
    pass


class LogProgress:
  """Every `every_steps` steps: steps per second, the share done and the ETA, in one log
  line (what clu's `ReportProgress` reports). `timed(name)` leaves a pause out of the rate."""

  def __init__(self, num_train_steps: int, writer: Any, every_steps: int):
    self.num_train_steps, self.writer, self.every_steps = num_train_steps, writer, every_steps
    self.last_step, self.last_time, self.paused = None, time.monotonic(), 0.0

  def __call__(self, step: int) -> None:
    now = time.monotonic()
    if self.last_step is None:  # the first step holds the compilation: start counting here
      self.last_step, self.last_time, self.paused = step, now, 0.0
      return
    if step % self.every_steps and step != self.num_train_steps:
      return
    rate = (step - self.last_step) / max(now - self.last_time - self.paused, 1e-9)
    eta = (self.num_train_steps - step) / rate if rate > 0 else float('inf')
    logging.info('%d/%d steps (%.1f%%), %.3g steps/s, ETA %s', step, self.num_train_steps,
                 100 * step / self.num_train_steps, rate, _duration(eta))
    self.last_step, self.last_time, self.paused = step, now, 0.0

  @contextlib.contextmanager
  def timed(self, name: str) -> Iterator[None]:
    del name
    start = time.monotonic()
    try:
      yield
    finally:
      self.paused += time.monotonic() - start


def _duration(seconds: float) -> str:
  if seconds == float('inf'):
    return 'unknown'
  minutes, secs = divmod(int(seconds), 60)
  hours, minutes = divmod(minutes, 60)
  return f'{hours}h{minutes:02d}m' if hours else f'{minutes}m{secs:02d}s'


def create_writer(workdir: str, *, just_logging: bool) -> Any:
  """clu's default writer (TensorBoard files in `workdir` unless `just_logging`), or a
  `LogWriter` where clu can't be imported."""
  if clu_usable():
    from clu import metric_writers
    return metric_writers.create_default_writer(workdir, just_logging=just_logging)
  logging.warning('TensorFlow is not installed, so clu cannot write TensorBoard files: the '
                  'metrics go to the log only.')
  return LogWriter()


def progress_hooks(num_train_steps: int, writer: Any, every_steps: int,
                   profile_dir: str | None = None) -> list[Callable[[int], None]]:
  """The per-step hooks: progress with ETA first (it has `timed`), then the profiler when
  `profile_dir` is given."""
  if not clu_usable():
    if profile_dir:
      logging.warning('Profiling needs clu and TensorFlow; this run is not profiled.')
    return [LogProgress(num_train_steps, writer, every_steps)]
  from clu import periodic_actions
  hooks = [periodic_actions.ReportProgress(num_train_steps=num_train_steps, writer=writer,
                                           every_steps=every_steps, every_secs=None)]
  if profile_dir:
    hooks.append(periodic_actions.Profile(logdir=profile_dir, num_profile_steps=5))
  return hooks
