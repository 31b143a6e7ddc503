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
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import ml_collections

from ran_jax.data import sources
from ran_jax.data.source import InputFacts, batch_shapes
from ran_jax.process.errors import BatchTooLargeError
from ran_jax.experiments.network import build_model
from ran_jax.models import model_costs
from ran_jax.train import build
from ran_jax.train import mesh as mesh_lib
from ran_jax.train.compiled import StepMemory, memory_of, out_of_memory

STEPS = ('train', 'eval')
LEAST_MEMORY_REMAT = 'module'  # the `model.remat` that keeps the fewest activations


@dataclasses.dataclass(frozen=True)
class CompiledStep:
  """One compile of a step at one batch.

  Attributes:
    step: 'train' or 'eval'; remat: the `model.remat` it was compiled with.
    per_device_batch / global_batch: its batch.
    grad_accum_steps: the micro-batches the train step splits its batch into (1 for eval).
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
  grad_accum_steps: int = 1

  def fits(self, capacity: int | None) -> bool:
    """True when the compiler accepted the program and it needs at most `capacity` bytes
    per device (None: the compiler's acceptance decides alone)."""
    if self.memory is None:
      return False
    return capacity is None or self.memory.total <= capacity


@dataclasses.dataclass(frozen=True)
class StepBuilder:
  """Compiles `config`'s steps for `devices` at any per-device batch and remat setting;
  `facts`: its input's (default: those its data source knows without the data)."""
  config: ml_collections.ConfigDict
  devices: Sequence[Any]
  facts: InputFacts | None = None

  @property
  def num_devices(self) -> int:
    return len(self.devices)

  def input_facts(self) -> InputFacts:
    """The input's facts: `facts`, or those the config's data source knows without the data."""
    return self.facts or sources.source_of(self.config).planning_facts()

  def with_settings(self, *, step: str, per_device_batch: int, remat: str | None = None,
                    grad_accum_steps: int | None = None) -> ml_collections.ConfigDict:
    """The config with the step's global batch (and `model.remat`, `grad_accum_steps`) set."""
    config = self.config.copy_and_resolve_references()
    with config.unlocked():
      field = 'batch_size' if step == 'train' else 'eval_batch_size'
      config[field] = per_device_batch * self.num_devices
      if remat is not None:
        config.model.remat = remat
      if grad_accum_steps is not None:
        config.grad_accum_steps = grad_accum_steps
    return config

  def compile(self, *, step: str, per_device_batch: int, remat: str | None = None,
              grad_accum_steps: int | None = None) -> CompiledStep:
    """Compiles the `step` ('train' or 'eval') at `per_device_batch` images per device (the
    train step in `grad_accum_steps` micro-batches; default: the config's)."""
    if step not in STEPS:
      raise ValueError(f'step={step!r}; choose one of {", ".join(STEPS)}')
    config = self.with_settings(step=step, per_device_batch=per_device_batch, remat=remat,
                                grad_accum_steps=grad_accum_steps)
    facts = self.input_facts()
    mesh = mesh_lib.make_mesh(list(self.devices))
    network = build.build_network(config, facts.num_classes, facts.channels)
    training = build.build_training(config, mesh, network,
                                    steps_per_epoch=facts.num_train_examples / config.batch_size)
    train_step, eval_step = build.jit_config_steps(config, training, mesh, facts.normalizer)
    sharding = mesh_lib.data_sharding(mesh)
    global_batch = per_device_batch * self.num_devices
    size = config.image_size if step == 'train' else config.eval_image_size
    batch = {name: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding)
             for name, s in batch_shapes(facts, global_batch, size,
                                         train=step == 'train').items()}
    jitted = train_step if step == 'train' else eval_step
    compiled = compile_and_analyse(jitted, (training.target, batch), step=step,
                                   remat=config.model.remat, per_device_batch=per_device_batch,
                                   num_devices=self.num_devices)
    if step == 'train':
      compiled = dataclasses.replace(compiled, grad_accum_steps=config.get('grad_accum_steps', 1))
    return compiled

  def model_macs_per_image(self, step: str) -> int:
    """The network's multiply-adds per image at the step's image size."""
    config = self.config
    facts = self.input_facts()
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
    refused = out_of_memory(error)
    if refused is None:
      raise
    used, limit = refused
    return CompiledStep(step, remat, per_device_batch, global_batch, None, used, limit, None,
                        None, time.perf_counter() - start,
                        str(error).strip().splitlines()[0][:300])
  seconds = time.perf_counter() - start
  memory = memory_of(compiled)
  flops, estimate = _costs(compiled)
  return CompiledStep(step, remat, per_device_batch, global_batch, memory, memory.total, None,
                      None if flops is None else flops * num_devices, estimate, seconds,
                      executable=compiled)


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
  """The largest per-device batch found to fit, the smallest found not to, and the compiles
  that found them.

  Attributes:
    largest: the largest batch compiled that fits (a multiple of `multiple`, or the search's
      `least` when not even `multiple` fits); None only when `least` does not fit.
    smallest_refused: the smallest batch compiled that does not fit (None: none was refused).
    confirmed_above: True when `smallest_refused` is the next batch after `largest` (the next
      multiple), so `largest` is the answer and not only a lower bound.
  """
  largest: int | None
  confirmed_above: bool
  compiles: tuple[CompiledStep, ...]
  smallest_refused: int | None = None


