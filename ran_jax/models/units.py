"""Residual units: the building blocks of trunk, mask and transition paths.

Two unit families are used by the official models:
  * `PreActBottleneck` (Attention-N): x + [BN-ReLU, 1x1, BN-ReLU, 3x3, BN-ReLU, 1x1].
  * `ResNeXtBottleneck` (AttentionNeXt-N): ReLU(x + [1x1, BN, ReLU, grouped 3x3, BN, ReLU,
    1x1, BN]), post-activation.
A unit that changes width or resolution gets a 1x1 projection shortcut; the stride sits on
the 3x3 convolution.
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


UNITS = {'preact': PreActBottleneck, 'resnext': ResNeXtBottleneck}
