"""Behaviour of the model family: shapes, masks, ARL, dtypes, BatchNorm, errors."""

import functools
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import quick_jit, random_variables, tiny_model, traced_init

from ran_jax.experiments import catalogue
from ran_jax.models import (AttentionModule, PreActBottleneck, SoftMaskBranch, TrunkBranch,
                            create_model, list_models)
from ran_jax.models.units import make_conv, make_norm

IMAGENET_SIZES = [(57, 57), (100, 100), (224, 224), (320, 320), (448, 448), (224, 160)]


def output_shape(model, height, width, batch=2):
  return traced_init(model, (batch, height, width, 3), train=False)[0]


# test_configs.py builds every config's model at full size; these are the others.
CONFIG_MODELS = {experiment.config.model.name for experiment in catalogue.experiments()}


@pytest.mark.parametrize('name', sorted(set(list_models()) - CONFIG_MODELS))
def test_every_preset_full_size_output_shape(name):
  size = 32 if name.endswith('_cifar') else 224
  # Traced in the scanned layout: the same network (test_scan.py), traced several times faster.
  out = output_shape(create_model(name, num_classes=7, scan=True), size, size)
  assert out.shape == (2, 7) and out.dtype == jnp.float32


@pytest.mark.parametrize('hw', IMAGENET_SIZES)
@pytest.mark.parametrize('name', ['attention92', 'attentionnext56'])
def test_any_input_size(name, hw):
  assert output_shape(tiny_model(name, scan=True), *hw).shape == (2, 10)


def test_list_models_has_the_family():
  expected = {'attention56', 'attention92', 'attentionnext56', 'attentionnext92',
              'attention56_cifar', 'attention92_cifar', 'attention128_cifar',
              'attention164_cifar', 'attention236_cifar', 'attention452_cifar'}
  assert expected <= set(list_models())


def test_unknown_name_lists_valid_ones():
  with pytest.raises(ValueError, match='attention56.*attention92'):
    create_model('resnet50', num_classes=10)


def test_unknown_override_is_rejected():
  with pytest.raises(ValueError, match='modules_per_stage'):
    create_model('attention56', num_classes=10, modules_per_stag=(2, 2, 2))


@pytest.mark.parametrize('overrides,message', [
    (dict(unit='dense'), "unit='dense'"),
    (dict(attention='soft'), "attention='soft'"),
    (dict(modules_per_stage=(1, 1)), 'one entry per stage'),
    (dict(dtype='float64'), "dtype 'float64'"),
    (dict(groups=5), 'groups=5'),
])
def test_bad_override_values(overrides, message):
  with pytest.raises(ValueError, match=message):
    create_model('attention56', num_classes=10, **overrides)


@pytest.mark.parametrize('name,size,minimum',
                         [('attention56', 30, 31), ('attention56_cifar', 7, 8)])
def test_too_small_images_name_the_minimum(name, size, minimum):
  # The size check comes before either variable layout's modules: traced in the faster one.
  model = create_model(name, num_classes=10, scan=True)
  assert model.min_input_size == minimum
  output_shape(model, minimum, minimum)  # the minimum itself works
  with pytest.raises(ValueError, match=f'at least {minimum}x{minimum}'):
    output_shape(model, size, size)


def test_logits_and_masks(tiny_variables):
  model, variables, images = tiny_variables
  logits, state = quick_jit(functools.partial(
      model.apply, train=False, mutable=['intermediates'],
      capture_intermediates=lambda m, _: isinstance(m, TrunkBranch)))(variables, images)
  assert logits.shape == (2, 10) and logits.dtype == jnp.float32
  inter = state['intermediates']
  for stage in ('stage1', 'stage2', 'stage3'):
    module = inter[stage]['module1']
    (mask,) = module['soft_mask']
    (trunk,) = module['trunk']['__call__']
    assert mask.shape == trunk.shape
    assert float(mask.min()) >= 0.0 and float(mask.max()) <= 1.0
  assert inter['pre_logits'][0].shape == (2, 128)


