"""Gradient accumulation and the moving average of the weights, step by step, against
computations written out here."""

import json

import flax.linen as nn
import flax.traverse_util
import jax
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from conftest import tiny_model
from test_train import interrupt_at_step, relative_difference, shrink
from trained_digits import run_tool, write_png
from training_jobs import QUICK_FIELDS, TINY_NETWORK

from configs import digits_attention56
from ran_jax import predict
from ran_jax.data import device_batches
from ran_jax.inference_model import load_files, load_for_inference
from ran_jax.masks.forward import make_forward
from ran_jax.process.errors import Preempted
from ran_jax.train import init_from, loop, optim, steps
from ran_jax.train import mesh as mesh_lib
from ran_jax.train.state import shardings_of, train_state_factory
from ran_jax.workdir import checkpoints


def jitted_train_step(model, tx, mesh, image_shape, schedule, **options):
  init, target = train_state_factory(model, tx, mesh, image_shape, seed=0,
                                     averaged=options.get('ema_decay') is not None)
  train_step, _ = steps.jit_steps(shardings_of(target), mesh_lib.data_sharding(mesh),
                                  mesh_lib.replicated(mesh), schedule, **options)
  return init(), train_step


def written_out_update(state, model, tx, batch):
  """The mean of the gradients of micro-batches 0 (examples 0, 2, 4, ...) and 1 (1, 3, 5, ...),
  each normalised by its own BatchNorm statistics, applied once by the optimizer."""
  grads, stats = [], state.batch_stats
  for j in (0, 1):
    images, labels = batch['image'][j::2], batch['label'][j::2]

    def loss(params, stats=stats, images=images, labels=labels):
      logits, updates = model.apply({'params': params, 'batch_stats': stats}, images,
                                    train=True, mutable=['batch_stats'])
      one_hot = jax.nn.one_hot(labels, logits.shape[-1])
      return optax.softmax_cross_entropy(logits, one_hot).mean(), updates['batch_stats']

    grad, stats = jax.grad(loss, has_aux=True)(state.params)
    grads.append(grad)
  mean = jax.tree.map(lambda a, b: (a + b) / 2, *grads)
  updates, _ = tx.update(mean, state.opt_state, state.params)
  return optax.apply_updates(state.params, updates), stats


@pytest.mark.parametrize('devices', [1, 8])
def test_two_micro_batches_are_one_update_with_their_mean_gradient(devices):
  """On 1 and on 8 devices: the accumulated step's parameters equal the mean of the two
  micro-batches' gradients applied once (weight decay and momentum included), and its
  BatchNorm statistics those updated by one micro-batch after the other."""
  model = tiny_model('attention56_cifar', **TINY_NETWORK)
  schedule = optax.constant_schedule(0.05)
  tx = optim.make_optimizer(digits_attention56.get_config(), schedule)
  mesh = mesh_lib.make_mesh(jax.devices()[:devices])
  state, train_step = jitted_train_step(model, tx, mesh, (8, 8, 1), schedule,
                                        grad_accum_steps=2)
  rng = np.random.default_rng(0)
  batch = {'image': rng.normal(size=(16, 8, 8, 1)).astype(np.float32),
           'label': rng.integers(0, 10, 16).astype(np.int32)}
  expected_params, expected_stats = written_out_update(jax.device_get(state), model, tx, batch)
  new_state, metrics = train_step(state, device_batches.to_global(
      batch, mesh_lib.data_sharding(mesh)))
  assert relative_difference(jax.device_get(new_state.params), expected_params) < 1e-5
  assert relative_difference(jax.device_get(new_state.batch_stats), expected_stats) < 1e-5
  assert int(new_state.step) == 1  # one update for the two micro-batches
  assert set(metrics) == {'loss', 'top1_accuracy', 'top5_accuracy', 'learning_rate',
                          'grad_norm', 'param_norm'}


def test_micro_batches_keep_each_devices_share():
  batch = {'label': np.arange(12)}
  split = steps.micro_batches(batch, 3)
  np.testing.assert_array_equal(split['label'], [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8, 11]])


