"""Normalisation of the input pixels on the devices, inside the jitted steps.

The input pipeline sends pixels unnormalised, as uint8 where they are whole numbers (4x less
host-to-device traffic and host work than float32), and the devices normalise them in float32
with the arithmetic the host used (bit for bit on CPUs, tested; GPUs and TPUs use their own
float32 division). Imports only JAX and NumPy.

  * 'imagenet': (pixel - mean) / std per channel (0-255 scale). Training crops arrive as
    uint8 (the bilinear resize rounded to the nearest level, the one change from normalising
    on the host); evaluation crops arrive as the resize's float32 output, so evaluation is
    exactly as with host normalisation.
  * 'small' (CIFAR, digits): pixel / 255 minus the per-pixel mean image of the training split,
    with zeros where the random crop reaches into the padding. The batch carries each
    example's crop (`crop`: top, left, flipped) so the mean image is cropped and flipped the
    same way.
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
    std: per-channel standard deviation (imagenet only).
    pad: the zero padding of the small recipe's random crop.
  """
  recipe: str
  mean: np.ndarray
  std: np.ndarray | None = None
  pad: int = 0

  def __call__(self, batch: dict[str, jax.Array]) -> jax.Array:
    images = batch['image'].astype(jnp.float32)
    if self.recipe == 'imagenet':
      return divide_exactly(images - jnp.asarray(self.mean, jnp.float32), self.std)
    if self.recipe == 'small':
      return divide_exactly(images, 255.0) - self._cropped_means(batch['crop'], images.shape[1:])
    raise ValueError(f'Unknown input recipe {self.recipe!r}; choose imagenet or small.')

  def _cropped_means(self, crops: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """The mean image cropped and flipped as each example was: a selection among the
    (2 pad + 1)^2 possible windows (no gather, so it shards like any elementwise op)."""
    pad, (height, width, _) = self.pad, shape
    mean = np.pad(np.asarray(self.mean, np.float32), ((pad, pad), (pad, pad), (0, 0)))
    span = 2 * pad + 1
    windows = jnp.asarray(np.stack([mean[top:top + height, left:left + width]
                                    for top in range(span) for left in range(span)]))
    chosen = (crops[:, 0] * span + crops[:, 1])[:, None] == jnp.arange(span * span)
    means = jnp.sum(jnp.where(chosen[:, :, None, None, None], windows[None], 0.0), axis=1)
    return jnp.where(crops[:, 2, None, None, None] > 0, means[:, :, ::-1], means)


def divide_exactly(x: jax.Array, divisor: jax.typing.ArrayLike) -> jax.Array:
  """`x / divisor`, correctly rounded as on the host.

  XLA rewrites a division by a broadcast value into a multiplication by its reciprocal,
  which can differ in the last bit; a full-size divisor behind an optimisation barrier keeps
  the true division. The divisor is built from `x` (x * 0 + divisor, exact for finite x) so
  that it is sharded like `x`.
  """
  full = x * 0.0 + jnp.asarray(divisor, x.dtype)
  return x / jax.lax.optimization_barrier(full)


def imagenet_normalizer() -> InputNormalizer:
  """The ImageNet mean/std normalisation."""
  return InputNormalizer('imagenet', np.asarray(IMAGENET_MEAN, np.float32),
                         np.asarray(IMAGENET_STD, np.float32))


def for_dataset(spec: DatasetSpec, mean: np.ndarray | None) -> InputNormalizer:
  """The device-side normalisation of `spec`'s batches; the 'small' recipe subtracts `mean`,
  the train split's per-pixel mean image in [0, 1] (`pipeline.mean_image`)."""
  if spec.recipe == 'imagenet':
    return imagenet_normalizer()
  return InputNormalizer('small', mean, pad=spec.pad)
