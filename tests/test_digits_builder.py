"""The `digits` TFDS builder: split sizes, feature specs and the index % 5 split rule."""

import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow_datasets as tfds
from sklearn.datasets import load_digits

from ran_jax.data import builders, digits
from ran_jax.data.datasets import get_spec


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory) -> str:
  """A data_dir holding the prepared dataset."""
  path = str(tmp_path_factory.mktemp('tfds'))
  builders.prepare(get_spec('digits'), path)
  return path


@pytest.fixture(scope='module')
def splits(data_dir):
  """Each split as numpy arrays: {'train': (images, labels), 'test': ...}."""
  builder = tfds.builder('digits', data_dir=data_dir)
  out = {}
  for split in ('train', 'test'):
    batch = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
    out[split] = batch['image'], batch['label']
  return out


def _expected(test: bool):
  """sklearn's examples of one split, rescaled with integer arithmetic (ties up)."""
  data = load_digits()
  keep = (np.arange(len(data.target)) % 5 == 0) == test
  pixels = data.images[keep].astype(np.int64)
  images = ((pixels * 255 + 8) // 16).astype(np.uint8)[..., None]
  return images, data.target[keep]


def _multiset(images, labels):
  return sorted((int(label), image.tobytes()) for image, label in zip(images, labels, strict=True))


def test_registered_and_prepared(data_dir):
  builder = tfds.builder('digits', data_dir=data_dir)
  assert isinstance(builder, digits.Digits)
  assert builder.is_prepared()
  assert str(builder.info.version) == '1.0.0'
  assert builder.info.supervised_keys == ('image', 'label')
  assert builder.info.features['label'].num_classes == 10
  assert 'i % 5 == 0' in builder.info.description


def test_split_sizes(data_dir, splits):
  info = tfds.builder('digits', data_dir=data_dir).info
  assert info.splits['train'].num_examples == 1437
  assert info.splits['test'].num_examples == 360
  assert len(splits['train'][1]) == 1437
  assert len(splits['test'][1]) == 360


@pytest.mark.parametrize('split', ['train', 'test'])
def test_features(splits, split):
  images, labels = splits[split]
  assert images.shape[1:] == (8, 8, 1)
  assert images.dtype == np.uint8
  assert images.max() == 255
  assert labels.min() >= 0 and labels.max() <= 9
  assert set(labels.tolist()) == set(range(10))


@pytest.mark.parametrize('split', ['train', 'test'])
def test_split_rule(splits, split):
  assert _multiset(*splits[split]) == _multiset(*_expected(split == 'test'))


def test_rescale_endpoints():
  np.testing.assert_array_equal(digits.rescale(np.array([0, 1, 8, 15, 16])), [0, 16, 128, 239, 255])


def test_import_order_and_reimport(data_dir):
  code = textwrap.dedent(f"""
      import importlib
      import tensorflow_datasets as tfds
      import ran_jax.data.digits as module
      import ran_jax.data.digits
      importlib.reload(module)
      assert tfds.builder('digits', data_dir={data_dir!r}).is_prepared()
  """)
  root = str(pathlib.Path(__file__).resolve().parents[1])
  paths = filter(None, [root, os.environ.get('PYTHONPATH')])
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths))
  result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env,
                          cwd=root, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
