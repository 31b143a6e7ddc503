"""The scanned variable layout (`scan=True`): the same network as the unrolled one, exact
conversion both ways, and checkpoints of either layout read by predict and by a resume."""

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import quick_jit, random_variables, tiny_model
from trained_digits import run_tool, trained, write_png

from ran_jax import export, predict
from ran_jax.masks import forward as forward_lib
from ran_jax.models import count_params, layout, load
from ran_jax.data import sources
from ran_jax.train import build, loop
from ran_jax.workdir import checkpoints, run_record
from ran_jax.train import mesh as mesh_lib

# Two modules in a stage, t=3 and a lowest mask level of 2r=4 units: runs of modules and of
# units, nested; p=2 and r=2 give runs too short to scan.
DEEP_TOPOLOGY = dict(modules_per_stage=(2,), mask_poolings=(2,), p=2, t=3, r=2)
DEEP = dict(stage_widths=(16,), **DEEP_TOPOLOGY)


def deep_model(scan: bool):
  return tiny_model('attention56_cifar', scan=scan, **DEEP)


@pytest.fixture(scope='module')
def both():
  """Unrolled variables, the same values in the scanned layout, a batch and labels."""
  images = jax.random.normal(jax.random.key(1), (4, 16, 16, 3))
  unrolled = random_variables(jax.eval_shape(
      lambda: deep_model(False).init(jax.random.key(0), images, train=False)))
  like = jax.eval_shape(lambda: deep_model(True).init(jax.random.key(0), images, train=False))
  return unrolled, layout.convert(unrolled, like), images, jnp.arange(4) % 10


def forward_and_grads(model, variables, images, labels):
  """(logits, new batch statistics, sown soft masks, parameter gradients) of a train step."""
  def loss_fn(params):
    logits, state = model.apply({**variables, 'params': params}, images, train=True,
                                mutable=['batch_stats', 'intermediates'])
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return loss, (logits, state)
  grads, (logits, state) = quick_jit(jax.grad(loss_fn, has_aux=True))(variables['params'])
  return logits, state['batch_stats'], forward_lib.soft_masks(state['intermediates']), grads


def relative_error(a, b) -> float:
  return float(jnp.max(jnp.abs(a - b)) / jnp.maximum(jnp.max(jnp.abs(b)), 1e-30))


def test_layouts_name_runs_and_convert_exactly(both):
  unrolled, scanned, _, _ = both
  stage1 = scanned['params']['stage1']
  assert sorted(stage1) == ['module1-2', 'tail1', 'transition']
  module = stage1['module1-2']
  # runs of units are scanned from layout.SHORTEST_UNIT_RUN = 3 units on
  assert sorted(module) == ['mask', 'post1', 'post2', 'pre1', 'pre2', 'trunk']
  assert sorted(module['trunk']) == ['unit1-3']
  assert sorted(module['mask']) == ['down1_1', 'down1_2', 'down2_1-4', 'head_bn0', 'head_bn1',
                                    'head_conv1', 'head_conv2', 'skip1', 'up1_1', 'up1_2']
  # modules, then trunk units: the stacked axes nest in that order
  assert module['trunk']['unit1-3']['conv1']['kernel'].shape == (2, 3, 1, 1, 16, 4)
  np.testing.assert_array_equal(module['trunk']['unit1-3']['conv1']['kernel'][1, 2],
                                unrolled['params']['stage1']['module2']['trunk']['unit3']
                                ['conv1']['kernel'])
  assert (layout.layout_of(scanned), layout.layout_of(unrolled)) == ('scanned', 'unrolled')
  assert count_params(scanned['params']) == count_params(unrolled['params'])
  back = layout.convert(scanned, unrolled)
  assert jax.tree.structure(back) == jax.tree.structure(unrolled)
  jax.tree.map(np.testing.assert_array_equal, back, unrolled)
  shapes = jax.eval_shape(lambda: deep_model(True).init(jax.random.key(0), both[2],
                                                        train=False))
  assert jax.tree.structure(shapes) == jax.tree.structure(scanned)


def test_conversion_names_a_variable_without_counterpart(both):
  unrolled, scanned, _, _ = both
  other = {**unrolled, 'params': {**unrolled['params'], 'extra': {'kernel': jnp.zeros(2)}}}
  with pytest.raises(ValueError, match='params has extra, which the other layout does not'):
    layout.convert(other, scanned)


def test_scanned_network_computes_the_unrolled_one(both):
  """Logits, gradients, BatchNorm statistics and soft masks in train mode, to float32
  round-off (XLA orders a loop's sums differently): at most 1e-5 of each tensor's largest
  magnitude; parameter counts equal."""
  unrolled, scanned, images, labels = both
  logits0, stats0, masks0, grads0 = forward_and_grads(deep_model(False), unrolled, images,
                                                      labels)
  logits1, stats1, masks1, grads1 = forward_and_grads(deep_model(True), scanned, images, labels)
  assert relative_error(logits1, logits0) < 1e-5
  errors = jax.tree.map(relative_error, layout.convert(grads1, grads0), grads0)
  errors.update(jax.tree.map(relative_error, layout.convert(stats1, stats0), stats0))
  assert max(jax.tree.leaves(errors)) < 1e-5
  assert list(masks1) == list(masks0) == ['stage1/module1', 'stage1/module2']
  for name, mask in masks0.items():
    assert masks1[name].shape == mask.shape and mask.shape[0] == 4
    assert relative_error(masks1[name], mask) < 1e-5


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  return trained(tmp_path_factory)


DEEP_FLAGS = [f'--config.model.{key}={value}' for key, value in DEEP_TOPOLOGY.items()]


