"""The metric writer, the progress line and the profiler of a run.

The log has one line per log step, written by the training loop (`progress_line`); the writer
here only writes TensorBoard event files (clu's `SummaryWriter`, on process 0). clu's writers
and its profiler import TensorFlow: a run on synthetic data needs no TensorFlow
otherwise, so on a machine without it (a bare GPU host measuring the trainer) the writer writes
nothing and the log line is all there is.
"""

import importlib.util
import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol


def clu_usable() -> bool:
  """True when clu's writers can be imported (they need TensorFlow)."""
  return all(importlib.util.find_spec(name) is not None for name in ('clu', 'tensorflow'))


def _import_tensorflow_quietly() -> None:
  """Imports TensorFlow without its start-up lines, before clu imports it."""
  from ran_jax.data import quiet_tf
  quiet_tf.import_tensorflow()


class MetricWriter(Protocol):
  """What the loop writes metrics through: clu's writers and `NullWriter`."""

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None: ...

  def write_texts(self, step: int, texts: Mapping[str, str]) -> None: ...

  def write_hparams(self, hparams: Mapping[str, Any]) -> None: ...

  def write_images(self, step: int, images: Mapping[str, Any]) -> None: ...

  def flush(self) -> None: ...

  def close(self) -> None: ...


class NullWriter:
  """Writes nothing: the metrics of a run without clu are in its log lines only."""

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    del step, scalars

  def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
    del step, texts

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    del hparams

  def write_images(self, step: int, images: Mapping[str, Any]) -> None:
    del step, images

  def flush(self) -> None:
    pass

  def close(self) -> None:
    pass


def progress_line(step: int, num_train_steps: int, metrics: Mapping[str, float],
                  images_per_second: float, batch_size: int) -> str:
  """The log line of a log step: progress, loss, accuracy, speed and the ETA."""
  eta = ((num_train_steps - step) * batch_size / images_per_second if images_per_second > 0
         else float('inf'))
  return (f'Step {step}/{num_train_steps} ({100 * step / num_train_steps:.1f}%): loss '
          f'{metrics["loss"]:.4g}, top-1 {100 * metrics["top1_accuracy"]:.2f}%, '
          f'{images_per_second:,.0f} images/s, ETA {_duration(eta)}')


def _duration(seconds: float) -> str:
  if seconds == float('inf'):
    return 'unknown'
  minutes, secs = divmod(int(seconds), 60)
  hours, minutes = divmod(minutes, 60)
  return f'{hours}h{minutes:02d}m' if hours else f'{minutes}m{secs:02d}s'


def create_writer(workdir: str, *, just_logging: bool) -> MetricWriter:
  """clu's TensorBoard writer of `workdir` (writing in the background), or a `NullWriter` where
  there is nothing to write: `just_logging` (processes other than 0) or no clu."""
  if just_logging:
    return NullWriter()
  if clu_usable():
    _import_tensorflow_quietly()
    from clu import metric_writers
    return metric_writers.AsyncWriter(metric_writers.SummaryWriter(workdir))
  logging.warning('TensorFlow is not installed, so clu cannot write TensorBoard files: the '
                  'metrics go to the log only.')
  return NullWriter()


def profiler(profile_dir: str) -> Callable[[int], None] | None:
  """clu's profiler hook (called after every step; it profiles a few steps into
  `profile_dir`), or None with a warning where clu cannot run."""
  if not clu_usable():
    logging.warning('Profiling needs clu and TensorFlow; this run is not profiled.')
    return None
  _import_tensorflow_quietly()
  from clu import periodic_actions
  return periodic_actions.Profile(logdir=profile_dir, num_profile_steps=5)
