"""Model options beyond the method: no-mask baselines, the local-conv mask, inception units."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import quick_jit, random_variables, tiny_model, traced_init
from flax import traverse_util

from ran_jax.models import PreActInception, TrunkBranch, create_model, model_costs, presets
from ran_jax.models import attention as attention_lib
from ran_jax.models.__main__ import main as summary_main
from ran_jax.models.units import inception_widths, make_conv, make_norm

SMALL = dict(stage_widths=(16, 32), modules_per_stage=(1, 1), mask_poolings=(2, 1))


def flat(tree):
  return traverse_util.flatten_dict(tree)


def init_shapes(model, size, batch=1):
  images = jnp.zeros((batch, size, size, 3))
  return jax.eval_shape(lambda: model.init(jax.random.key(0), images, train=False))


def apply_shapes(model, size):
  """Logits and intermediates (soft masks, trunk outputs) of `model`, as shapes."""
  return traced_init(model, (2, size, size, 3), train=False,
                     capture_intermediates=lambda m, _: isinstance(m, TrunkBranch))


def units_per_stage(costs, first_conv):
  """Residual units per top-level `stage*` block, counted by each unit's `first_conv`."""
  counts = {}
  for layer in costs.layers:
    if layer.path[0].startswith('stage') and layer.path[-1] == first_conv:
      counts[layer.path[0]] = counts.get(layer.path[0], 0) + 1
  return counts


def unit_names(tree, prefixes):
  return sorted(name for name in tree if name.startswith(prefixes))


# attention='none'


def test_no_mask_network_equals_arl_with_a_zero_mask():
  """f2 of a zero input is exactly 0, so M = 0 and H = (1 + M) T = T: the trunk alone."""
  arl = tiny_model('attention56_cifar', **SMALL, attention='arl', mask_activation='channel')
  plain = arl.clone(attention='none')
  images = jnp.asarray(np.random.default_rng(1).normal(size=(2, 16, 16, 3)), jnp.float32)
  variables = random_variables(init_shapes(arl, 16))
  params = {path: jnp.zeros_like(value) if 'mask' in path and 'head_conv2' in path else value
            for path, value in flat(variables['params']).items()}
  variables = {**variables, 'params': traverse_util.unflatten_dict(params)}
  without_mask = {
      collection: traverse_util.unflatten_dict(
          {path: value for path, value in flat(tree).items() if 'mask' not in path})
      for collection, tree in variables.items()}
  expected = init_shapes(plain, 16)
  assert jax.tree.structure(without_mask) == jax.tree.structure(expected)
  assert not any('mask' in path for path in flat(expected['params']))
  assert not any('mask' in path for path in flat(expected['batch_stats']))

  arl_apply = quick_jit(functools.partial(arl.apply, train=False))
  arl_logits = arl_apply(variables, images)
  plain_logits, state = quick_jit(functools.partial(
      plain.apply, train=False, mutable=['intermediates']))(without_mask, images)
  np.testing.assert_allclose(plain_logits, arl_logits, rtol=1e-6, atol=1e-6)
  assert float(jnp.abs(arl_logits).max()) > 0
  with_mask = arl_apply(random_variables(init_shapes(arl, 16)), images)  # head_conv2 kept
  assert not np.allclose(with_mask, plain_logits, rtol=1e-3, atol=1e-3)
  sown = {path[-1] for path in flat(state['intermediates'])}
  assert sown == {'pre_logits'}  # no soft_mask


@pytest.mark.parametrize('name,minimum', [('attention56', 3), ('attention56_cifar', 1)])
def test_no_mask_size_is_limited_by_the_stem_only(name, minimum):
  model = create_model(name, num_classes=10, attention='none')
  assert model.min_input_size == minimum
  assert apply_shapes(model, minimum)[0].shape == (2, 10)
  if minimum > 1:
    with pytest.raises(ValueError, match=f'imagenet stem needs at least {minimum}x{minimum}'):
      model.check_input((1, minimum - 1, minimum - 1, 3))


# mask_structure='local_conv'


@pytest.fixture
def resize_calls(monkeypatch):
  """Counts the max poolings and up-samplings traced inside the attention modules."""
  calls = {'pool': 0, 'interp': 0}

  def counted(key, fun):
    def wrapper(*args, **kwargs):
      calls[key] += 1
      return fun(*args, **kwargs)
    return wrapper

  monkeypatch.setattr(attention_lib, 'caffe_max_pool',
                      counted('pool', attention_lib.caffe_max_pool))
  monkeypatch.setattr(attention_lib, 'interp_like', counted('interp', attention_lib.interp_like))
  return calls


