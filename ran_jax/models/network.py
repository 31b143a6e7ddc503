"""The Residual Attention Network: stem, attention stages, final residual stage, classifier."""

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ran_jax.models.attention import (ATTENTION_KINDS, MASK_ACTIVATIONS, MASK_STRUCTURES,
                                      AttentionModule)
from ran_jax.models.geometry import fits, min_input_size
from ran_jax.models.layers import caffe_max_pool
from ran_jax.models.layout import SHORTEST_UNIT_RUN, repeat
from ran_jax.models.units import CONV_OUTPUT, UNITS, inception_widths, make_conv, make_norm

ModuleDef = Any
STEMS = ('imagenet', 'cifar')
REMAT = ('none', 'unit', 'module')
REMAT_POLICIES = {
    'nothing': jax.checkpoint_policies.nothing_saveable,
    'conv_outputs': jax.checkpoint_policies.save_only_these_names(CONV_OUTPUT),
}


class AttentionStage(nn.Module):
  """A transition unit (`transition`), attention modules `module1`, ..., then plain units
  `tail1`, ... (the CIFAR networks have one). With `scan`, each run of identical blocks is one
  `nn.scan` loop (`ran_jax.models.layout`)."""
  features: int
  num_modules: int
  strides: int
  poolings: int
  unit: ModuleDef
  module: ModuleDef
  tail_units: int = 0
  scan: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.unit(self.features, strides=self.strides, name='transition')(x)
    x = repeat(lambda name: self.module(self.features, poolings=self.poolings, name=name),
               x, self.num_modules, 'module', scan=self.scan)
    return repeat(lambda name: self.unit(self.features, name=name), x, self.tail_units, 'tail',
                  scan=self.scan, shortest=SHORTEST_UNIT_RUN)


class ResidualStage(nn.Module):
  """Plain residual units `unit1`, `unit2`, ...; the first one has the stride."""
  features: int
  num_units: int
  strides: int
  unit: ModuleDef
  scan: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.unit(self.features, strides=self.strides, name='unit1')(x)
    return repeat(lambda name: self.unit(self.features, name=name), x, self.num_units - 1,
                  'unit', scan=self.scan, first=2, shortest=SHORTEST_UNIT_RUN)


