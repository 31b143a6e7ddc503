"""Whether a config's training fits a TPU slice (or this host's devices), before paying for one.

    python -m ran_jax.plan --config=configs/imagenet_attention56.py --topology=v5p-8
    python -m ran_jax.plan --config=configs/imagenet_attention92.py --topology=v4-8 --search
    python -m ran_jax.plan --config=CONFIG --topology=local            # the devices here

Compiles the trainer's own train and eval steps (model, optimizer, schedule, on-device
normalisation, shardings and compiler options as `ran_jax.main` builds them) ahead of time for
the devices of an accelerator type (`v4-8`, `v5litepod-16`, `v5p-128`, `v6e-8`, ...; TPU
types need libtpu: `pip install -e ".[tpu]"`), at the config's global batch, and prints per
device: the bytes of the arguments, outputs, aliased (donated) buffers, temporaries and code,
their total against the device's HBM, whether it fits, XLA's FLOPs next to the model's
multiply-adds, and the compile time. When the train step does not fit (or with --search), it
finds the largest per-device batch that does (two compiles give memory as a line in the
batch, a third confirms the batch where it meets the capacity, a fourth that the next one
does not fit), tries the asked batch in 2, 4, 8, ... times as many micro-batches
(`grad_accum_steps`) and tries `model.remat` settings at the asked batch. The train step is
the trainer's, in the config's micro-batches and with the moving average of the weights in its
state when `ema_decay` is set. Nothing is run.

Exit status: 0 when the train step fits at the asked batch, 3 when it does not, 1 on an error,
2 on a bad command line.
"""

import dataclasses
import importlib.metadata
import importlib.util
import json
import math
import sys
from collections.abc import Callable
from typing import Any

from absl import app, flags

from ran_jax import cli
from ran_jax.cli import EXIT_USAGE, FLAGS
from ran_jax.process import platforms

EXIT_DOES_NOT_FIT = 3
EXAMPLE = ('python3 -m ran_jax.plan --config=configs/imagenet_attention56.py '
           '--topology=v5p-8')
TPU_INSTALL = 'python3 -m pip install -e ".[tpu]"'
REMAT_TRIES = ('unit', 'module')

flags.DEFINE_string('topology', None, 'An accelerator type as gcloud names it (v4-8, '
                    'v5litepod-16, v5p-128, v6e-8, ...), or "local" for the devices here.')
cli.define_json_flag('Print one JSON object instead of the report.')
flags.DEFINE_bool('search', False, 'Find the largest per-device batch that fits even when the '
                  'asked one fits.')
flags.DEFINE_bool('eval', True, 'Also compile the eval step at eval_batch_size.')
flags.DEFINE_bool('try_remat', True, 'When the train step does not fit, try each model.remat '
                  'setting at the asked batch.')
flags.DEFINE_bool('try_accumulation', True, 'When the train step does not fit, try keeping the '
                  'asked batch in 2, 4, 8, ... times as many micro-batches (grad_accum_steps) '
                  'until one fits.')
flags.DEFINE_integer('batch_multiple', 8, 'Per-device batches searched are multiples of this.',
                     lower_bound=1)
flags.DEFINE_integer('max_compiles', 4, 'Compiles the batch search may make once a batch '
                     'fits (until then it goes on down, refusals being quick).', lower_bound=1)
flags.DEFINE_float('capacity_gib', None, 'Memory per device to plan against, in GiB '
                   '(default: the TPU generation\'s HBM, or what a local device reports).',
                   lower_bound=0.001)


def parse_flags(argv: list[str]) -> list[str]:
  """Parses flags; --topology is required (checked here, not by absl, so that importing this
  module beside the other tools leaves their flags as they are)."""
  argv = cli.parse_flags(argv, EXAMPLE)
  if not FLAGS.topology:
    cli.fail(f'--topology is required, e.g. {EXAMPLE}', EXIT_USAGE)
  return argv


@dataclasses.dataclass(frozen=True)
class Target:
  """The devices to compile for and what each can hold."""
  name: str
  description: str
  devices: list
  processes: int
  capacity: int | None
  capacity_source: str
  compiler: str = ''


def _capacity(capacity_gib: float | None, default: int | None,
              source: str) -> tuple[int | None, str]:
  """Bytes per device and where the figure comes from: --capacity_gib when given."""
  if capacity_gib is not None:
    return int(capacity_gib * 2**30), 'given with --capacity_gib'
  return default, source


