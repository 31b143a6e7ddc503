"""TFDS + tf.data input pipelines: per-process shards, resumable order, exact evaluation.

Each process trains on its own part of the train split (`tfds.split_for_jax_process`), read
straight from the prepared files in the order of `ran_jax.data.records`: every epoch reads the
files in a new seeded order and shuffles windows of about `shuffle_buffer` records. The order is
a function of (seed, step), for a given dataset, batch size, shuffle buffer and process count.
Example p of epoch e on process k is augmented with seed (seed, e, k * epoch_size + p), its
position in the global epoch, so no two examples of an epoch share an augmentation.
A run restarted at step s starts reading at the window that holds its first example (at most
one shuffle buffer plus one file of records before it), so it sees exactly the batches an
uninterrupted run would have seen.

With `label_noise` > 0, a fixed fraction of the training labels is replaced symmetrically
(`ran_jax.data.label_noise`), chosen by example id (the index in the whole train split), so an
example's noisy label is the same on every process count and after a resume. Evaluation
labels stay clean.

Evaluation pads every process's shard to the same whole number of batches and marks real
examples with `mask`, so every example is counted exactly once.
"""

import dataclasses
import functools
import math
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import jax
import numpy as np
from absl import logging
from jax.sharding import NamedSharding

from ran_jax.data import device_batches, image_folder, label_noise, normalize, preprocess
from ran_jax.data.builders import DatasetUnavailableError as DatasetUnavailableError
from ran_jax.data.builders import load_builder
from ran_jax.data.datasets import DatasetSpec, get_spec
from ran_jax.data.quiet_tf import tf, tfds
from ran_jax.data.records import RecordOrder, split_blocks
from ran_jax.data.source import InputFacts

AUTOTUNE = tf.data.AUTOTUNE
T = TypeVar('T')


def hide_accelerators_from_tensorflow() -> None:
  """Keeps TensorFlow off the GPUs so that their memory stays JAX's."""
  tf.config.set_visible_devices([], 'GPU')


@dataclasses.dataclass(frozen=True)
class InputConfig:
  """The input settings of a training run (taken from the experiment config)."""
  dataset: str
  global_batch_size: int
  eval_batch_size: int
  image_size: int | None  # None: from the data (image folders only)
  eval_image_size: int | None
  seed: int = 0
  data_dir: str | None = None
  shuffle_buffer: int = 16_384
  process_index: int = 0
  process_count: int = 1
  label_noise: float = 0.0  # fraction of the training labels replaced symmetrically
  label_noise_seed: int = 0
  folder: image_folder.FolderOptions | None = None  # dataset 'image_folder'

  @property
  def local_batch_size(self) -> int:
    return self.global_batch_size // self.process_count


def _decoders(spec: DatasetSpec) -> dict[str, Any] | None:
  return {'image': tfds.decode.SkipDecoding()} if spec.recipe == 'imagenet' else None


def count_examples(builder: tfds.core.DatasetBuilder, split: Any) -> int:
  """Examples in `split` (a split name or sub-split), from the dataset info."""
  return builder.info.splits[split].num_examples


def mean_image(builder: tfds.core.DatasetBuilder, spec: DatasetSpec) -> tf.Tensor:
  """Per-pixel mean of the training split, in [0, 1] (for the 'small' recipe)."""
  ds = builder.as_dataset(split=spec.train_split).map(
      lambda ex: tf.cast(ex['image'], tf.float64) / 255.0, num_parallel_calls=AUTOTUNE)
  total, count = ds.reduce((tf.constant(0.0, tf.float64), tf.constant(0.0, tf.float64)),
                           lambda acc, x: (acc[0] + x, acc[1] + 1.0))
  return tf.cast(total / count, tf.float32)