@pytest.mark.parametrize('structure', ['encoder_decoder', 'local_conv'])
def test_local_conv_mask_neither_pools_nor_upsamples(resize_calls, structure):
  model = tiny_model(mask_structure=structure)
  init_shapes(model, 64)
  if structure == 'local_conv':
    assert resize_calls == {'pool': 0, 'interp': 0}
  else:
    assert resize_calls['pool'] > 0 and resize_calls['interp'] > 0


@pytest.mark.parametrize('name,r', [('attention56', 1), ('attention56_cifar', 2)])
def test_local_conv_mask_has_as_many_units_as_the_encoder_decoder(name, r):
  model = create_model(name, num_classes=10, r=r)
  size = 224 if model.stem == 'imagenet' else 32
  encoder_decoder = init_shapes(model, size)['params']
  local = init_shapes(model.clone(mask_structure='local_conv'), size)['params']
  for stage, poolings in enumerate(model.mask_poolings, start=1):
    for module in range(1, model.modules_per_stage[stage - 1] + 1):
      path = (f'stage{stage}', f'module{module}', 'mask')
      ed_mask = functools.reduce(dict.__getitem__, path, encoder_decoder)
      local_mask = functools.reduce(dict.__getitem__, path, local)
      ed_units = unit_names(ed_mask, ('down', 'skip', 'up'))
      local_units = unit_names(local_mask, ('local',))
      count = attention_lib.mask_unit_count(poolings, r)
      assert len(ed_units) == len(local_units) == count == 2 * r * poolings + poolings - 1
      assert set(local_units) == {f'local{i + 1}' for i in range(count)}
      assert set(local_mask) - set(local_units) == set(ed_mask) - set(ed_units)  # same head


def test_local_conv_mask_has_the_trunk_shape_and_accepts_small_images():
  model = tiny_model(mask_structure='local_conv')
  assert model.min_input_size == 3 < tiny_model().min_input_size == 31
  logits, state = apply_shapes(model, 16)
  assert logits.shape == (2, 10)
  for stage in ('stage1', 'stage2', 'stage3'):
    module = state['intermediates'][stage]['module1']
    (mask,), (trunk,) = module['soft_mask'], module['trunk']['__call__']
    assert mask.shape == trunk.shape
  with pytest.raises(ValueError, match='at least 31x31'):
    apply_shapes(tiny_model(), 16)


# unit='inception'


def inception_unit_params(in_features, features, projection, bottleneck_ratio=4):
  a, b1, b2, c1, c2, c3 = inception_widths(features, bottleneck_ratio)
  convs = (in_features * (a + b1 + c1) + 9 * (b1 * b2 + c1 * c2 + c2 * c3) +
           (a + b2 + c3) * features + (in_features * features if projection else 0))
  norms = 2 * in_features + 2 * (b1 + c1 + c2) + 2 * (a + b2 + c3)
  return convs + norms


@pytest.mark.parametrize('in_features,features,strides,size,out_size', [
    (32, 64, 2, 9, 5), (64, 64, 1, 8, 8), (256, 256, 2, 14, 7)])
def test_inception_unit_shape_stride_and_params(in_features, features, strides, size, out_size):
  conv, norm = make_conv(jnp.float32), make_norm(jnp.float32, False, None)
  unit = PreActInception(features, conv, norm, strides=strides)
  x = jax.ShapeDtypeStruct((2, size, size, in_features), jnp.float32)
  variables = jax.eval_shape(lambda x: unit.init(jax.random.key(0), x), x)
  out = jax.eval_shape(unit.apply, variables, x)
  assert out.shape == (2, out_size, out_size, features)
  projection = in_features != features or strides != 1
  assert ('proj' in variables['params']) == projection
  total = sum(leaf.size for leaf in jax.tree.leaves(variables['params']))
  assert total == inception_unit_params(in_features, features, projection)


def test_inception_widths_for_the_imagenet_stages():
  assert inception_widths(256) == (28, 28, 28, 28, 32, 36)
  assert inception_widths(2048) == (224, 224, 224, 224, 256, 288)
  assert min(inception_widths(16)) >= 1


