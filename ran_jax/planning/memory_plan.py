"""Compiling a config's train and eval steps for a set of devices, and what they need.

The steps are the trainer's own (`build.build_training` and `build.jit_config_steps`:
the same model, optimizer, schedule, state, on-device normaliser, shardings and compiler
options), compiled ahead of time for `devices`: the devices of this host, or compile-only
devices of a TPU topology that this host does not have (`ran_jax.plan`). XLA's memory
analysis of the compiled step gives the bytes each device needs; its cost analysis the
FLOPs. Nothing is executed.
"""

import dataclasses
import logging
import math
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import ml_collections

from ran_jax.data import sources
from ran_jax.experiments.network import build_model
from ran_jax.models import model_costs
from ran_jax.train import build
from ran_jax.train import mesh as mesh_lib

STEPS = ('train', 'eval')
# The TPU compiler's refusal of a program larger than HBM: "Used 40.59G of 31.25G hbm".
_USED = re.compile(r'Used ([\d.]+)([KMGT]?) of ([\d.]+)([KMGT]?) hbm')
_UNITS = {'': 1, 'K': 2**10, 'M': 2**20, 'G': 2**30, 'T': 2**40}


@dataclasses.dataclass(frozen=True)
class StepMemory:
  """Bytes one device needs for a compiled step (XLA's memory analysis)."""
  arguments: int
  outputs: int
  aliased: int  # outputs written in place of donated arguments (the train state)
  temporaries: int
  code: int

  @property
  def total(self) -> int:
    """Arguments + outputs - aliased + temporaries + generated code."""
    return self.arguments + self.outputs - self.aliased + self.temporaries + self.code


@dataclasses.dataclass(frozen=True)
class CompiledStep:
  """One compile of a step at one batch.

  Attributes:
    step: 'train' or 'eval'; remat: the `model.remat` it was compiled with.
    per_device_batch / global_batch: its batch.
    memory: the memory analysis, or None when the compiler refused the program.
    total_bytes: bytes per device: `memory.total`, or the compiler's own count when it
      refused the program for want of memory (None if it did not say).
    limit_bytes: the compiler's memory limit per device, when it stated one.
    flops: XLA's FLOPs per step over all devices (None if it gave none).
    estimated_seconds: XLA's own estimate of the step's time, where the backend gives one
      (an estimate, not a measurement).
    compile_seconds: lowering and compilation, on this host.
    error: the compiler's refusal (first line), or None.
    executable: the compiled step (None when refused), to run it where the devices exist.
  """
  step: str
  remat: str
  per_device_batch: int
  global_batch: int
  memory: StepMemory | None
  total_bytes: int | None
  limit_bytes: int | None
  flops: float | None
  estimated_seconds: float | None
  compile_seconds: float
  error: str | None = None
  executable: Any = dataclasses.field(default=None, repr=False, compare=False)

  def fits(self, capacity: int | None) -> bool:
    """True when the compiler accepted the program and it needs at most `capacity` bytes
    per device (None: the compiler's acceptance decides alone)."""
    if self.memory is None:
      return False
    return capacity is None or self.memory.total <= capacity


def _bytes(number: str, unit: str) -> int:
  return int(float(number) * _UNITS[unit])


def _out_of_memory(error: Exception) -> tuple[int | None, int | None] | None:
  """(used, limit) bytes from a compiler's out-of-memory refusal; None for other errors."""
  text = str(error)
  if 'RESOURCE_EXHAUSTED' not in text and 'out of memory' not in text.lower():
    return None
  match = _USED.search(text)
  if not match:
    return None, None
  return _bytes(*match.group(1, 2)), _bytes(*match.group(3, 4))


