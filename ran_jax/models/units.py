"""Residual units: the building blocks of trunk, mask and transition paths.

Two unit families are used by the official models:
  * `PreActBottleneck` (Attention-N): x + [BN-ReLU, 1x1, BN-ReLU, 3x3, BN-ReLU, 1x1].
  * `ResNeXtBottleneck` (AttentionNeXt-N): ReLU(x + [1x1, BN, ReLU, grouped 3x3, BN, ReLU,
    1x1, BN]), post-activation.
A unit that changes width or resolution gets a 1x1 projection shortcut; the stride sits on
the 3x3 convolution. A third family, `PreActInception` (AttentionInception-N), has three
pre-activation Inception-ResNet-style branches; the paper gives no definition for it.
"""

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

ModuleDef = Any

BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5

conv_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')

# Every convolution output is named, so that a rematerialisation policy can keep just these.
CONV_OUTPUT = 'conv_output'


class Conv(nn.Conv):
  """`nn.Conv` whose output is tagged `CONV_OUTPUT` for rematerialisation policies."""

  def __call__(self, inputs: jax.Array) -> jax.Array:
    return checkpoint_name(super().__call__(inputs), CONV_OUTPUT)


def make_conv(dtype: Any) -> Callable[..., nn.Conv]:
  """A bias-free convolution with He initialisation and float32 parameters."""
  return functools.partial(
      Conv, use_bias=False, dtype=dtype, param_dtype=jnp.float32, kernel_init=conv_init)


def make_norm(dtype: Any, train: bool, axis_name: str | None) -> Callable[..., nn.BatchNorm]:
  """BatchNorm as in the official models (epsilon 1e-5, moving-average momentum 0.9)."""
  return functools.partial(
      nn.BatchNorm, use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
      dtype=dtype, param_dtype=jnp.float32, axis_name=axis_name)


