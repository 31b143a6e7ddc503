"""Your own images: a folder with one subfolder per class, prepared once as a TFDS dataset.

DIR holds DIR/<class>/<images> (files at any depth below a class folder), or is already split
as DIR/train/<class>/ and DIR/val/<class>/ (or validation/, test/). Without a split, a
stratified validation fraction is held out: in each class, the readable files sorted by path
are permuted by a generator seeded with (split_seed, class index), and the first
max(1, round(val_fraction * n)) go to validation; the same on every host and every rerun.
Class names are the class folders' names, in sorted order.

Every file is read with Pillow (any format and mode it reads; EXIF orientation applied; see
`ran_jax.data.images`) and written into TFDS's record files by the builder below, so the
training pipeline reads it like any other prepared dataset: windowed shuffle, exact resume,
per-host shards, label noise and padded evaluation all apply. (TFDS's own `ImageFolder` reads
the image files on every pass, with no record files to shuffle in windows and resume from, and
takes only the split layout.) Files that are not images Pillow reads are skipped, and so are
links back to a folder above them (loops); both are counted and named in a warning.

The prepared dataset is named after what it was made from: the path, size and modification time
of every file, and the split settings. A folder that changed (a file added, removed or
rewritten) is prepared again under a new name, never read stale; the log says what changed.

Input recipe: 'small' (as CIFAR: images resized to image_size, zero-pad-crop-flip
augmentation, stored as PNG) when the median shorter side of the images is at most
`SMALL_MAX_SIDE` pixels, else 'imagenet' (random-resized crops, stored as JPEG); `recipe`
forces one. After preparation the per-channel mean and standard deviation and the median
shorter side are measured on (up to `STATS_EXAMPLES` of) the training images.
"""

import dataclasses
import json
import logging
import os
from collections.abc import Callable, Iterator

import numpy as np
from PIL import Image

from ran_jax.data import builders
from ran_jax.data import images as images_lib
from ran_jax.data.datasets import FOLDER, DatasetSpec
from ran_jax.data.folder_listing import (FolderError, FolderOptions, Listing, fingerprint,
                                         list_folder, split)
from ran_jax.data.quiet_tf import tf, tfds

SMALL_MAX_SIDE = 64
IMAGENET_SIZE = 224
STATS_EXAMPLES = 20_000
STATS_FILE = 'folder_stats.json'
LISTING_FILE = 'folder_listing.json'
_GREY_MODES = ('1', 'L', 'LA', 'I', 'I;16', 'I;16B', 'I;16L', 'F')


@dataclasses.dataclass(frozen=True)
class Plan:
  """What a prepared dataset is made of: its name, classes, channels and recipe, and (when it
  is to be prepared) the labelled files of each split."""
  name: str
  classes: tuple[str, ...]
  channels: int
  recipe: str
  splits: dict[str, list[tuple[str, int]]] | None = None


class FolderImages(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """The images of a folder, by class, in a 'train' and a 'validation' split."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Images decoded by Pillow, stored as PNG (small) or JPEG.'}

  def __init__(self, *, plan: Plan, **kwargs):
    self._plan = plan
    super().__init__(config=tfds.core.BuilderConfig(name=plan.name), **kwargs)

  def _create_builder_config(self, builder_config: tfds.core.BuilderConfig,
                             version: object) -> tfds.core.BuilderConfig:
    del version  # one version
    return builder_config  # named after the folder's contents, so never among predefined ones

  def _log_download_bytes(self) -> None:  # `load` reports what is prepared, and where
    pass

  def _log_download_done(self) -> None:
    pass

  def _info(self) -> tfds.core.DatasetInfo:
    plan = self._plan
    encoding = 'png' if plan.recipe == 'small' else 'jpeg'
    return tfds.core.DatasetInfo(
        builder=self,
        description='Images of a folder with one subfolder per class.',
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(None, None, plan.channels),
                                         encoding_format=encoding),
            'label': tfds.features.ClassLabel(names=plan.classes),
        }),
        supervised_keys=('image', 'label'))

  def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict:
    del dl_manager  # the files are local
    return {split: self._generate_examples(files) for split, files in self._plan.splits.items()}

  def _generate_examples(self, files: list[tuple[str, int]]) -> Iterator[tuple[str, dict]]:
    for path, label in files:
      try:
        pixels = images_lib.read_image(path, self._plan.channels)
      except images_lib.ImageFileError as error:  # decodable header, damaged data
        logging.warning('Skipped %s', error)
        continue
      yield path, {'image': pixels, 'label': label}


def _dataset_root(data_dir: str | None) -> str:
  """Where the prepared folders go: `data_dir`, else TFDS's default ($TFDS_DATA_DIR or
  ~/tensorflow_datasets)."""
  return os.path.join(data_dir or tfds.core.constants.get_default_data_dir(), 'folder_images')


def _prepared_names(data_dir: str | None, contents: str) -> list[str]:
  """The prepared datasets of these contents (one per recipe and channel count)."""
  root = _dataset_root(data_dir)
  if not tf.io.gfile.isdir(root):
    return []
  return sorted(name.rstrip('/') for name in tf.io.gfile.listdir(root)
                if name.rstrip('/').endswith('-' + contents))


def _header(path: str) -> tuple[int, int, str] | str:
  """(width, height, mode) of an image file, or why Pillow can't read it."""
  try:
    with Image.open(path) as image:
      return (*image.size, image.mode)
  except Exception as error:  # Pillow raises many types for files it can't read
    return f'{type(error).__name__}'


