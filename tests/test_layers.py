"""Caffe-exact pooling and Interp against straightforward NumPy references."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ran_jax.models.layers import caffe_max_pool, caffe_pool_size, interp_like


def caffe_interp_reference(x: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
  """Caffe's Interp layer (caffe_cpu_interp2), written loop by loop over NHWC."""
  _, in_h, in_w, _ = x.shape
  rh = (in_h - 1) / (out_h - 1) if out_h > 1 else 0.0
  rw = (in_w - 1) / (out_w - 1) if out_w > 1 else 0.0
  out = np.zeros((x.shape[0], out_h, out_w, x.shape[3]), np.float64)
  for h2 in range(out_h):
    h1r = rh * h2
    h1 = int(h1r)
    h1p = 1 if h1 < in_h - 1 else 0
    h1l = h1r - h1
    for w2 in range(out_w):
      w1r = rw * w2
      w1 = int(w1r)
      w1p = 1 if w1 < in_w - 1 else 0
      w1l = w1r - w1
      out[:, h2, w2] = ((1 - h1l) * ((1 - w1l) * x[:, h1, w1] + w1l * x[:, h1, w1 + w1p]) +
                        h1l * ((1 - w1l) * x[:, h1 + h1p, w1] + w1l * x[:, h1 + h1p, w1 + w1p]))
  return out


def caffe_max_pool_reference(x: np.ndarray, k: int = 3, s: int = 2) -> np.ndarray:
  """Caffe max pooling (pad 0, ceil mode, windows clipped at the border)."""
  n, h, w, c = x.shape
  oh, ow = math.ceil((h - k) / s) + 1, math.ceil((w - k) / s) + 1
  out = np.zeros((n, oh, ow, c), x.dtype)
  for i in range(oh):
    for j in range(ow):
      out[:, i, j] = x[:, i * s:min(i * s + k, h), j * s:min(j * s + k, w)].max(axis=(1, 2))
  return out


@pytest.mark.parametrize('in_hw,out_hw', [
    ((7, 7), (14, 14)), ((4, 4), (7, 7)), ((3, 5), (5, 9)), ((15, 10), (29, 20)),
    ((1, 1), (4, 4)), ((4, 6), (1, 1)), ((2, 3), (2, 3)), ((8, 8), (5, 5)),
])
def test_interp_matches_caffe(in_hw, out_hw):
  x = np.random.default_rng(0).normal(size=(2, *in_hw, 3)).astype(np.float32)
  got = np.asarray(interp_like(jnp.asarray(x), *out_hw))
  assert got.shape == (2, *out_hw, 3)
  np.testing.assert_allclose(got, caffe_interp_reference(x, *out_hw), rtol=1e-5, atol=1e-6)


def test_interp_differs_from_half_pixel_resize():
  x = jnp.arange(16.0).reshape(1, 4, 4, 1)
  ours = interp_like(x, 7, 7)
  half_pixel = jax.image.resize(x, (1, 7, 7, 1), 'bilinear')
  assert float(ours[0, 0, 0, 0]) == 0.0 and float(ours[0, -1, -1, 0]) == 15.0  # corners kept
  assert not np.allclose(ours, half_pixel)


@pytest.mark.parametrize('size,expected', [(112, 56), (56, 28), (14, 7), (7, 3), (57, 28), (2, 1),
                                           (3, 1), (4, 2)])
def test_caffe_pool_size_rounds_up(size, expected):
  assert caffe_pool_size(size) == expected


@pytest.mark.parametrize('hw', [(7, 7), (14, 9), (2, 5), (57, 56)])
def test_max_pool_matches_caffe(hw):
  x = np.random.default_rng(1).normal(size=(2, *hw, 4)).astype(np.float32)
  np.testing.assert_array_equal(np.asarray(caffe_max_pool(jnp.asarray(x))),
                                caffe_max_pool_reference(x))


def caffe_max_pool_grad_reference(x: np.ndarray, g: np.ndarray, k: int = 3, s: int = 2):
  """Caffe's backward pass: each output's gradient goes to the first maximum of its window
  (rows, then columns; a later equal value does not replace it)."""
  n, h, w, c = x.shape
  grad = np.zeros_like(x)
  for b in range(n):
    for ch in range(c):
      for i in range(g.shape[1]):
        for j in range(g.shape[2]):
          best = None
          for y in range(i * s, min(i * s + k, h)):
            for z in range(j * s, min(j * s + k, w)):
              if best is None or x[b, y, z, ch] > x[b, best[0], best[1], ch]:
                best = (y, z)
          grad[b, best[0], best[1], ch] += g[b, i, j, ch]
  return grad


@pytest.mark.parametrize('hw', [(7, 7), (6, 9)])
def test_max_pool_gradient_goes_to_the_first_maximum(hw):
  rng = np.random.default_rng(2)
  x = rng.integers(0, 3, size=(2, *hw, 3)).astype(np.float32)  # many ties
  x[0, :3, :3, 0] = 0.0  # a whole window of equal values, as after a ReLU
  g = rng.normal(size=(2, caffe_pool_size(hw[0]), caffe_pool_size(hw[1]), 3)).astype(np.float32)
  _, vjp = jax.vjp(caffe_max_pool, jnp.asarray(x))
  (grad,) = vjp(jnp.asarray(g))
  np.testing.assert_allclose(np.asarray(grad), caffe_max_pool_grad_reference(x, g), atol=1e-6)
