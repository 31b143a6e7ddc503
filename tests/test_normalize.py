"""On-device input normalisation gives what the host normalisation gave, to float32 round-off."""

import jax
import numpy as np
import pytest
import tensorflow as tf

from ran_jax.data import normalize
from ran_jax.data.datasets import DATASETS


def host_small(raw: np.ndarray, mean: np.ndarray, pad: int, crop: np.ndarray) -> np.ndarray:
  """The host recipe: normalise the whole image, zero-pad it, crop it, maybe flip it."""
  height, width, _ = raw.shape
  image = tf.cast(raw, tf.float32) / 255.0 - mean
  image = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
  image = image[crop[0]:crop[0] + height, crop[1]:crop[1] + width]
  return (tf.reverse(image, axis=[1]) if crop[2] else image).numpy()


def device_input(raw: np.ndarray, pad: int, crop: np.ndarray) -> np.ndarray:
  """What the pipeline now sends: the raw pixels zero-padded, cropped, maybe flipped."""
  height, width, _ = raw.shape
  image = np.pad(raw, [(pad, pad), (pad, pad), (0, 0)])[crop[0]:crop[0] + height,
                                                         crop[1]:crop[1] + width]
  return image[:, ::-1] if crop[2] else image


@pytest.mark.parametrize('dataset', ['cifar10', 'digits'])
def test_small_recipe_matches_host_normalisation(dataset):
  spec = DATASETS[dataset]
  size, pad = spec.image_size, spec.pad
  rng = np.random.default_rng(0)
  raw = rng.integers(0, 256, (16, size, size, 3), dtype=np.uint8)
  mean = rng.uniform(0, 1, (size, size, 3)).astype(np.float32)
  crops = np.stack([rng.integers(0, 2 * pad + 1, 16), rng.integers(0, 2 * pad + 1, 16),
                    rng.integers(0, 2, 16)], axis=1).astype(np.int32)
  crops[0] = (pad, pad, 0)  # the evaluation crop
  crops[1] = (0, 2 * pad, 1)  # into the padding at a corner, flipped
  sent = np.stack([device_input(r, pad, c) for r, c in zip(raw, crops, strict=True)])
  normalizer = normalize.InputNormalizer('small', mean, pad=pad)
  on_device = jax.jit(normalizer)({'image': sent, 'crop': crops})
  expected = np.stack([host_small(r, mean, pad, c) for r, c in zip(raw, crops, strict=True)])
  assert on_device.dtype == np.float32
  np.testing.assert_allclose(np.asarray(on_device), expected, rtol=0, atol=1e-6)
  assert (expected[1][:, :pad] == 0).all()  # the padding stays zero after normalisation
  assert (np.asarray(on_device)[1][:, :pad] == 0).all()


@pytest.mark.parametrize('dtype', [np.uint8, np.float32])
def test_imagenet_recipe_matches_host_normalisation(dtype):
  rng = np.random.default_rng(1)
  pixels = rng.uniform(0, 255, (4, 24, 24, 3))
  pixels = pixels.round().astype(dtype) if dtype == np.uint8 else pixels.astype(dtype)
  expected = ((tf.cast(pixels, tf.float32) - tf.constant(normalize.IMAGENET_MEAN)) /
              tf.constant(normalize.IMAGENET_STD)).numpy()
  on_device = jax.jit(normalize.imagenet_normalizer())({'image': pixels})
  np.testing.assert_allclose(np.asarray(on_device), expected, rtol=0, atol=1e-6)