def test_arl_identity_when_mask_is_zero():
  """With M = 0, H = U_post(T * 0 + T) = U_post(T): the module falls back to its trunk."""
  conv, norm = make_conv(jnp.float32), make_norm(jnp.float32, False, None)
  unit = functools.partial(PreActBottleneck, conv=conv, norm=norm)
  module = AttentionModule(16, unit, conv, norm, poolings=2)
  x = jax.random.normal(jax.random.key(3), (2, 16, 16, 16))
  variables = random_variables(jax.eval_shape(module.init, jax.random.key(0), x))

  def zero_mask(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if isinstance(context.module, SoftMaskBranch) and context.method_name == '__call__':
      return jnp.zeros_like(out)
    return out

  with nn.intercept_methods(zero_mask):  # traced inside: the mask is zero in the program
    out, state = quick_jit(functools.partial(
        module.apply, mutable=['intermediates'],
        capture_intermediates=lambda m, _: isinstance(m, TrunkBranch)))(variables, x)
  trunk = state['intermediates']['trunk']['__call__'][0]
  post = {'params': variables['params']['post1'], 'batch_stats': variables['batch_stats']['post1']}
  np.testing.assert_allclose(out, quick_jit(unit(16).apply)(post, trunk), rtol=1e-6, atol=1e-6)
  assert float(jnp.abs(out - x).max()) > 0  # the module did transform its input


def test_nal_differs_from_arl():
  """NAL (H = U_post(M * T)) and ARL (H = U_post((1 + M) * T)) differ on the same variables,
  and the network passes `attention` to every module."""
  conv, norm = make_conv(jnp.float32), make_norm(jnp.float32, False, None)
  unit = functools.partial(PreActBottleneck, conv=conv, norm=norm)
  arl = AttentionModule(16, unit, conv, norm, poolings=2)
  x = jax.random.normal(jax.random.key(3), (2, 16, 16, 16))
  variables = random_variables(jax.eval_shape(arl.init, jax.random.key(0), x))
  assert not np.allclose(quick_jit(arl.apply)(variables, x),
                         quick_jit(arl.clone(attention='nal').apply)(variables, x))
  seen = []

  def record(next_fun, args, kwargs, context):
    if isinstance(context.module, AttentionModule) and context.method_name == '__call__':
      seen.append(context.module.attention)
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    output_shape(tiny_model(attention='nal'), 57, 57)
  assert seen == ['nal'] * 3  # three modules (traced once, by the initialisation)


def test_bf16_compute_keeps_float32_params_and_logits():
  model = tiny_model(dtype='bfloat16', stage_widths=(16,), modules_per_stage=(1,),
                     mask_poolings=(2,))
  images = jnp.ones((2, 32, 32, 3))
  shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), images)
  assert {leaf.dtype for leaf in jax.tree.leaves(shapes)} == {jnp.dtype(jnp.float32)}
  variables = random_variables(shapes)
  logits, updates = quick_jit(functools.partial(model.apply, train=True, mutable=['batch_stats']))(
      variables, images)
  assert logits.dtype == jnp.float32
  assert {leaf.dtype for leaf in jax.tree.leaves(updates)} == {jnp.dtype(jnp.float32)}


def test_batchnorm_momentum_and_epsilon(tiny_variables):
  model, variables, images = tiny_variables
  _, updates = quick_jit(functools.partial(model.apply, train=True, mutable=['batch_stats']))(
      variables, images)
  # One update moves the stem's running mean 10% of the way towards the batch mean.
  conv_out = jax.lax.conv_general_dilated(
      images, variables['params']['stem_conv']['kernel'], (2, 2), ((3, 3), (3, 3)),
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  before = variables['batch_stats']['stem_bn']['mean']
  np.testing.assert_allclose(updates['batch_stats']['stem_bn']['mean'],
                             0.9 * before + 0.1 * conv_out.mean(axis=(0, 1, 2)), rtol=1e-4,
                             atol=1e-6)
  bn = make_norm(jnp.float32, False, None)()
  assert (bn.epsilon, bn.momentum, bn.axis_name) == (1e-5, 0.9, None)
  assert model.axis_name is None


def test_import_models_does_not_import_tensorflow():
  code = ('import sys, ran_jax.models; '
          'assert not any(m.split(".")[0] == "tensorflow" for m in sys.modules), "tensorflow"')
  subprocess.run([sys.executable, '-c', code], check=True)