def _line_guess(tried: dict[int, CompiledStep], good: int | None, bad: int | None,
                capacity: int) -> float | None:
  """The batch where memory, as a line through two known (batch, bytes) points, meets
  `capacity`: through the bracketing pair when both are known, else the two largest. From a
  single analysed compile, the line takes its temporaries as proportional to the batch; from a
  single refusal that gave its bytes, all of them (a guess on the small side)."""
  known = {b: c.total_bytes for b, c in tried.items() if c.total_bytes is not None}
  if good in known and bad in known:
    (x0, y0), (x1, y1) = (good, known[good]), (bad, known[bad])
  elif len(known) >= 2:
    (x0, y0), (x1, y1) = sorted(known.items())[-2:]
  elif len(tried) == 1 and (only := next(iter(tried.values()))).memory is not None:
    x0, y0 = only.per_device_batch, only.total_bytes
    x1, y1 = 0, y0 - only.memory.temporaries
  elif good is None and bad in known:  # a refusal that gave its bytes: memory as if all batch
    return bad * capacity / known[bad]
  else:
    return None
  slope = (y1 - y0) / (x1 - x0)
  return x0 + (capacity - y0) / slope if slope > 0 else None


def search_largest_batch(compile_at: Callable[[int], CompiledStep], capacity: int,
                         known: Sequence[CompiledStep] = (), *, multiple: int = 8,
                         max_compiles: int = 5, least: int = 1) -> BatchSearch:
  """Finds the largest per-device batch, a multiple of `multiple`, whose step fits.

  Memory grows about linearly with the batch, so two compiles give the line (the second at
  the batch where the first's temporaries, scaled with the batch, would fill `capacity`); the
  batch where the line meets `capacity` is then compiled to confirm it fits, and the next
  multiple to confirm that it does not (a line through the closest batches that fit and that
  do not corrects a guess that missed). `known` are compiles already made (any batches). Until
  a batch fits, the search goes on down (a refusal is quick; one whose message gives the
  bytes needed jumps to where they would fit) to `least` images per device (a train step in
  k micro-batches: k); from the first batch that fits, at most `max_compiles` new compiles
  refine it.
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

  fits_known = any(c.fits(capacity) for c in known)
  if not tried:
    compile_once(multiple)
  while True:
    good, bad = bounds()
    if good is not None and bad is not None and bad - good <= multiple:
      break
    if bad is not None and bad <= multiple:  # not even `multiple` fits: `least` per device?
      if least not in tried and bad > least:
        compile_once(least)
      break
    if good is not None:  # refining: count the compiles from the first that fit (or all)
      first_fit = 0 if fits_known else next(i for i, c in enumerate(made) if c.fits(capacity))
      if len(made) - first_fit >= max_compiles:
        break
    batch = _next_batch(tried, good, bad, capacity, multiple)
    if batch in tried:
      break
    compile_once(batch)
  good, bad = bounds()
  confirmed = (bad is not None and bad - (good or 0) <= multiple) if good else bad == least
  logging.info('Largest batch search: %s', ', '.join(
      f'{b}: {"fits" if c.fits(capacity) else "does not fit"}' for b, c in sorted(tried.items())))
  return BatchSearch(good, confirmed, tuple(made), bad)


def _next_batch(tried: dict[int, CompiledStep], good: int | None, bad: int | None,
                capacity: int, multiple: int) -> int:
  """The batch to compile next: where memory as a line meets `capacity`, kept strictly
  between the closest batches known to fit and not to (doubling above the largest that fits,
  halving below the smallest refused, where no line is known)."""
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
  if good is None and bad is not None:  # nothing fits yet: at least halve
    guess = min(guess, bad // 2)
  batch = min(max(guess, low), high)
  return max(multiple, batch // multiple * multiple)


def fitting_batch_line(error: BatchTooLargeError, devices: Sequence[Any]) -> str:
  """The one line of a run whose step is too large for its devices: the batch per device the
  search confirms to fit (compiled here, for `devices`), the gradient accumulation that keeps
  the asked batch in micro-batches no larger (train step), and the remat setting to try."""
  config = error.config
  builder = StepBuilder(config, devices, facts=error.facts)
  micro = config.get('grad_accum_steps', 1) if error.step == 'train' else 1
  asked = CompiledStep(error.step, config.model.get('remat') or 'none', error.per_device_batch,
                       error.per_device_batch * len(devices), error.memory, error.needed,
                       None, None, None, 0.0, grad_accum_steps=micro)
  logging.info('Searching for the largest %s batch that fits (compiling for %d devices) ...',
               error.step, len(devices))
  found = search_largest_batch(
      lambda batch: builder.compile(step=error.step, per_device_batch=batch), error.capacity,
      [asked], multiple=math.lcm(8, micro), least=micro)
  field = 'batch_size' if error.step == 'train' else 'eval_batch_size'
  head = error.what_is_too_large()
  if found.largest is None:
    least = f'{micro} images per device fit' if micro > 1 else 'one image per device fits'
    return (f'{head}; not even {least}: lower the step\'s memory with --config.model.remat='
            f'{LEAST_MEMORY_REMAT}, or use devices with more memory')
  refused = (f', and {found.smallest_refused} does not' if found.smallest_refused is not None
             else '')
  accumulate = ''
  if error.step == 'train' and (more := accumulation_keeping_batch(
      error.per_device_batch, found.largest // micro)) is not None:
    accumulate = (f', or keep the batch in micro-batches of {error.per_device_batch // more} '
                  f'images per device with --config.grad_accum_steps={more}')
  return (f'{head}; {found.largest} images per device fit (--config.{field}='
          f'{found.largest * len(devices)}; compiled to confirm it{refused}){accumulate}, or '
          f'lower the step\'s memory with --config.model.remat={LEAST_MEMORY_REMAT} (python3 -m '
          'ran_jax.plan shows each)')


def accumulation_keeping_batch(per_device_batch: int, fitting_micro_batch: int) -> int | None:
  """The fewest micro-batches (grad_accum_steps) that split `per_device_batch` evenly into
  micro-batches of at most `fitting_micro_batch` images; None when there is no such split
  above one micro-batch."""
  for count in range(max(2, -(-per_device_batch // fitting_micro_batch)), per_device_batch + 1):
    if per_device_batch % count == 0:
      return count
  return None
