"""What a run on a folder of images started before `ran_jax.workdir.run_record` saved in its work
directory (`dataset.json`): the class names, the channels, the recipe with its measured
normalisation, and the image sizes. Read for such work directories; runs now record these
facts in `run.json`. Imports no TensorFlow."""

import dataclasses
import json
import os

from etils import epath

from ran_jax.data import normalize
from ran_jax.data.datasets import DatasetSpec

FILE = 'dataset.json'


@dataclasses.dataclass(frozen=True)
class SavedDataset:
  """The data facts of a run (see the module docstring); `spec` is the recipe to normalise
  evaluation images with."""
  spec: DatasetSpec
  class_names: tuple[str, ...]
  image_size: int
  eval_image_size: int

  def normalizer(self) -> normalize.InputNormalizer:
    return normalize.for_dataset(self.spec, None, self.image_size)


def load(workdir: str) -> SavedDataset:
  """The data facts saved in `workdir`; a FileNotFoundError saying what to do without them."""
  path = os.path.join(workdir, FILE)
  try:
    value = json.loads(epath.Path(path).read_text())
  except FileNotFoundError:
    raise FileNotFoundError(
        f'{path} is missing: the class names and normalisation of a run on a folder of images '
        'are saved there when it starts; give the --workdir of such a run') from None
  spec = {k: tuple(v) if isinstance(v, list) else v for k, v in value['spec'].items()}
  return SavedDataset(DatasetSpec(**spec), tuple(value['class_names']), value['image_size'],
                      value['eval_image_size'])
