"""Shared test fixtures: tiny widths so real forward and backward passes stay fast on CPU."""

import jax
import jax.numpy as jnp
import pytest

from ran_jax.models import create_model

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
  variables = jax.jit(lambda: model.init(jax.random.key(0), images, train=False))()
  return model, variables, images
