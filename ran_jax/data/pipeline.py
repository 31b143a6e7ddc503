"""TFDS + tf.data input pipelines: per-process shards, resumable order, exact evaluation.

Training data order is a function of (seed, step), for a given dataset, batch size, shuffle
buffer and process count: epoch e is the process's shard shuffled with seed (seed, e), and
example i of it is augmented with seed (seed, e, i).
A run restarted at step s skips straight to epoch s // steps_per_epoch at the right offset,
so it sees exactly the batches an uninterrupted run would have seen.

Evaluation pads every process's shard to the same whole number of batches and marks real
examples with `mask`, so every example is counted exactly once.
"""

import dataclasses
import functools
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from ran_jax.data import preprocess
from ran_jax.data.datasets import DatasetSpec, get_spec

AUTOTUNE = tf.data.AUTOTUNE


class DatasetUnavailableError(RuntimeError):
  """The dataset is neither prepared in data_dir nor preparable here."""


def hide_accelerators_from_tensorflow() -> None:
  """Keeps TensorFlow off the GPUs so that their memory stays JAX's."""
  tf.config.set_visible_devices([], 'GPU')


@dataclasses.dataclass(frozen=True)
class InputConfig:
  """The input settings of a training run (taken from the experiment config)."""
  dataset: str
  global_batch_size: int
  eval_batch_size: int
  image_size: int
  eval_image_size: int
  seed: int = 0
  data_dir: str | None = None
  shuffle_buffer: int = 16_384
  process_index: int = 0
  process_count: int = 1

  @property
  def local_batch_size(self) -> int:
    return self.global_batch_size // self.process_count


def load_builder(spec: DatasetSpec, data_dir: str | None,
                 prepare: bool = True) -> tfds.core.DatasetBuilder:
  """The TFDS builder of `spec`; with `prepare`, built from local files if needed."""
  if spec.tfds_name == 'digits':
    from ran_jax.data import digits  # registers the builder; scikit-learn ships the data
    return digits.prepare_digits(data_dir) if prepare else digits.Digits(data_dir=data_dir)
  builder = tfds.builder(spec.tfds_name, data_dir=data_dir)
  if prepare and not builder.is_prepared():
    try:
      builder.download_and_prepare()
    except Exception as error:  # TFDS raises many kinds; all mean the same to the user
      where = f'manual files: {spec.manual_download}. ' if spec.manual_download else ''
      raise DatasetUnavailableError(
          f'Dataset {spec.tfds_name!r} is not prepared in {builder.data_dir} and could not be '
          f'prepared ({type(error).__name__}: {error}). {where}Set --config.data_dir to the '
          'TFDS directory that holds it.') from error
  return builder


def _decoders(spec: DatasetSpec) -> dict[str, Any] | None:
  return {'image': tfds.decode.SkipDecoding()} if spec.recipe == 'imagenet' else None


def count_examples(builder: tfds.core.DatasetBuilder, split: Any, spec: DatasetSpec) -> int:
  """Examples in `split` (from the dataset info, or by counting when info lacks it)."""
  try:
    return builder.info.splits[split].num_examples
  except (KeyError, ValueError, TypeError):
    ds = builder.as_dataset(split=split, decoders=_decoders(spec))
    count = int(ds.cardinality())
    return count if count >= 0 else int(ds.reduce(0, lambda n, _: n + 1))


def mean_image(builder: tfds.core.DatasetBuilder, spec: DatasetSpec) -> tf.Tensor:
  """Per-pixel mean of the training split, in [0, 1] (for the 'small' recipe)."""
  ds = builder.as_dataset(split=spec.train_split).map(
      lambda ex: tf.cast(ex['image'], tf.float64) / 255.0, num_parallel_calls=AUTOTUNE)
  total, count = ds.reduce((tf.constant(0.0, tf.float64), tf.constant(0.0, tf.float64)),
                           lambda acc, x: (acc[0] + x, acc[1] + 1.0))
  return tf.cast(total / count, tf.float32)


