"""A split's serialized records in a seeded, resumable training order, read from its files.

The split is read as "blocks": the part of each prepared file that it covers (TFDS's file
instructions), through TFDS's own file adapter for the dataset's file format. Epoch e:
  1. orders the blocks by a stateless permutation seeded with (seed, e, process index);
  2. concatenates them into one stream, of which the first `epoch_size` records are used;
  3. cuts that stream into windows at the block starts nearest below multiples of `window`
     (so a window holds about `window` records, whole blocks, and a block longer than `window`
     is a window of its own), reads each window's blocks in parallel and shuffles the window
     with a seed made of (seed, e, process index, the window's start).
Each record carries its example id: its index in the whole split (of which the blocks may be
a part) in TFDS's prepared order, that of `builder.as_dataset(split, shuffle_files=False)`.
The record at position p of epoch e is a function of (seed, e, p), given the split, the process
index, `epoch_size` and `window`. Starting at p reads from the window holding p on (so at most
one window, under `window` records plus one block, of records before p), and one window ahead
is read while the current one is consumed.
"""

import dataclasses
import os

import numpy as np

from ran_jax.data.builders import DatasetUnavailableError
from ran_jax.data.quiet_tf import tf, tfds

AUTOTUNE = tf.data.AUTOTUNE
READ_PARALLELISM = 16  # blocks of a window read at the same time
_ORDER, _WINDOW = 1, 2  # what a stateless seed is for


@dataclasses.dataclass(frozen=True)
class Blocks:
  """The blocks of a split: file paths, records skipped at each file's start, records taken,
  and the example id (index in the whole split) of each block's first record."""
  files: np.ndarray
  skips: np.ndarray
  takes: np.ndarray
  first_ids: np.ndarray

  @property
  def num_records(self) -> int:
    return int(self.takes.sum())


def split_blocks(builder: tfds.core.DatasetBuilder, split: tfds.typing.SplitArg,
                 whole_split: str) -> Blocks:
  """The blocks of `split`, a part of `whole_split`, after checking that their files exist and
  can be read here; example ids count the records of `whole_split`."""
  file_format = builder.info.file_format
  adapter = tfds.core.file_adapters.ADAPTER_FOR_FORMAT.get(file_format)
  if adapter is None or not adapter.SUPPORTS_TF_DATA:
    raise DatasetUnavailableError(
        f'{builder.name} in {builder.data_dir} is stored as {file_format}, which tf.data cannot '
        'read; prepare it again in tfrecord files (python3 -m ran_jax.data.prepare).')
  instructions = [i for i in builder.info.splits[split].file_instructions if i.take > 0]
  for directory in sorted({os.path.dirname(i.filename) for i in instructions}):
    present = set(tf.io.gfile.listdir(directory)) if tf.io.gfile.isdir(directory) else set()
    missing = sorted(i.filename for i in instructions
                     if os.path.dirname(i.filename) == directory
                     and os.path.basename(i.filename) not in present)
    if missing:
      raise DatasetUnavailableError(
          f'{builder.name} in {builder.data_dir} is incomplete: {len(missing)} of its files are '
          f'missing (e.g. {missing[0]}); prepare it again (python3 -m ran_jax.data.prepare).')
  return Blocks(files=np.array([os.fspath(i.filename) for i in instructions]),
                skips=np.array([i.skip for i in instructions], np.int64),
                takes=np.array([i.take for i in instructions], np.int64),
                first_ids=_first_ids(builder, instructions, whole_split))


def _first_ids(builder: tfds.core.DatasetBuilder, instructions: list,
               whole_split: str) -> np.ndarray:
  """The example id of each instruction's first record: the records of `whole_split` in the
  files before its file, plus the records it skips in its own file."""
  whole = builder.info.splits[whole_split].file_instructions
  record_0_ids, start = {}, 0  # the id that the first record of each file would have
  for instruction in whole:
    record_0_ids[os.fspath(instruction.filename)] = start - instruction.skip
    start += instruction.take
  ids = []
  for instruction in instructions:
    filename = os.fspath(instruction.filename)
    if filename not in record_0_ids:
      raise ValueError(f'{filename} is not a file of the {whole_split!r} split.')
    ids.append(record_0_ids[filename] + instruction.skip)
  return np.array(ids, np.int64)


def _seed(seed: int, purpose: int, *values: tf.Tensor) -> tf.Tensor:
  """A stateless RNG seed (shape [2]) made of `seed`, `purpose` and `values`."""
  key = tf.constant([seed, purpose], tf.int64)
  for value in values:
    key = tf.random.experimental.stateless_fold_in(key, tf.cast(value, tf.int64))
  return key


