"""Input pipelines on small real datasets: shapes, exact eval, data order, resume, errors."""

import os

import fake_datasets
import ml_collections
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_datasets.core import file_adapters

from ran_jax.data import builders, sources
from ran_jax.data.source import batch_shapes
from ran_jax.data.datasets import get_spec
from ran_jax.data.pipeline import DatasetUnavailableError, InputConfig, InputPipeline, as_numpy

FILES, PER_FILE = fake_datasets.CIFAR10_FILES, fake_datasets.CIFAR10_PER_FILE


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


@pytest.fixture(scope='session')
def imagenet_dir(tmp_path_factory):
  return fake_datasets.imagenet(tmp_path_factory)


@pytest.fixture(scope='session')
def cifar10_dir(tmp_path_factory):
  return fake_datasets.cifar10(tmp_path_factory)


@pytest.fixture(scope='session')
def cifar100_dir(tmp_path_factory):
  return fake_datasets.cifar100(tmp_path_factory)


def test_imagenet_shapes_and_eval_padding(imagenet_dir):
  pipeline = make('imagenet2012', batch=4, size=40, eval_size=48, eval_batch=3,
                  data_dir=imagenet_dir)
  assert pipeline.num_train_examples == pipeline.local_train_examples == 24
  assert pipeline.steps_per_epoch == 6 and pipeline.num_classes == 1000
  (batch,) = first_batches(pipeline.train_dataset(), 1)
  # Training pixels travel as uint8, normalised on the devices.
  assert batch['image'].shape == (4, 40, 40, 3) and batch['image'].dtype == np.uint8
  assert batch['label'].shape == (4,) and set(batch['label']) <= set(range(4))
  assert batch['image'].std() > 10
  eval_ds, num_batches = pipeline.eval_dataset()
  batches = list(as_numpy(eval_ds))
  assert num_batches == len(batches) == 3  # 8 examples, batches of 3 -> 9 slots
  # Evaluation pixels travel as uint8 too: the resize rounded to whole levels.
  image = batches[0]['image']
  assert image.shape == (3, 48, 48, 3) and image.dtype == np.uint8 and image.std() > 10
  assert sum(int(b['mask'].sum()) for b in batches) == 8


@pytest.mark.parametrize('name,classes', [('cifar10', 10), ('cifar100', 100)])
def test_cifar(name, classes, request):
  pipeline = make(name, batch=8, size=32, data_dir=request.getfixturevalue(f'{name}_dir'))
  batches = first_batches(pipeline.train_dataset(), 3)
  assert pipeline.num_classes == classes
  assert pipeline.steps_per_epoch == pipeline.num_train_examples // 8
  assert batches[0]['image'].shape == (8, 32, 32, 3) and batches[0]['image'].dtype == np.uint8
  # Each example's crop (top, left, flipped) goes with it for the on-device mean subtraction.
  crops = np.concatenate([b['crop'] for b in batches])
  assert crops.shape == (24, 3) and crops.min() >= 0 and crops[:, :2].max() <= 8
  assert set(crops[:, 2]) == {0, 1} and len(set(map(tuple, crops[:, :2]))) > 5
  normalized = pipeline.normalizer()(batches[0])
  assert normalized.dtype == np.float32 and float(np.abs(normalized).max()) <= 1.0


def test_digits_split_and_exact_eval(digits):
  _, pipeline = digits
  assert pipeline.local_train_examples == 1437 and pipeline.steps_per_epoch == 1437 // 64
  eval_ds, num_batches = pipeline.eval_dataset()
  batches = list(as_numpy(eval_ds))
  assert num_batches == len(batches) == 6  # 360 = 5 * 64 + 40: the last batch is padded
  masks = np.concatenate([b['mask'] for b in batches])
  assert masks.sum() == 360 and not masks[360:].any()
  crops = np.concatenate([b['crop'] for b in batches])[:360]
  assert (crops == (0, 0, 0)).all()  # digits are not padded, so never shifted
  labels = np.concatenate([b['label'] for b in batches])[:360]
  assert np.bincount(labels, minlength=10).min() > 0


