"""Speed and memory of one jitted training step on device-resident synthetic data.

    python benchmarks/train_step.py --model attention56 --batch 8 --image-size 224
    python benchmarks/train_step.py --model attention56 --batch 256 --dtype bfloat16 \\
        --remat unit --remat-policy conv_outputs
    python benchmarks/train_step.py --model attention56 --dtype bfloat16 --largest-batch
    python benchmarks/train_step.py --model attention56 --batch 64 --grad-accum-steps 4

Prints one JSON line: images/s and the median step time over `--repeats` synchronised steps
(after `--warmup` steps), compile time, multiply-adds per image, XLA's FLOPs per step, the
achieved TFLOP/s (6 x multiply-adds x batch per second: forward 2 FLOPs per multiply-add,
backward twice that), the MFU against the device's dense peak when it is known, and memory:
XLA's temporary-buffer bytes per image of the compiled step (activations and workspace; XLA:CPU
drops rematerialisation, so on CPUs this does not move with --remat), the activation bytes
per image that JAX keeps for the backward pass (what --remat reduces, on any backend), and
the device's peak bytes in use where the backend reports them (GPUs, TPUs), and XLA's total
bytes per device of the compiled step (arguments + outputs - aliased + temporaries + code).
With --grad-accum-steps K, each step is one update over K micro-batches of batch / K.

With --largest-batch, the batch is the largest multiple of --batch-multiple per device whose
compiled step fits the device's memory (its bytes_limit, or --capacity-gib), found from XLA's
memory analysis (`ran_jax.planning.memory_plan.search_largest_batch`: two compiles give memory
as a line in the batch, then the batch where it meets the capacity and the next multiple are
compiled); --batch is then the first batch tried.

The step is the trainer's: uint8 images normalised on the device, SGD with Nesterov momentum.
Imports only jax, flax, optax and the package's models and train steps, so it runs where
TensorFlow and clu are not installed.
"""

import argparse
import json
import math
import statistics
import time

import jax
import numpy as np
from benchmark_step import build_train_step
from cli_args import positive_int

from ran_jax.models import activation_bytes_per_image, create_model, list_models, model_costs
from ran_jax.models.network import REMAT, REMAT_POLICIES
from ran_jax.planning import memory_plan
from ran_jax.data import device_batches
from ran_jax.train import mesh as mesh_lib

# Dense (no sparsity) peak TFLOP/s per chip, from the vendors' data sheets, by compute dtype;
# matched against jax's device_kind in this order (more specific names first).
PEAK_TFLOPS = {
    'H200': {'bfloat16': 989.0, 'float32': 494.0, 'source': 'H200 SXM data sheet, dense'},
    'H100 PCIe': {'bfloat16': 756.0, 'float32': 378.0, 'source': 'H100 PCIe data sheet, dense'},
    'H100': {'bfloat16': 989.0, 'float32': 494.0, 'source': 'H100 SXM data sheet, dense'},
    'A100': {'bfloat16': 312.0, 'float32': 156.0, 'source': 'A100 data sheet, dense (TF32)'},
    'TPU v6 lite': {'bfloat16': 918.0, 'source': 'Cloud TPU v6e documentation'},
    'TPU v5 lite': {'bfloat16': 197.0, 'source': 'Cloud TPU v5e documentation'},
    'TPU v5': {'bfloat16': 459.0, 'source': 'Cloud TPU v5p documentation'},
    'TPU v4': {'bfloat16': 275.0, 'source': 'Cloud TPU v4 documentation'},
    'TPU v3': {'bfloat16': 123.0, 'source': 'Cloud TPU v3 documentation'},
}


def device_peak(device_kind: str, dtype: str) -> tuple[float | None, str]:
  """Peak TFLOP/s of one device of `device_kind` for `dtype`, and where the figure is from."""
  for key, peaks in PEAK_TFLOPS.items():
    if key.lower() in device_kind.lower() and dtype in peaks:
      return peaks[dtype], peaks['source']
  return None, 'unknown'


def parse_args() -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--model', default='attention56', choices=list_models())
  parser.add_argument('--batch', type=positive_int, default=8,
                      help='global batch over all devices')
  parser.add_argument('--image-size', type=positive_int, default=224)
  parser.add_argument('--num-classes', type=positive_int, default=1000)
  parser.add_argument('--dtype', default='float32', choices=('float32', 'bfloat16'))
  parser.add_argument('--remat', default='none', choices=REMAT)
  parser.add_argument('--remat-policy', default='nothing', choices=tuple(REMAT_POLICIES),
                      help='what a rematerialised block keeps')
  parser.add_argument('--grad-accum-steps', type=positive_int, default=1,
                      help='micro-batches per update (the batch per device must divide by it)')
  parser.add_argument('--warmup', type=positive_int, default=2,
                      help='untimed steps after compiling')
  parser.add_argument('--repeats', type=positive_int, default=5,
                      help='timed steps (median reported)')
  parser.add_argument('--largest-batch', action='store_true',
                      help='use the largest per-device batch that fits (see above)')
  parser.add_argument('--batch-multiple', type=positive_int, default=32,
                      help='--largest-batch searches multiples of this per device')
  parser.add_argument('--capacity-gib', type=float, default=None,
                      help="memory per device for --largest-batch (default: the device's "
                      'bytes_limit)')
  args = parser.parse_args()
  try:
    create_model(args.model, num_classes=1).check_input((1, args.image_size, args.image_size, 3))
  except ValueError as error:
    parser.error(str(error))
  return args


