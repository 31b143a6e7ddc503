"""Image files as network input: read with Pillow, then the evaluation preprocessing.

Any file Pillow reads, of any size and mode, becomes uint8 pixels with the dataset's channel
count (transparent parts over white, 16-bit and float grey scaled to 0-255). The evaluation
preprocessing is the pipeline's own (`ran_jax.data.preprocess`): for the 'imagenet' recipe
the centre crop and bilinear resize of `imagenet_eval`; for the 'small' recipe (CIFAR,
digits: images used at their own size) a bilinear resize when the size differs.
"""

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageOps

from ran_jax.data import preprocess
from ran_jax.data.quiet_tf import tf

_SIXTEEN_BIT = 257.0  # 65535 / 255


class ImageFileError(ValueError):
  """An image file can't be used; the message names it and says what to do."""


def _grey_levels(image: Image.Image) -> Image.Image:
  """A 32-bit integer or float grey image as 8-bit grey (Pillow would clip it)."""
  values = np.asarray(image, np.float64)
  if image.mode == 'F':
    values = values * 255.0 if values.size and values.max() <= 1.0 else values
  elif image.mode.startswith('I;16') or (values.size and values.max() > 255):
    values = values / _SIXTEEN_BIT
  return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8))


def _with_channels(image: Image.Image, channels: int) -> np.ndarray:
  image = ImageOps.exif_transpose(image)
  if image.mode in ('F', 'I') or image.mode.startswith('I;16'):
    image = _grey_levels(image)
  if image.mode in ('RGBA', 'LA', 'PA') or 'transparency' in image.info:
    image = image.convert('RGBA')
    image = Image.alpha_composite(Image.new('RGBA', image.size, 'white'), image)
  pixels = np.asarray(image.convert('L' if channels == 1 else 'RGB'), np.uint8)
  return pixels.reshape(*pixels.shape[:2], channels)


def read_image(path: str, channels: int) -> np.ndarray:
  """The (H, W, channels) uint8 pixels of the image file `path` (1 or 3 channels).

  Raises ImageFileError when the file is missing or is not an image Pillow can read.
  """
  if channels not in (1, 3):
    raise ValueError(f'channels={channels}: images have 1 or 3 channels here.')
  try:
    with Image.open(path) as image:
      return _with_channels(image, channels)
  except FileNotFoundError:
    raise ImageFileError(f'{path}: no such file; give the path of an image file') from None
  except Exception as error:  # Pillow raises many types for files it can't read
    reason = ' '.join(str(error).split())[:200]
    raise ImageFileError(
        f'{path} could not be read as an image ({type(error).__name__}: {reason}); give a '
        'PNG, JPEG or other image file that Pillow reads') from None


def check_min_side(pixels: np.ndarray, path: str, min_side: int) -> None:
  """Raises ImageFileError when the image is smaller than `min_side` on either side."""
  height, width = pixels.shape[:2]
  if min(height, width) < min_side:
    raise ImageFileError(
        f'{path} is {width}x{height} pixels, smaller than this network accepts (at least '
        f'{min_side}x{min_side}, its min_input_size); give a larger image')


def eval_pixels(pixels: np.ndarray, recipe: str, image_size: int) -> np.ndarray:
  """The evaluation input of decoded `pixels`: (image_size, image_size, C), 0-255 (uint8 for
  the 'imagenet' recipe, float32 for 'small')."""
  image = tf.constant(pixels)
  if recipe == 'imagenet':
    return preprocess.imagenet_eval_decoded(image, image_size).numpy()
  if recipe == 'small':
    return preprocess.small_eval_decoded(image, image_size).numpy()
  raise ValueError(f'Unknown input recipe {recipe!r}; choose imagenet or small.')


def eval_batch(images: Sequence[np.ndarray], pad: int) -> dict[str, np.ndarray]:
  """A batch of evaluation inputs as the devices take it (the crop of each is its centre)."""
  crop = preprocess.centre_crop(pad).numpy()
  return {'image': np.stack(images).astype(np.float32),
          'crop': np.tile(crop, (len(images), 1))}