class RecordOrder:
  """Builds the ordered record stream of one process's part of a split."""

  def __init__(self, blocks: Blocks, file_format: tfds.core.file_adapters.FileFormat, *,
               seed: int, process_index: int, epoch_size: int, window: int):
    if not 0 < epoch_size <= blocks.num_records:
      raise ValueError(f'epoch_size={epoch_size} must be in [1, {blocks.num_records}].')
    if window < 1:
      raise ValueError(f'The shuffle buffer must be positive, got {window}.')
    self.blocks = blocks
    self._adapter = tfds.core.file_adapters.ADAPTER_FOR_FORMAT[file_format]
    self._seed = seed
    self._process_index = process_index
    self.epoch_size = epoch_size
    self.window = window

  def block_order(self, epoch: tf.Tensor) -> tf.Tensor:
    """The blocks of `epoch`, in reading order (indices into `blocks`)."""
    noise = tf.random.stateless_uniform(
        [len(self.blocks.takes)], _seed(self._seed, _ORDER, epoch, self._process_index))
    return tf.argsort(noise, stable=True)

  def _layout(self, epoch: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """(block order, start and end of each ordered block in the epoch's stream)."""
    order = self.block_order(epoch)
    ends = tf.cumsum(tf.gather(tf.constant(self.blocks.takes), order))
    return order, ends - tf.gather(tf.constant(self.blocks.takes), order), ends

  def window_starts(self, epoch: tf.Tensor) -> tf.Tensor:
    """Start positions of the windows of `epoch`, then `epoch_size`."""
    _, starts, _ = self._layout(epoch)
    targets = tf.range(0, self.epoch_size, self.window, dtype=tf.int64)
    nearest_below = tf.gather(starts, tf.searchsorted(starts, targets, side='right') - 1)
    cuts, _ = tf.unique(tf.concat([nearest_below, [self.epoch_size]], 0))
    return cuts

  def _epoch_windows(self, epoch: tf.Tensor, first: tf.Tensor) -> tf.data.Dataset:
    """(epoch, start, end, records to skip) of each window of `epoch` from position `first`."""
    cuts = self.window_starts(epoch)
    i = tf.searchsorted(cuts, tf.reshape(first, [1]), side='right')[0] - 1
    starts, ends = cuts[i:-1], cuts[i + 1:]
    skips = tf.concat([[first - cuts[i]], tf.zeros_like(starts[1:])], 0)
    return tf.data.Dataset.from_tensor_slices(
        (tf.fill(tf.shape(starts), epoch), starts, ends, skips))

  def _read_block(self, file: tf.Tensor, skip: tf.Tensor, take: tf.Tensor,
                  first_id: tf.Tensor) -> tf.data.Dataset:
    """(example id, record) of `take` records of `file` after the first `skip`."""
    ids = tf.data.Dataset.range(first_id, first_id + take)
    return tf.data.Dataset.zip(ids, self._adapter.make_tf_data(file).skip(skip).take(take))

  def _window(self, epoch: tf.Tensor, start: tf.Tensor, end: tf.Tensor,
              skip: tf.Tensor) -> tf.data.Dataset:
    """(position, (example id, record)) of window [start, end) of `epoch`, shuffled, from
    `skip` on."""
    order, block_starts, block_ends = self._layout(epoch)
    inside = (block_starts < end) & (block_ends > start)
    first = tf.maximum(tf.boolean_mask(block_starts, inside), start)
    last = tf.minimum(tf.boolean_mask(block_ends, inside), end)
    chosen = tf.boolean_mask(order, inside)
    skipped = first - tf.boolean_mask(block_starts, inside)  # block records before the window
    file_skips = tf.gather(tf.constant(self.blocks.skips), chosen) + skipped
    first_ids = tf.gather(tf.constant(self.blocks.first_ids), chosen) + skipped
    blocks = tf.data.Dataset.from_tensor_slices(
        (tf.gather(tf.constant(self.blocks.files), chosen), file_skips, last - first,
         first_ids))
    records = blocks.interleave(self._read_block, cycle_length=READ_PARALLELISM,
                                num_parallel_calls=AUTOTUNE, deterministic=True)
    shuffle_seed = tf.random.stateless_uniform(
        [], _seed(self._seed, _WINDOW, epoch, self._process_index, start),
        minval=0, maxval=2**31 - 1, dtype=tf.int64)
    records = records.shuffle(end - start, seed=shuffle_seed, reshuffle_each_iteration=False)
    offset = epoch * self.epoch_size
    positions = tf.data.Dataset.range(offset + start, offset + end)
    return tf.data.Dataset.zip(positions, records).skip(skip)

  def dataset(self, start: int = 0) -> tf.data.Dataset:
    """Infinite (position, example id, serialized record) from position `start`.

    Positions count records from the start of epoch 0: position p is record p % epoch_size
    of epoch p // epoch_size.
    """
    start_epoch, first = divmod(start, self.epoch_size)
    epochs = tf.data.Dataset.range(start_epoch, 2**62)
    windows = epochs.flat_map(lambda epoch: self._epoch_windows(
        epoch, tf.where(epoch == start_epoch, tf.constant(first, tf.int64), 0)))
    # Reading one window ahead, while the one before is consumed, keeps the input flowing.
    records = windows.flat_map(self._window).map(lambda position, record: (position, *record))
    return records.prefetch(self.window)
