"""The train and eval steps compiled ahead of time, when a run starts, before any batch is read.

Each step is lowered for the abstract train state and batch (their real shardings) and
compiled; the log says how long that took, whether the persistent compilation cache served
it, and the bytes per device XLA's memory analysis gives. A step that needs more than a
device's memory (as GPUs and TPUs report it, or as the TPU compiler refuses it) stops the run
there with `BatchTooLargeError`; the training loop then calls the compiled executables.
"""

import dataclasses
import logging
import re
import time
from typing import Any

import jax
from jax.sharding import Mesh

from ran_jax.data.source import InputFacts, batch_shapes
from ran_jax.process.errors import BatchTooLargeError
from ran_jax.train import mesh as mesh_lib

# The TPU compiler's refusals of a program larger than HBM: "Used 40.59G of 31.25G hbm", or
# "the total memory required for HLO temporaries (70.01G) exceeds available HBM (30.75G)" (the
# temporaries alone: a lower bound of the total).
_USED = re.compile(r'Used ([\d.]+)([KMGT]?) of ([\d.]+)([KMGT]?) hbm')
_TEMPORARIES = re.compile(r'required for HLO temporaries \(([\d.]+)([KMGT]?)\) exceeds available '
                          r'HBM \(([\d.]+)([KMGT]?)\)')
_UNITS = {'': 1, 'K': 2**10, 'M': 2**20, 'G': 2**30, 'T': 2**40}
CACHE_HIT_EVENT = '/jax/compilation_cache/cache_hits'
_cache_hits = [0]


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


def memory_of(compiled: Any) -> StepMemory:
  """XLA's memory analysis of a compiled step, per device."""
  analysis = compiled.memory_analysis()
  return StepMemory(int(analysis.argument_size_in_bytes), int(analysis.output_size_in_bytes),
                    int(analysis.alias_size_in_bytes), int(analysis.temp_size_in_bytes),
                    int(analysis.generated_code_size_in_bytes))


def _bytes(number: str, unit: str) -> int:
  return int(float(number) * _UNITS[unit])


def out_of_memory(error: Exception) -> tuple[int | None, int | None] | None:
  """(used, limit) bytes from a compiler's out-of-memory refusal; None for other errors."""
  text = str(error)
  if 'RESOURCE_EXHAUSTED' not in text and 'out of memory' not in text.lower():
    return None
  match = _USED.search(text) or _TEMPORARIES.search(text)
  if not match:
    return None, None
  return _bytes(*match.group(1, 2)), _bytes(*match.group(3, 4))


def device_capacity(mesh: Mesh) -> int | None:
  """The bytes each device of `mesh` may hold, as it reports them (GPUs, TPUs); None where it
  reports none (CPUs)."""
  local = next(device for device in mesh.devices.flat
               if device.process_index == jax.process_index())
  stats = getattr(local, 'memory_stats', lambda: None)()
  limit = (stats or {}).get('bytes_limit')
  return int(limit) if limit else None


def _count_cache_hits(event: str, **kwargs: Any) -> None:
  del kwargs
  if event == CACHE_HIT_EVENT:
    _cache_hits[0] += 1


def _listen_for_cache_hits() -> None:
  if not getattr(_listen_for_cache_hits, 'listening', False):
    jax.monitoring.register_event_listener(_count_cache_hits)
    _listen_for_cache_hits.listening = True


@dataclasses.dataclass(frozen=True)
class CompiledSteps:
  """The compiled train and eval steps, called as the jitted ones are (`train` None: not
  compiled, for a run that only evaluates)."""
  train: Any
  eval: Any


def compile_steps(train_step: Any | None, eval_step: Any, target: Any, mesh: Mesh,
                  facts: InputFacts, *, batch_size: int, eval_batch_size: int,
                  grad_accum_steps: int = 1) -> CompiledSteps:
  """Compiles the jitted `train_step` (None: a run that only evaluates) and `eval_step` for the
  abstract state `target` and the global batches of `facts`' images; logs each (the train
  step's `grad_accum_steps` micro-batches too); raises BatchTooLargeError when a step needs
  more memory than a device has."""
  _listen_for_cache_hits()
  steps = ('the train and eval steps' if train_step is not None else 'the eval step')
  logging.info('Compiling %s for %d device%s ...', steps, mesh.size,
               '' if mesh.size == 1 else 's')
  sharding = mesh_lib.data_sharding(mesh)
  capacity = device_capacity(mesh)
  compiled = {'train': None}
  for name, jitted, batch, size in (('train', train_step, batch_size, facts.image_size),
                                    ('eval', eval_step, eval_batch_size, facts.eval_image_size)):
    if jitted is None:
      continue
    shapes = batch_shapes(facts, batch, size, train=name == 'train')
    abstract = {key: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding)
                for key, s in shapes.items()}
    hits, start = _cache_hits[0], time.perf_counter()
    per_device = batch // mesh.size
    try:
      executable = jitted.lower(target, abstract).compile()
    except Exception as error:  # a TPU compiler refuses a program larger than its memory
      refused = out_of_memory(error)
      if refused is None:
        raise
      used, limit = refused
      raise BatchTooLargeError(name, per_device, None, limit or capacity or 0, used) from error
    seconds = time.perf_counter() - start
    memory = memory_of(executable)
    served = 'read from the compilation cache' if _cache_hits[0] > hits else 'compiled'
    micro = (f' in {grad_accum_steps} micro-batches of {per_device // grad_accum_steps}'
             if name == 'train' and grad_accum_steps > 1 else '')
    logging.info('The %s step at %d images per device%s: %s in %.1f s; %.2f GiB per device '
                 '(state and batch %.2f GiB, temporaries %.2f GiB)%s.', name, per_device, micro,
                 served, seconds, memory.total / 2**30, memory.arguments / 2**30,
                 memory.temporaries / 2**30,
                 f' of the {capacity / 2**30:.2f} GiB each device has' if capacity else '')
    if capacity is not None and memory.total > capacity:
      raise BatchTooLargeError(name, per_device, memory, capacity)
    compiled[name] = executable
  return CompiledSteps(compiled['train'], compiled['eval'])