class ResidualAttentionNetwork(nn.Module):
  """Residual Attention Network (Wang et al., CVPR 2017), configurable for every variant.

  Attributes:
    num_classes: classifier outputs.
    stage_widths: output channels of each attention stage.
    modules_per_stage: attention modules in each stage.
    mask_poolings: max poolings in the soft mask branch of each stage.
    stage_tail_units: plain residual units closing each attention stage.
    final_units / final_width: plain residual units after the attention stages (stride 2).
    stem: 'imagenet' (7x7/2 conv, BN-ReLU, 3x3/2 max pool) or 'cifar' (3x3 conv).
    stem_width: channels of the stem convolution.
    unit: 'preact' (Attention-N), 'resnext' (AttentionNeXt-N) or 'inception'
      (AttentionInception-N).
    bottleneck_ratio / groups: unit bottleneck divisor and 3x3 cardinality.
    p, t, r: units before/after the split, in the trunk, between mask poolings.
    attention: 'arl' (attention residual learning), 'nal' (naive, ablation) or 'none'
      (no mask branch: a plain residual network with the same trunk).
    mask_activation: 'sigmoid' (the method), 'channel' or 'spatial' (ablations).
    mask_structure: 'encoder_decoder' (bottom-up top-down, the method) or 'local_conv'
      (as many residual units at full resolution, no pooling: ablation).
    dtype: compute dtype; parameters, BatchNorm statistics and logits stay float32.
    remat: rematerialisation in training, trading compute for activation memory: 'none',
      'unit' (every residual unit keeps only its input for the backward pass) or 'module'
      (every attention module keeps only its input). Parameter paths do not change.
    remat_policy: what a rematerialised block keeps besides its input: 'nothing' or
      'conv_outputs' (the convolution outputs; BatchNorm and ReLU are recomputed).
    scan: run each run of identical blocks (two or more attention modules of a stage, three
      or more units of a trunk, of a mask level, ...) as one `nn.scan` loop: the same
      computation (on CPUs much slower to run, see benchmarks/README.md), traced and
      compiled once per run, so deep networks compile in a fraction of the time. Their
      variables are then stacked under the run's name (`stage2/module1-2` instead of
      `stage2/module1`, `stage2/module2`); `ran_jax.models.layout` converts between the
      layouts.
    axis_name: optional BatchNorm axis for per-device code under `shard_map`; not needed
      under `jit` with a sharded batch.
  """
  num_classes: int
  stage_widths: Sequence[int] = (256, 512, 1024)
  modules_per_stage: Sequence[int] = (1, 1, 1)
  mask_poolings: Sequence[int] = (3, 2, 1)
  stage_tail_units: int = 0
  final_units: int = 3
  final_width: int = 2048
  stem: str = 'imagenet'
  stem_width: int = 64
  unit: str = 'preact'
  bottleneck_ratio: int = 4
  groups: int = 1
  p: int = 1
  t: int = 2
  r: int = 1
  attention: str = 'arl'
  mask_activation: str = 'sigmoid'
  mask_structure: str = 'encoder_decoder'
  dtype: Any = jnp.float32
  remat: str = 'none'
  remat_policy: str = 'nothing'
  scan: bool = False
  axis_name: str | None = None

  def __post_init__(self):
    super().__post_init__()
    _validate(self)

  @property
  def has_soft_masks(self) -> bool:
    """Whether the network has attention modules with a mask (and sows their soft masks)."""
    return self.attention != 'none' and any(self.modules_per_stage)

  @property
  def pooled_masks(self) -> bool:
    """Whether the soft mask branches pool (and so limit the smallest input size)."""
    return self.attention != 'none' and self.mask_structure == 'encoder_decoder'

  @property
  def min_input_size(self) -> int:
    """The smallest image side this network accepts."""
    return min_input_size(self.stem, self._size_poolings())

  def _size_poolings(self) -> tuple[int, ...]:
    return tuple(self.mask_poolings) if self.pooled_masks else (0,) * len(self.mask_poolings)

  def check_input(self, shape: Sequence[int]) -> None:
    """Raises a ValueError naming the problem if `shape` is not a usable NHWC batch."""
    if len(shape) != 4:
      raise ValueError(f'Expected NHWC images of rank 4, got shape {tuple(shape)}.')
    height, width = shape[1], shape[2]
    poolings = self._size_poolings()
    if fits(height, self.stem, poolings) and fits(width, self.stem, poolings):
      return
    minimum = f'{self.min_input_size}x{self.min_input_size}'
    if self.pooled_masks:
      raise ValueError(
          f'Images of {height}x{width} are too small for this network: its soft mask branches '
          f'pool {tuple(self.mask_poolings)} times per stage, so it needs at least '
          f'{minimum} pixels. Resize the input or use fewer mask poolings.')
    raise ValueError(f'Images of {height}x{width} are too small for this network: its '
                     f'{self.stem} stem needs at least {minimum} pixels.')

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    self.check_input(x.shape)
    conv = make_conv(self.dtype)
    norm = make_norm(self.dtype, train, self.axis_name)
    unit_cls = UNITS[self.unit]
    preactivation = unit_cls.preactivation
    module_cls = AttentionModule
    policy = REMAT_POLICIES[self.remat_policy]
    if self.remat == 'unit':
      unit_cls = nn.remat(unit_cls, policy=policy)
    elif self.remat == 'module':
      module_cls = nn.remat(module_cls, policy=policy)
    unit = functools.partial(
        unit_cls, conv=conv, norm=norm, bottleneck_ratio=self.bottleneck_ratio, groups=self.groups)
    module = functools.partial(
        module_cls, unit=unit, conv=conv, norm=norm, p=self.p, t=self.t, r=self.r,
        preactivation=preactivation, attention=self.attention,
        mask_activation=self.mask_activation, mask_structure=self.mask_structure,
        scan=self.scan)

    x = x.astype(self.dtype)
    if self.stem == 'imagenet':
      x = conv(self.stem_width, (7, 7), strides=2, padding=((3, 3), (3, 3)), name='stem_conv')(x)
      x = nn.relu(norm(name='stem_bn')(x))
      x = caffe_max_pool(x)
    else:
      x = conv(self.stem_width, (3, 3), padding=((1, 1), (1, 1)), name='stem_conv')(x)

    for i, (width, modules, poolings) in enumerate(
        zip(self.stage_widths, self.modules_per_stage, self.mask_poolings, strict=True)):
      x = AttentionStage(width, modules, 1 if i == 0 else 2, poolings, unit, module,
                         self.stage_tail_units, self.scan, name=f'stage{i + 1}')(x)
    if self.final_units:
      x = ResidualStage(self.final_width, self.final_units, 2, unit, self.scan,
                        name=f'stage{len(self.stage_widths) + 1}')(x)

    if preactivation:
      x = nn.relu(norm(name='head_bn')(x))
    x = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    self.sow('intermediates', 'pre_logits', x)
    return nn.Dense(self.num_classes, dtype=jnp.float32, param_dtype=jnp.float32,
                    name='classifier')(x)


