"""examples/nnx_bridge.py: a preset wrapped with `flax.nnx.bridge.ToNNX` matches linen."""

import ast
import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import quick_jit
from flax import nnx

ROOT = pathlib.Path(__file__).resolve().parents[1]
# One attention stage (one module with its soft mask branch) keeps the compiles short.
TINY_CIFAR = dict(stem_width=8, stage_widths=(16,), modules_per_stage=(1,), mask_poolings=(1,))
SHAPE = (4, 8, 8, 3)


def _load_example():
  spec = importlib.util.spec_from_file_location('nnx_bridge', ROOT / 'examples' / 'nnx_bridge.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _linen_variables(model: nnx.Module) -> dict:
  return {'params': nnx.to_pure_dict(nnx.state(model, nnx.Param)),
          'batch_stats': nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))}


@pytest.fixture(scope='module')
def trained():
  """The example's model before and after one train step, with linen's results for both."""
  example = _load_example()
  model = example.nnx_model('attention56_cifar', 10, SHAPE, **TINY_CIFAR)
  images = jax.random.normal(jax.random.key(3), SHAPE)
  labels = jnp.array([0, 3, 7, 9])
  before = _linen_variables(model)
  logits, masks = example.predict(model, images)
  optimizer = example.make_optimizer(model, learning_rate=0.1)
  loss = example.train_step(model, optimizer, images, labels)
  after = _linen_variables(model)

  linen_model = model.to_nnx__module

  @quick_jit
  def reference(variables):
    eval_logits = linen_model.apply(variables, images, train=False)
    train_logits, updates = linen_model.apply(
        variables, images, train=True, mutable=['batch_stats'])
    loss = optax.softmax_cross_entropy_with_integer_labels(train_logits, labels).mean()
    return eval_logits, loss, updates['batch_stats']

  return dict(before=before, after=after, logits=logits, masks=masks, loss=loss,
              reference=reference(before))


def test_eval_output_matches_linen(trained):
  linen_logits, _, _ = trained['reference']
  assert trained['logits'].shape == (SHAPE[0], 10)
  np.testing.assert_allclose(trained['logits'], linen_logits, rtol=1e-5, atol=1e-5)
  masks = trained['masks']
  assert list(masks) == ['stage1/module1']
  mask = masks['stage1/module1']
  assert mask.shape == (4, 8, 8, 16)
  assert 0.0 < float(mask.min()) and float(mask.max()) < 1.0  # a sigmoid


def test_train_step_loss_matches_linen(trained):
  _, linen_loss, _ = trained['reference']
  assert np.isfinite(float(trained['loss']))
  np.testing.assert_allclose(trained['loss'], linen_loss, rtol=1e-5)


def test_train_step_updates_params_and_batch_stats(trained):
  before, after = trained['before'], trained['after']
  changed = jax.tree.map(lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))),
                         before['params'], after['params'])
  assert all(jax.tree.leaves(changed))
  _, _, linen_stats = trained['reference']
  assert jax.tree.structure(after['batch_stats']) == jax.tree.structure(linen_stats)
  for old, new, expected in zip(jax.tree.leaves(before['batch_stats']),
                                jax.tree.leaves(after['batch_stats']),
                                jax.tree.leaves(linen_stats), strict=True):
    assert np.any(np.asarray(old) != np.asarray(new))
    np.testing.assert_allclose(new, expected, rtol=1e-5, atol=1e-6)


def test_package_has_no_nnx_import():
  offenders = []
  for path in sorted((ROOT / 'ran_jax').rglob('*.py')):
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
      if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
      elif isinstance(node, ast.ImportFrom):
        names = [f'{node.module}.{alias.name}' for alias in node.names]
      elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        names = [f'{node.value.id}.{node.attr}']  # `import flax` then `flax.nnx`
      else:
        continue
      if any(name == 'flax.nnx' or name.startswith('flax.nnx.') for name in names):
        offenders.append(f'{path.relative_to(ROOT)}:{node.lineno}')
  assert not offenders, offenders
