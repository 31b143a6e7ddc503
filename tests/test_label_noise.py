"""Symmetric label noise: exact count, uniform wrong classes, and the same noisy label of each
example on every process count and after a resume; example ids; clean evaluation labels."""

import logging

import fake_datasets
import numpy as np
import pytest
import tensorflow_datasets as tfds

from ran_jax.data import builders
from ran_jax.data.datasets import get_spec
from ran_jax.data.label_noise import label_shifts, noise_count
from ran_jax.data.pipeline import InputConfig, InputPipeline, as_numpy

N, K = 1437, 10  # the digits train split
RATE = 0.3


def make(data_dir, dataset='digits', batch=64, size=8, **kwargs):
  return InputPipeline(InputConfig(
      dataset=dataset, global_batch_size=batch, eval_batch_size=batch, image_size=size,
      eval_image_size=size, data_dir=data_dir, **kwargs))


def ids_and_labels(pipeline, start_step=0, steps=None):
  """(example ids, labels) of `steps` training batches (default: one epoch) from `start_step`."""
  batches = as_numpy(pipeline.train_dataset(start_step, with_ids=True))
  taken = [next(batches) for _ in range(steps or pipeline.steps_per_epoch)]
  return (np.concatenate([b['example_id'] for b in taken]),
          np.concatenate([b['label'] for b in taken]))


def prepared_labels(data_dir, name='digits'):
  """The train labels in TFDS's prepared order (the example ids' order)."""
  ds = tfds.builder(name, data_dir=data_dir).as_dataset(split='train', shuffle_files=False)
  return np.array([example['label'] for example in ds.as_numpy_iterator()])


@pytest.fixture(scope='module')
def digits_dir(tmp_path_factory):
  return fake_datasets.shared('digits', tmp_path_factory,
                              lambda path: builders.prepare(get_spec('digits'), path))


@pytest.fixture(scope='module')
def clean(digits_dir):
  return prepared_labels(digits_dir)


@pytest.fixture(scope='module')
def noisy(digits_dir):
  return make(digits_dir, label_noise=RATE, label_noise_seed=7)


# The noise itself.
@pytest.mark.parametrize('num_examples', [N, 50_000])
@pytest.mark.parametrize('rate', [0.1, 0.3, 0.5, 0.7])
def test_exactly_round_rate_n_labels_move_to_another_class(num_examples, rate):
  shifts = label_shifts(num_examples, K, rate, seed=0)
  assert shifts.shape == (num_examples,) and shifts.dtype == np.int32
  assert np.count_nonzero(shifts) == noise_count(num_examples, rate) == round(rate * num_examples)
  assert set(np.unique(shifts[shifts > 0])) <= set(range(1, K))


def test_every_wrong_class_is_equally_likely():
  num_examples, rate = 200_000, 0.5
  labels = np.random.default_rng(1).integers(0, K, num_examples)
  noisy_set = (labels + label_shifts(num_examples, K, rate, seed=3)) % K
  changed = labels != noisy_set
  confusion = np.zeros((K, K), np.int64)
  np.add.at(confusion, (labels[changed], noisy_set[changed]), 1)
  assert (np.diag(confusion) == 0).all()
  expected = changed.sum() / (K * (K - 1))  # about 1,100 per (true, wrong) pair
  off_diagonal = confusion[~np.eye(K, dtype=bool)]
  assert np.abs(off_diagonal / expected - 1).max() < 0.15  # over 4 standard deviations


def test_shifts_depend_on_the_seed_only():
  first = label_shifts(N, K, RATE, seed=5)
  np.testing.assert_array_equal(first, label_shifts(N, K, RATE, seed=5))
  assert not np.array_equal(first, label_shifts(N, K, RATE, seed=6))
  assert not label_shifts(N, K, 0.0, seed=5).any()
  for rate in (-0.1, 1.0):
    with pytest.raises(ValueError, match=r'in \[0, 1\)'):
      label_shifts(N, K, rate, seed=0)


