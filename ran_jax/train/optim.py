"""Learning-rate schedules and the optimizer, from the experiment config."""

import flax.traverse_util
import ml_collections
import optax

SCHEDULES = ('piecewise', 'cosine')


def learning_rate_schedule(config: ml_collections.ConfigDict,
                           num_train_steps: int) -> optax.Schedule:
  """Linear-scaled base rate (lr * batch / 256), with optional linear warm-up.

  'piecewise': multiply by `lr_decay_factor` at each of `lr_boundaries` (steps);
  'cosine': cosine decay to 0 at `num_train_steps`.
  """
  base = config.learning_rate * config.batch_size / config.lr_reference_batch_size
  warmup = config.warmup_steps
  if config.schedule == 'piecewise':
    boundaries: dict[int, float] = {}
    for boundary in config.lr_boundaries:  # counted from the start of training
      step = max(int(boundary) - warmup, 0)
      boundaries[step] = boundaries.get(step, 1.0) * config.lr_decay_factor
    main = optax.piecewise_constant_schedule(base, boundaries)
  elif config.schedule == 'cosine':
    main = optax.cosine_decay_schedule(base, max(1, num_train_steps - warmup))
  else:
    raise ValueError(f'schedule={config.schedule!r} is not valid; choose one of {SCHEDULES}.')
  if not warmup:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, base, warmup), main], [warmup])


def _decay_mask(params):
  """True for weights that get weight decay: all, or only conv/dense kernels."""
  flat = flax.traverse_util.flatten_dict(params)
  return flax.traverse_util.unflatten_dict({k: k[-1] == 'kernel' for k in flat})


def make_optimizer(config: ml_collections.ConfigDict,
                   schedule: optax.Schedule) -> optax.GradientTransformation:
  """SGD with (Nesterov) momentum; weight decay is added to the gradients, as in Caffe."""
  mask = None if config.weight_decay_bn_and_bias else _decay_mask
  return optax.chain(
      optax.add_decayed_weights(config.weight_decay, mask=mask),
      optax.sgd(schedule, momentum=config.momentum, nesterov=config.nesterov),
  )
