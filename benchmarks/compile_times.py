"""Tracing and compile time of every preset's train step (or of those named).

    python benchmarks/compile_times.py [--models attention56,attention452_cifar] [--batch 8]
        [--layouts unrolled,scanned]

ImageNet presets are compiled at 224x224 with 1000 classes, CIFAR presets at 32x32 with 10,
each in float32 on the default backend, with a fresh compilation (no persistent cache), in
each layout asked (`scan=False` / `scan=True`), the layouts of a preset one after the other.
Prints one JSON line per preset and layout: parameters, jaxpr equations of the step (the
equations of a loop's body counted once), trace seconds (Python to jaxpr and StableHLO) and
compile seconds (XLA).
"""

import argparse
import json
import time

import jax
import jax.extend
import numpy as np
from benchmark_step import build_train_step
from cli_args import positive_int

from ran_jax.models import count_params, create_model, list_models
from ran_jax.models.layout import LAYOUTS, SCANNED
from ran_jax.train import mesh as mesh_lib


def count_equations(jaxpr: jax.extend.core.Jaxpr) -> int:
  """Equations of `jaxpr`, with those of the jaxprs inside it (a loop's body once)."""
  total = 0
  for eqn in jaxpr.eqns:
    total += 1
    for param in eqn.params.values():
      for inner in param if isinstance(param, (tuple, list)) else (param,):
        if isinstance(inner, jax.extend.core.ClosedJaxpr):
          total += count_equations(inner.jaxpr)
        elif isinstance(inner, jax.extend.core.Jaxpr):
          total += count_equations(inner)
  return total


def measure(name: str, batch: int, layout: str) -> dict:
  """Trace and compile seconds of `name`'s jitted train step in `layout`."""
  cifar = name.endswith('_cifar')
  size, classes = (32, 10) if cifar else (224, 1000)
  model = create_model(name, num_classes=classes, scan=layout == SCANNED)
  mesh = mesh_lib.make_mesh()
  step, _, target = build_train_step(model, mesh, size)
  sharding = mesh_lib.data_sharding(mesh)
  image = jax.ShapeDtypeStruct((batch, size, size, 3), np.uint8, sharding=sharding)
  batch_shapes = {'image': image,
                  'label': jax.ShapeDtypeStruct((batch,), np.int32, sharding=sharding)}
  start = time.perf_counter()
  trace = step.trace(target, batch_shapes)  # traced once: counted, lowered and compiled
  lowered = trace.lower()
  traced = time.perf_counter()
  lowered.compile()
  compiled = time.perf_counter()
  equations = count_equations(trace.jaxpr.jaxpr)
  return {'model': name, 'layout': layout, 'image_size': size, 'batch': batch,
          'params': count_params(target.params), 'jaxpr_equations': equations,
          'trace_s': round(traced - start, 2), 'compile_s': round(compiled - traced, 2),
          'backend': jax.default_backend()}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--models', default=','.join(list_models()),
                      help='comma-separated preset names (default: all)')
  parser.add_argument('--batch', type=positive_int, default=8)
  parser.add_argument('--layouts', default=','.join(LAYOUTS),
                      help=f'comma-separated variable layouts, of {", ".join(LAYOUTS)}')
  args = parser.parse_args()
  layouts = args.layouts.split(',')
  if not set(layouts) <= set(LAYOUTS):
    parser.error(f'--layouts={args.layouts}: choose from {", ".join(LAYOUTS)}')
  unknown = sorted(set(args.models.split(',')) - set(list_models()))
  if unknown:
    parser.error(f'unknown model(s) {unknown}; choose from {", ".join(list_models())}')
  if args.batch % jax.device_count():
    parser.error(f'--batch={args.batch} must be a multiple of the number of devices '
                 f'({jax.device_count()})')
  jax.config.update('jax_enable_compilation_cache', False)
  for name in args.models.split(','):
    for layout in layouts:
      print(json.dumps(measure(name, args.batch, layout)), flush=True)


if __name__ == '__main__':
  main()
