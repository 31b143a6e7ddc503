"""The attention module: trunk branch, bottom-up top-down soft mask branch, and their fusion.

Layout of one module (p units, split, fuse, p units), following the official definitions:

    u = U^p(x)                           # the mask starts from u itself
    T = U^t(u)                           # trunk branch
    M = SoftMaskBranch(u, size of T)     # values in [0, 1] for the sigmoid mask
    H = U^p(T * M + T)                   # attention residual learning (ARL)

`attention='nal'` gives the naive ablation H = U^p(T * M), and `attention='none'` the
no-mask baseline H = U^p(U^t(U^p(x))): no mask branch is built, so a network of such
modules is a plain pre-activation ResNet with the same trunk.

`mask_structure='encoder_decoder'` is the bottom-up top-down mask of the method;
'local_conv' is the paper's ablation of a mask built from residual units at full
resolution, with no pooling or up-sampling (see `SoftMaskBranch`).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ran_jax.models.layers import caffe_max_pool, interp_like
from ran_jax.models.layout import SHORTEST_UNIT_RUN, repeat

ModuleDef = Any

ATTENTION_KINDS = ('arl', 'nal', 'none')
MASK_ACTIVATIONS = ('sigmoid', 'channel', 'spatial')
MASK_STRUCTURES = ('encoder_decoder', 'local_conv')


def mask_activation(x: jax.Array, kind: str) -> jax.Array:
  """The paper's mask activations: f1 'sigmoid' (mixed), f2 'channel', f3 'spatial'."""
  if kind == 'sigmoid':
    return nn.sigmoid(x)
  if kind == 'channel':
    norm = jnp.sqrt(jnp.sum(jnp.square(x.astype(jnp.float32)), axis=-1, keepdims=True))
    return (x / (norm + 1e-12).astype(x.dtype)).astype(x.dtype)
  if kind == 'spatial':
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=(1, 2), keepdims=True)
    std = jnp.std(x32, axis=(1, 2), keepdims=True)
    return nn.sigmoid((x32 - mean) / (std + 1e-5)).astype(x.dtype)
  raise ValueError(f'Unknown mask activation {kind!r}; choose one of {MASK_ACTIVATIONS}.')


class TrunkBranch(nn.Module):
  """t residual units at full resolution: the feature-processing path T(x)."""
  features: int
  unit: ModuleDef
  num_units: int = 2
  scan: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return repeat(lambda name: self.unit(self.features, name=name), x, self.num_units, 'unit',
                  scan=self.scan, shortest=SHORTEST_UNIT_RUN)


def mask_unit_count(poolings: int, r: int) -> int:
  """Units of an encoder-decoder mask branch: r(P + 1) down, P - 1 skip, r(P - 1) up."""
  return 2 * r * poolings + poolings - 1


class SoftMaskBranch(nn.Module):
  """Soft mask M(x) at the trunk's spatial size, then the 1x1 head and the activation.

  structure='encoder_decoder' (bottom-up top-down, the method):
  Down: `poolings` times [3x3/2 max pool, r units], 2r units at the lowest level.
  Up: at each intermediate level, bilinear up-sampling (Caffe Interp) to that level's exact
  size, plus a skip unit of the level's bottom-up feature, then r units. The last
  up-sampling goes to `target_hw` with nothing added.
  Unit names: `down{level}_{i}`, `skip{level}`, `up{level}_{i}` (with `scan`, a run of three
  or more is one scanned `down{level}_1-{n}` / `up{level}_1-{n}`, see `ran_jax.models.layout`).

  structure='local_conv' (the paper's ablation; its exact make-up is not published): the
  same number of units as the encoder-decoder branch, `mask_unit_count(poolings, r)` =
  2rP + P - 1, applied in sequence at the input's (the trunk's) resolution, with no
  pooling or up-sampling. Unit names `local1`, `local2`, ...

  Both end with the same head: BN-ReLU (`head_bn0`, pre-activation units only),
  `head_conv1` (1x1), BN-ReLU (`head_bn1`), `head_conv2` (1x1), the mask activation.
  """
  features: int
  unit: ModuleDef
  conv: ModuleDef
  norm: ModuleDef
  poolings: int
  r: int = 1
  preactivation: bool = True
  activation: str = 'sigmoid'
  structure: str = 'encoder_decoder'
  scan: bool = False

  def _units(self, x: jax.Array, count: int, prefix: str) -> jax.Array:
    return repeat(lambda name: self.unit(self.features, name=name), x, count, prefix,
                  scan=self.scan, shortest=SHORTEST_UNIT_RUN)

  @nn.compact
  def __call__(self, x: jax.Array, target_hw: tuple[int, int]) -> jax.Array:
    if self.structure == 'local_conv':
      x = self._units(x, mask_unit_count(self.poolings, self.r), 'local')
    elif self.structure == 'encoder_decoder':
      x = self._encoder_decoder(x, target_hw)
    else:
      raise ValueError(f'Unknown mask structure {self.structure!r}; choose one of '
                       f'{MASK_STRUCTURES}.')
    if self.preactivation:
      x = nn.relu(self.norm(name='head_bn0')(x))
    x = self.conv(self.features, (1, 1), name='head_conv1')(x)
    x = nn.relu(self.norm(name='head_bn1')(x))
    x = self.conv(self.features, (1, 1), name='head_conv2')(x)
    return mask_activation(x, self.activation)

  def _encoder_decoder(self, x: jax.Array, target_hw: tuple[int, int]) -> jax.Array:
    levels = []
    for level in range(1, self.poolings + 1):
      x = caffe_max_pool(x)
      depth = self.r if level < self.poolings else 2 * self.r
      x = self._units(x, depth, f'down{level}_')
      levels.append(x)
    for level in range(self.poolings - 1, 0, -1):
      bottom_up = levels[level - 1]
      x = interp_like(x, *bottom_up.shape[1:3])
      x = self.unit(self.features, name=f'skip{level}')(bottom_up) + x
      x = self._units(x, self.r, f'up{level}_')
    return interp_like(x, *target_hw)


class AttentionModule(nn.Module):
  """One attention module; records its soft mask as `intermediates/.../soft_mask`.

  Submodules: `pre{i}` (p units), `trunk`, `mask`, `post{i}` (p units). With
  attention='none' there is no `mask` and nothing is sown. `scan` scans runs of three or more
  identical units (`ran_jax.models.layout`).
  """
  features: int
  unit: ModuleDef
  conv: ModuleDef
  norm: ModuleDef
  poolings: int
  p: int = 1
  t: int = 2
  r: int = 1
  preactivation: bool = True
  attention: str = 'arl'
  mask_activation: str = 'sigmoid'
  mask_structure: str = 'encoder_decoder'
  scan: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    units = lambda name: self.unit(self.features, name=name)  # noqa: E731
    x = repeat(units, x, self.p, 'pre', scan=self.scan, shortest=SHORTEST_UNIT_RUN)
    trunk = TrunkBranch(self.features, self.unit, self.t, self.scan, name='trunk')(x)
    if self.attention == 'none':
      x = trunk
    else:
      mask = SoftMaskBranch(
          self.features, self.unit, self.conv, self.norm, self.poolings, self.r,
          self.preactivation, self.mask_activation, self.mask_structure, self.scan,
          name='mask')(x, trunk.shape[1:3])
      self.sow('intermediates', 'soft_mask', mask)
      x = trunk * mask + trunk if self.attention == 'arl' else trunk * mask
    return repeat(units, x, self.p, 'post', scan=self.scan, shortest=SHORTEST_UNIT_RUN)