@dataclasses.dataclass(frozen=True)
class StepBuilder:
  """Compiles `config`'s steps for `devices` at any per-device batch and remat setting."""
  config: ml_collections.ConfigDict
  devices: Sequence[Any]

  @property
  def num_devices(self) -> int:
    return len(self.devices)

  @property
  def source(self) -> sources.DataSource:
    """The config's data source: its facts are known without the data (`planning_facts`)."""
    return sources.source_of(self.config)

  def with_settings(self, *, step: str, per_device_batch: int,
                    remat: str | None = None) -> ml_collections.ConfigDict:
    """The config with the step's global batch (and `model.remat`) set."""
    config = self.config.copy_and_resolve_references()
    with config.unlocked():
      field = 'batch_size' if step == 'train' else 'eval_batch_size'
      config[field] = per_device_batch * self.num_devices
      if remat is not None:
        config.model.remat = remat
    return config

  def compile(self, *, step: str, per_device_batch: int,
              remat: str | None = None) -> CompiledStep:
    """Compiles the `step` ('train' or 'eval') at `per_device_batch` images per device."""
    if step not in STEPS:
      raise ValueError(f'step={step!r}; choose one of {", ".join(STEPS)}')
    config = self.with_settings(step=step, per_device_batch=per_device_batch, remat=remat)
    facts = self.source.planning_facts()
    mesh = mesh_lib.make_mesh(list(self.devices))
    network = build.build_network(config, facts.num_classes, facts.channels)
    training = build.build_training(config, mesh, network,
                                    steps_per_epoch=facts.num_train_examples / config.batch_size)
    train_step, eval_step = build.jit_config_steps(config, training, mesh, facts.normalizer)
    sharding = mesh_lib.data_sharding(mesh)
    global_batch = per_device_batch * self.num_devices
    size = config.image_size if step == 'train' else config.eval_image_size
    batch = {name: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding)
             for name, s in self.source.batch_shapes(global_batch, size,
                                                     train=step == 'train').items()}
    jitted = train_step if step == 'train' else eval_step
    return compile_and_analyse(jitted, (training.target, batch), step=step,
                               remat=config.model.remat, per_device_batch=per_device_batch,
                               num_devices=self.num_devices)

  def model_macs_per_image(self, step: str) -> int:
    """The network's multiply-adds per image at the step's image size."""
    config = self.config
    facts = self.source.planning_facts()
    size = config.image_size if step == 'train' else config.eval_image_size
    return model_costs(build_model(config, facts.num_classes), size, facts.channels).total_macs


def compile_and_analyse(jitted: Any, args: tuple, *, step: str, remat: str,
                        per_device_batch: int, num_devices: int) -> CompiledStep:
  """Lowers and compiles `jitted` for the abstract `args` and reads XLA's analyses; a
  compiler's refusal for want of memory is a result (memory None), other errors raise."""
  global_batch = per_device_batch * num_devices
  start = time.perf_counter()
  try:
    compiled = jitted.lower(*args).compile()
  except Exception as error:  # the compiler's refusal is a result, if it is for memory
    refused = _out_of_memory(error)
    if refused is None:
      raise
    used, limit = refused
    return CompiledStep(step, remat, per_device_batch, global_batch, None, used, limit, None,
                        None, time.perf_counter() - start,
                        str(error).strip().splitlines()[0][:300])
  seconds = time.perf_counter() - start
  memory = _memory(compiled)
  flops, estimate = _costs(compiled)
  return CompiledStep(step, remat, per_device_batch, global_batch, memory, memory.total, None,
                      None if flops is None else flops * num_devices, estimate, seconds,
                      executable=compiled)


def _memory(compiled: Any) -> StepMemory:
  analysis = compiled.memory_analysis()
  return StepMemory(int(analysis.argument_size_in_bytes), int(analysis.output_size_in_bytes),
                    int(analysis.alias_size_in_bytes), int(analysis.temp_size_in_bytes),
                    int(analysis.generated_code_size_in_bytes))


def _costs(compiled: Any) -> tuple[float | None, float | None]:
  """XLA's FLOPs of one device's program, and its time estimate in seconds (if any)."""
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  if not cost:
    return None, None
  flops = cost.get('flops')
  estimate = cost.get('optimal_seconds')
  return (float(flops) if flops else None,
          float(estimate) if estimate and estimate > 0 else None)


