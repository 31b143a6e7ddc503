"""Every field of an experiment config checked up front, each mistake named in one line.

`validate` runs before any dataset or model work, so that a bad value stops the run at once
with a `ValueError` naming the field, the value and what is allowed, instead of a stack trace
later or a run that silently trains something else.
"""

import logging
import math
import numbers
from collections.abc import Sequence
from typing import Any, NoReturn

import jax
import ml_collections
from etils import epath

from ran_jax.data import sources
from ran_jax.models import create_model, list_models
from ran_jax.models.attention import ATTENTION_KINDS, MASK_ACTIVATIONS, MASK_STRUCTURES
from ran_jax.models.network import REMAT, REMAT_POLICIES
from ran_jax.experiments.network import model_overrides

DTYPES = ('float32', 'bfloat16')
SCHEDULES = ('piecewise', 'cosine')  # of the learning rate (`ran_jax.train.optim`)
POSITIVE_INTS = ('batch_size', 'eval_batch_size', 'image_size', 'eval_image_size',
                 'shuffle_buffer', 'prefetch_to_device', 'log_every_steps', 'eval_every_steps',
                 'checkpoint_every_steps', 'lr_reference_batch_size')
BOOLS = ('nesterov', 'weight_decay_bn_and_bias', 'eval_only', 'profile')
MODEL_POSITIVE_INTS = ('stem_width', 'final_width', 't', 'groups')
MODEL_NON_NEGATIVE_INTS = ('p', 'r')  # a module may have no units before the split / per level
MODEL_CHOICES = {'attention': ATTENTION_KINDS, 'mask_activation': MASK_ACTIVATIONS,
                 'mask_structure': MASK_STRUCTURES,
                 'remat': REMAT, 'remat_policy': tuple(REMAT_POLICIES)}
FREEZE = ('none', 'backbone')
FROM_DATA = ('image_size', 'eval_image_size')  # None: from the data, where it decides them
# Fields renamed: {former name: current name}. A config may still give the former one.
RENAMED = {'image_layout': 'recipe'}
# Fields of other spellings of the schedule, which would otherwise be silently ignored.
REPLACED = {'lr_boundaries': 'lr_decay_epochs', 'warmup_steps': 'warmup_epochs'}


def _node(config: ml_collections.ConfigDict, field: str) -> tuple[ml_collections.ConfigDict, str]:
  """The ConfigDict that holds a dotted field ('model.name'), and the field's own name."""
  *parents, name = field.split('.')
  for parent in parents:
    config = config[parent]
  return config, name


def field_value(config: ml_collections.ConfigDict, field: str) -> Any:
  """The value of a dotted field ('model.name'), None when it is unset or absent."""
  node, name = _node(config, field)
  return node.get(name)


def set_field(config: ml_collections.ConfigDict, field: str, value: Any) -> None:
  """Sets a dotted field ('model.name') of `config` in place."""
  node, name = _node(config, field)
  with node.unlocked():
    node[name] = value


def with_current_names(config: ml_collections.ConfigDict, *,
                       warn: bool = True) -> ml_collections.ConfigDict:
  """`config` with each field set under its former name (`RENAMED`) moved to its current one,
  with a one-line warning (`warn`); `config` itself when there is none."""
  for old, new in RENAMED.items():
    value = config.get(old)
    if value is None:
      continue
    if warn:
      logging.warning('%s is the former name of %s: read as --config.%s=%s', old, new, new, value)
    config = config.copy_and_resolve_references()
    with config.unlocked():
      config[new], config[old] = value, None
  return config


def validate(config: ml_collections.ConfigDict, workdir: str | None, *,
             device_count: int | None = None, process_count: int | None = None) -> None:
  """Raises a one-line `ValueError` naming the first bad field of `config` (or `workdir`).

  The batches must split over `device_count` devices and `process_count` processes (default:
  this job's); `workdir` None skips its check (for tools that write no run).
  """
  for old, new in REPLACED.items():
    if old in config:
      _fail(old, config[old], f'not a config field: the schedule is given in epochs; use {new} '
            '(and num_epochs)')
  _check_names(config)
  _check_numbers(config)
  _check_schedule(config)
  _check_source_fields(config)
  _check_fine_tuning(config)
  if config.model.name is not None and None not in (config.image_size, config.eval_image_size):
    check_model(config)  # else once the data has given them
  _check_batch_split(config, device_count or jax.device_count(),
                     process_count or jax.process_count())
  if workdir is not None:
    _check_workdir(workdir)


def _fail(field: str, value: Any, allowed: str, where: str = '') -> NoReturn:
  raise ValueError(' '.join(f'{field}={value!r} is not allowed{where}: {allowed}'.split()))