def _recipe_of(sides: list[int], requested: str) -> str:
  if requested != 'auto':
    return requested
  return 'small' if float(np.median(sides)) <= SMALL_MAX_SIDE else 'imagenet'


def _named(names: list[str]) -> str:
  """The first 5 of `names`, then ', ...' when there are more."""
  return ', '.join(names[:5]) + (', ...' if len(names) > 5 else '')


def _plan(listing: Listing, options: FolderOptions, contents: str,
          report: Callable[[str], None]) -> Plan:
  """Reads every file's header: the readable images, their recipe and channels, the split.
  Skipped links and files are logged as warnings."""
  if listing.loops:
    links = 'folder link that loops' if len(listing.loops) == 1 else 'folder links that loop'
    logging.warning(f'Skipping {len(listing.loops):,} {links} back to a folder above in '
                    f'{listing.root} (remove each, or point it at the folder to add): '
                    f'{_named(list(listing.loops))}')
  report(f'Reading the headers of {len(listing.entries):,} files in {listing.root} ...')
  headers = {path: _header(os.path.join(listing.root, path)) for path, _, _ in listing.entries}
  unreadable = {path: why for path, why in headers.items() if isinstance(why, str)}
  if unreadable:
    logging.warning('Skipping %s of %s files that are not images Pillow reads: %s',
                    f'{len(unreadable):,}', f'{len(headers):,}',
                    _named([f'{path} ({why})' for path, why in unreadable.items()]))

  train, evaluation = split(listing, options, set(unreadable))
  headers_kept = [headers[path] for path in sorted(set(headers) - set(unreadable))]
  recipe = _recipe_of([min(width, height) for width, height, _ in headers_kept],
                      options.recipe)
  grey = all(mode in _GREY_MODES for _, _, mode in headers_kept)
  channels = 1 if grey and recipe == 'small' else 3

  def labelled(files: dict[str, list[str]]) -> list[tuple[str, int]]:
    return [(os.path.join(listing.root, path), label)
            for label, name in enumerate(listing.classes) for path in files[name]]

  return Plan(f'{recipe}{channels}-{contents}', listing.classes, channels, recipe,
              {'train': labelled(train), 'validation': labelled(evaluation)})


def _changes(listing: Listing, data_dir: str | None) -> str:
  """What changed in the folder since it was last prepared in `data_dir` (or '')."""
  root = _dataset_root(data_dir)
  latest, mtime = None, 0
  for path in tf.io.gfile.glob(os.path.join(root, '*', '*', LISTING_FILE)):
    saved = json.loads(tf.io.gfile.GFile(path).read())
    written = tf.io.gfile.stat(path).mtime_nsec
    if saved.get('folder') == listing.root and written > mtime:
      latest, mtime = saved, written
  if latest is None:
    return ''
  before = {path: (size, when) for path, size, when in latest['entries']}
  now = {path: (size, when) for path, size, when in listing.entries}
  added = len(set(now) - set(before))
  removed = len(set(before) - set(now))
  changed = sum(before[path] != now[path] for path in set(now) & set(before))
  return (f' (the folder changed since it was last prepared: {added} files added, {removed} '
          f'removed, {changed} rewritten)')


