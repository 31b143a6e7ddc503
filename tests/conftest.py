"""Shared test fixtures: tiny widths so real forward and backward passes stay fast on CPU.

The whole session sees 8 CPU devices, so that sharding is exercised as on a real host.
"""

import functools
import os

os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=8').strip()

import signal
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

# A suite started in the background by a shell inherits SIGINT ignored, and the runs it starts
# would rightly leave it ignored; the stop-signal tests deliver it, so it is handled again here.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
  signal.signal(signal.SIGINT, signal.default_int_handler)

# Tests that train the same small network several times (resume, eval-only) compile it once;
# tests/run_suite.py gives its two processes one cache.
jax.config.update('jax_compilation_cache_dir', os.environ.get('RAN_JAX_TEST_CACHE') or
                  tempfile.mkdtemp(prefix='ran_jax_xla_cache_'))
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)

from ran_jax.models import create_model  # noqa: E402
from ran_jax.train.compiler_options import QUICK_COMPILE  # noqa: E402

TINY = dict(stem_width=8, stage_widths=(16, 32, 64), final_width=128)
TINY_NEXT = dict(TINY, groups=4)

# For programs a test runs once: their compile time matters, their speed does not.
quick_jit = functools.partial(jax.jit, compiler_options=QUICK_COMPILE)


def tiny_model(name: str = 'attention56', num_classes: int = 10, **overrides):
  """A preset with the same topology as `name` and tiny widths."""
  widths = dict(TINY_NEXT if 'next' in name else TINY)
  if name.endswith('_cifar'):
    widths = dict(stem_width=8, stage_widths=(16, 32, 64))
  widths.update(overrides)
  return create_model(name, num_classes=num_classes, **widths)


def random_variables(shapes, seed=0):
  """Variables (or a whole train state) of these shapes drawn with NumPy (compiling a random
  initialisation is slow on CPUs): He-scaled kernels, BatchNorm parameters and statistics away
  from their defaults, other floats around 0, integers (counters) 0."""
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    if not jnp.issubdtype(leaf.dtype, jnp.floating):
      return jnp.zeros(leaf.shape, leaf.dtype)
    name = getattr(path[-1], 'key', getattr(path[-1], 'name', None))
    if name == 'kernel':
      scale = np.sqrt(2 / np.prod(leaf.shape[:-1]))
    elif name == 'var':
      return jnp.asarray(rng.uniform(0.5, 1.5, leaf.shape), jnp.float32)
    else:
      scale = 0.1
    value = rng.normal(size=leaf.shape) * scale + (1.0 if name == 'scale' else 0.0)
    return jnp.asarray(value, jnp.float32)
  return jax.tree_util.tree_map_with_path(draw, shapes)


def traced_init(model, input_shape, **kwargs):
  """(output, variables) of `model.init` on float32 inputs of `input_shape`, as shapes: the
  network is traced once (the initialisation's own forward pass) and nothing is computed."""
  images = jax.ShapeDtypeStruct(tuple(input_shape), jnp.float32)
  return jax.eval_shape(functools.partial(model.init_with_output, jax.random.key(0), **kwargs),
                        images)


@pytest.fixture(scope='session')
def tiny_variables():
  """Random variables of the tiny attention56 at 57x57 (odd size), and a batch."""
  model = tiny_model()
  images = jax.random.normal(jax.random.key(1), (2, 57, 57, 3))
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), images, train=False))
  return model, random_variables(shapes), images

from launch_stubs import sandbox  # noqa: E402, F401 (the launch scripts' stub executables)