def _is_int(value: Any) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
  return (isinstance(value, numbers.Real) and not isinstance(value, bool) and
          math.isfinite(value))


def _choice(field: str, value: Any, allowed: Sequence[str]) -> None:
  if value not in allowed:
    _fail(field, value, f'choose one of {", ".join(allowed)}')


def _check_names(config: ml_collections.ConfigDict) -> None:
  _choice('dataset', config.dataset, sources.names())
  if not (sources.source_of(config).sizes_from_data and config.model.name is None):
    _choice('model.name', config.model.name, list_models())
  if config.dtype == 'float16':
    _fail('dtype', config.dtype, 'training in float16 would need loss scaling, which this '
          'trainer does not do; use bfloat16 (the range of float32 at half the memory) or '
          'float32')
  _choice('dtype', config.dtype, DTYPES)
  _choice('schedule', config.schedule, SCHEDULES)
  if config.data_dir is not None and not (isinstance(config.data_dir, str) and config.data_dir):
    _fail('data_dir', config.data_dir, 'give a TFDS data directory, or leave it unset for '
          '~/tensorflow_datasets')
  for field in BOOLS:
    if not isinstance(config[field], bool):
      _fail(field, config[field], 'use True or False')


def _check_numbers(config: ml_collections.ConfigDict) -> None:
  for field in POSITIVE_INTS:
    value = config[field]
    if value is None and field in FROM_DATA and sources.source_of(config).sizes_from_data:
      continue
    if not _is_int(value) or value < 1:
      _fail(field, value, 'it must be an integer >= 1')
  if not _is_int(config.keep_checkpoints) or config.keep_checkpoints < 1:
    _fail('keep_checkpoints', config.keep_checkpoints,
          'keep at least 1 checkpoint (--config.keep_checkpoints=3)')
  for field in ('seed', 'label_noise_seed'):
    if not _is_int(config[field]) or not 0 <= config[field] < 2**31:
      _fail(field, config[field], 'it must be an integer in [0, 2**31)')
  if not _is_int(config.attention_images) or config.attention_images < 0:
    _fail('attention_images', config.attention_images, 'it must be an integer >= 0 (0 = none)')
  _real('learning_rate', config.learning_rate, 'it must be > 0', lambda v: v > 0)
  _real('momentum', config.momentum, 'it must be in [0, 1)', lambda v: 0 <= v < 1)
  _real('weight_decay', config.weight_decay, 'it must be >= 0', lambda v: v >= 0)
  _real('label_smoothing', config.label_smoothing,
        'it must be in [0, 1) (0 = none, e.g. 0.1)', lambda v: 0 <= v < 1)
  micro = config.get('grad_accum_steps', 1)
  if not _is_int(micro) or micro < 1:
    _fail('grad_accum_steps', micro, 'it must be an integer >= 1 (1 = no accumulation)')
  ema_decay = config.get('ema_decay')
  if ema_decay is not None:
    _real('ema_decay', ema_decay, 'it must be in [0, 1) (e.g. 0.999), or unset for no average',
          lambda v: 0 <= v < 1)
  _real('label_noise', config.label_noise,
        'it must be in [0, 1) (the fraction of training labels replaced, e.g. 0.3)',
        lambda v: 0 <= v < 1)


def _check_source_fields(config: ml_collections.ConfigDict) -> None:
  """The fields only the config's data source reads (`DataSource.field_rules`)."""
  for field, (allows, allowed) in sources.source_of(config).field_rules().items():
    if not allows(config.get(field)):
      _fail(field, config.get(field), allowed)


def _check_fine_tuning(config: ml_collections.ConfigDict) -> None:
  source = config.get('init_from')
  if source is not None and not (isinstance(source, str) and source):
    _fail('init_from', source, 'give the --workdir of a trained run, or leave it unset')
  freeze = config.get('freeze', 'none')
  _choice('freeze', freeze, FREEZE)
  if freeze != 'none' and source is None:
    _fail('freeze', freeze, 'freezing needs loaded parameters; set init_from too')
  _real('init_lr_scale', config.get('init_lr_scale', 1.0), 'it must be > 0 (e.g. 0.1)',
        lambda v: v > 0)


def _real(field: str, value: Any, allowed: str, ok) -> None:
  if not _is_real(value) or not ok(value):
    _fail(field, value, allowed)