def _compiler_versions() -> str:
  """The jax and libtpu versions that compile for a TPU topology."""
  import jax
  return f'jax {jax.__version__}, libtpu {importlib.metadata.version("libtpu")}'


def tpu_target(name: str, capacity_gib: float | None = None) -> Target:
  """Compile-only devices of accelerator type `name` (libtpu compiles for them here)."""
  from ran_jax.planning import accelerators
  accelerator = accelerators.parse(name)  # a ValueError lists the known types
  if importlib.util.find_spec('libtpu') is None:
    raise RuntimeError(f'compiling for {name} needs libtpu, which is not installed; install '
                       f'it with: {TPU_INSTALL} (from the repository root)')
  platforms.libtpu_compile_environment(accelerator.name)
  from jax.experimental import topologies
  devices = topologies.get_topology_desc(
      accelerator.topology_name, 'tpu', chip_config_name=accelerator.chip_config_name,
      chips_per_host_bounds=accelerator.chips_per_host_bounds, num_slices=1).devices
  processes = len({device.process_index for device in devices})
  if (len(devices), processes) != (accelerator.devices, accelerator.hosts):
    raise RuntimeError(f'libtpu describes {accelerator.topology_name} with {len(devices)} '
                       f'devices on {processes} hosts where {accelerator.devices} on '
                       f'{accelerator.hosts} were expected')
  capacity, source = _capacity(capacity_gib, accelerator.hbm_bytes_per_device, (
      f'{accelerator.generation.hbm_gib:g} GiB per device ({accelerator.generation.prefix}, '
      'Cloud TPU documentation)'))
  return Target(name, accelerator.describe(), list(devices), accelerator.hosts, capacity, source,
                _compiler_versions())


def local_target(capacity_gib: float | None = None) -> Target:
  """This host's devices; their memory as they report it (GPUs, TPUs) or --capacity_gib."""
  import jax
  devices = jax.devices()
  stats = getattr(devices[0], 'memory_stats', lambda: None)()
  limit = (stats or {}).get('bytes_limit')
  capacity, source = _capacity(capacity_gib, int(limit) if limit else None,
                               "the device's own bytes_limit" if limit else
                               'unknown (give --capacity_gib)')
  description = (f'local: {len(devices)} {devices[0].device_kind} devices, '
                 f'{jax.process_count()} process(es)')
  return Target('local', description, devices, jax.process_count(), capacity, source)


def _gib(value: int | None) -> str:
  return 'unknown' if value is None else f'{value / 2**30:.2f} GiB'


def _compiled_record(compiled: Any, capacity: int | None, macs_per_image: int) -> dict:
  """A compile as JSON: memory per device, fit, FLOPs against the model's."""
  record = {'step': compiled.step, 'remat': compiled.remat,
            'per_device_batch': compiled.per_device_batch,
            'global_batch': compiled.global_batch,
            'grad_accum_steps': compiled.grad_accum_steps,
            'micro_batch_per_device': compiled.per_device_batch // compiled.grad_accum_steps,
            'fits': compiled.fits(capacity), 'total_bytes': compiled.total_bytes,
            'compiler_limit_bytes': compiled.limit_bytes,
            'compile_seconds': round(compiled.compile_seconds, 1), 'error': compiled.error}
  if compiled.memory is not None:
    record['memory'] = {**dataclasses.asdict(compiled.memory), 'total': compiled.memory.total}
  # Forward: 2 FLOPs per multiply-add; a train step adds the backward pass, twice that.
  per_image_model = (6 if compiled.step == 'train' else 2) * macs_per_image
  record['model_flops_per_image'] = per_image_model
  if compiled.flops:
    # XLA counts a loop's body once: with micro-batches, the FLOPs of one of them
    counted = compiled.global_batch // compiled.grad_accum_steps
    record['xla_flops_per_step'] = compiled.flops
    record['xla_flops_per_image'] = compiled.flops / counted
    record['xla_over_model_flops'] = round(compiled.flops / counted / per_image_model, 4)
  if compiled.estimated_seconds:
    record['xla_estimated_step_seconds'] = compiled.estimated_seconds
  return record


