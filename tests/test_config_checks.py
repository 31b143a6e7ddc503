"""`checks.validate`: every bad field stops the run up front with one clear line."""

import importlib
import logging
import pathlib

import jax
import pytest

from configs import base
from configs import image_folder as folder_config
from ran_jax.data import normalize
from ran_jax.experiments import checks
from ran_jax.workdir import run_record

SHIPPED = sorted(p.stem for p in pathlib.Path(__file__).parent.parent.glob('configs/*.py')
                 if p.stem not in ('__init__', 'base'))
NAN = float('nan')

BAD = [
    ('model.name', 'attention57', 'attention56, attention56_cifar, attention92,'),
    ('dataset', 'mnist', 'cifar10, cifar100, digits, imagenet2012'),
    ('dtype', 'float64', 'float32, bfloat16'),
    ('dtype', 'float16', 'would need loss scaling, which this trainer does not do'),
    ('schedule', 'linear', 'piecewise, cosine'),
    ('data_dir', '', 'TFDS data directory'),
    *[(field, 0, '>= 1') for field in checks.POSITIVE_INTS],
    ('batch_size', -256, '>= 1'),
    ('keep_checkpoints', 0, 'keep at least 1 checkpoint (--config.keep_checkpoints=3)'),
    ('seed', -1, '[0, 2**31)'),
    ('label_noise_seed', -1, '[0, 2**31)'),
    ('label_noise', 1.0, '[0, 1)'),
    ('label_noise', -0.1, '[0, 1)'),
    ('attention_images', -1, '>= 0'),
    ('learning_rate', 0.0, '> 0'),
    ('learning_rate', NAN, '> 0'),
    ('momentum', 1.0, '[0, 1)'),
    ('momentum', -0.1, '[0, 1)'),
    ('weight_decay', -1e-4, '>= 0'),
    ('label_smoothing', 2.0, '[0, 1)'),
    ('label_smoothing', -0.1, '[0, 1)'),
    ('lr_decay_factor', 0.0, '> 0'),
    ('lr_decay_epochs', (60.0, 30.0), 'increasing epochs >= 0'),
    ('lr_decay_epochs', (30.0, 30.0), 'increasing epochs >= 0'),
    ('lr_decay_epochs', (-1.0, 30.0), 'increasing epochs >= 0'),
    ('warmup_epochs', -1.0, '>= 0'),
    ('warmup_epochs', 200.0, 'end before the run does'),
    ('num_epochs', 0.0, 'or set num_train_steps > 0'),
    ('num_epochs', -3.0, 'or set num_train_steps > 0'),
    ('num_train_steps', 0, 'use -1'),
    ('num_train_steps', -5, 'use -1'),
    ('model.stem_width', 0, '>= 1'),
    ('model.final_width', 0, '>= 1'),
    ('model.t', 0, '>= 1'),
    ('model.groups', 0, '>= 1'),
    ('model.p', -1, '>= 0'),
    ('model.r', -1, '>= 0'),
    ('model.stage_widths', (16, 0, 64), 'one integer >= 1 per stage'),
    ('model.stage_widths', (), 'one integer >= 1 per stage'),
    ('model.modules_per_stage', (1, -1, 1), 'one integer >= 0 per stage'),
    ('model.mask_poolings', (3, 0, 1), 'one integer >= 1 per stage'),
    ('model.attention', 'soft', 'arl, nal'),
    ('model.mask_activation', 'relu', 'sigmoid, channel, spatial'),
    ('model.mask_structure', 'pyramid', 'encoder_decoder, local_conv'),
    ('model.remat', 'layer', 'none, unit, module'),
    ('model.remat_policy', 'dots', 'nothing, conv_outputs'),
    ('model.stage_widths', (64, 128), 'one entry per stage'),  # rejected by create_model
    ('model.groups', 3, 'divisible'),  # rejected by create_model
    ('image_size', 16, 'at least'),
    ('eval_image_size', 24, 'at least'),
    ('batch_size', 100, 'number of devices (8), e.g. --config.batch_size=96'),
    ('eval_batch_size', 12, 'number of devices (8), e.g. --config.eval_batch_size=16'),
    ('lr_boundaries', (200_000,), 'use lr_decay_epochs'),
    ('warmup_steps', 500, 'use warmup_epochs'),
    ('init_from', '', 'give the --workdir of a trained run'),
    ('freeze', 'all', 'none, backbone'),
    ('freeze', 'backbone', 'freezing needs loaded parameters; set init_from too'),
    ('init_lr_scale', 0.0, '> 0'),
    ('grad_accum_steps', 0, 'an integer >= 1 (1 = no accumulation)'),
    ('ema_decay', 1.0, 'in [0, 1) (e.g. 0.999), or unset for no average'),
    ('ema_decay', -0.5, 'in [0, 1)'),
    ('workdir', 'a_file', 'it is a file'),
    ('workdir', 'a_file/run', 'a_file is a file'),
]


def set_field(config, field, value):
  *parents, last = field.split('.')
  for name in parents:
    config = config[name]
  config[last] = value