class InputPipeline:
  """Builds the train and eval datasets of one process (an `InputSource`)."""

  def __init__(self, config: InputConfig, spec: DatasetSpec | None = None):
    """`spec`: the TFDS dataset's (default: that of `config.dataset`); a folder's comes from its
    images."""
    for name, size in (('batch_size', config.global_batch_size),
                       ('eval_batch_size', config.eval_batch_size)):
      if size % config.process_count:
        raise ValueError(f'{name}={size} must be divisible by the number of processes '
                         f'({config.process_count}).')
    self.config = config
    if config.folder is not None:
      folder = _load_on_every_process(config, lambda prepare: image_folder.load(
          config.folder, config.data_dir, prepare_if_needed=prepare), may_prepare=True)
      self.image_size = config.image_size or folder.default_image_size
      self.builder, self.spec = folder.builder, folder.spec(self.image_size, config.folder.flip)
      if (self.spec.recipe == 'small' and config.eval_image_size is not None and
          config.eval_image_size != self.image_size):
        raise ValueError(f'eval_image_size={config.eval_image_size} is not allowed: the small '
                         f'recipe evaluates at its training size; leave it unset (or set it to '
                         f'image_size={self.image_size})')
    else:
      spec = self.spec = spec or get_spec(config.dataset)
      self.builder = _load_on_every_process(config, lambda prepare: load_builder(
          spec, config.data_dir, prepare_if_needed=prepare), may_prepare=spec.embedded)
      self.image_size = config.image_size
    self.eval_image_size = config.eval_image_size or self.image_size
    self.num_classes = self.builder.info.features['label'].num_classes
    self.class_names = tuple(self.builder.info.features['label'].names)
    self.channels = self.builder.info.features['image'].shape[-1]
    self.num_train_examples = count_examples(self.builder, self.spec.train_split)
    train_split = tfds.split_for_jax_process(
        self.spec.train_split, process_index=config.process_index,
        process_count=config.process_count, drop_remainder=True)
    blocks = split_blocks(self.builder, train_split, self.spec.train_split)
    self.local_train_examples = blocks.num_records
    self.steps_per_epoch = self.local_train_examples // config.local_batch_size
    if self.steps_per_epoch < 1:
      raise ValueError(
          f'batch_size={config.global_batch_size} is larger than the {config.dataset} training '
          f'split ({self.local_train_examples} examples per process); use a smaller batch.')
    self._order = RecordOrder(
        blocks, self.builder.info.file_format, seed=config.seed,
        process_index=config.process_index,
        epoch_size=self.steps_per_epoch * config.local_batch_size, window=config.shuffle_buffer)
    self._label_shifts = self._noise() if config.label_noise > 0 else None

  def _noise(self) -> tf.Tensor:
    """The label shift of every training example, by example id (see `label_noise`)."""
    config = self.config
    shifts = label_noise.label_shifts(self.num_train_examples, self.num_classes,
                                      config.label_noise, config.label_noise_seed)
    logging.info('Label noise: %d of the %d training labels (%.4g%%) are replaced by another '
                 'class (label_noise=%g, label_noise_seed=%d).', np.count_nonzero(shifts),
                 len(shifts), 100 * np.count_nonzero(shifts) / len(shifts), config.label_noise,
                 config.label_noise_seed)
    return tf.constant(shifts)

  def normalizer(self) -> normalize.InputNormalizer:
    """The normalisation the devices apply to this pipeline's batches (inside the steps)."""
    return self._normalizer

  @functools.cached_property
  def _normalizer(self) -> normalize.InputNormalizer:
    per_pixel = self.spec.recipe == 'small' and self.spec.mean is None  # a pass over the split
    mean = mean_image(self.builder, self.spec).numpy() if per_pixel else None
    return normalize.for_dataset(self.spec, mean,
                                 self.image_size)

  @property
  def facts(self) -> InputFacts:
    """What this input is (`InputFacts`)."""
    return InputFacts(self.class_names, self.channels, self.normalizer(), self.image_size,
                      self.eval_image_size, self.num_train_examples)

  # Training.
  def _train_example(self, position: tf.Tensor, example_id: tf.Tensor, record: tf.Tensor, *,
                     with_id: bool = False) -> dict:
    example = self.builder.info.features.deserialize_example(
        record, decoders=_decoders(self.spec))
    epoch, index = position // self._order.epoch_size, position % self._order.epoch_size
    global_index = self.config.process_index * self._order.epoch_size + index
    seed = tf.stack([tf.constant(self.config.seed, tf.int64) * 1_000_003 + epoch, global_index])
    size = self.image_size
    label = tf.cast(example['label'], tf.int32)
    if self._label_shifts is not None:
      label = (label + tf.gather(self._label_shifts, example_id)) % self.num_classes
    features = {'label': label, **({'example_id': example_id} if with_id else {})}
    if self.spec.recipe == 'imagenet':
      return {'image': preprocess.imagenet_train(example['image'], seed, size), **features}
    image = self._sized(example['image'], size)
    image, crop = preprocess.pad_crop_flip(image, seed, self.spec.pad, self.spec.flip)
    return {'image': image, 'crop': crop, **features}

  def train_dataset(self, start_step: int = 0, *, with_ids: bool = False) -> tf.data.Dataset:
    """Infinite local batches, starting with the batch of global step `start_step`.

    With `with_ids`, each batch also holds the `example_id` of its examples (their indices in
    the whole train split); the train step takes batches without them.
    """
    batch = self.config.local_batch_size
    ds = self._order.dataset(start=start_step * batch)
    ds = ds.map(functools.partial(self._train_example, with_id=with_ids),
                num_parallel_calls=AUTOTUNE, deterministic=True)
    ds = ds.batch(batch, drop_remainder=True)
    return without_autotune_model(ds.prefetch(AUTOTUNE))

  # Evaluation.
  def _eval_example(self, example: dict) -> dict:
    features = {'label': tf.cast(example['label'], tf.int32), 'mask': tf.constant(True)}
    if self.spec.recipe == 'imagenet':
      image = preprocess.imagenet_eval(example['image'], self.eval_image_size)
      return {'image': image, **features}
    image = self._sized(example['image'], self.eval_image_size)
    return {'image': image, 'crop': preprocess.centre_crop(self.spec.pad), **features}

  def _sized(self, image: tf.Tensor, size: int) -> tf.Tensor:
    """A 'small'-recipe image at `size` (datasets of one image size use theirs as it is)."""
    return image if self.spec.image_size is not None else preprocess.resized(image, size)

  def eval_dataset(self) -> tuple[tf.data.Dataset, int]:
    """Local eval batches padded to the same count on every process, and that count.

    Built once; every evaluation iterates the same dataset again.
    """
    return self._eval

  @functools.cached_property
  def _eval(self) -> tuple[tf.data.Dataset, int]:
    config = self.config
    splits = tfds.even_splits(self.spec.eval_split, n=config.process_count)
    counts = [count_examples(self.builder, split) for split in splits]
    local_batch = config.eval_batch_size // config.process_count
    num_batches = max(1, math.ceil(max(counts) / local_batch))
    # No TFDS auto-cache: the mask images read only the first few examples, and a partly read
    # cache is discarded with a warning on every run.
    ds = self.builder.as_dataset(split=splits[config.process_index], shuffle_files=False,
                                 decoders=_decoders(self.spec),
                                 read_config=tfds.ReadConfig(try_autocache=False))
    ds = ds.map(self._eval_example, num_parallel_calls=AUTOTUNE)
    padding = tf.data.Dataset.from_tensors(
        tf.nest.map_structure(lambda spec: tf.zeros(spec.shape, spec.dtype), ds.element_spec))
    ds = ds.concatenate(padding.repeat()).take(num_batches * local_batch)
    return without_autotune_model(ds.batch(local_batch).prefetch(AUTOTUNE)), num_batches

  def eval_examples(self, count: int) -> dict[str, np.ndarray]:
    """The first `count` (or fewer) real examples of this process's part of the eval split,
    through the eval dataset, stacked; a ValueError when it has none."""
    dataset, _ = self.eval_dataset()
    dataset = dataset.unbatch().filter(lambda example: example['mask']).take(count)
    examples = list(tfds.as_numpy(dataset))
    if not examples:
      raise ValueError(f'the eval split of {self.config.dataset} has no examples')
    return {key: np.stack([example[key] for example in examples])
            for key in examples[0] if key != 'mask'}

  # Batches on the devices, as the training loop takes them.
  def train_batches(self, start_step: int, sharding: NamedSharding,
                    prefetch: int = 2) -> Iterator[dict[str, jax.Array]]:
    """Global training batches from step `start_step` on, `prefetch` in flight."""
    return device_batches.prefetch_to_device(as_numpy(self.train_dataset(start_step)), sharding,
                                       size=prefetch)

  def eval_batches(self, sharding: NamedSharding) -> Iterator[dict[str, jax.Array]]:
    """Global eval batches (see `eval_dataset`)."""
    dataset, _ = self.eval_dataset()
    return device_batches.prefetch_to_device(as_numpy(dataset), sharding)


