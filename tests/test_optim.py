"""Learning-rate schedules and the optimizer built from configs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import cifar10_attention92, imagenet_attention56
from ran_jax.train import optim


def rates(config, steps, total=530_000):
  schedule = optim.learning_rate_schedule(config, total)
  return [float(schedule(s)) for s in steps]


def test_imagenet_piecewise_schedule_and_linear_scaling():
  config = imagenet_attention56.get_config()
  np.testing.assert_allclose(
      rates(config, [0, 199_999, 200_000, 399_999, 400_000, 500_000, 529_999]),
      [0.1, 0.1, 0.01, 0.01, 0.001, 1e-4, 1e-4], rtol=1e-5)
  config.batch_size = 1024
  np.testing.assert_allclose(rates(config, [0]), [0.4], rtol=1e-6)


def test_cifar_schedule():
  config = cifar10_attention92.get_config()
  np.testing.assert_allclose(rates(config, [0, 63_999, 64_000, 96_000], 160_000),
                             [0.1, 0.1, 0.01, 0.001], rtol=1e-5)


def test_warmup_keeps_boundaries_counted_from_the_start():
  config = imagenet_attention56.get_config()
  config.warmup_steps = 1000
  config.lr_boundaries = (500, 1000, 200_000)  # the first two fall inside the warm-up
  got = rates(config, [0, 500, 999, 1000, 199_999, 200_000])
  np.testing.assert_allclose(got, [0.0, 0.05, 0.0999, 0.001, 0.001, 1e-4], rtol=1e-3)


def test_cosine_schedule_with_warmup():
  config = imagenet_attention56.get_config()
  config.schedule, config.warmup_steps = 'cosine', 10
  np.testing.assert_allclose(rates(config, [0, 5, 10, 55, 100], total=100),
                             [0.0, 0.05, 0.1, 0.05, 0.0], atol=1e-6)


def test_unknown_schedule():
  config = imagenet_attention56.get_config()
  config.schedule = 'linear'
  with pytest.raises(ValueError, match="schedule='linear'.*piecewise"):
    optim.learning_rate_schedule(config, 10)


@pytest.mark.parametrize('decay_all,decayed', [(True, {'kernel', 'scale', 'bias'}),
                                               (False, {'kernel'})])
def test_weight_decay_mask(decay_all, decayed):
  config = imagenet_attention56.get_config()
  config.weight_decay_bn_and_bias = decay_all
  config.momentum = 0.0
  params = {'conv': {'kernel': jnp.ones(2)}, 'bn': {'scale': jnp.ones(2), 'bias': jnp.ones(2)}}
  tx = optim.make_optimizer(config, optim.learning_rate_schedule(config, 10))
  zero = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zero, tx.init(params), params)
  moved = {name for group in updates.values() for name, u in group.items()
           if float(jnp.abs(u).max()) > 0}
  assert moved == decayed