def test_pipelines_run_without_the_autotune_model(digits):
  # With tf.data's autotuning model on, deleting a train iterator after a minute of training
  # blocked for up to 60 s, so every run paused that long before exiting.
  _, pipeline = digits
  eval_ds, _ = pipeline.eval_dataset()
  assert pipeline.train_dataset(0).options().autotune.enabled is False
  assert eval_ds.options().autotune.enabled is False


@pytest.mark.parametrize('process_index,process_count', [(0, 1), (1, 2)])
def test_train_order_resumes_exactly(digits, process_index, process_count):
  data_dir, _ = digits
  pipeline = make('digits', batch=64, size=8, data_dir=data_dir, process_index=process_index,
                  process_count=process_count)
  steps = pipeline.steps_per_epoch
  straight = first_batches(pipeline.train_dataset(start_step=0), steps + 3)
  resumed = first_batches(pipeline.train_dataset(start_step=steps + 1), 2)
  for a, b in zip(straight[steps + 1:], resumed, strict=True):
    np.testing.assert_array_equal(a['image'], b['image'])
    np.testing.assert_array_equal(a['label'], b['label'])
  # Each epoch is reshuffled, and augmentation is on.
  assert not np.array_equal(straight[0]['label'], straight[steps]['label'])


def test_processes_augment_identical_images_differently(tmp_path_factory):
  data_dir = fake_datasets.imagenet_same_image(tmp_path_factory)
  batches = [first_batches(make('imagenet2012', batch=8, data_dir=data_dir, process_index=i,
                                process_count=2).train_dataset(), 1)[0]['image']
             for i in range(2)]
  assert not np.allclose(batches[0], batches[1])


def epoch_labels(pipeline, epochs):
  """The labels of the first `epochs` epochs, one row per epoch."""
  batches = first_batches(pipeline.train_dataset(), epochs * pipeline.steps_per_epoch)
  return np.concatenate([b['label'] for b in batches]).reshape(epochs, -1)


