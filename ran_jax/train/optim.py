"""Learning-rate schedules and the optimizer, from the experiment config.

The schedule is given in epochs (`num_epochs`, `lr_decay_epochs`, `warmup_epochs`), so that it
covers the same examples at any batch size; `steps_per_epoch` (train examples / batch size,
a float) turns it into steps, each rounded to the nearest step.
"""

import dataclasses

import flax.traverse_util
import ml_collections
import optax

from ran_jax.experiments.checks import SCHEDULES


def epochs_to_steps(epochs: float, steps_per_epoch: float) -> int:
  """`epochs` passes over the train split, in steps (rounded to the nearest step)."""
  return int(round(epochs * steps_per_epoch))


def base_learning_rate(config: ml_collections.ConfigDict) -> float:
  """`learning_rate` scaled linearly by `batch_size / lr_reference_batch_size`."""
  return config.learning_rate * config.batch_size / config.lr_reference_batch_size


def warmup_steps(config: ml_collections.ConfigDict, steps_per_epoch: float) -> int:
  """Steps of linear warm-up."""
  return epochs_to_steps(config.warmup_epochs, steps_per_epoch)


def decay_steps(config: ml_collections.ConfigDict, steps_per_epoch: float) -> list[int]:
  """The steps (from the start of training) of the piecewise schedule's decays."""
  return [epochs_to_steps(epoch, steps_per_epoch) for epoch in config.lr_decay_epochs]


def learning_rate_schedule(config: ml_collections.ConfigDict, steps_per_epoch: float,
                           num_train_steps: int) -> optax.Schedule:
  """Linear-scaled base rate, with optional linear warm-up from 0 over `warmup_epochs`.

  'piecewise': multiply by `lr_decay_factor` at each of `lr_decay_epochs` (counted from the
  start of training; a decay inside the warm-up applies when it ends);
  'cosine': cosine decay to 0 at `num_train_steps`.
  """
  base = base_learning_rate(config)
  warmup = warmup_steps(config, steps_per_epoch)
  if config.schedule == 'piecewise':
    boundaries: dict[int, float] = {}
    for step in decay_steps(config, steps_per_epoch):
      step = max(step - warmup, 0)  # the main schedule starts after the warm-up
      boundaries[step] = boundaries.get(step, 1.0) * config.lr_decay_factor
    main = optax.piecewise_constant_schedule(base, boundaries)
  elif config.schedule == 'cosine':
    main = optax.cosine_decay_schedule(base, max(1, num_train_steps - warmup))
  else:
    raise ValueError(f'schedule={config.schedule!r} is not valid; choose one of {SCHEDULES}.')
  if not warmup:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, base, warmup), main], [warmup])


def describe_schedule(config: ml_collections.ConfigDict, steps_per_epoch: float,
                      num_train_steps: int) -> str:
  """One line for the log: length and each change of the schedule, in steps and epochs."""

  def epochs(step: int) -> str:
    return f'{step / steps_per_epoch:.2f}'

  micro = config.get('grad_accum_steps', 1)
  split = f' in {micro} micro-batches of {config.batch_size // micro}' if micro > 1 else ''
  line = (f'{num_train_steps} steps = {epochs(num_train_steps)} epochs at batch '
          f'{config.batch_size}{split} ({num_train_steps * config.batch_size:,} examples); '
          f'lr {base_learning_rate(config):g}')
  warmup = warmup_steps(config, steps_per_epoch)
  if warmup:
    line += f' after a linear warm-up of {epochs(warmup)} epochs ({warmup} steps)'
  if config.schedule == 'cosine':
    return line + f', cosine decay to 0 at step {num_train_steps}'
  steps = decay_steps(config, steps_per_epoch)
  if not steps:
    return line + ', constant'
  line += (f', x{config.lr_decay_factor:g} at epochs {", ".join(epochs(s) for s in steps)} '
           f'(steps {", ".join(str(s) for s in steps)})')
  late = sum(step >= num_train_steps for step in steps)
  return line + (f'; {late} of them after the last step' if late else '')


def _decay_mask(params):
  """True for weights that get weight decay: all, or only conv/dense kernels."""
  flat = flax.traverse_util.flatten_dict(params)
  return flax.traverse_util.unflatten_dict({k: k[-1] == 'kernel' for k in flat})


HEAD = 'classifier'  # the top-level module that a frozen backbone leaves training


@dataclasses.dataclass(frozen=True)
class ParamGroups:
  """Parameters a fine-tuned run treats apart (see `ran_jax.train.init_from`).

  Attributes:
    loaded: paths ('stage1/...') of the parameters loaded from another run.
    freeze_backbone: only the classifier (`HEAD`) trains; every other parameter stays.
    loaded_lr_scale: the learning rate of the loaded parameters is multiplied by it.
  """
  loaded: frozenset[str] = frozenset()
  freeze_backbone: bool = False
  loaded_lr_scale: float = 1.0

  @property
  def apart(self) -> bool:
    """Whether any parameter is treated apart (else the optimizer is the plain one)."""
    return self.freeze_backbone or self.loaded_lr_scale != 1

  def label(self, path: tuple[str, ...]) -> str:
    if self.freeze_backbone and path[0] != HEAD:
      return 'frozen'
    return 'loaded' if '/'.join(path) in self.loaded and self.loaded_lr_scale != 1 else 'train'

  def labels(self, params):
    flat = flax.traverse_util.flatten_dict(params)
    return flax.traverse_util.unflatten_dict({k: self.label(k) for k in flat})


def make_optimizer(config: ml_collections.ConfigDict, schedule: optax.Schedule,
                   groups: ParamGroups | None = None) -> optax.GradientTransformation:
  """SGD with (Nesterov) momentum; weight decay is added to the gradients, as in Caffe.

  With `groups` (a fine-tuned run), frozen parameters get no update and loaded ones a scaled
  one (`optax.multi_transform`).
  """
  mask = None if config.weight_decay_bn_and_bias else _decay_mask
  tx = optax.chain(
      optax.add_decayed_weights(config.weight_decay, mask=mask),
      optax.sgd(schedule, momentum=config.momentum, nesterov=config.nesterov),
  )
  if groups is None or not groups.apart:
    return tx
  return optax.multi_transform(
      {'train': tx, 'loaded': optax.chain(tx, optax.scale(groups.loaded_lr_scale)),
       'frozen': optax.set_to_zero()}, groups.labels)
