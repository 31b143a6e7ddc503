"""Training-step throughput of a preset on all local devices, with synthetic data.

    python benchmarks/train_throughput.py --model attention56 --batch-size 256 \\
        --image-size 224 --dtype bfloat16 --steps 50

Prints compile time, images/second, and the compiled step's FLOPs from XLA's cost analysis
next to 6x the model's multiply-adds (forward 2 FLOPs per multiply-add, backward twice that).
"""

import argparse
import time

import jax
import numpy as np
import optax

from ran_jax.models import create_model, model_costs
from ran_jax.train import mesh as mesh_lib
from ran_jax.train.state import create_train_state
from ran_jax.train.steps import jit_steps


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--model', default='attention56')
  parser.add_argument('--batch-size', type=int, default=64, help='global batch')
  parser.add_argument('--image-size', type=int, default=224)
  parser.add_argument('--num-classes', type=int, default=1000)
  parser.add_argument('--dtype', default='float32', choices=('float32', 'bfloat16'))
  parser.add_argument('--steps', type=int, default=20, help='timed steps after one warm-up')
  args = parser.parse_args()

  mesh = mesh_lib.make_mesh()
  mesh_lib.check_batch_size(args.batch_size, mesh)
  model = create_model(args.model, num_classes=args.num_classes, dtype=args.dtype)
  schedule = optax.constant_schedule(0.1)
  tx = optax.sgd(schedule, momentum=0.9, nesterov=True)
  shape = (args.image_size, args.image_size, 3)
  state, shardings = create_train_state(model, tx, mesh, shape, seed=0)
  train_step, _ = jit_steps(shardings, mesh_lib.data_sharding(mesh), mesh_lib.replicated(mesh),
                            schedule)
  rng = np.random.default_rng(0)
  batch = mesh_lib.to_global({
      'image': rng.normal(size=(args.batch_size, *shape)).astype(np.float32),
      'label': rng.integers(0, args.num_classes, args.batch_size).astype(np.int32)},
      mesh_lib.data_sharding(mesh))

  start = time.perf_counter()
  compiled = train_step.lower(state, batch).compile()
  compile_s = time.perf_counter() - start
  state, metrics = train_step(state, batch)
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for _ in range(args.steps):
    state, metrics = train_step(state, batch)
  jax.block_until_ready(metrics)
  step_s = (time.perf_counter() - start) / args.steps

  macs = model_costs(model, args.image_size).total_macs
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  xla_flops = float(cost.get('flops', 0.0)) if cost else 0.0
  print(f'{args.model} {args.image_size}px {args.dtype} batch {args.batch_size} on '
        f'{jax.device_count()} x {jax.devices()[0].device_kind}')
  print(f'compile {compile_s:.1f} s; step {step_s * 1e3:.1f} ms; '
        f'{args.batch_size / step_s:,.1f} images/s')
  expected = 6 * macs * args.batch_size
  print(f'XLA FLOPs per step {xla_flops / 1e9:,.2f} G; 6 x MACs x batch {expected / 1e9:,.2f} G '
        f'(ratio {xla_flops / expected:.3f})')


if __name__ == '__main__':
  main()
