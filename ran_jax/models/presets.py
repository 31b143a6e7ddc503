"""Named presets over `ResidualAttentionNetwork` and the `create_model` registry.

ImageNet presets follow the authors' released Caffe definitions; their parameter counts
at 224x224 with 1000 classes (BatchNorm scale and shift counted, running statistics not):

  attention56      31,810,728   (1/1/1 modules per stage)
  attention92      52,466,344   (1/2/3, as the official file)
  attentionnext56  31,318,824
  attentionnext92  52,102,952

attention128 (3/3/3) and attention164 (4/4/4) follow the paper's depth rule 36m + 20 with
m modules per stage; no official definition was released for them.

CIFAR presets (32x32) use the reading that reproduces the paper's parameter counts: a
3x3 stem with 16 channels, three stages of bottleneck outputs 64/128/256 at 32/16/8
pixels, each stage = a transition unit, m modules and one closing unit, mask poolings
3/2/1 (lowest resolution 4x4). With 10 classes: attention92_cifar has 1,841,242 parameters
(paper: 1.9M) and attention236_cifar 5,084,762 (paper: 5.1M). attention452_cifar
(m=6, p=2, t=4, r=3, depth 3 * 6 * 3 * (2p + t) + 20 = 452) comes to 10,181,210, against
the paper's 8.6M: the paper does not define this model, and no reading that keeps
p=2, t=4, r=3, the widths above and depth 452 gives 8.6M, so we keep the structure shared
with the other CIFAR presets and report the difference rather than invent one.

attentioninception56 is Attention-56 (modules 1/1/1) with `PreActInception` units in
trunks, masks, transitions and the final stage: 31,926,272 parameters and 6.264 G
multiply-adds at 224x224 with 1000 classes, against the paper's 31.9M and 6.3G for
AttentionInception-56 (the paper does not define the unit; see its docstring).

No-mask baselines (attention='none': every module is its p + t + p trunk units in a row, so
the network is a plain pre-activation ResNet):
  resnet164_cifar  the attention164_cifar structure without masks: 3 stages of 1 + 4 * 4 + 1 =
                   18 bottleneck units, widths 64/128/256, a 16-channel 3x3 stem, i.e.
                   ResNet-164's structure. 1,703,258 parameters with 10 classes (published:
                   1.7M), 1,726,388 with 100; 0.248 G multiply-adds at 32x32.
  resnet200        ImageNet stem with modules 1/5/9. A no-mask network with modules
                   (a, b, c) has 1 + 4a, 1 + 4b, 1 + 4c and 3 units per stage and depth
                   12 (a + b + c) + 20, so depth 200 needs a + b + c = 15. Against He et
                   al.'s ResNet-200 (units 3/24/36/3; 64.7M parameters, 15.0 G multiply-
                   adds), modules 1/5/9 give units 5/21/37/3: 65,084,072 parameters and
                   15.007 G multiply-adds at 224x224. Also 66 units, the same multiply-adds:
                   1/6/8 (5/25/33/3) 61,735,592 and 5/5/5 (21/21/21/3, the depth rule
                   36m + 20) 48,335,528 parameters.
"""

import dataclasses
from typing import Any

import jax.numpy as jnp

from ran_jax.models.network import ResidualAttentionNetwork

_RESNEXT = dict(unit='resnext', bottleneck_ratio=2, groups=32)
_NO_MASK = dict(attention='none')
_CIFAR = dict(stem='cifar', stem_width=16, stage_widths=(64, 128, 256), stage_tail_units=1,
              final_units=0)

PRESETS: dict[str, dict[str, Any]] = {
    'attention56': dict(modules_per_stage=(1, 1, 1)),
    'attention92': dict(modules_per_stage=(1, 2, 3)),
    'attention128': dict(modules_per_stage=(3, 3, 3)),
    'attention164': dict(modules_per_stage=(4, 4, 4)),
    'attentionnext56': dict(modules_per_stage=(1, 1, 1), **_RESNEXT),
    'attentionnext92': dict(modules_per_stage=(1, 2, 3), **_RESNEXT),
    'attentioninception56': dict(modules_per_stage=(1, 1, 1), unit='inception'),
    'resnet200': dict(modules_per_stage=(1, 5, 9), **_NO_MASK),
    'attention56_cifar': dict(modules_per_stage=(1, 1, 1), **_CIFAR),
    'attention92_cifar': dict(modules_per_stage=(2, 2, 2), **_CIFAR),
    'attention128_cifar': dict(modules_per_stage=(3, 3, 3), **_CIFAR),
    'attention164_cifar': dict(modules_per_stage=(4, 4, 4), **_CIFAR),
    'attention236_cifar': dict(modules_per_stage=(6, 6, 6), **_CIFAR),
    'attention452_cifar': dict(modules_per_stage=(6, 6, 6), p=2, t=4, r=3, **_CIFAR),
    'resnet164_cifar': dict(modules_per_stage=(4, 4, 4), **_NO_MASK, **_CIFAR),
}

_DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16, 'float16': jnp.float16}
_FIELDS = tuple(f.name for f in dataclasses.fields(ResidualAttentionNetwork)
                if f.name not in ('parent', 'name', 'num_classes'))


def list_models() -> list[str]:
  """Names accepted by `create_model`."""
  return sorted(PRESETS)


def canonical_dtype(dtype: Any) -> Any:
  """Maps 'float32' / 'bfloat16' / 'float16' (or a dtype) to a JAX dtype."""
  if isinstance(dtype, str):
    if dtype not in _DTYPES:
      raise ValueError(f'Unknown dtype {dtype!r}; choose one of {sorted(_DTYPES)}.')
    return _DTYPES[dtype]
  return dtype


def preset_config(name: str) -> dict[str, Any]:
  """The field values of preset `name` (a copy)."""
  if name not in PRESETS:
    raise ValueError(f'Unknown model {name!r}. Valid names: {", ".join(list_models())}.')
  return dict(PRESETS[name])


def create_model(name: str, *, num_classes: int, **overrides: Any) -> ResidualAttentionNetwork:
  """Builds preset `name` with `num_classes` outputs; `overrides` replace preset fields.

  Example: `create_model('attention56', num_classes=1000, dtype='bfloat16')`.
  """
  config = preset_config(name)
  unknown = sorted(set(overrides) - set(_FIELDS))
  if unknown:
    raise ValueError(f'Unknown override(s) {unknown} for {name!r}; valid: {", ".join(_FIELDS)}.')
  config.update(overrides)
  if 'dtype' in config:
    config['dtype'] = canonical_dtype(config['dtype'])
  for key in ('stage_widths', 'modules_per_stage', 'mask_poolings'):
    if key in config:
      config[key] = tuple(config[key])
  return ResidualAttentionNetwork(num_classes=num_classes, **config)