def _measure(builder: tfds.core.DatasetBuilder) -> dict:
  """Per-channel mean and std (0-255) and the median shorter side of up to STATS_EXAMPLES
  training images."""
  ds = builder.as_dataset(split='train', shuffle_files=False,
                          read_config=tfds.ReadConfig(try_autocache=False))
  channels = builder.info.features['image'].shape[-1]
  total, squares, count, sides = np.zeros(channels), np.zeros(channels), 0, []
  for example in tfds.as_numpy(ds.take(STATS_EXAMPLES)):
    pixels = example['image'].reshape(-1, channels).astype(np.float64)
    total += pixels.sum(0)
    squares += np.square(pixels).sum(0)
    count += len(pixels)
    sides.append(min(example['image'].shape[:2]))
  mean = total / count
  std = np.sqrt(np.maximum(squares / count - np.square(mean), 0.0))
  return {'mean': mean.tolist(), 'std': np.maximum(std, 1.0).tolist(),
          'median_side': int(round(float(np.median(sides)))), 'measured_examples': len(sides)}


def _write_json(directory: str, name: str, value: dict) -> None:
  staging = os.path.join(directory, name + '.tmp')
  with tf.io.gfile.GFile(staging, 'w') as file:
    file.write(json.dumps(value))
  tf.io.gfile.rename(staging, os.path.join(directory, name), overwrite=True)


@dataclasses.dataclass(frozen=True)
class PreparedFolder:
  """A prepared folder: its TFDS builder and what the pipeline needs to know about it."""
  builder: tfds.core.DatasetBuilder
  recipe: str
  stats: dict

  def spec(self, image_size: int, flip: bool) -> DatasetSpec:
    """The pipeline's recipe for this data at `image_size` (the 'small' recipe pads an
    eighth of the side, at least one pixel)."""
    features = self.builder.info.features
    return DatasetSpec(
        FOLDER, 'train', 'validation', self.recipe, num_classes=features['label'].num_classes,
        num_train_examples=self.builder.info.splits['train'].num_examples,
        channels=features['image'].shape[-1], pad=max(1, image_size // 8) if
        self.recipe == 'small' else 0, flip=flip, mean=tuple(self.stats['mean']),
        std=tuple(self.stats['std']))

  @property
  def default_image_size(self) -> int:
    """The median shorter side of the images ('small'), or 224 ('imagenet')."""
    return self.stats['median_side'] if self.recipe == 'small' else IMAGENET_SIZE


def load(options: FolderOptions, data_dir: str | None, *, prepare_if_needed: bool = True,
         report: Callable[[str], None] = logging.info) -> PreparedFolder:
  """The prepared dataset of `options.folder`, prepared (and measured) first if it is not.

  Raises FolderError (one line: what to change) when the folder can't be used, or when it is
  not prepared and `prepare_if_needed` is False.
  """
  listing = list_folder(options.folder)
  contents = fingerprint(listing, options)
  names = [name for name in _prepared_names(data_dir, contents)
           if options.recipe == 'auto' or name.startswith(options.recipe)]
  builder = None
  if len(names) == 1:  # else none, or one per forced recipe: the images decide for 'auto'
    recipe, channels = names[0][:-len(contents) - 2], int(names[0][-len(contents) - 2])
    plan = Plan(names[0], listing.classes, channels, recipe)
    builder = FolderImages(plan=plan, data_dir=data_dir)
  if builder is None or not builders.is_prepared(builder):
    if not prepare_if_needed:
      raise FolderError(f'the images of {listing.root} are not prepared in '
                        f'{_dataset_root(data_dir)}; process 0 prepares them when a run starts '
                        'there (give every process the same data_dir)')
    plan = _plan(listing, options, contents, report)
    builder = FolderImages(plan=plan, data_dir=data_dir)
    if not builders.is_prepared(builder):
      report(f'Preparing {len(plan.splits["train"]):,} training and '
             f'{len(plan.splits["validation"]):,} validation images of {len(plan.classes)} '
             f'classes from {listing.root} as the {plan.recipe} recipe in {builder.data_dir}'
             f'{_changes(listing, data_dir)} ...')
      builders.download_and_prepare(builder)
      _write_json(builder.data_dir, LISTING_FILE,
                  {'folder': listing.root, 'entries': listing.entries})
  stats_path = os.path.join(builder.data_dir, STATS_FILE)
  if not tf.io.gfile.exists(stats_path):
    if not prepare_if_needed:
      raise FolderError(f'{builder.data_dir} has no {STATS_FILE}; run once on one process to '
                        'measure the images again')
    _write_json(builder.data_dir, STATS_FILE, _measure(builder))
  stats = json.loads(tf.io.gfile.GFile(stats_path).read())
  splits = builder.info.splits
  report(f'Images of {listing.root}: {splits["train"].num_examples:,} training and '
         f'{splits["validation"].num_examples:,} validation images, '
         f'{len(listing.classes)} classes, {plan.recipe} recipe, in {builder.data_dir}')
  return PreparedFolder(builder, plan.recipe, stats)