class InputPipeline:
  """Builds the train and eval datasets of one process."""

  def __init__(self, config: InputConfig):
    for name, size in (('batch_size', config.global_batch_size),
                       ('eval_batch_size', config.eval_batch_size)):
      if size % config.process_count:
        raise ValueError(f'{name}={size} must be divisible by the number of processes '
                         f'({config.process_count}).')
    self.config = config
    self.spec = get_spec(config.dataset)
    self.builder = _load_on_every_process(self.spec, config)
    self.num_classes = self.builder.info.features['label'].num_classes
    self.channels = self.builder.info.features['image'].shape[-1]
    self._train_split = tfds.split_for_jax_process(
        self.spec.train_split, process_index=config.process_index,
        process_count=config.process_count, drop_remainder=True)
    self.local_train_examples = count_examples(self.builder, self._train_split, self.spec)
    self.steps_per_epoch = self.local_train_examples // config.local_batch_size
    if self.steps_per_epoch < 1:
      raise ValueError(
          f'batch_size={config.global_batch_size} is larger than the {config.dataset} training '
          f'split ({self.local_train_examples} examples per process); use a smaller batch.')
    self._mean = mean_image(self.builder, self.spec) if self.spec.recipe == 'small' else None

  # Training.
  def _train_example(self, epoch_seed: tf.Tensor, index: tf.Tensor, example: dict) -> dict:
    seed = tf.stack([epoch_seed, tf.cast(index, tf.int64)])
    size = self.config.image_size
    if self.spec.recipe == 'imagenet':
      image = preprocess.imagenet_train(example['image'], seed, size)
    else:
      image = preprocess.subtract_mean(example['image'], self._mean)
      image = preprocess.pad_crop_flip(image, seed, self.spec.pad, self.spec.flip)
      image = _resize_if_needed(image, size)
    return {'image': image, 'label': tf.cast(example['label'], tf.int32)}

  def train_dataset(self, start_step: int = 0) -> tf.data.Dataset:
    """Infinite local batches, starting with the batch of global step `start_step`."""
    config = self.config
    batch = config.local_batch_size
    per_epoch = self.steps_per_epoch * batch
    start_epoch, offset = divmod(start_step, self.steps_per_epoch)
    base = self.builder.as_dataset(split=self._train_split, shuffle_files=False,
                                   decoders=_decoders(self.spec))
    if self.spec.cache:
      base = base.cache()

    def epoch(e: tf.Tensor) -> tf.data.Dataset:
      epoch_seed = tf.constant(config.seed, tf.int64) * 1_000_003 + e
      ds = base.shuffle(config.shuffle_buffer, seed=epoch_seed, reshuffle_each_iteration=False)
      ds = ds.take(per_epoch).enumerate()
      ds = ds.skip(tf.where(e == start_epoch, tf.constant(offset * batch, tf.int64), 0))
      return ds.map(lambda i, ex: (epoch_seed, i, ex))

    ds = tf.data.Dataset.range(start_epoch, 2**62).flat_map(epoch)
    ds = ds.map(self._train_example, num_parallel_calls=AUTOTUNE, deterministic=True)
    ds = ds.batch(batch, drop_remainder=True)
    return ds.prefetch(AUTOTUNE)

  # Evaluation.
  def _eval_example(self, example: dict) -> dict:
    size = self.config.eval_image_size
    if self.spec.recipe == 'imagenet':
      image = preprocess.imagenet_eval(example['image'], size)
    else:
      image = _resize_if_needed(preprocess.subtract_mean(example['image'], self._mean), size)
    return {'image': image, 'label': tf.cast(example['label'], tf.int32),
            'mask': tf.constant(True)}

  def eval_dataset(self) -> tuple[tf.data.Dataset, int]:
    """Local eval batches padded to the same count on every process, and that count.

    Built once; every evaluation iterates the same dataset again.
    """
    return self._eval

  @functools.cached_property
  def _eval(self) -> tuple[tf.data.Dataset, int]:
    config = self.config
    splits = tfds.even_splits(self.spec.eval_split, n=config.process_count)
    counts = [count_examples(self.builder, split, self.spec) for split in splits]
    local_batch = config.eval_batch_size // config.process_count
    num_batches = max(1, math.ceil(max(counts) / local_batch))
    ds = self.builder.as_dataset(split=splits[config.process_index], shuffle_files=False,
                                 decoders=_decoders(self.spec))
    ds = ds.map(self._eval_example, num_parallel_calls=AUTOTUNE)
    padding = tf.data.Dataset.from_tensors(
        tf.nest.map_structure(lambda spec: tf.zeros(spec.shape, spec.dtype), ds.element_spec))
    ds = ds.concatenate(padding.repeat()).take(num_batches * local_batch)
    return ds.batch(local_batch).prefetch(AUTOTUNE), num_batches


def _load_on_every_process(spec: DatasetSpec, config: InputConfig) -> tfds.core.DatasetBuilder:
  """Process 0 prepares the dataset if needed; the others wait for it, then load it."""
  if config.process_count == 1:
    return load_builder(spec, config.data_dir)
  from jax.experimental import multihost_utils
  builder = load_builder(spec, config.data_dir) if config.process_index == 0 else None
  multihost_utils.sync_global_devices(f'ran_jax: {spec.tfds_name} prepared')
  return builder or load_builder(spec, config.data_dir, prepare=False)


def _resize_if_needed(image: tf.Tensor, size: int) -> tf.Tensor:
  if image.shape[0] == size and image.shape[1] == size:
    return image
  return tf.image.resize(image, (size, size), method='bilinear')


def as_numpy(ds: tf.data.Dataset) -> Iterator[dict[str, np.ndarray]]:
  """Iterates a dataset as dicts of NumPy arrays."""
  return iter(tfds.as_numpy(ds))
