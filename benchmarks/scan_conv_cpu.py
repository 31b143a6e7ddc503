"""Why a scanned train step is slow on a CPU: four 3x3 convolutions, unrolled or in a lax.scan.

    python benchmarks/scan_conv_cpu.py

Times (median of 5, after compiling) the forward pass, the gradient with respect to the
input, and the gradient with respect to the input and the stacked kernels, of the same
four convolutions (batch 16, 32x32, 64 channels), unrolled and as one `lax.scan`. Prints
one JSON line per case: milliseconds unrolled and scanned, and their ratio.
"""

import json
import statistics
import time

import jax
import jax.numpy as jnp


def conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), 'SAME',
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def unrolled(x: jax.Array, kernels: jax.Array) -> jax.Array:
  for kernel in kernels:
    x = conv(x, kernel)
  return x.sum()


def scanned(x: jax.Array, kernels: jax.Array) -> jax.Array:
  return jax.lax.scan(lambda carry, kernel: (conv(carry, kernel), None), x, kernels)[0].sum()


def milliseconds(fn, *args) -> float:
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(5):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append((time.perf_counter() - start) * 1e3)
  return statistics.median(times)


def main() -> None:
  x = jnp.ones((16, 32, 32, 64))
  kernels = jnp.full((4, 3, 3, 64, 64), 0.01)
  cases = {'forward': lambda f: f, 'gradient of the input': lambda f: jax.grad(f),
           'gradient of the input and kernels': lambda f: jax.grad(f, argnums=(0, 1))}
  for case, transform in cases.items():
    ms = {name: milliseconds(jax.jit(transform(f)), x, kernels)
          for name, f in (('unrolled', unrolled), ('scanned', scanned))}
    print(json.dumps({'case': case, 'unrolled_ms': round(ms['unrolled'], 1),
                      'scanned_ms': round(ms['scanned'], 1),
                      'scanned_over_unrolled': round(ms['scanned'] / ms['unrolled'], 2),
                      'backend': jax.default_backend()}), flush=True)


if __name__ == '__main__':
  main()