def _capacity(args: argparse.Namespace) -> int:
  if args.capacity_gib:
    return int(args.capacity_gib * 2**30)
  device = jax.devices()[0]
  limit = ((device.memory_stats() if hasattr(device, 'memory_stats') else None) or {}).get(
      'bytes_limit')
  if not limit:
    raise SystemExit(f'error: {device.device_kind} reports no memory limit; give '
                     '--capacity-gib for --largest-batch.')
  return int(limit)


def build(args: argparse.Namespace):
  """The model, compiled step, its state, a device-resident batch of uint8 images, the
  compile seconds and the batch (found when --largest-batch)."""
  mesh = mesh_lib.make_mesh()
  devices = mesh.devices.size
  if args.batch % (devices * args.grad_accum_steps):
    raise SystemExit(f'error: --batch={args.batch} must be a multiple of the number of devices '
                     f'({devices}) x --grad-accum-steps ({args.grad_accum_steps}).')
  overrides = {'dtype': args.dtype}
  if args.remat != 'none':
    overrides.update(remat=args.remat, remat_policy=args.remat_policy)
  model = create_model(args.model, num_classes=args.num_classes, **overrides)
  train_step, init, target = build_train_step(model, mesh, args.image_size,
                                              args.grad_accum_steps)
  sharding = mesh_lib.data_sharding(mesh)
  shape = (args.image_size, args.image_size, 3)

  def compile_at(per_device: int) -> memory_plan.CompiledStep:
    batch = {'image': jax.ShapeDtypeStruct((per_device * devices, *shape), np.uint8,
                                           sharding=sharding),
             'label': jax.ShapeDtypeStruct((per_device * devices,), np.int32,
                                           sharding=sharding)}
    return memory_plan.compile_and_analyse(train_step, (target, batch), step='train',
                                           remat=args.remat, per_device_batch=per_device,
                                           num_devices=devices)

  first = compile_at(args.batch // devices)
  chosen = first
  if args.largest_batch:
    found = memory_plan.search_largest_batch(
        compile_at, _capacity(args), [first], max_compiles=3, least=args.grad_accum_steps,
        multiple=math.lcm(args.batch_multiple, args.grad_accum_steps))
    if found.largest is None:
      raise SystemExit(f'error: not even {args.grad_accum_steps} image(s) per device fit.')
    chosen = next(c for c in (first, *found.compiles)
                  if c.per_device_batch == found.largest)
  if chosen.executable is None:
    raise SystemExit(f'error: the step at batch {chosen.global_batch} does not fit: '
                     f'{chosen.error}')
  state = init()
  rng = np.random.default_rng(0)
  batch = device_batches.to_global({
      'image': rng.integers(0, 256, (chosen.global_batch, *shape), dtype=np.uint8),
      'label': rng.integers(0, args.num_classes, chosen.global_batch).astype(np.int32)},
      sharding)
  return model, chosen.executable, state, batch, chosen.compile_seconds, chosen.global_batch


def time_steps(step, state, batch, warmup: int, repeats: int) -> list[float]:
  """Seconds of each of `repeats` synchronised steps, after `warmup` untimed ones."""
  for _ in range(warmup):
    state, metrics = step(state, batch)
  jax.block_until_ready((state, metrics))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    state, metrics = step(state, batch)
    jax.block_until_ready((state, metrics))
    times.append(time.perf_counter() - start)
  return times


def main() -> None:
  args = parse_args()
  model, compiled, state, batch, compile_s, args.batch = build(args)
  times = time_steps(compiled, state, batch, args.warmup, args.repeats)
  step_s = statistics.median(times)

  macs = model_costs(model, args.image_size).total_macs
  model_flops = 6 * macs * args.batch
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  memory = compiled.memory_analysis()
  device = jax.devices()[0]
  stats = device.memory_stats() if hasattr(device, 'memory_stats') else None
  achieved = model_flops / step_s / 1e12
  peak, peak_source = device_peak(device.device_kind, args.dtype)
  total_peak = peak * jax.device_count() if peak else None
  print(json.dumps({
      'model': args.model, 'image_size': args.image_size, 'batch': args.batch,
      'dtype': args.dtype, 'remat': args.remat, 'grad_accum_steps': args.grad_accum_steps,
      'remat_policy': args.remat_policy if args.remat != 'none' else None,
      'devices': jax.device_count(), 'device_kind': device.device_kind,
      'images_per_s': round(args.batch / step_s, 3), 'step_ms': round(step_s * 1e3, 2),
      'step_ms_min_max': [round(min(times) * 1e3, 2), round(max(times) * 1e3, 2)],
      'compile_s': round(compile_s, 2), 'macs_per_image': macs,
      'xla_flops_per_step': float(cost.get('flops', 0.0)) if cost else None,
      'model_flops_per_step': model_flops, 'achieved_tflops': round(achieved, 4),
      'peak_tflops': total_peak if total_peak else 'unknown', 'peak_source': peak_source,
      'mfu': round(achieved / total_peak, 4) if total_peak else 'unknown',
      'temp_bytes_per_image': memory.temp_size_in_bytes / args.batch if memory else None,
      'activation_bytes_per_image': activation_bytes_per_image(model, args.image_size),
      'argument_bytes': memory.argument_size_in_bytes if memory else None,
      'total_bytes_per_device': memory_plan.memory_of(compiled).total if memory else None,
      'peak_bytes_in_use': stats.get('peak_bytes_in_use') if stats else None,
  }))


if __name__ == '__main__':
  main()