# Example ids.
def test_example_ids_index_the_prepared_train_split(digits_dir, clean):
  for index in range(2):
    pipeline = make(digits_dir, process_index=index, process_count=2)
    ids, labels = ids_and_labels(pipeline)
    assert len(set(ids)) == len(ids) == pipeline.steps_per_epoch * 32
    # Process k of 2 reads examples [718 k, 718 (k + 1)) of the prepared order.
    assert 718 * index <= ids.min() and ids.max() < 718 * (index + 1)
    np.testing.assert_array_equal(labels, clean[ids])


def test_example_ids_count_the_records_of_earlier_files(tmp_path_factory):
  # 10 files of 64 examples, each labelled with its file's index; process 1 of 3 starts in
  # the middle of a file (at example 213).
  data_dir = fake_datasets.cifar10(tmp_path_factory)
  per_file = fake_datasets.CIFAR10_PER_FILE
  seen = []
  for index in range(3):
    pipeline = make(data_dir, 'cifar10', batch=6, size=32, process_index=index,
                    process_count=3, shuffle_buffer=per_file)
    ids, labels = ids_and_labels(pipeline)
    np.testing.assert_array_equal(labels, ids // per_file)
    seen.append(set(ids))
  assert not (seen[0] & seen[1]) and not (seen[1] & seen[2]) and not (seen[0] & seen[2])
  assert min(seen[1]) >= 213 and max(seen[1]) < 426


# Noise in the training pipeline.
def test_training_labels_carry_the_noise_of_their_ids(noisy, clean, caplog):
  shifts = label_shifts(N, K, RATE, seed=7)
  ids, labels = ids_and_labels(noisy)
  np.testing.assert_array_equal(labels, (clean[ids] + shifts[ids]) % K)
  # An epoch leaves out N % 64 = 29 examples, so its rate is within 29 / 1408 of 0.3.
  changed = np.count_nonzero(labels != clean[ids])
  assert changed == np.count_nonzero(shifts[ids])
  assert abs(changed / len(ids) - RATE) <= 29 / len(ids)
  with caplog.at_level(logging.INFO):
    make(noisy.config.data_dir, label_noise=RATE, label_noise_seed=7)
  assert f'Label noise: {round(RATE * N)} of the {N} training labels' in caplog.text


def test_noisy_labels_are_the_same_on_any_process_count_and_after_resuming(noisy, digits_dir,
                                                                           clean):
  expected = (clean + label_shifts(N, K, RATE, seed=7)) % K
  ids, labels = ids_and_labels(noisy)
  np.testing.assert_array_equal(labels, expected[ids])
  by_id = dict(zip(ids, labels, strict=True))
  for index in range(2):
    shard = make(digits_dir, label_noise=RATE, label_noise_seed=7, process_index=index,
                 process_count=2)
    shard_ids, shard_labels = ids_and_labels(shard)
    np.testing.assert_array_equal(shard_labels, expected[shard_ids])
    seen = np.isin(shard_ids, ids)  # also in the single process's epoch
    assert seen.sum() > 600
    np.testing.assert_array_equal(shard_labels[seen], [by_id[i] for i in shard_ids[seen]])
  # Resuming in the second epoch gives the batches of an uninterrupted run, with the labels
  # of the first epoch.
  steps = noisy.steps_per_epoch
  straight_ids, straight_labels = ids_and_labels(noisy, 0, 2 * steps)
  resumed_ids, resumed_labels = ids_and_labels(noisy, steps + 5, steps - 5)
  np.testing.assert_array_equal(resumed_ids, straight_ids[(steps + 5) * 64:])
  np.testing.assert_array_equal(resumed_labels, straight_labels[(steps + 5) * 64:])
  np.testing.assert_array_equal(resumed_labels, expected[resumed_ids])


def test_evaluation_labels_stay_clean(noisy, digits_dir):
  def eval_labels(pipeline):
    return np.concatenate([b['label'][b['mask']] for b in as_numpy(pipeline.eval_dataset()[0])])
  np.testing.assert_array_equal(eval_labels(noisy), eval_labels(make(digits_dir)))