class Toy(nn.Module):
  """A dense layer and a BatchNorm: parameters and statistics both averaged."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Dense(4)(x)
    return nn.BatchNorm(use_running_average=not train, momentum=0.5)(x)


@pytest.mark.parametrize('decay', [0.0, 0.75])
def test_moving_average_is_the_closed_form(decay):
  """After n steps the average is decay^n v0 + (1 - decay) sum_i decay^(n-i) v_i over the
  variables v_i after step i; with decay 0, the variables themselves."""
  schedule = optax.constant_schedule(0.1)
  mesh = mesh_lib.make_mesh(jax.devices()[:1])
  state, train_step = jitted_train_step(Toy(), optax.sgd(schedule, momentum=0.9), mesh, (3,),
                                        schedule, ema_decay=decay)
  rng = np.random.default_rng(1)
  history = [jax.device_get(state.variables)]
  for _ in range(4):
    batch = {'image': rng.normal(size=(8, 3)).astype(np.float32),
             'label': rng.integers(0, 4, 8).astype(np.int32)}
    state, _ = train_step(state, batch)
    history.append(jax.device_get(state.variables))
  n = len(history) - 1
  expected = jax.tree.map(
      lambda *values: decay**n * np.asarray(values[0], np.float64) + (1 - decay) * sum(
          decay**(n - i) * np.asarray(values[i], np.float64) for i in range(1, n + 1)),
      *history)
  averaged = jax.device_get(state.averaged())
  if decay == 0:
    jax.tree.map(np.testing.assert_array_equal, averaged, history[-1])
  else:
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
                 averaged, expected)
    assert relative_difference(averaged, history[-1]) > 1e-2  # not the weights themselves


def test_a_fine_tuned_average_starts_at_the_loaded_variables():
  """`init_from` loads into the weights and their average (its own buffers: the step donates
  the whole state)."""
  schedule = optax.constant_schedule(0.1)
  mesh = mesh_lib.make_mesh(jax.devices()[:1])
  state, train_step = jitted_train_step(Toy(), optax.sgd(schedule), mesh, (3,), schedule,
                                        ema_decay=0.9)
  source = {path: np.full(leaf.shape, 0.25, leaf.dtype) for path, leaf in
            flax.traverse_util.flatten_dict(state.variables, sep='/').items()}
  record = init_from.InitRecord('elsewhere', 7, tuple(source), (), ())
  loaded = init_from.load_into(state, source, record)
  for leaf in jax.tree.leaves(jax.device_get((loaded.variables, loaded.averaged()))):
    np.testing.assert_array_equal(leaf, 0.25)
  train_step(loaded, {'image': np.ones((4, 3), np.float32), 'label': np.zeros(4, np.int32)})


@pytest.fixture(scope='module')
def run_config(tmp_path_factory):
  """A tiny digits run, each update over 2 micro-batches, keeping a moving average."""
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  return lambda **fields: shrink(
      digits_attention56.get_config(), data_dir=data_dir, **{
          **QUICK_FIELDS, 'num_train_steps': 4, 'log_every_steps': 2, 'eval_every_steps': 100,
          'checkpoint_every_steps': 100, 'grad_accum_steps': 2, 'ema_decay': 0.5, **fields})


def saved_digest(workdir) -> str:
  manager = checkpoints.make_manager(str(workdir), keep=3)
  try:
    return manager.restore(manager.latest_step(), args=ocp.args.Composite(
        input=ocp.args.JsonRestore())).input['state_digest']
  finally:
    checkpoints.close_manager(manager)


def test_accumulated_averaged_run_resumes_exactly_and_serves_its_average(
    run_config, tmp_path, monkeypatch, capsys):
  """Stopped by SIGINT at step 2 of 4 and resumed: the same checkpoint (digest of the whole
  state, the average included) and eval results as the run that was not stopped; both the
  weights and their average are evaluated, and inference and fine-tuning load the average
  (inference the weights when asked: `ran_jax.predict --noema`). Dropping the average on
  resume is refused in one line."""
  straight = loop.train_and_evaluate(run_config(), str(tmp_path / 'straight'))
  interrupt_at_step(2, monkeypatch)
  with pytest.raises(Preempted, match='Stopped by SIGINT at step 2'):
    loop.train_and_evaluate(run_config(), str(tmp_path / 'resumed'))
  monkeypatch.undo()
  resumed = loop.train_and_evaluate(run_config(), str(tmp_path / 'resumed'))
  assert resumed == straight
  assert saved_digest(tmp_path / 'resumed') == saved_digest(tmp_path / 'straight')
  assert {'loss', 'top1_accuracy', 'ema_loss', 'ema_top1_accuracy', 'ema_top5_accuracy'} <= set(
      straight)
  assert straight['ema_loss'] != straight['loss']

  average = load_for_inference(None, str(tmp_path / 'straight'))
  weights = load_for_inference(None, str(tmp_path / 'straight'), average=False)
  assert average.averaged and not weights.averaged
  assert relative_difference(average.variables, jax.device_get(weights.variables)) > 1e-3
  _, source, _ = init_from.read_source(str(tmp_path / 'straight'))  # fine-tuning from it
  expected = flax.traverse_util.flatten_dict(jax.device_get(average.variables), sep='/')
  assert source.keys() == expected.keys()
  for path, value in source.items():
    np.testing.assert_array_equal(value, expected[path])

  image = write_png(tmp_path / 'digit.png', np.random.default_rng(0).integers(0, 17, (8, 8)) * 15)
  for loaded, flag in ((average, []), (weights, ['--noema'])):
    status, out, _ = run_tool(predict, [f'--workdir={tmp_path / "straight"}', '--json', *flag,
                                        str(image)], capsys)
    probabilities, _ = make_forward(loaded.model, loaded.normalizer)(
        loaded.variables, load_files([str(image)], loaded).batch)
    top = [entry['probability'] for entry in json.loads(out)[0]['top5']]
    assert status == 0
    np.testing.assert_allclose(top, np.sort(np.asarray(probabilities[0]))[::-1][:5], rtol=1e-6)

  with pytest.raises(ValueError, match=r'^this run was started with ema_decay=0.5 and cannot '
                     r'resume with unset \(the default\): that adds or drops the moving average '
                     r'its checkpoints hold; give a new --workdir'):
    loop.train_and_evaluate(run_config(ema_decay=None, num_train_steps=6),
                            str(tmp_path / 'straight'))