@dataclasses.dataclass(frozen=True)
class BatchSearch:
  """The largest per-device batch (a multiple of `multiple`) that fits, and the compiles
  that found it. `largest` is None when not even `multiple` fits; `confirmed_above` is True
  when the next multiple was compiled and does not fit."""
  largest: int | None
  confirmed_above: bool
  compiles: tuple[CompiledStep, ...]


def _line_guess(tried: dict[int, CompiledStep], good: int | None, bad: int | None,
                capacity: int) -> float | None:
  """The batch where memory, as a line through two known (batch, bytes) points, meets
  `capacity`: through the bracketing pair when both are known, else the two largest. From a
  single analysed compile, the line takes its temporaries as proportional to the batch."""
  known = {b: c.total_bytes for b, c in tried.items() if c.total_bytes is not None}
  if good in known and bad in known:
    (x0, y0), (x1, y1) = (good, known[good]), (bad, known[bad])
  elif len(known) >= 2:
    (x0, y0), (x1, y1) = sorted(known.items())[-2:]
  elif len(tried) == 1 and (only := next(iter(tried.values()))).memory is not None:
    x0, y0 = only.per_device_batch, only.total_bytes
    x1, y1 = 0, y0 - only.memory.temporaries
  else:
    return None
  slope = (y1 - y0) / (x1 - x0)
  return x0 + (capacity - y0) / slope if slope > 0 else None


def search_largest_batch(compile_at: Callable[[int], CompiledStep], capacity: int,
                         known: Sequence[CompiledStep] = (), *, multiple: int = 8,
                         max_compiles: int = 5) -> BatchSearch:
  """Finds the largest per-device batch, a multiple of `multiple`, whose step fits.

  Memory grows about linearly with the batch, so two compiles give the line (the second at
  the batch where the first's temporaries, scaled with the batch, would fill `capacity`); the
  batch where the line meets `capacity` is then compiled to confirm it fits, and the next
  multiple to confirm that it does not (a line through the closest batches that fit and that
  do not corrects a guess that missed). `known` are compiles already made (any batches); at most
  `max_compiles` new compiles are made.
  """
  tried = {c.per_device_batch: c for c in known}
  made = []

  def compile_once(batch: int) -> CompiledStep:
    if batch not in tried:
      tried[batch] = compile_at(batch)
      made.append(tried[batch])
    return tried[batch]

  def bounds() -> tuple[int | None, int | None]:
    good = [b for b, c in tried.items() if c.fits(capacity)]
    bad = [b for b, c in tried.items() if not c.fits(capacity)]
    return (max(good) if good else None), (min(bad) if bad else None)

  if not tried:
    compile_once(multiple)
  while len(made) < max_compiles:
    good, bad = bounds()
    if good is not None and bad is not None and bad - good <= multiple:
      break
    if bad is not None and bad <= multiple:
      break  # not even the smallest batch fits
    line = _line_guess(tried, good, bad, capacity)
    if line is not None:
      guess = math.floor(line / multiple) * multiple
    elif good is not None:
      guess = good * 2
    else:
      guess = bad // 2
    low = good + multiple if good is not None else multiple
    high = bad - multiple if bad is not None else max(guess, low)
    if good is not None and guess <= good:  # the line says `good` is the largest: check above
      guess = low
    batch = min(max(guess, low), high)
    batch = max(multiple, batch // multiple * multiple)
    if batch in tried:
      break
    compile_once(batch)
  good, bad = bounds()
  confirmed = good is not None and bad is not None and bad - good <= multiple
  if good is None and bad is not None and bad <= multiple:
    confirmed = True
  logging.info('Largest batch search: %s', ', '.join(
      f'{b}: {"fits" if c.fits(capacity) else "does not fit"}' for b, c in sorted(tried.items())))
  return BatchSearch(good, confirmed, tuple(made))
