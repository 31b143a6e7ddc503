"""Shared test fixtures: tiny widths so real forward and backward passes stay fast on CPU.

The whole session sees 8 CPU devices, so that sharding is exercised as on a real host.
"""

import os

os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=8').strip()

import tempfile

import jax
import pytest

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


def tiny_model(name: str = 'attention56', num_classes: int = 10, **overrides):
  """A preset with the same topology as `name` and tiny widths."""
  widths = dict(TINY_NEXT if 'next' in name else TINY)
  if name.endswith('_cifar'):
    widths = dict(stem_width=8, stage_widths=(16, 32, 64))
  widths.update(overrides)
  return create_model(name, num_classes=num_classes, **widths)


@pytest.fixture(scope='session')
def tiny_variables():
  """Initialised variables of the tiny attention56 at 57x57 (odd size)."""
  model = tiny_model()
  images = jax.random.normal(jax.random.key(1), (2, 57, 57, 3))
  variables = jax.jit(lambda: model.init(jax.random.key(0), images, train=False),
                      compiler_options=QUICK_COMPILE)()
  return model, variables, images

from launch_stubs import sandbox  # noqa: E402, F401 (the launch scripts' stub executables)
