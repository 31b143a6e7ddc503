"""Tracing and compile time of every preset's train step (or of those named).

    python benchmarks/compile_times.py [--models attention56,attention452_cifar] [--batch 8]

ImageNet presets are compiled at 224x224 with 1000 classes, CIFAR presets at 32x32 with 10,
each in float32 on the default backend, with a fresh compilation (no persistent cache).
Prints one JSON line per preset: parameters, jaxpr equations of the step, trace seconds
(Python to jaxpr and StableHLO) and compile seconds (XLA).
"""

import argparse
import json
import time

import jax
import numpy as np
import optax

from ran_jax.data.normalize import imagenet_normalizer
from ran_jax.models import count_params, create_model, list_models
from ran_jax.train import mesh as mesh_lib
from ran_jax.train.state import shardings_of, train_state_factory
from ran_jax.train.steps import jit_steps


def measure(name: str, batch: int) -> dict:
  """Trace and compile seconds of `name`'s jitted train step."""
  cifar = name.endswith('_cifar')
  size, classes = (32, 10) if cifar else (224, 1000)
  model = create_model(name, num_classes=classes)
  mesh = mesh_lib.make_mesh()
  schedule = optax.constant_schedule(0.1)
  tx = optax.sgd(schedule, momentum=0.9, nesterov=True)
  _, target = train_state_factory(model, tx, mesh, (size, size, 3), seed=0)
  sharding = mesh_lib.data_sharding(mesh)
  step, _ = jit_steps(shardings_of(target), sharding, mesh_lib.replicated(mesh), schedule,
                      input_fn=imagenet_normalizer())
  image = jax.ShapeDtypeStruct((batch, size, size, 3), np.uint8, sharding=sharding)
  batch_shapes = {'image': image,
                  'label': jax.ShapeDtypeStruct((batch,), np.int32, sharding=sharding)}
  start = time.perf_counter()
  trace = step.trace(target, batch_shapes)  # traced once: counted, lowered and compiled
  lowered = trace.lower()
  traced = time.perf_counter()
  lowered.compile()
  compiled = time.perf_counter()
  equations = len(trace.jaxpr.eqns)
  return {'model': name, 'image_size': size, 'batch': batch,
          'params': count_params(target.params), 'jaxpr_equations': equations,
          'trace_s': round(traced - start, 2), 'compile_s': round(compiled - traced, 2),
          'backend': jax.default_backend()}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--models', default=','.join(list_models()),
                      help='comma-separated preset names (default: all)')
  parser.add_argument('--batch', type=int, default=8)
  args = parser.parse_args()
  unknown = sorted(set(args.models.split(',')) - set(list_models()))
  if unknown:
    parser.error(f'unknown model(s) {unknown}; choose from {", ".join(list_models())}')
  if args.batch < 1 or args.batch % jax.device_count():
    parser.error(f'--batch={args.batch} must be a positive multiple of the number of devices '
                 f'({jax.device_count()})')
  jax.config.update('jax_enable_compilation_cache', False)
  for name in args.models.split(','):
    print(json.dumps(measure(name, args.batch)), flush=True)


if __name__ == '__main__':
  main()
