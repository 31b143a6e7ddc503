"""Train step time of a preset unrolled against scanned (`scan=True`), measured alternately.

    python benchmarks/scan_step_time.py [--model attention92_cifar] [--batch 32] [--rounds 10]

Both steps are compiled first, from the same initial state (converted between the layouts),
then timed in turns: each round runs the unrolled step `--steps` times, then the scanned
one, so a machine that speeds up or slows down affects both alike. Prints one JSON line: the
median milliseconds per step of each layout over the rounds and scanned / unrolled.
"""

import argparse
import json
import statistics
import time

import jax
import numpy as np
from benchmark_step import build_train_step
from cli_args import positive_int

from ran_jax.models import create_model, layout, list_models
from ran_jax.train import mesh as mesh_lib


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--model', default='attention92_cifar', choices=list_models())
  parser.add_argument('--batch', type=positive_int, default=32)
  parser.add_argument('--rounds', type=positive_int, default=10)
  parser.add_argument('--steps', type=positive_int, default=3, help='steps per layout per round')
  args = parser.parse_args()
  size, classes = (32, 10) if args.model.endswith('_cifar') else (224, 1000)
  mesh = mesh_lib.make_mesh()
  sharding = mesh_lib.data_sharding(mesh)
  rng = np.random.default_rng(0)
  batch = jax.device_put({
      'image': rng.integers(0, 256, (args.batch, size, size, 3), dtype=np.uint8),
      'label': rng.integers(0, classes, (args.batch,), dtype=np.int32)}, sharding)
  runs = {}
  for scan in (False, True):
    step, init, target = build_train_step(
        create_model(args.model, num_classes=classes, scan=scan), mesh, size)
    runs[scan] = [step, init() if not scan else None, target]
  runs[True][1] = jax.jit(lambda state: layout.convert(state, runs[True][2]))(runs[False][1])
  for run in runs.values():  # compile and warm up
    run[1], _ = run[0](run[1], batch)
    jax.block_until_ready(run[1])
  times = {False: [], True: []}
  for _ in range(args.rounds):
    for scan, run in runs.items():
      start = time.perf_counter()
      for _ in range(args.steps):
        run[1], _ = run[0](run[1], batch)
      jax.block_until_ready(run[1])
      times[scan].append((time.perf_counter() - start) / args.steps * 1e3)
  unrolled, scanned = (statistics.median(times[scan]) for scan in (False, True))
  print(json.dumps({'model': args.model, 'batch': args.batch, 'image_size': size,
                    'rounds': args.rounds, 'steps_per_round': args.steps,
                    'unrolled_ms': round(unrolled, 2), 'scanned_ms': round(scanned, 2),
                    'scanned_over_unrolled': round(scanned / unrolled, 4),
                    'backend': jax.default_backend()}))


if __name__ == '__main__':
  main()