def _check_schedule(config: ml_collections.ConfigDict) -> None:
  _real('lr_decay_factor', config.lr_decay_factor, 'it must be > 0 (e.g. 0.1)', lambda v: v > 0)
  _real('warmup_epochs', config.warmup_epochs, 'it must be >= 0 (0 = no warm-up)',
        lambda v: v >= 0)
  decays = config.lr_decay_epochs
  if (not isinstance(decays, (tuple, list)) or not all(_is_real(e) and e >= 0 for e in decays)
      or any(b <= a for a, b in zip(decays, decays[1:], strict=False))):
    _fail('lr_decay_epochs', decays, 'give increasing epochs >= 0, e.g. (30, 60, 80), or ()')
  steps = config.num_train_steps
  if not _is_int(steps) or not (steps == -1 or steps > 0):
    _fail('num_train_steps', steps, 'use -1 (train num_epochs) or a number of steps > 0')
  if steps == -1:
    _real('num_epochs', config.num_epochs, 'it must be > 0 (or set num_train_steps > 0)',
          lambda v: v > 0)
    _real('warmup_epochs', config.warmup_epochs,
          f'the warm-up must end before the run does (num_epochs={config.num_epochs:g})',
          lambda v: v < config.num_epochs)
  elif not _is_real(config.num_epochs):
    _fail('num_epochs', config.num_epochs, 'it must be a number')


def check_model(config: ml_collections.ConfigDict) -> None:
  """Raises a one-line ValueError when the network and image sizes don't fit together (for
  image folders, once the data has given the sizes and the network that `validate` left out)."""
  overrides = model_overrides(config)
  for field, value in overrides.items():
    name = f'model.{field}'
    if field in MODEL_POSITIVE_INTS and (not _is_int(value) or value < 1):
      _fail(name, value, 'it must be an integer >= 1 (or unset for the preset\'s value)')
    if field in MODEL_NON_NEGATIVE_INTS and (not _is_int(value) or value < 0):
      _fail(name, value, 'it must be an integer >= 0 (or unset for the preset\'s value)')
    if field in MODEL_CHOICES:
      _choice(name, value, MODEL_CHOICES[field])
  _int_tuple(overrides, 'stage_widths', 1, '(64, 128, 256)')
  _int_tuple(overrides, 'mask_poolings', 1, '(3, 2, 1)')
  _int_tuple(overrides, 'modules_per_stage', 0, '(1, 1, 1)')
  name = config.model.name
  try:
    model = create_model(name, num_classes=10, **overrides)
  except (ValueError, TypeError) as error:
    given = ', '.join(f'model.{k}={v!r}' for k, v in overrides.items())
    raise ValueError(' '.join(f'{given} is not allowed for {name!r}: {error}'.split())) from None
  for field in ('image_size', 'eval_image_size'):
    size = config[field]
    try:
      model.check_input((1, size, size, 3))
    except ValueError as error:
      _fail(field, size, str(error), where=f' for {name!r}')
    native = sources.source_of(config).native_image_size
    if native is not None and size != native:
      _fail(field, size, f'{config.dataset} images are used at their own size; set '
            f'--config.{field}={native}')


def _int_tuple(overrides: dict[str, Any], field: str, minimum: int, example: str) -> None:
  value = overrides.get(field)
  if value is not None and (not isinstance(value, (tuple, list)) or not value or
                            not all(_is_int(v) and v >= minimum for v in value)):
    _fail(f'model.{field}', value, f'give one integer >= {minimum} per stage, e.g. {example}')


def _check_batch_split(config: ml_collections.ConfigDict, device_count: int,
                       process_count: int) -> None:
  micro = config.get('grad_accum_steps', 1)
  split = micro * device_count
  if micro > 1 and config.batch_size % split:
    value = config.batch_size
    _fail('batch_size', value, f'with grad_accum_steps={micro}, it must be divisible by '
          f'{micro} x the number of devices ({device_count}) = {split}, e.g. '
          f'--config.batch_size={max(1, round(value / split)) * split}')
  for field in ('batch_size', 'eval_batch_size'):
    value = config[field]
    for count, what in ((device_count, 'devices'), (process_count, 'processes')):
      if value % count:
        _fail(field, value, f'it must be divisible by the number of {what} ({count}), e.g. '
              f'--config.{field}={max(1, round(value / count)) * count}')


def _check_workdir(workdir: str) -> None:
  if not isinstance(workdir, str) or not workdir:
    _fail('workdir', workdir, 'give a directory (it is created if missing)')
  path = epath.Path(workdir)
  local = '://' not in workdir  # on a bucket, only the path itself can be a file
  for ancestor in (path, *path.parents) if local else (path,):
    if ancestor.exists():
      if not ancestor.is_dir():
        where = 'it is a file' if ancestor == path else f'{ancestor} is a file'
        _fail('workdir', workdir, f'{where}; give a directory (it is created if missing)')
      break
  checkpoints = path / 'checkpoints'
  if checkpoints.exists() and not checkpoints.is_dir():
    _fail('workdir', workdir, f'{checkpoints} is a file where the checkpoints directory goes; '
          'move it away or give another --workdir')
