"""Normalisation of the input pixels on the devices, inside the jitted steps.

The input pipeline sends pixels unnormalised, as uint8 where they are whole numbers (4x less
host-to-device traffic and host work than float32), and the devices normalise them in float32.
Imports only JAX and NumPy.

  * 'imagenet': (pixel - mean) / std per channel (0-255 scale). Training and evaluation crops
    arrive as uint8: the bilinear resize rounded to the nearest level.
  * 'small' (CIFAR, digits): pixel / 255 minus the per-pixel mean image of the training split,
    with zeros where the random crop reaches into the padding. The batch carries each
    example's crop (`crop`: top, left, flipped) so the mean image is cropped and flipped the
    same way. Data measured per channel (image folders) subtract a constant mean image and
    divide by the per-channel std, the padding staying zero.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from ran_jax.data.datasets import DatasetSpec

IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)


@dataclasses.dataclass(frozen=True, eq=False)
class InputNormalizer:
  """Turns a transferred batch into the network's float32 input (see the module docstring).

  Attributes:
    recipe: 'imagenet' or 'small'.
    mean: per-channel mean (imagenet) or the (H, W, C) mean image in [0, 1] (small).
    std: per-channel standard deviation (imagenet: 0-255 scale; small: 0-1 scale, or None).
    pad: the zero padding of the small recipe's random crop.
  """
  recipe: str
  mean: np.ndarray
  std: np.ndarray | None = None
  pad: int = 0

  @property
  def crops(self) -> bool:
    """Whether batches carry each example's crop (`crop`: the 'small' recipe)."""
    return self.recipe == 'small'

  def eval_affine(self) -> tuple[float, np.ndarray, np.ndarray]:
    """(divisor, mean, std): an evaluation image (its crop the centre) is normalised as
    (pixels / divisor - mean) / std."""
    channels = np.asarray(self.mean).shape[-1]
    std = np.ones(channels, np.float32) if self.std is None else np.asarray(self.std)
    return (255.0 if self.crops else 1.0), np.asarray(self.mean), std

  def __call__(self, batch: dict[str, jax.Array]) -> jax.Array:
    images = batch['image'].astype(jnp.float32)
    if self.recipe == 'imagenet':
      return (images - jnp.asarray(self.mean, jnp.float32)) / jnp.asarray(self.std, jnp.float32)
    if self.recipe == 'small':
      centred = images / 255.0 - self._cropped_means(batch['crop'], images.shape[1:3])
      return centred if self.std is None else centred / jnp.asarray(self.std, jnp.float32)
    raise ValueError(f'Unknown input recipe {self.recipe!r}; choose imagenet or small.')

  def _cropped_means(self, crops: jax.Array, size: tuple[int, int]) -> jax.Array:
    """The mean image, zero-padded, cropped at each example's (top, left) and flipped where it
    was flipped: (N, H, W, C). The rows and columns are picked by one-hot products, which
    split over the batch like the images (a gather would need its sharding spelt out)."""
    (height, width), pad = size, self.pad
    mean = jnp.asarray(np.pad(np.asarray(self.mean, np.float32), ((pad, pad), (pad, pad), (0, 0))))
    rows = crops[:, 0, None] + jnp.arange(height)
    columns = jnp.where(crops[:, 2, None] > 0, jnp.arange(width)[::-1], jnp.arange(width))
    columns = crops[:, 1, None] + columns
    pick_rows = (rows[:, :, None] == jnp.arange(mean.shape[0])).astype(jnp.float32)
    pick_columns = (columns[:, :, None] == jnp.arange(mean.shape[1])).astype(jnp.float32)
    return jnp.einsum('nih,hwc,njw->nijc', pick_rows, mean, pick_columns,
                      precision=jax.lax.Precision.HIGHEST)


def imagenet_normalizer() -> InputNormalizer:
  """The ImageNet mean/std normalisation."""
  return InputNormalizer('imagenet', np.asarray(IMAGENET_MEAN, np.float32),
                         np.asarray(IMAGENET_STD, np.float32))


def for_dataset(spec: DatasetSpec, mean: np.ndarray | None,
                image_size: int | None = None) -> InputNormalizer:
  """The device-side normalisation of `spec`'s batches; the 'small' recipe subtracts `mean`,
  the train split's per-pixel mean image in [0, 1] (`pipeline.mean_image`), or, for data
  measured per channel (`spec.mean`, `spec.std`), normalises each channel of `image_size`
  images."""
  measured = spec.mean is not None
  if spec.recipe == 'imagenet':
    if not measured:
      return imagenet_normalizer()
    return InputNormalizer('imagenet', np.asarray(spec.mean, np.float32),
                           np.asarray(spec.std, np.float32))
  if measured:
    mean = np.broadcast_to(np.asarray(spec.mean, np.float32) / 255.0,
                           (image_size, image_size, len(spec.mean)))
    return InputNormalizer('small', mean, np.asarray(spec.std, np.float32) / 255.0,
                           pad=spec.pad)
  return InputNormalizer('small', mean, pad=spec.pad)