def deep_config(run, scan: bool):
  config = run.config.copy_and_resolve_references()
  config.model.update(DEEP_TOPOLOGY, scan=scan)
  return config


def write_run(config, state, workdir) -> None:
  manager = checkpoints.make_manager(str(workdir), keep=1)
  checkpoints.save(manager, 1, state, loop._input_state(config, 1))
  checkpoints.close_manager(manager)


def training_of(config, mesh) -> build.Training:
  """What `config` trains on digits (10 classes, grey), as a run builds it."""
  return build.build_training(config, mesh, build.build_network(config, 10, 1),
                              steps_per_epoch=10)


@pytest.fixture(scope='module')
def saved_runs(run, tmp_path_factory):
  """Work directories of one train state (random values, momentum included) written scanned
  and unrolled (a digits network with runs of modules and units), and the state in each
  layout."""
  mesh = mesh_lib.make_mesh(jax.local_devices()[:1])
  states, workdirs = {}, {}
  for scan in (True, False):
    config = deep_config(run, scan)
    training = training_of(config, mesh)
    states[scan] = (random_variables(training.target) if scan else
                    layout.convert(states[True], training.target))
    workdirs[scan] = tmp_path_factory.mktemp(f'scan_{scan}')
    write_run(config, states[scan], workdirs[scan])
  return states, workdirs


@pytest.mark.parametrize('scan', [True, False])
def test_resume_in_the_other_layout_converts_the_whole_state(run, saved_runs, scan):
  """A run written in one layout restored by a config of the other: params, batch
  statistics and the optimizer's momentum, converted exactly."""
  states, workdirs = saved_runs
  mesh = mesh_lib.make_mesh(jax.local_devices()[:1])
  manager = checkpoints.make_manager(str(workdirs[not scan]), keep=1)
  try:
    training = training_of(deep_config(run, scan), mesh)
    state, _ = checkpoints.restore_latest(manager, training.target,
                                          other_layout=training.other_layout_target)
  finally:
    checkpoints.close_manager(manager)
  assert layout.layout_of(state.params) == (layout.SCANNED if scan else layout.UNROLLED)
  def variables(state):
    return jax.device_get((state.step, state.params, state.batch_stats, state.opt_state))
  got, expected = variables(state), variables(states[scan])
  assert jax.tree.structure(got) == jax.tree.structure(expected)
  jax.tree.map(np.testing.assert_array_equal, got, expected)


def test_predict_reads_a_checkpoint_of_either_layout(run, saved_runs, tmp_path, capsys):
  """Each layout's checkpoint read by the other layout's network (a conversion each way, and
  both networks): the same top 5."""
  _, workdirs = saved_runs
  image = write_png(tmp_path / 'digit.png', np.arange(64).reshape(8, 8) * 4)
  results = {}
  for written in (True, False):
    tiny = [flag for flag in run.tool_flags(workdirs[written])
            if not flag.startswith(tuple(f'--config.model.{key}=' for key in DEEP_TOPOLOGY))]
    status, out, err = run_tool(predict, [
        *tiny, *DEEP_FLAGS, f'--config.model.scan={not written}', '--json', str(image)], capsys)
    assert status == 0, err
    (result,) = json.loads(out)
    results[written] = result['top5']
  scanned_read, unrolled_read = results[False], results[True]
  assert [entry['class'] for entry in scanned_read] == [entry['class'] for entry in unrolled_read]
  np.testing.assert_allclose([entry['probability'] for entry in scanned_read],
                             [entry['probability'] for entry in unrolled_read], rtol=1e-5)
  # A run that recorded itself: its params and batch_stats alone are read, and converted.
  recorded = shutil.copytree(workdirs[True], tmp_path / 'recorded')
  run_record.write(str(recorded), run_record.of_run(
      deep_config(run, False), tuple(str(i) for i in range(10)), 1,
      sources.source_of(run.config).open().normalizer()))
  status, out, err = run_tool(predict, [f'--workdir={recorded}', '--json', str(image)], capsys)
  assert status == 0, err
  (result,) = json.loads(out)
  assert [entry['class'] for entry in result['top5']] == [entry['class'] for entry in scanned_read]
  np.testing.assert_allclose([entry['probability'] for entry in result['top5']],
                             [entry['probability'] for entry in scanned_read], rtol=1e-5)


def test_an_export_of_a_scanned_run_loads_in_the_default_layout(run, saved_runs, tmp_path):
  states, workdirs = saved_runs
  export.export(deep_config(run, True), str(workdirs[True]), str(tmp_path), platforms=('cpu',))
  model, variables, _ = load(str(tmp_path))
  assert not model.scan and layout.layout_of(variables) == layout.UNROLLED
  expected = jax.device_get({'params': states[False].params,
                             'batch_stats': states[False].batch_stats})
  assert jax.tree.structure(variables) == jax.tree.structure(expected)
  jax.tree.map(np.testing.assert_array_equal, variables, expected)


def test_reader_without_conversion_names_the_setting(saved_runs):
  states, workdirs = saved_runs
  manager = checkpoints.make_manager(str(workdirs[True]), keep=1)
  target = jax.eval_shape(lambda: states[False])
  try:
    with pytest.raises(checkpoints.CheckpointError,
                       match='holds scanned variables .* set --config.model.scan=True'):
      checkpoints.restore_latest(manager, target)
  finally:
    checkpoints.close_manager(manager)


def test_scan_must_be_a_bool():
  with pytest.raises(ValueError, match="scan='yes' is not valid; give True or False"):
    deep_model('yes')