@pytest.mark.parametrize('field,value,allowed', BAD, ids=lambda x: repr(x)[:30])
def test_bad_value_stops_with_one_line(field, value, allowed, tmp_path):
  assert jax.device_count() == 8  # the test session's CPU devices (conftest)
  config = base.get_config()
  workdir = str(tmp_path / 'run')
  if field == 'workdir':
    (tmp_path / 'a_file').write_text('')
    workdir = value = str(tmp_path / value)
  else:
    set_field(config, field, value)
  with pytest.raises(ValueError) as error:
    checks.validate(config, workdir)
  message = str(error.value)
  assert '\n' not in message
  assert f'{field}={value!r}' in message and allowed in message


@pytest.mark.parametrize('field', ['image_size', 'eval_image_size'])
def test_small_datasets_keep_their_image_size(field, tmp_path):
  config = base.get_config()
  config.model.name, config.dataset = 'attention56_cifar', 'cifar10'
  config.image_size = config.eval_image_size = 32
  config[field] = 64
  with pytest.raises(ValueError, match=rf'^{field}=64 is not allowed: cifar10 images are used '
                                       rf'at their own size; set --config\.{field}=32$'):
    checks.validate(config, str(tmp_path))


def test_batch_split_over_processes(monkeypatch, tmp_path):
  monkeypatch.setattr(jax, 'process_count', lambda: 3)
  with pytest.raises(ValueError, match=r'^batch_size=256 .*number of processes \(3\), e\.g\. '
                                       r'--config\.batch_size=255$'):
    checks.validate(base.get_config(), str(tmp_path))


def test_batch_split_into_micro_batches_over_the_devices(tmp_path):
  config = base.get_config()
  config.grad_accum_steps, config.batch_size = 4, 48  # 6 per device: not 4 micro-batches
  with pytest.raises(ValueError, match=r'^batch_size=48 is not allowed: with grad_accum_steps=4, '
                     r'it must be divisible by 4 x the number of devices \(8\) = 32, e\.g\. '
                     r'--config\.batch_size=64$'):
    checks.validate(config, str(tmp_path))
  config.batch_size = 64
  checks.validate(config, str(tmp_path))


FOLDER_BAD = [
    ('folder', None, 'give the directory of your images'),
    ('val_fraction', 0.0, '(0, 1)'),
    ('val_fraction', 1.0, '(0, 1)'),
    ('split_seed', -1, '[0, 2**31)'),
    ('recipe', 'cifar', 'auto, small, imagenet'),
]


@pytest.mark.parametrize('field,value,allowed', FOLDER_BAD, ids=lambda x: repr(x)[:30])
def test_bad_folder_field_stops_with_one_line(field, value, allowed, tmp_path):
  config = importlib.import_module('configs.image_folder').get_config()
  config.folder = str(tmp_path)
  checks.validate(config, str(tmp_path))  # the image sizes and network: from the data
  set_field(config, field, value)
  with pytest.raises(ValueError) as error:
    checks.validate(config, str(tmp_path))
  assert f'{field}={value!r}' in str(error.value) and allowed in str(error.value)


@pytest.mark.parametrize('name', SHIPPED)
def test_shipped_configs_pass(name, monkeypatch, tmp_path):
  monkeypatch.setattr(jax, 'device_count', lambda: 1)  # one GPU, as the CIFAR configs say
  config = importlib.import_module(f'configs.{name}').get_config()
  if config.dataset == 'image_folder':
    config.folder = str(tmp_path)
  checks.validate(config, str(tmp_path))
  checks.validate(config, str(tmp_path / 'new' / 'run'))


def test_quick_run_overrides_pass(tmp_path):
  config = base.get_config()
  config.num_train_steps, config.num_epochs = 6, 0.0
  config.model.p, config.model.r = 0, 0
  checks.validate(config, str(tmp_path))


def test_a_former_field_name_still_works(caplog):
  """`image_layout`, the former name of `recipe`: moved to `recipe` with a one-line warning; a
  run that recorded the former name reads back with the current one."""
  config = folder_config.get_config()
  config.image_layout = 'small'
  with caplog.at_level(logging.WARNING):
    current = checks.with_current_names(config)
  assert (current.recipe, current.image_layout, config.recipe) == ('small', None, 'auto')
  assert caplog.messages == ['image_layout is the former name of recipe: read as '
                             '--config.recipe=small']
  assert checks.with_current_names(current) is current


def test_a_record_of_the_former_field_name_resumes(tmp_path):
  recorded = folder_config.get_config()
  with recorded.unlocked():
    del recorded['recipe']
    recorded.image_layout = 'small'
  run_record.write(str(tmp_path), run_record.of_run(
      recorded, ('a', 'b'), 1, normalize.imagenet_normalizer()))
  config = folder_config.get_config()
  config.recipe = 'small'
  assert run_record.changed_fields(run_record.read(str(tmp_path)).config, config) == {}


def test_a_record_from_before_the_training_options_resumes_unchanged(tmp_path):
  """A run recorded before grad_accum_steps and ema_decay existed resumes with their defaults
  as no change, and with a value as a change."""
  recorded = folder_config.get_config()
  with recorded.unlocked():
    del recorded['grad_accum_steps'], recorded['ema_decay']
  run_record.write(str(tmp_path), run_record.of_run(
      recorded, ('a', 'b'), 1, normalize.imagenet_normalizer()))
  config = folder_config.get_config()
  saved = run_record.read(str(tmp_path)).config
  assert run_record.changed_fields(saved, config) == {}
  config.grad_accum_steps = 2
  assert run_record.changed_fields(saved, config) == {'grad_accum_steps': (1, 2)}
