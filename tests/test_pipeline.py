"""Input pipelines: mocked ImageNet and CIFAR, the real digits, resumable order, exact eval."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from ran_jax.data.pipeline import DatasetUnavailableError, InputConfig, InputPipeline, as_numpy


def first_batches(ds, n):
  it = as_numpy(ds)
  return [next(it) for _ in range(n)]


def make(dataset, batch=4, size=32, eval_size=None, eval_batch=None, **kwargs):
  return InputPipeline(InputConfig(
      dataset=dataset, global_batch_size=batch, eval_batch_size=eval_batch or batch,
      image_size=size, eval_image_size=eval_size or size, **kwargs))


@pytest.fixture(scope='module')
def digits(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  return data_dir, make('digits', batch=64, size=8, eval_batch=64, data_dir=data_dir)


def test_imagenet_mock_shapes_and_eval_padding():
  with tfds.testing.mock_data(num_examples=13):
    pipeline = make('imagenet2012', batch=4, size=40, eval_size=48)
    (batch,) = first_batches(pipeline.train_dataset(), 1)
    assert batch['image'].shape == (4, 40, 40, 3) and batch['image'].dtype == np.float32
    assert batch['label'].shape == (4,) and pipeline.num_classes == 1000
    assert abs(float(batch['image'].mean())) < 3  # mean/std normalised
    eval_ds, num_batches = pipeline.eval_dataset()
    batches = list(as_numpy(eval_ds))
  assert num_batches == len(batches) == 4  # 13 examples, batches of 4 -> 16 slots
  assert batches[0]['image'].shape == (4, 48, 48, 3)
  assert sum(int(b['mask'].sum()) for b in batches) == 13


@pytest.mark.parametrize('name,classes', [('cifar10', 10), ('cifar100', 100)])
def test_cifar_mock(name, classes):
  with tfds.testing.mock_data(num_examples=10):
    pipeline = make(name, batch=5, size=32)
    batches = first_batches(pipeline.train_dataset(), 3)
  assert pipeline.num_classes == classes and pipeline.steps_per_epoch == 2
  assert batches[0]['image'].shape == (5, 32, 32, 3)
  # Per-pixel mean subtraction: pixels are centred, within [-1, 1].
  assert np.abs(batches[0]['image']).max() <= 1.0


def test_digits_split_and_exact_eval(digits):
  _, pipeline = digits
  assert pipeline.local_train_examples == 1437 and pipeline.steps_per_epoch == 1437 // 64
  eval_ds, num_batches = pipeline.eval_dataset()
  batches = list(as_numpy(eval_ds))
  assert num_batches == len(batches) == 6  # 360 = 5 * 64 + 40: the last batch is padded
  masks = np.concatenate([b['mask'] for b in batches])
  assert masks.sum() == 360 and not masks[360:].any()
  labels = np.concatenate([b['label'] for b in batches])[:360]
  assert np.bincount(labels, minlength=10).min() > 0


def test_train_order_resumes_exactly(digits):
  _, pipeline = digits
  steps = pipeline.steps_per_epoch
  straight = first_batches(pipeline.train_dataset(start_step=0), steps + 3)
  resumed = first_batches(pipeline.train_dataset(start_step=steps + 1), 2)
  for a, b in zip(straight[steps + 1:], resumed, strict=True):
    np.testing.assert_array_equal(a['image'], b['image'])
    np.testing.assert_array_equal(a['label'], b['label'])
  # Each epoch is reshuffled, and augmentation is on.
  assert not np.array_equal(straight[0]['label'], straight[steps]['label'])


def test_processes_read_disjoint_shards(digits):
  data_dir, _ = digits
  shards = [make('digits', batch=64, size=8, data_dir=data_dir, process_index=i,
                 process_count=2) for i in range(2)]
  assert [s.local_train_examples for s in shards] == [718, 718]
  eval_counts = [sum(int(b['mask'].sum()) for b in as_numpy(s.eval_dataset()[0]))
                 for s in shards]
  assert eval_counts == [180, 180]
  assert len({s.eval_dataset()[1] for s in shards}) == 1  # same number of batches


def test_unknown_dataset_lists_supported():
  with pytest.raises(ValueError, match='cifar10.*digits'):
    make('mnist')


def test_missing_dataset_says_what_to_do(tmp_path):
  with pytest.raises(DatasetUnavailableError, match='manual.*data_dir'):
    make('imagenet2012', data_dir=str(tmp_path))


def test_batch_not_divisible_by_processes():
  with pytest.raises(ValueError, match='batch_size=5 must be divisible'):
    make('digits', batch=5, process_count=2)