def _check_choice(field: str, value: Any, allowed: Sequence[str]) -> None:
  if value not in allowed:
    raise ValueError(f'{field}={value!r} is not valid; choose one of {tuple(allowed)}.')


def _validate(net: ResidualAttentionNetwork) -> None:
  """Raises a ValueError naming the first bad field of `net`."""
  _check_choice('unit', net.unit, tuple(UNITS))
  _check_choice('stem', net.stem, STEMS)
  _check_choice('attention', net.attention, ATTENTION_KINDS)
  _check_choice('mask_activation', net.mask_activation, MASK_ACTIVATIONS)
  _check_choice('mask_structure', net.mask_structure, MASK_STRUCTURES)
  _check_choice('remat', net.remat, REMAT)
  _check_choice('remat_policy', net.remat_policy, tuple(REMAT_POLICIES))
  if not isinstance(net.scan, bool):
    raise ValueError(f'scan={net.scan!r} is not valid; give True or False.')
  lengths = {len(net.stage_widths), len(net.modules_per_stage), len(net.mask_poolings)}
  if len(lengths) != 1:
    raise ValueError(
        'stage_widths, modules_per_stage and mask_poolings need one entry per stage; got '
        f'{tuple(net.stage_widths)}, {tuple(net.modules_per_stage)}, {tuple(net.mask_poolings)}.')
  if net.num_classes < 1:
    raise ValueError(f'num_classes must be positive, got {net.num_classes}.')
  for field in ('p', 'r', 'stage_tail_units', 'final_units'):
    if getattr(net, field) < 0:
      raise ValueError(f'{field} must be >= 0, got {getattr(net, field)}.')
  if net.t < 1:
    raise ValueError(f't must be >= 1, got {net.t}.')
  if min(net.mask_poolings, default=1) < 1 or min(net.modules_per_stage, default=0) < 0:
    raise ValueError('mask_poolings must be >= 1 and modules_per_stage >= 0, got '
                     f'{tuple(net.mask_poolings)} and {tuple(net.modules_per_stage)}.')
  widths = list(net.stage_widths) + ([net.final_width] if net.final_units else [])
  for width in widths:
    inner = width // net.bottleneck_ratio
    if width % net.bottleneck_ratio or inner % net.groups:
      raise ValueError(
          f'Width {width} must be divisible by bottleneck_ratio={net.bottleneck_ratio}, and '
          f'the bottleneck ({inner}) by groups={net.groups}.')
    if net.unit == 'inception':
      branches = inception_widths(width, net.bottleneck_ratio)[1:]  # the 3x3s' ins and outs
      if any(branch % net.groups for branch in branches):
        raise ValueError(
            f'The inception unit of width {width} has 3x3 branch widths {branches}; each must '
            f'be divisible by groups={net.groups}.')
