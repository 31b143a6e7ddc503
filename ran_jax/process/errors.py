"""Errors that end a training run with one clear line, and the exit status of a preemption."""

from collections.abc import Iterator
from typing import Any

# EX_TEMPFAIL: stopped by SIGTERM/SIGINT (or a preemption notice) after saving a checkpoint.
# Schedulers can requeue on it; rerunning the same command resumes.
EXIT_PREEMPTED = 75


class TrainingError(RuntimeError):
  """A run can't go on; the message says why and what to do, in one line."""


class CheckpointError(TrainingError):
  """A checkpoint exists but can't be used."""


class WorkdirBusyError(TrainingError):
  """Another live run holds the work directory."""


class NonFiniteError(TrainingError):
  """The loss or the parameters stopped being finite."""


class BatchTooLargeError(TrainingError):
  """A compiled step needs more memory per device than a device has.

  Attributes:
    step: 'train' or 'eval'; per_device_batch: its images per device.
    memory: the compiled step's memory analysis (`ran_jax.train.compiled.StepMemory`), or None
      when the compiler refused the program; needed: its bytes per device (None: not said).
    capacity: the bytes a device has.
    config, facts: the run's resolved config and input facts, set by the run for a search of a
      batch that fits (`ran_jax.planning.memory_plan.fitting_batch_line`).
  """

  def __init__(self, step: str, per_device_batch: int, memory: Any, capacity: int,
               needed: int | None = None):
    self.step, self.per_device_batch = step, per_device_batch
    self.memory, self.capacity = memory, capacity
    self.needed = memory.total if memory is not None else needed
    self.config = self.facts = None
    field = 'batch_size' if step == 'train' else 'eval_batch_size'
    accumulate = ', or raise --config.grad_accum_steps' if step == 'train' else ''
    super().__init__(
        f'{self.what_is_too_large()}; lower --config.{field}{accumulate}, or the step\'s memory '
        'with --config.model.remat=module (python3 -m ran_jax.plan --search finds the largest batch '
        'that fits)')

  def what_is_too_large(self) -> str:
    """'the train step at N images per device needs X GiB per device, more than ...'."""
    head = f'the {self.step} step at {self.per_device_batch} images per device'
    if not self.needed:
      return f'{head} was refused by the compiler for want of memory'
    has = f'the {self.capacity / 2**30:.2f} GiB' if self.capacity else 'what'
    return f'{head} needs {self.needed / 2**30:.2f} GiB per device, more than {has} a device has'


class Preempted(Exception):
  """The run stopped on a signal or preemption notice, with its checkpoint saved."""


class WorkdirError(TrainingError):
  """The work directory can't be created, written or used."""


class CheckpointSaveError(TrainingError):
  """A checkpoint could not be written (no space, a read-only or broken file system)."""


def chain(error: BaseException) -> Iterator[BaseException]:
  """`error`, its causes and contexts, and the members of the groups among them, once each."""
  seen, todo = set(), [error]
  while todo:
    current = todo.pop(0)
    if current is None or id(current) in seen:
      continue
    seen.add(id(current))
    yield current
    todo.extend(getattr(current, 'exceptions', ()))  # ExceptionGroup
    todo.extend((current.__cause__, current.__context__))


def os_error_in(error: BaseException) -> OSError | None:
  """The first OSError in `error`, its causes and contexts, or the groups among them."""
  return next((current for current in chain(error)
               if isinstance(current, OSError) and current.strerror), None)


def describe_os_error(error: OSError) -> str:
  """`error` as 'no space left on device (PATH)': the cause in words, then the path."""
  if not error.strerror:
    return str(error)
  reason = error.strerror[:1].lower() + error.strerror[1:]
  paths = [str(p) for p in (error.filename, error.filename2) if p is not None]
  return f'{reason} ({", ".join(paths)})' if paths else reason
