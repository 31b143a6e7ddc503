"""Parameter and multiply-add counts against the authors' released definitions.

The reference numbers come from the official Caffe files at 224x224 with 1000 classes
(BatchNorm scale and shift counted, running statistics not; multiply-adds of
convolutions and the classifier).
"""

import functools

import pytest

from ran_jax.models import create_model, model_costs
from ran_jax.models.__main__ import main as summary_main

OFFICIAL_PARAMS = {
    'attention56': 31_810_728,
    'attention92': 52_466_344,
    'attentionnext56': 31_318_824,
    'attentionnext92': 52_102_952,
}
OFFICIAL_MACS = {'attention56': 6.271e9, 'attention92': 10.534e9}
PAPER_CIFAR_PARAMS = {'attention92_cifar': 1.9e6, 'attention236_cifar': 5.1e6}


@functools.cache
def costs_of(name: str, num_classes: int, image_size: int):
  """`model_costs` of a preset, traced once for all the tests that read it."""
  return model_costs(create_model(name, num_classes=num_classes), image_size)


@pytest.mark.parametrize('name', sorted(OFFICIAL_PARAMS))
def test_imagenet_params_equal_official(name):
  costs = costs_of(name, 1000, 224)
  assert costs.total_params == OFFICIAL_PARAMS[name]


@pytest.mark.parametrize('name', sorted(OFFICIAL_MACS))
def test_imagenet_macs_within_3_percent(name):
  macs = costs_of(name, 1000, 224).total_macs
  assert abs(macs / OFFICIAL_MACS[name] - 1) < 0.03


@pytest.mark.parametrize('name', sorted(PAPER_CIFAR_PARAMS))
def test_cifar_params_within_5_percent_of_paper(name):
  params = model_costs(create_model(name, num_classes=10), 32).total_params
  assert abs(params / PAPER_CIFAR_PARAMS[name] - 1) < 0.05


def test_attention452_cifar_matches_documented_count():
  from ran_jax.models import presets
  params = model_costs(create_model('attention452_cifar', num_classes=10), 32).total_params
  assert f'{params:,}' in presets.__doc__


def test_summary_cli_prints_stage_table(capsys):
  assert summary_main(['--summary', 'attention56']) == 0
  out = capsys.readouterr().out
  assert 'stage1' in out and 'stage4' in out and '31,810,728' in out


def test_summary_cli_rejects_unknown_model(capsys):
  assert summary_main(['--summary', 'attention57']) == 2
  assert 'attention56' in capsys.readouterr().err
