"""Learning-rate schedules and the optimizer built from configs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import base, cifar, digits_attention56, imagenet_attention56
from ran_jax.train import build, optim

IMAGENET_EPOCH = base.IMAGENET_TRAIN_EXAMPLES / 256  # steps per epoch at batch 256


def rates(config, steps, total=530_000, steps_per_epoch=IMAGENET_EPOCH):
  schedule = optim.learning_rate_schedule(config, steps_per_epoch, total)
  return [float(schedule(s)) for s in steps]


def test_imagenet_config_is_the_papers_iterations_at_batch_256():
  config = imagenet_attention56.get_config()
  assert build.num_train_steps(config, IMAGENET_EPOCH) == 530_000
  assert optim.decay_steps(config, IMAGENET_EPOCH) == [200_000, 400_000, 500_000]
  np.testing.assert_allclose(
      rates(config, [0, 199_999, 200_000, 399_999, 400_000, 500_000, 529_999]),
      [0.1, 0.1, 0.01, 0.01, 0.001, 1e-4, 1e-4], rtol=1e-5)


def test_cifar_config_is_the_papers_iterations_at_batch_64():
  config = cifar.get_config('attention92,cifar10')
  assert build.num_train_steps(config, 50_000 / 64) == 160_000
  np.testing.assert_allclose(
      rates(config, [0, 63_999, 64_000, 96_000], 160_000, 50_000 / 64),
      [0.1, 0.1, 0.01, 0.001], rtol=1e-5)


def test_digits_config_steps_and_warmup():
  config = digits_attention56.get_config()
  steps_per_epoch = 1_437 / 64
  assert build.num_train_steps(config, steps_per_epoch) == 264
  assert optim.warmup_steps(config, steps_per_epoch) == 50
  np.testing.assert_allclose(rates(config, [0, 25, 50, 264], 264, steps_per_epoch),
                             [0.0, 0.05, 0.1, 0.0], atol=1e-6)


def test_num_train_steps_override():
  config = imagenet_attention56.get_config()
  config.num_train_steps = 7
  assert build.num_train_steps(config, IMAGENET_EPOCH) == 7


@pytest.mark.parametrize('schedule,warmup_epochs', [('piecewise', 0.0), ('piecewise', 5.0),
                                                    ('cosine', 5.0)])
def test_batch_size_keeps_the_schedule_per_example(schedule, warmup_epochs):
  """Batch 1024 sees the same examples as batch 256, at 4x the rate, with the same decays."""
  runs = {}
  for batch in (256, 1024):
    config = imagenet_attention56.get_config()
    config.batch_size, config.schedule, config.warmup_epochs = batch, schedule, warmup_epochs
    steps_per_epoch = base.IMAGENET_TRAIN_EXAMPLES / batch
    total = build.num_train_steps(config, steps_per_epoch)
    runs[batch] = (total * batch, optim.learning_rate_schedule(config, steps_per_epoch, total))
    if schedule == 'piecewise':
      assert [s * batch for s in optim.decay_steps(config, steps_per_epoch)] == [
          51_200_000, 102_400_000, 128_000_000]
  assert runs[256][0] == runs[1024][0] == 135_680_000
  examples = [n * 1024 for n in (0, 1, 1954, 6255, 6256, 49_999, 50_000, 99_999, 100_000,
                                  124_999, 125_000, 128_000, 132_499)]
  small = np.array([float(runs[256][1](n // 256)) for n in examples])
  large = np.array([float(runs[1024][1](n // 1024)) for n in examples])
  # The warm-up ends within half a step of each batch: a relative difference below 1e-3.
  np.testing.assert_allclose(large, 4 * small, rtol=1e-3, atol=1e-7)


def test_warmup_keeps_decays_counted_from_the_start():
  config = imagenet_attention56.get_config()
  config.warmup_epochs = 1000 / IMAGENET_EPOCH
  # The first two decays fall inside the warm-up and apply when it ends.
  config.lr_decay_epochs = tuple(s / IMAGENET_EPOCH for s in (500, 1000, 200_000))
  got = rates(config, [0, 500, 999, 1000, 199_999, 200_000])
  np.testing.assert_allclose(got, [0.0, 0.05, 0.0999, 0.001, 0.001, 1e-4], rtol=1e-3)


def test_cosine_schedule_with_warmup():
  config = imagenet_attention56.get_config()
  config.schedule, config.warmup_epochs = 'cosine', 10 / IMAGENET_EPOCH
  np.testing.assert_allclose(rates(config, [0, 5, 10, 55, 100], total=100),
                             [0.0, 0.05, 0.1, 0.05, 0.0], atol=1e-6)


def test_describe_schedule():
  config = imagenet_attention56.get_config()
  assert optim.describe_schedule(config, IMAGENET_EPOCH, 530_000) == (
      '530000 steps = 105.90 epochs at batch 256 (135,680,000 examples); lr 0.1, x0.1 at '
      'epochs 39.96, 79.93, 99.91 (steps 200000, 400000, 500000)')
  config.grad_accum_steps = 8  # the same schedule, each update over 8 micro-batches
  assert optim.describe_schedule(config, IMAGENET_EPOCH, 530_000).startswith(
      '530000 steps = 105.90 epochs at batch 256 in 8 micro-batches of 32 (135,680,000 examples)')
  config.batch_size, config.grad_accum_steps = 1024, 1
  assert optim.describe_schedule(config, IMAGENET_EPOCH / 4, 132_500).endswith(
      'lr 0.4, x0.1 at epochs 39.96, 79.93, 99.91 (steps 50000, 100000, 125000)')
  assert optim.describe_schedule(config, IMAGENET_EPOCH / 4, 60_000).endswith(
      '2 of them after the last step')
  digits = digits_attention56.get_config()
  assert optim.describe_schedule(digits, 1_437 / 64, 264) == (
      '264 steps = 11.76 epochs at batch 64 (16,896 examples); lr 0.1 after a linear warm-up '
      'of 2.23 epochs (50 steps), cosine decay to 0 at step 264')


def test_unknown_schedule():
  config = imagenet_attention56.get_config()
  config.schedule = 'linear'
  with pytest.raises(ValueError, match="schedule='linear'.*piecewise"):
    optim.learning_rate_schedule(config, 1.0, 10)


@pytest.mark.parametrize('decay_all,decayed', [(True, {'kernel', 'scale', 'bias'}),
                                               (False, {'kernel'})])
def test_weight_decay_mask(decay_all, decayed):
  config = imagenet_attention56.get_config()
  config.weight_decay_bn_and_bias = decay_all
  config.momentum = 0.0
  params = {'conv': {'kernel': jnp.ones(2)}, 'bn': {'scale': jnp.ones(2), 'bias': jnp.ones(2)}}
  tx = optim.make_optimizer(config, optim.learning_rate_schedule(config, 1.0, 10))
  zero = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zero, tx.init(params), params)
  moved = {name for group in updates.values() for name, u in group.items()
           if float(jnp.abs(u).max()) > 0}
  assert moved == decayed
