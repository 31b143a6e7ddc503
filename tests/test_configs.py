"""Every experiment config: it passes the checks, builds its model, and documents itself."""

import importlib
import re

import jax
import jax.numpy as jnp
import pytest
from absl import flags
from conftest import traced_init
from ml_collections import config_flags

from ran_jax import configs as configs_command
from ran_jax.experiments import catalogue
from ran_jax.data.builders import make_builder
from ran_jax.data.datasets import DATASETS
from ran_jax.models import count_params
from ran_jax.experiments import checks
from ran_jax.data import sources
from ran_jax.experiments.network import build_model
from ran_jax.train.build import with_data_defaults

EXPERIMENTS = list(catalogue.experiments())
COUNT = re.compile(r'\d{1,3}(?:,\d{3})+')


def _id(experiment: catalogue.Experiment) -> str:
  return experiment.flag.removeprefix('--config=configs/')


_TRACED: dict[str, dict] = {}  # configs that share an architecture are traced once


def _params(config) -> int:
  """The parameter count of the config's model, from `jax.eval_shape` of its initialisation
  and the output of that forward pass (checked too; test_models.py covers the presets no config
  uses). Traced in the scanned layout: the same parameters (test_scan.py), traced several times
  faster."""
  spec = DATASETS.get(config.dataset)
  classes, channels = (spec.num_classes, spec.channels) if spec else (1000, 3)
  model = build_model(config, classes).clone(num_classes=1, dtype=jnp.float32, scan=True)
  key = f'{model!r} {config.image_size} {channels}'
  if key not in _TRACED:
    logits, variables = traced_init(model, (1, config.image_size, config.image_size, channels))
    params = variables['params']
    assert logits.shape == (1, 1) and logits.dtype == jnp.float32
    _TRACED[key] = params
  params = _TRACED[key]
  classifier = params['classifier']['kernel'].shape[0] + 1  # weights and bias per class
  return count_params(params) - classifier + classifier * classes


def _module(experiment: catalogue.Experiment):
  stem = experiment.file.removeprefix('configs/').removesuffix('.py')
  return importlib.import_module(f'configs.{stem}')


def _table_row(docstring: str, variant: str) -> str | None:
  rows = [line for line in docstring.splitlines() if line.startswith(f'| {variant} |')]
  return rows[0] if rows else None


@pytest.mark.parametrize('experiment', EXPERIMENTS, ids=_id)
def test_every_config_passes_the_checks_and_builds_its_model(experiment, monkeypatch, tmp_path):
  monkeypatch.setattr(jax, 'device_count', lambda: 1)
  config = experiment.config
  if sources.source_of(config).sizes_from_data:  # its network and sizes follow the images
    with config.unlocked():
      config.folder = str(tmp_path)
    checks.validate(config, str(tmp_path))
    config = with_data_defaults(config, {'image_size': 32, 'eval_image_size': 32,
                                         'model.name': 'attention56_cifar'})
  checks.validate(config, str(tmp_path))
  count = _params(config)
  assert count > 0
  docstring = _module(experiment).__doc__
  row = _table_row(docstring, experiment.variant) if experiment.variant else None
  documented = COUNT.findall(row) if row else []
  if documented:  # a documented parameter count must be the model's
    assert f'{count:,}' in documented, (experiment.flag, count, documented)


@pytest.mark.parametrize('experiment', EXPERIMENTS, ids=_id)
def test_docstring_states_the_command_and_the_papers_result(experiment):
  docstring = _module(experiment).__doc__
  assert f'python -m ran_jax.main --config={experiment.file}' in docstring
  if experiment.paper_result.startswith('paper:'):
    if experiment.variant:
      row = _table_row(docstring, experiment.variant)
      assert row is not None and experiment.paper_result in row
    else:
      assert experiment.paper_result.removeprefix('paper: ') in docstring


def test_the_tables_cover_the_papers_experiments():
  flags_of = {experiment.flag for experiment in EXPERIMENTS}
  rows = {
      'cifar_arl_nal.py': [f'attention{d},{k}' for d in (56, 92, 128, 164) for k in ('arl', 'nal')],
      'cifar_mask_activation.py': ['mixed', 'channel', 'spatial'],
      'cifar_mask_structure.py': ['encoder_decoder', 'local_conv'],
      'cifar_noisy_labels.py': [f'{m},{n}' for m in ('resnet164', 'attention92')
                                for n in (10, 30, 50, 70)],
      'cifar.py': [f'attention{d},{s}' for d in (92, 236, 452) for s in ('cifar10', 'cifar100')],
  }
  for file, variants in rows.items():
    for variant in variants:
      assert f'--config=configs/{file}:{variant}' in flags_of
  for file in ('imagenet_attention56', 'imagenet_attentionnext56',
               'imagenet_attentioninception56', 'imagenet_attention92'):
    assert f'--config=configs/{file}.py' in flags_of
  by_flag = {e.flag: e.config for e in EXPERIMENTS}
  assert by_flag['--config=configs/imagenet_attention92.py'].eval_image_size == 320
  assert by_flag['--config=configs/cifar_noisy_labels.py:resnet164,30'].label_noise == 0.3
  assert by_flag['--config=configs/cifar_arl_nal.py:attention164,nal'].model.attention == 'nal'


def test_variant_argument_reaches_get_config():
  values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', flag_values=values)
  values(['prog', '--config=configs/cifar_arl_nal.py:attention128,nal'])
  assert values.config.model.name == 'attention128_cifar'
  assert values.config.model.attention == 'nal'


def test_param_count_of_the_table_is_the_models():
  config = importlib.import_module('configs.digits_attention56').get_config()
  assert catalogue.param_count(config) == _params(config)


def test_unknown_variant_names_the_valid_ones():
  module = importlib.import_module('configs.cifar_noisy_labels')
  with pytest.raises(ValueError, match=r"unknown variant 'attention92,20'.*attention92,30"):
    module.get_config('attention92,20')


def test_list_prints_one_row_per_experiment(capsys, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # away from the checkout: its configs/ are found beside the package
  assert configs_command.main(['--list']) == 0
  lines = capsys.readouterr().out.splitlines()
  assert lines[0].split()[:4] == ['config', 'variant', 'model', 'dataset']
  assert len(lines) == 1 + len(EXPERIMENTS)
  row = next(line for line in lines if 'attention164,nal' in line)
  assert 'attention164_cifar attention=nal' in row and 'paper: 7.18% top-1 error' in row


@pytest.mark.parametrize('name', sorted(DATASETS))
def test_dataset_classes_and_channels_match_tfds(name, tmp_path):
  spec = DATASETS[name]
  features = make_builder(spec, str(tmp_path)).info.features
  assert features['label'].num_classes == spec.num_classes
  assert features['image'].shape[-1] == spec.channels