def test_attentioninception56_counts_match_the_documented_ones():
  costs = model_costs(create_model('attentioninception56', num_classes=1000), 224)
  assert (costs.total_params, costs.total_macs) == (31_926_272, 6_263_992_416)
  assert abs(costs.total_params / 31.9e6 - 1) < 0.005  # the paper: 31.9M, 6.3G
  assert abs(costs.total_macs / 6.3e9 - 1) < 0.01
  assert '31,926,272' in presets.__doc__
  # Every unit of Attention-56 (trunks, masks, transitions, stage4) is an inception unit.
  assert sum(units_per_stage(costs, 'c_conv3').values()) == 33
  assert sum(units_per_stage(costs, 'conv1').values()) == 0


def test_inception_unit_trains():
  conv, norm = make_conv(jnp.float32), make_norm(jnp.float32, True, None)
  unit = PreActInception(32, conv, norm, strides=2)
  x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 7, 7, 16)), jnp.float32)
  variables = random_variables(jax.eval_shape(unit.init, jax.random.key(0), x))
  out, updates = quick_jit(functools.partial(unit.apply, mutable=['batch_stats']))(variables, x)
  assert out.shape == (2, 4, 4, 32) and bool(jnp.all(jnp.isfinite(out)))
  assert jax.tree.structure(updates['batch_stats']) == jax.tree.structure(
      variables['batch_stats'])


# No-mask presets


def test_resnet164_cifar_is_resnet164():
  costs = model_costs(create_model('resnet164_cifar', num_classes=10), 32)
  params = costs.total_params
  assert params == 1_703_258 and abs(params / 1.7e6 - 1) < 0.05  # ResNet-164's 1.7M
  with_100_classes = params + 90 * (256 + 1)  # a wider classifier
  for count in (params, with_100_classes):
    assert f'{count:,}' in presets.__doc__
  counts = units_per_stage(costs, 'conv1')
  assert counts == {'stage1': 18, 'stage2': 18, 'stage3': 18}
  assert 3 * sum(counts.values()) + 2 == 164
  assert not any('mask' in layer.path for layer in costs.layers)


def test_resnet200_layout_and_counts():
  model = create_model('resnet200', num_classes=1000)
  costs = model_costs(model, 224)
  assert (costs.total_params, costs.total_macs) == (65_084_072, 15_007_481_856)
  assert '65,084,072' in presets.__doc__
  counts = units_per_stage(costs, 'conv1')
  assert counts == {'stage1': 5, 'stage2': 21, 'stage3': 37, 'stage4': 3}
  assert 3 * sum(counts.values()) + 2 == 200 == 12 * sum(model.modules_per_stage) + 20
  assert not any('mask' in layer.path for layer in costs.layers)


def test_summary_cli_treats_resnet164_cifar_as_cifar(capsys):
  assert summary_main(['--summary', 'resnet164_cifar', '--num-classes', '100']) == 0
  out = capsys.readouterr().out
  assert 'at 32x32' in out and '1,726,388' in out


# Validation


@pytest.mark.parametrize('overrides,message', [
    (dict(mask_structure='hourglass'),
     r"mask_structure='hourglass'.*\('encoder_decoder', 'local_conv'\)"),
    (dict(unit='dense'), r"unit='dense'.*\('preact', 'resnext', 'inception'\)"),
    (dict(attention='off'), r"attention='off'.*\('arl', 'nal', 'none'\)"),
    (dict(unit='inception', groups=8), 'divisible by groups=8'),
])
def test_bad_option_values_name_the_allowed_ones(overrides, message):
  with pytest.raises(ValueError, match=message):
    create_model('attention56', num_classes=10, **overrides)


def test_soft_mask_branch_rejects_an_unknown_structure():
  conv, norm = make_conv(jnp.float32), make_norm(jnp.float32, False, None)
  unit = functools.partial(PreActInception, conv=conv, norm=norm)
  branch = attention_lib.SoftMaskBranch(16, unit, conv, norm, 1, structure='pyramid')
  with pytest.raises(ValueError, match="'pyramid'.*local_conv"):
    jax.eval_shape(lambda: branch.init(jax.random.key(0), jnp.zeros((1, 8, 8, 16)), (8, 8)))


def test_has_soft_masks_follows_attention_and_modules():
  assert create_model('attention56_cifar', num_classes=10).has_soft_masks
  assert not create_model('resnet164_cifar', num_classes=10).has_soft_masks
  assert not create_model('attention56_cifar', num_classes=10,
                          modules_per_stage=(0, 0, 0)).has_soft_masks
