"""TFDS builder for scikit-learn's handwritten digits (`tfds.builder('digits')`).

The data ship inside scikit-learn (`sklearn.datasets.load_digits`), so nothing is
downloaded: 1,797 grey 8x8 images of the digits 0-9 with pixel values 0..16, stored
here as uint8 images rescaled to 0..255 by round(v * 255 / 16).

Split rule (fixed): example i, in `load_digits` order, goes to `test` when
i % 5 == 0 and to `train` otherwise, giving 1,437 train and 360 test examples.
Each example's key is its index i.

Importing this module registers the builder; scikit-learn is imported only when
the dataset is generated.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from etils import epath

from ran_jax.data.quiet_tf import tfds

NAME = 'digits'
IMAGE_SHAPE = (8, 8, 1)
NUM_CLASSES = 10
MAX_PIXEL = 16
TEST_EVERY = 5

_DESCRIPTION = f"""\
scikit-learn's handwritten digits (UCI optical recognition of handwritten
digits, test part): 1,797 grey 8x8 images of the digits 0-9. Pixel values 0..16
are rescaled to uint8 0..255 by round(v * 255 / 16).

Split rule: example i, in `sklearn.datasets.load_digits` order, is in `test`
when i % {TEST_EVERY} == 0 and in `train` otherwise (1,437 train, 360 test).
"""

_CITATION = """\
@misc{alpaydin1998optical,
  author = {Alpaydin, E. and Kaynak, C.},
  title = {Optical Recognition of Handwritten Digits},
  year = {1998},
  howpublished = {UCI Machine Learning Repository},
  doi = {10.24432/C50P49},
}
"""


def rescale(pixels: np.ndarray) -> np.ndarray:
  """Maps pixel values 0..16 to uint8 0..255 by rounding v * 255 / 16."""
  return np.rint(np.asarray(pixels, np.float64) * 255.0 / MAX_PIXEL).astype(np.uint8)


def split_of(index: int) -> str:
  """The split that example `index` (in `load_digits` order) belongs to."""
  return 'test' if index % TEST_EVERY == 0 else 'train'


def _registered_here(name: str) -> bool:
  """Whether this module already registered `name` (true when it is reloaded)."""
  try:
    registered = tfds.core.registered.imported_builder_cls(name)
  except tfds.core.registered.DatasetNotFoundError:
    return False
  return registered.__module__ == __name__


class Digits(tfds.core.GeneratorBasedBuilder, skip_registration=_registered_here(NAME)):
  """scikit-learn's 8x8 handwritten digits with a fixed 1,437/360 train/test split."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {
      '1.0.0': 'Initial release: load_digits rescaled to uint8, test = index % 5 == 0.',
  }
  # Given explicitly: TFDS's own lookup of the defining file needs the optional
  # `importlib_resources` package when the module lives outside tensorflow_datasets.
  code_path = epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=_DESCRIPTION,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=IMAGE_SHAPE, dtype=np.uint8),
            'label': tfds.features.ClassLabel(num_classes=NUM_CLASSES),
        }),
        supervised_keys=('image', 'label'),
        homepage='https://archive.ics.uci.edu/dataset/80',
        citation=_CITATION,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
    del dl_manager  # The data ship with scikit-learn.
    from sklearn.datasets import load_digits  # pylint: disable=import-outside-toplevel
    data = load_digits()
    images = rescale(data.images)[..., None]
    labels = data.target.astype(np.int64)
    indices = {'train': [], 'test': []}
    for index in range(len(labels)):
      indices[split_of(index)].append(index)
    return {
        split: self._generate_examples(images, labels, ids) for split, ids in indices.items()
    }

  def _generate_examples(
      self, images: np.ndarray, labels: np.ndarray, indices: Sequence[int]
  ) -> Iterator[tuple[int, dict[str, Any]]]:
    for index in indices:
      yield index, {'image': images[index], 'label': int(labels[index])}