def make_plan(config: Any, target: Target, *, search: bool = False, with_eval: bool = True,
              try_remat: bool = True, try_accumulation: bool = True, multiple: int = 8,
              max_compiles: int = 4, report: Callable[[str], None] | None = None,
              builder: Any = None) -> dict:
  """Compiles `config`'s steps for `target` and returns the plan as a JSON-ready dict.

  The train step is compiled as the trainer runs it: in `grad_accum_steps` micro-batches, its
  state holding the moving average of the weights when `ema_decay` is set.

  `report(line)` is called with a line of progress before each compile; `builder` compiles
  the steps (default: `memory_plan.StepBuilder(config, target.devices)`).
  """
  from ran_jax.experiments import checks
  from ran_jax.planning.memory_plan import StepBuilder, search_largest_batch
  report = report or (lambda line: None)
  devices = len(target.devices)
  checks.validate(config, None, device_count=devices, process_count=target.processes)
  builder = builder or StepBuilder(config, target.devices)
  capacity = target.capacity
  macs = {step: builder.model_macs_per_image(step) for step in ('train', 'eval')}
  plan = {'config_model': config.model.name, 'topology': target.name,
          'description': target.description, 'compiler': target.compiler, 'devices': devices,
          'capacity_bytes_per_device': capacity, 'capacity_source': target.capacity_source,
          'dtype': config.dtype, 'image_size': config.image_size,
          'eval_image_size': config.eval_image_size,
          'grad_accum_steps': config.get('grad_accum_steps', 1),
          'ema_decay': config.get('ema_decay'), 'compiles': []}
  micro = plan['grad_accum_steps']

  def compile_at(step: str, per_device: int, remat: str | None = None,
                 accumulation: int | None = None):
    count = accumulation or (micro if step == 'train' else 1)
    report(f'compiling the {step} step at {per_device} images per device'
           f'{f" in {count} micro-batches" if count > 1 else ""}'
           f'{f" with remat={remat}" if remat else ""} ...')
    compiled = builder.compile(step=step, per_device_batch=per_device, remat=remat,
                               grad_accum_steps=accumulation)
    plan['compiles'].append(_compiled_record(compiled, capacity, macs[step]))
    return compiled

  asked = config.batch_size // devices
  train = compile_at('train', asked)
  plan['train'] = plan['compiles'][-1]
  plan['fits'] = train.fits(capacity)
  if with_eval:
    compile_at('eval', config.eval_batch_size // devices)
    plan['eval'] = plan['compiles'][-1]
  if capacity is not None and (search or not plan['fits']):
    found = search_largest_batch(lambda b: compile_at('train', b), capacity, [train],
                                 multiple=math.lcm(multiple, micro), max_compiles=max_compiles,
                                 least=micro)
    plan['largest_per_device_batch'] = found.largest
    plan['largest_confirmed'] = found.confirmed_above
    plan['smallest_refused_per_device_batch'] = found.smallest_refused
  if try_accumulation and not plan['fits'] and capacity is not None:
    plan['grad_accum_tried'], plan['grad_accum_that_fits'] = [], None
    count = micro * 2
    while asked % count == 0:
      plan['grad_accum_tried'].append(count)
      if compile_at('train', asked, accumulation=count).fits(capacity):
        plan['grad_accum_that_fits'] = count
        break
      count *= 2
  if try_remat and not plan['fits'] and capacity is not None:
    plan['remat_that_fits'] = None
    for remat in REMAT_TRIES:
      if remat == config.model.remat:
        continue
      if compile_at('train', asked, remat).fits(capacity):
        plan['remat_that_fits'] = remat
        break
  return plan


def format_plan(plan: dict) -> str:
  """The plan as lines for people."""
  capacity = plan['capacity_bytes_per_device']
  lines = [plan['description'] + (f' ({plan["compiler"]})' if plan.get('compiler') else ''),
           f'capacity per device: {_gib(capacity)} ({plan["capacity_source"]})']
  if plan.get('ema_decay') is not None:
    lines.append(f'the train state holds a moving average of the weights (ema_decay='
                 f'{plan["ema_decay"]:g}): one more copy of the parameters and BatchNorm '
                 'statistics in its arguments')
  for record in plan['compiles']:
    count = record.get('grad_accum_steps', 1)
    micro = (f', {count} micro-batches of {record["micro_batch_per_device"]}' if count > 1
             else '')
    head = (f'{record["step"]} step, batch {record["global_batch"]} '
            f'({record["per_device_batch"]} per device{micro}), remat {record["remat"]}: ')
    if 'memory' not in record:
      used = record['total_bytes']
      lines.append(head + f'does not fit: the compiler refused it for memory'
                   f'{f" (needs {_gib(used)})" if used else ""} after '
                   f'{record["compile_seconds"]:.0f} s')
      continue
    m = record['memory']
    share = f' ({100 * m["total"] / capacity:.1f}%)' if capacity else ''
    verdict = 'fits' if record['fits'] else 'does not fit'
    lines.append(head + f'compiled in {record["compile_seconds"]:.0f} s; {verdict}')
    lines.append(f'  per device: arguments {_gib(m["arguments"])}, outputs {_gib(m["outputs"])}, '
                 f'aliased {_gib(m["aliased"])}, temporaries {_gib(m["temporaries"])}, code '
                 f'{_gib(m["code"])}: total {_gib(m["total"])} of {_gib(capacity)}{share}')
    if 'xla_flops_per_step' in record:
      one = ' (of one micro-batch: XLA counts a loop body once)' if count > 1 else ''
      lines.append(f'  XLA FLOPs: {record["xla_flops_per_step"] / 1e12:.3f} T per step{one}, '
                   f'{record["xla_flops_per_image"] / 1e9:.2f} G per image; the model: '
                   f'{record["model_flops_per_image"] / 1e9:.2f} G per image '
                   f'({"6" if record["step"] == "train" else "2"} x multiply-adds; XLA/model '
                   f'{record["xla_over_model_flops"]:.3f})')
    if 'xla_estimated_step_seconds' in record:
      lines.append(f'  XLA\'s own estimate (not a measurement): '
                   f'{record["xla_estimated_step_seconds"] * 1e3:.1f} ms per step')
  lines.append(f'train step at batch {plan["train"]["global_batch"]}: '
               f'{"fits" if plan["fits"] else "does not fit"}')
  if 'largest_per_device_batch' in plan:
    largest = plan['largest_per_device_batch']
    refused = plan.get('smallest_refused_per_device_batch')
    lines.append('largest per-device batch that fits: ' + (
        'none (not even one image per device)' if largest is None else
        f'{largest} (global {largest * plan["devices"]}; ' +
        ('the next multiple does not fit)' if plan['largest_confirmed'] else
         f'confirmed to fit; {refused} does not, the batches between were not compiled)'
         if refused is not None else 'larger ones not compiled)')))
  if 'grad_accum_that_fits' in plan:
    count, tried = plan['grad_accum_that_fits'], plan['grad_accum_tried']
    per_device = plan['train']['per_device_batch']
    if count:
      lines.append(f'--config.grad_accum_steps={count} keeps the asked batch in micro-batches '
                   f'of {per_device // count} per device, and fits')
    elif tried:
      lines.append(f'no grad_accum_steps tried ({", ".join(map(str, tried))}) makes the asked '
                   'batch fit')
    else:
      lines.append(f'no more micro-batches were tried: {per_device} per device does not split '
                   f'into twice grad_accum_steps={plan["grad_accum_steps"]}')
  if 'remat_that_fits' in plan:
    remat = plan['remat_that_fits']
    lines.append(f'--config.model.remat={remat} makes the asked batch fit' if remat else
                 f'no remat setting ({", ".join(REMAT_TRIES)}) makes the asked batch fit')
  return '\n'.join(lines)


def main(argv: list[str]) -> None:
  del argv  # checked by parse_flags
  cli.warnings_only()
  try:
    target = (local_target(FLAGS.capacity_gib) if FLAGS.topology == 'local' else
              tpu_target(FLAGS.topology, FLAGS.capacity_gib))
  except ValueError as error:
    cli.fail(error, EXIT_USAGE)
  except RuntimeError as error:
    cli.fail(error)

  def report(line: str) -> None:
    print(line, file=sys.stderr, flush=True)

  try:
    plan = make_plan(FLAGS.config, target, search=FLAGS.search, with_eval=FLAGS.eval,
                     try_remat=FLAGS.try_remat, try_accumulation=FLAGS.try_accumulation,
                     multiple=FLAGS.batch_multiple,
                     max_compiles=FLAGS.max_compiles, report=report)
  except ValueError as error:
    cli.fail(error)
  print(json.dumps(plan) if FLAGS.json else format_plan(plan), flush=True)
  sys.exit(0 if plan['fits'] else EXIT_DOES_NOT_FIT)


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