def _load_on_every_process(config: InputConfig, load: Callable[[bool], T], *,
                           may_prepare: bool) -> T:
  """`load(prepare_if_needed)` of the dataset. One process prepares it if needed. With several,
  only data that `may_prepare` in a run (embedded, or a folder of images) is prepared, by process
  0 while the others wait; any other must be prepared before the run (hours for ImageNet, with
  every other host idle, and a host-local data_dir would leave the other hosts without it)."""
  if config.process_count == 1:
    return load(True)
  if not may_prepare:
    return load(False)
  from jax.experimental import multihost_utils
  loaded, error = None, None
  if config.process_index == 0:
    try:
      loaded = load(True)
    except Exception as raised:  # told to the others, then raised here
      error = raised
  # A collective: the others wait here for process 0, and learn whether it failed.
  failed = multihost_utils.broadcast_one_to_all(np.bool_(error is not None))
  if error is not None:
    raise error
  if failed:
    raise DatasetUnavailableError(f'process 0 could not prepare {config.dataset}; its log says '
                                  'why')
  return loaded or load(False)


def without_autotune_model(ds: tf.data.Dataset) -> tf.data.Dataset:
  """`ds` without tf.data's autotuning model thread.

  With the model on, deleting an iterator of these pipelines after a minute or more of
  training blocked for up to a minute, so runs paused that long before they exited. Without it,
  `AUTOTUNE` map parallelism is the size of tf.data's thread pool (one thread per core).
  """
  options = tf.data.Options()
  options.autotune.enabled = False
  return ds.with_options(options)


def as_numpy(ds: tf.data.Dataset) -> Iterator[dict[str, np.ndarray]]:
  """Iterates a dataset as dicts of NumPy arrays."""
  return iter(tfds.as_numpy(ds))