def test_epochs_read_files_in_new_seeded_orders(cifar10_dir):
  # Every example of `cifar10_dir` is labelled with the index of its file.
  labels = epoch_labels(make('cifar10', batch=8, data_dir=cifar10_dir, shuffle_buffer=PER_FILE),
                        3)
  windows = labels.reshape(3, FILES, PER_FILE)
  assert (windows == windows[:, :, :1]).all()  # a one-file buffer holds one whole file
  orders = windows[:, :, 0]
  assert all(sorted(order) == list(range(FILES)) for order in orders)
  assert len({tuple(order) for order in orders}) == 3  # a new file order every epoch
  again = epoch_labels(make('cifar10', batch=8, data_dir=cifar10_dir, shuffle_buffer=PER_FILE),
                       2)
  np.testing.assert_array_equal(again, labels[:2])
  other_seed = epoch_labels(make('cifar10', batch=8, data_dir=cifar10_dir,
                                 shuffle_buffer=PER_FILE, seed=1), 1)
  assert not np.array_equal(other_seed[0], labels[0])
  # A two-file buffer mixes the records of two files.
  two_files = first_batches(make('cifar10', batch=8, data_dir=cifar10_dir,
                                 shuffle_buffer=2 * PER_FILE).train_dataset(), 2 * PER_FILE // 8)
  window = np.concatenate([b['label'] for b in two_files])
  assert len(set(window)) == 2 and np.count_nonzero(np.diff(window)) > 10


@pytest.fixture
def records_read(monkeypatch):
  """A counter of the records read from the prepared files, through TFDS's file adapter."""
  counter = tf.Variable(0, dtype=tf.int64)
  adapter = file_adapters.TfRecordFileAdapter
  read = adapter.make_tf_data

  def counting_reader(cls, filename, buffer_size=None):
    def count(record):
      with tf.control_dependencies([counter.assign_add(1)]):
        return tf.identity(record)
    return read(filename, buffer_size).map(count)

  monkeypatch.setattr(adapter, 'make_tf_data', classmethod(counting_reader))
  return counter


def test_resuming_reads_about_one_window_wherever_the_step_is(cifar10_dir, records_read):
  pipeline = make('cifar10', batch=8, data_dir=cifar10_dir, shuffle_buffer=PER_FILE)
  steps = pipeline.steps_per_epoch
  reads = {}
  for step in (0, steps // 4, steps // 2, 3 * steps // 4, steps - 1, 2 * steps + steps // 2):
    records_read.assign(0)
    batches = as_numpy(pipeline.train_dataset(start_step=step))
    next(batches)
    reads[step] = int(records_read.numpy())
    del batches
  print(f'Records read up to the first batch, by start step ({steps} steps of 8 records per '
        f'epoch, shuffle buffer {PER_FILE}, files of {PER_FILE} records): {reads}')
  # The window holding the step (at most one buffer and one file), and up to two windows that
  # are read ahead while it is consumed.
  assert max(reads.values()) <= 3 * (PER_FILE + PER_FILE)


def test_processes_read_disjoint_shards(digits):
  data_dir, _ = digits
  shards = [make('digits', batch=64, size=8, data_dir=data_dir, process_index=i,
                 process_count=2) for i in range(2)]
  assert [s.local_train_examples for s in shards] == [718, 718]
  assert [s.num_train_examples for s in shards] == [1437, 1437]
  eval_counts = [sum(int(b['mask'].sum()) for b in as_numpy(s.eval_dataset()[0]))
                 for s in shards]
  assert eval_counts == [180, 180]
  assert len({s.eval_dataset()[1] for s in shards}) == 1  # same number of batches


def test_unknown_dataset_lists_supported():
  with pytest.raises(ValueError, match='cifar10.*digits'):
    make('mnist')


def test_missing_dataset_says_what_to_do(tmp_path):
  manual = tmp_path / 'downloads' / 'manual'
  with pytest.raises(DatasetUnavailableError) as error:
    make('imagenet2012', data_dir=str(tmp_path))
  assert (f'ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar are missing from {manual} '
          f'(looked for {manual}/ILSVRC2012_img_train.tar, {manual}/ILSVRC2012_img_val.tar)'
          in str(error.value))
  assert 'python3 -m ran_jax.data.prepare --dataset=imagenet2012' in str(error.value)


def test_several_processes_do_not_prepare_a_download_themselves(tmp_path):
  """CIFAR with no network needed to tell: every process refuses before any download."""
  with pytest.raises(DatasetUnavailableError) as error:
    make('cifar10', data_dir=str(tmp_path), process_count=2, process_index=1)
  assert str(error.value) == (
      f'cifar10 is not prepared in {tmp_path}; run `python3 -m ran_jax.data.prepare '
      f'--dataset=cifar10 --data_dir={tmp_path}` first (on every host whose data_dir is its '
      'own).')
  assert not (tmp_path / 'downloads').exists()


def test_missing_files_say_what_to_do(tmp_path):
  builder = builders.prepare(get_spec('digits'), str(tmp_path))
  for instruction in builder.info.splits['train'].file_instructions:
    os.remove(instruction.filename)
  with pytest.raises(DatasetUnavailableError, match='incomplete.*missing.*prepare it again'):
    make('digits', data_dir=str(tmp_path))


def test_batch_not_divisible_by_processes():
  with pytest.raises(ValueError, match='batch_size=5 must be divisible'):
    make('digits', batch=5, process_count=2)


@pytest.mark.parametrize('dataset', ['imagenet2012', 'digits'])
def test_batch_shapes_are_the_pipelines_batches(dataset, digits, imagenet_dir):
  """What `ran_jax.plan` compiles for is what the pipelines send (no data read there)."""
  if dataset == 'digits':
    pipeline, size = digits[1], 8
  else:
    pipeline, size = make(dataset, batch=4, size=40, eval_size=48, data_dir=imagenet_dir), 40
  eval_size = pipeline.config.eval_image_size
  for train, spec in ((True, pipeline.train_dataset().element_spec),
                      (False, pipeline.eval_dataset()[0].element_spec)):
    batch = pipeline.config.global_batch_size if train else pipeline.config.eval_batch_size
    source = sources.source_of(ml_collections.ConfigDict(
        {'dataset': dataset, 'image_size': size, 'eval_image_size': eval_size}))
    shapes = batch_shapes(source.planning_facts(), batch, size if train else eval_size,
                          train=train)
    assert sorted(shapes) == sorted(spec)
    for name, tensor in spec.items():
      assert shapes[name].dtype == tensor.dtype.as_numpy_dtype, name
      assert shapes[name].shape[1:] == tuple(tensor.shape[1:]), name
      assert tensor.shape[0] in (None, shapes[name].shape[0]), name