def _padding(kernel: int) -> tuple[tuple[int, int], tuple[int, int]]:
  return ((kernel // 2, kernel // 2),) * 2


class PreActBottleneck(nn.Module):
  """Pre-activation bottleneck unit, the trunk and mask unit of Attention-N.

  Attributes:
    features: output channels; the bottleneck is `features // bottleneck_ratio` wide.
    strides: stride of the 3x3 convolution (and of the projection shortcut).
    conv / norm: partials from `make_conv` / `make_norm`.
  """
  features: int
  conv: ModuleDef
  norm: ModuleDef
  strides: int = 1
  bottleneck_ratio: int = 4
  groups: int = 1

  preactivation = True

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    width = self.features // self.bottleneck_ratio
    y = nn.relu(self.norm(name='bn_in')(x))
    shortcut = x
    if x.shape[-1] != self.features or self.strides != 1:
      shortcut = self.conv(self.features, (1, 1), strides=self.strides, name='proj')(y)
    y = self.conv(width, (1, 1), name='conv1')(y)
    y = nn.relu(self.norm(name='bn1')(y))
    y = self.conv(width, (3, 3), strides=self.strides, padding=_padding(3),
                  feature_group_count=self.groups, name='conv2')(y)
    y = nn.relu(self.norm(name='bn2')(y))
    y = self.conv(self.features, (1, 1), name='conv3')(y)
    return shortcut + y


class ResNeXtBottleneck(nn.Module):
  """Post-activation ResNeXt unit (grouped 3x3), the unit of AttentionNeXt-N.

  Attributes:
    features: output channels; the grouped 3x3 is `features // bottleneck_ratio` wide.
    groups: cardinality of the 3x3 convolution (32 in the official models).
  """
  features: int
  conv: ModuleDef
  norm: ModuleDef
  strides: int = 1
  bottleneck_ratio: int = 2
  groups: int = 32

  preactivation = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    width = self.features // self.bottleneck_ratio
    shortcut = x
    if x.shape[-1] != self.features or self.strides != 1:
      shortcut = self.conv(self.features, (1, 1), strides=self.strides, name='proj')(x)
      shortcut = self.norm(name='proj_bn')(shortcut)
    y = self.conv(width, (1, 1), name='conv1')(x)
    y = nn.relu(self.norm(name='bn1')(y))
    y = self.conv(width, (3, 3), strides=self.strides, padding=_padding(3),
                  feature_group_count=self.groups, name='conv2')(y)
    y = nn.relu(self.norm(name='bn2')(y))
    y = self.conv(self.features, (1, 1), name='conv3')(y)
    y = self.norm(name='bn3')(y)
    return nn.relu(shortcut + y)


def inception_widths(features: int, bottleneck_ratio: int = 4) -> tuple[int, ...]:
  """Branch widths (a, b1, b2, c1, c2, c3) of `PreActInception`.

  With w = features // bottleneck_ratio: the 1x1 convolutions of all three branches and
  the 3x3 of branch b are 7w/16 wide, branch c's 3x3s grow to w/2 and 9w/16 (rounded
  down, at least 1). For w = 64: 28, 28, 28, 28, 32, 36.
  """
  width = features // bottleneck_ratio
  reduce = max(1, 7 * width // 16)
  return reduce, reduce, reduce, reduce, max(1, width // 2), max(1, 9 * width // 16)


class PreActInception(nn.Module):
  """Pre-activation Inception-ResNet-style unit, the unit of AttentionInception-N.

  x + [1x1 to `features`] of BN-ReLU(concat(a, b, c)) on y = BN-ReLU(x), with branches
  (a) 1x1; (b) 1x1, BN-ReLU, 3x3; (c) 1x1, BN-ReLU, 3x3, BN-ReLU, 3x3, of the widths
  given by `inception_widths`. `strides` sits on branch a's 1x1 and on the first 3x3 of
  b and c; a unit that changes width or resolution adds a 1x1 projection of y as its
  shortcut, as `PreActBottleneck`. `groups` applies to the 3x3 convolutions.

  The paper does not give the unit; the widths were chosen so that one unit costs about
  as much as the bottleneck it replaces (which is what the paper's figures suggest). With
  C_in inputs, C outputs and widths (a, b1, b2, c1, c2, c3), a unit has
  C_in (a + b1 + c1) + 9 (b1 b2 + c1 c2 + c2 c3) + (a + b2 + c3) C [+ C_in C projection]
  convolution weights and 2 C_in + 2 (b1 + c1 + c2) + 2 (a + b2 + c3) BatchNorm
  parameters. attentioninception56 (224x224, 1000 classes) then has 31,926,272 parameters
  and 6.264 G multiply-adds, against the paper's 31.9M and 6.3G for AttentionInception-56.
  """
  features: int
  conv: ModuleDef
  norm: ModuleDef
  strides: int = 1
  bottleneck_ratio: int = 4
  groups: int = 1

  preactivation = True

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    a, b1, b2, c1, c2, c3 = inception_widths(self.features, self.bottleneck_ratio)
    y = nn.relu(self.norm(name='bn_in')(x))
    shortcut = x
    if x.shape[-1] != self.features or self.strides != 1:
      shortcut = self.conv(self.features, (1, 1), strides=self.strides, name='proj')(y)

    def conv3x3(z, features, strides, name):
      return self.conv(features, (3, 3), strides=strides, padding=_padding(3),
                       feature_group_count=self.groups, name=name)(z)

    branch_a = self.conv(a, (1, 1), strides=self.strides, name='a_conv1')(y)
    branch_b = nn.relu(self.norm(name='b_bn1')(self.conv(b1, (1, 1), name='b_conv1')(y)))
    branch_b = conv3x3(branch_b, b2, self.strides, 'b_conv2')
    branch_c = nn.relu(self.norm(name='c_bn1')(self.conv(c1, (1, 1), name='c_conv1')(y)))
    branch_c = nn.relu(self.norm(name='c_bn2')(conv3x3(branch_c, c2, self.strides, 'c_conv2')))
    branch_c = conv3x3(branch_c, c3, 1, 'c_conv3')
    y = jnp.concatenate([branch_a, branch_b, branch_c], axis=-1)
    y = nn.relu(self.norm(name='bn_cat')(y))
    y = self.conv(self.features, (1, 1), name='conv_out')(y)
    return shortcut + y


UNITS = {'preact': PreActBottleneck, 'resnext': ResNeXtBottleneck, 'inception': PreActInception}
