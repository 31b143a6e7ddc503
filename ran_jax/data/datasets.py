"""What the pipeline needs to know about each supported TFDS dataset."""

import dataclasses


FOLDER = 'image_folder'  # the dataset of a folder of images (`ran_jax.data.image_folder`)
RECIPES = ('auto', 'small', 'imagenet')  # of a folder: from its images, or forced


class DatasetUnavailableError(RuntimeError):
  """The dataset is neither prepared in data_dir nor preparable here."""


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """A TFDS dataset and its recipe.

  Attributes:
    tfds_name: the TFDS name.
    train_split / eval_split: TFDS split names.
    recipe: 'imagenet' (random-resized crop, centre-crop eval, mean/std) or 'small'
      (zero-pad and random crop, optional flip, per-pixel mean subtraction).
    num_classes / channels: label classes and image channels (as the TFDS features say;
      known here so that a model can be shaped without the data).
    num_train_examples: the size of the train split (as TFDS prepares it; known here so
      that a schedule can be built without the data).
    pad: padding of the 'small' recipe's random crop.
    image_size: the side of every image of a 'small' dataset, used as it is (None: images of
      any size, resized to the config's image_size).
    flip: horizontal flips in training ('small' recipe).
    embedded: the data ships with the code (no download), so any tool may prepare it.
    manual_files: files the user must download into the TFDS manual directory first.
    manual_source: where to get `manual_files`.
    mean / std: per-channel statistics of the training images (0-255) for data measured when
      prepared (image folders); None: ImageNet's constants, or the 'small' recipe's mean image.
  """
  tfds_name: str
  train_split: str
  eval_split: str
  recipe: str
  num_classes: int
  num_train_examples: int
  channels: int = 3
  pad: int = 0
  flip: bool = True
  image_size: int | None = None
  embedded: bool = False
  manual_files: tuple[str, ...] = ()
  manual_source: str = ''
  mean: tuple[float, ...] | None = None
  std: tuple[float, ...] | None = None


DATASETS = {
    'imagenet2012': DatasetSpec(
        'imagenet2012', 'train', 'validation', 'imagenet', num_classes=1000,
        num_train_examples=1_281_167,
        manual_files=('ILSVRC2012_img_train.tar', 'ILSVRC2012_img_val.tar'),
        manual_source='https://image-net.org/download-images (registration needed)'),
    'cifar10': DatasetSpec('cifar10', 'train', 'test', 'small', num_classes=10,
                           num_train_examples=50_000, pad=4,
                           image_size=32),
    'cifar100': DatasetSpec('cifar100', 'train', 'test', 'small', num_classes=100,
                            num_train_examples=50_000, pad=4,
                            image_size=32),
    # No augmentation: a shift of one pixel is an eighth of a centred 8x8 digit, and the
    # short demo training reaches its accuracy sooner without it.
    'digits': DatasetSpec('digits', 'train', 'test', 'small', num_classes=10,
                          num_train_examples=1_437, channels=1, pad=0,
                          flip=False, image_size=8, embedded=True),
}


def get_spec(name: str) -> DatasetSpec:
  """The spec of dataset `name`, or a ValueError listing the supported ones."""
  if name not in DATASETS:
    raise ValueError(f'Unknown dataset {name!r}; supported: {", ".join(sorted(DATASETS))}.')
  return DATASETS[name]
