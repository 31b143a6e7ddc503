"""The training system end to end: sharding, resume, evaluation, checkpoints, configs."""

import dataclasses
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from clu import metric_writers

import fake_datasets
from conftest import tiny_model
from training_jobs import QUICK_FIELDS, TINY_NETWORK

from configs import cifar, digits_attention56
from ran_jax.data import device_batches
from ran_jax.data import sources
from ran_jax.experiments import checks
from ran_jax.experiments.network import build_model
from ran_jax.planning import memory_plan
from ran_jax.process.errors import BatchTooLargeError
from ran_jax.train import compiled, loop, optim, steps
from ran_jax.workdir import checkpoints
from ran_jax.train import mesh as mesh_lib
from ran_jax.workdir.checkpoints import CheckpointError
from ran_jax.process.errors import Preempted
from ran_jax.train.state import shardings_of, train_state_factory


def shrink(config, **fields):
  """A config with a tiny network and the given fields, for a few real steps on CPU."""
  config.unlock()
  for key, value in TINY_NETWORK.items():
    config.model[key] = value
  for key, value in fields.items():
    config[key] = value
  config.lock()
  return config


@pytest.fixture(scope='module')
def digits_config(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  return lambda **fields: shrink(
      digits_attention56.get_config(), data_dir=data_dir, **QUICK_FIELDS, num_train_steps=6,
      log_every_steps=2, eval_every_steps=100, checkpoint_every_steps=100, **fields)


def relative_difference(a, b) -> float:
  """|a - b| / |b| over whole pytrees (global norms)."""
  diff = jax.tree.map(lambda x, y: np.asarray(x, np.float64) - y, a, b)
  return float(optax.tree.norm(diff) / optax.tree.norm(b))


def train_three_steps(devices, dtype, monkeypatch):
  """(losses, parameter update, BatchNorm statistics, traces) of 3 steps on `devices`.

  Traces are counted by wrapping the step function that `jit_steps` jits: each trace is one
  call of it, and each trace is one compilation.
  """
  traces = []

  def counted(*args, **kwargs):
    traces.append(1)
    return real_train_step(*args, **kwargs)

  real_train_step = steps.train_step
  monkeypatch.setattr(steps, 'train_step', counted)
  model = tiny_model('attention56_cifar', dtype=dtype, **TINY_NETWORK)
  schedule = optax.constant_schedule(np.float32(0.05))  # keeps float32 updates under x64
  tx = optim.make_optimizer(digits_attention56.get_config(), schedule)
  rng = np.random.default_rng(0)
  mesh = mesh_lib.make_mesh(devices)
  assert mesh.axis_types == (jax.sharding.AxisType.Auto,)  # whatever JAX's default
  init, target = train_state_factory(model, tx, mesh, (8, 8, 1), seed=0)
  state, shardings = init(), shardings_of(target)
  assert state.params['stem_conv']['kernel'].sharding.device_set == set(devices)
  initial = jax.device_get(state.params)
  train_step, _ = steps.jit_steps(shardings, mesh_lib.data_sharding(mesh),
                                  mesh_lib.replicated(mesh), schedule)
  losses = []
  for _ in range(3):
    batch = {'image': rng.normal(size=(32, 8, 8, 1)).astype(np.float32),
             'label': rng.integers(0, 10, size=32).astype(np.int32)}
    global_batch = device_batches.to_global(batch, mesh_lib.data_sharding(mesh))
    state, metrics = train_step(state, global_batch)
    losses.append(float(metrics['loss']))
  assert int(state.step) == 3
  update = jax.tree.map(lambda new, old: new - old, jax.device_get(state.params), initial)
  monkeypatch.undo()
  return losses, update, jax.device_get(state.batch_stats), len(traces)


def test_eight_devices_match_one_device_and_compile_once(monkeypatch):
  """Same global batches on 1 and 8 devices: same losses, updates and BatchNorm statistics.

  The deep, narrow test network amplifies float32 rounding (an input within 1e-7 of a ReLU
  or max-pool tie flips it), so this comparison computes in float64 (parameters and
  optimizer state stay float32).
  """
  with jax.enable_x64(True):
    losses_1, update_1, stats_1, compiled_1 = train_three_steps(jax.devices()[:1], jnp.float64,
                                                                monkeypatch)
    losses_8, update_8, stats_8, compiled_8 = train_three_steps(jax.devices()[:8], jnp.float64,
                                                                monkeypatch)
  assert compiled_1 == compiled_8 == 1
  assert {leaf.dtype for leaf in jax.tree.leaves(update_8)} == {np.dtype(np.float32)}
  np.testing.assert_allclose(losses_8, losses_1, rtol=1e-6)
  assert relative_difference(update_8, update_1) < 1e-5
  assert relative_difference(stats_8, stats_1) < 1e-5


@pytest.fixture(scope='module')
def straight_run(digits_config, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('straight'))
  return workdir, loop.train_and_evaluate(digits_config(), workdir)


def test_steps_are_compiled_before_the_first_step_and_a_batch_too_large_is_refused(
    digits_config, tmp_path, monkeypatch, caplog):
  """The log names each step's compile and memory per device before any training step; a
  batch whose step needs more than a device's memory stops the run there, and the line names a
  batch per device that was compiled and fits (and the next one, which does not)."""
  with caplog.at_level(logging.INFO):
    loop.train_and_evaluate(digits_config(), str(tmp_path / 'fits'))
  lines = [record.getMessage() for record in caplog.records]
  compiled_at = [i for i, line in enumerate(lines) if re.fullmatch(
      r'The (train|eval) step at \d+ images per device: (compiled|read from the compilation '
      r'cache) in [\d.]+ s; [\d.]+ GiB per device \(.*\)\.', line)]
  first_step = next(i for i, line in enumerate(lines) if re.match(r'Step \d+/', line))
  assert len(compiled_at) == 2 and max(compiled_at) < first_step, lines
  capacity = {}
  monkeypatch.setattr(compiled, 'device_capacity', lambda mesh: capacity['bytes'])
  capacity['bytes'] = 1  # nothing fits: the error gives the asked batch's memory
  with pytest.raises(BatchTooLargeError) as too_large:
    loop.train_and_evaluate(digits_config(), str(tmp_path / 'refused'))
  asked = too_large.value.memory.total
  capacity['bytes'] = asked // 2
  with pytest.raises(BatchTooLargeError) as too_large:
    loop.train_and_evaluate(digits_config(), str(tmp_path / 'refused'))
  assert not (tmp_path / 'refused' / 'checkpoints').exists() or not os.listdir(
      tmp_path / 'refused' / 'checkpoints')
  devices = jax.device_count()
  line = memory_plan.fitting_batch_line(too_large.value, jax.devices())
  match = re.fullmatch(rf'the train step at {32 // devices} images per device needs [\d.]+ GiB per '
                       r'device, more than the [\d.]+ GiB a device has; (\d+) images per device '
                       r'fit \(--config.batch_size=(\d+); compiled to confirm it, and (\d+) does '
                       r'not\), or keep the batch in micro-batches of (\d+) images per device '
                       r'with --config.grad_accum_steps=(\d+), or lower the step\'s memory with '
                       r'--config.model.remat=module \(.*\)', line)
  assert match and int(match[2]) == int(match[1]) * devices, line
  micro_batch, accumulated = int(match[4]), int(match[5])
  assert micro_batch * accumulated == 32 // devices and micro_batch <= int(match[1]), line
  builder = memory_plan.StepBuilder(too_large.value.config, jax.devices(),
                                    facts=too_large.value.facts)
  fits, refused = (builder.compile(step='train', per_device_batch=int(batch))
                   for batch in (match[1], match[3]))
  assert fits.memory.total <= capacity['bytes'] < refused.memory.total


def test_metrics_of_a_log_step_are_fetched_after_the_next_step_is_queued(digits_config,
                                                                          tmp_path, monkeypatch):
  """Log steps 2 and 4 are fetched once steps 3 and 5 are queued, so the devices never wait
  for the host; the last step (a save and an evaluation follow) is fetched at once."""
  queued, fetched = [0], []
  real_compile, real_mean = compiled.compile_steps, loop.mean_train_metrics

  def counting_compile(*args, **kwargs):
    steps = real_compile(*args, **kwargs)

    def train(state, batch):
      queued[0] += 1
      return steps.train(state, batch)
    return dataclasses.replace(steps, train=train)

  def recording_mean(pending):
    fetched.append(queued[0])
    return real_mean(pending)

  monkeypatch.setattr(compiled, 'compile_steps', counting_compile)
  monkeypatch.setattr(loop, 'mean_train_metrics', recording_mean)
  loop.train_and_evaluate(digits_config(), str(tmp_path))
  assert fetched == [3, 5, 6]


def test_run_writes_eval_results_and_checkpoint(straight_run):
  workdir, results = straight_run
  with open(os.path.join(workdir, 'eval_results.json')) as f:
    saved = json.load(f)
  assert saved == results
  assert saved['step'] == 6 and saved['num_examples'] == 360
  assert 0 <= saved['top1_accuracy'] <= saved['top5_accuracy'] <= 1
  assert np.isfinite(saved['loss'])
  assert os.listdir(os.path.join(workdir, 'checkpoints')) == ['6']
  assert any(name.startswith('events.out.tfevents') for name in os.listdir(workdir))


def interrupt_at_step(step: int, monkeypatch) -> None:
  """Sends this process a real SIGINT as the batch of `step` reaches the devices."""
  real_prefetch = device_batches.prefetch_to_device

  def interrupted(batches, sharding, size=2):
    for i, batch in enumerate(real_prefetch(batches, sharding, size)):
      if i == step - 1:
        os.kill(os.getpid(), signal.SIGINT)
      yield batch

  monkeypatch.setattr(device_batches, 'prefetch_to_device', interrupted)


def test_interrupted_run_resumes_exactly(straight_run, digits_config, tmp_path, monkeypatch):
  """A real SIGINT while step 5 runs: the step finishes, is saved, and the run stops; the
  resumed run ends bit-identical to the uninterrupted one."""
  interrupt_at_step(5, monkeypatch)
  with pytest.raises(Preempted, match='Stopped by SIGINT at step 5'):
    loop.train_and_evaluate(digits_config(), str(tmp_path))
  monkeypatch.undo()
  assert os.listdir(tmp_path / 'checkpoints') == ['5']
  resumed = loop.train_and_evaluate(digits_config(), str(tmp_path))
  _, straight = straight_run
  assert resumed == straight  # every metric equal, not just close


def test_eval_only_and_corrupt_checkpoint(straight_run, digits_config, tmp_path):
  workdir, straight = straight_run
  again = loop.train_and_evaluate(digits_config(eval_only=True), workdir)
  assert again == straight
  with pytest.raises(FileNotFoundError, match='eval_only needs a checkpoint'):
    loop.train_and_evaluate(digits_config(eval_only=True), str(tmp_path / 'empty'))
  broken = tmp_path / 'broken'
  os.makedirs(broken)
  subprocess.run(['cp', '-r', os.path.join(workdir, 'checkpoints'), str(broken)], check=True)
  for root, _, files in os.walk(broken / 'checkpoints' / '6' / 'state'):
    for name in files:
      with open(os.path.join(root, name), 'wb') as f:
        f.write(b'not a checkpoint')
  with pytest.raises(CheckpointError, match=r'Every checkpoint .* is damaged \(step 6: .*'
                                            r'Nothing was moved'):
    loop.train_and_evaluate(digits_config(eval_only=True), str(broken))


def test_checkpoint_restores_onto_another_device_count(straight_run, digits_config):
  """Written on 8 devices, read back onto 1 device with the shardings asked for."""
  workdir, _ = straight_run
  config = digits_config()
  model = build_model(config, num_classes=10)
  tx = optim.make_optimizer(config, optim.learning_rate_schedule(config, 1437 / 32, 6))
  one_device = mesh_lib.make_mesh(jax.devices()[:1])
  _, target = train_state_factory(model, tx, one_device, (8, 8, 1), seed=0)
  manager = checkpoints.make_manager(workdir, keep=1)
  state, input_state = checkpoints.restore_latest(manager, target)
  manager.close()
  assert int(state.step) == 6 and input_state['step'] == 6
  for leaf in jax.tree.leaves(state.params):
    assert leaf.sharding.device_set == {jax.devices()[0]}


@pytest.fixture(scope='session')
def small_real_datasets(tmp_path_factory):
  """data_dir of each dataset: small real TFDS datasets prepared from fake source files."""
  return {'cifar10': lambda: fake_datasets.cifar10(tmp_path_factory),
          'cifar100': lambda: fake_datasets.cifar100(tmp_path_factory)}


# The other paper configs train in test_imagenet_data.py (ImageNet) and test_no_tensorflow.py
# (synthetic data); the CIFAR-100 variants are the CIFAR-10 ones on CIFAR-100
# (test_cifar100_variant_is_cifar10s).
def test_cifar_config_trains_on_small_real_data(small_real_datasets, tmp_path):
  config = shrink(cifar.get_config(), data_dir=small_real_datasets['cifar10'](), batch_size=8,
                  eval_batch_size=8, num_train_steps=2, log_every_steps=1, shuffle_buffer=16)
  results = loop.train_and_evaluate(config, str(tmp_path))  # attention92 on cifar10
  assert results['step'] == 2 and results['num_examples'] == 12
  assert results['dataset'] == 'cifar10' and np.isfinite(results['loss'])


def test_cifar100_variant_is_cifar10s(small_real_datasets):
  cifar100, cifar10 = cifar.get_config('attention92,cifar100'), cifar.get_config()
  assert cifar100.dataset == 'cifar100'
  cifar100.dataset = 'cifar10'
  assert cifar100.to_dict() == cifar10.to_dict()
  checks.validate(cifar.get_config('attention92,cifar100'), 'unused')
  pipeline = sources.source_of(shrink(
      cifar.get_config('attention92,cifar100'), data_dir=small_real_datasets['cifar100'](),
      batch_size=8, eval_batch_size=8)).open()
  assert pipeline.num_classes == 100 and pipeline.num_train_examples > 0


def test_eval_results_stay_strict_json(tmp_path):
  """A non-finite metric is written as null: the file parses as strict JSON."""
  run = types.SimpleNamespace(
      config=digits_attention56.get_config(), workdir=str(tmp_path),
      writer=metric_writers.create_default_writer(str(tmp_path), just_logging=True))
  results = loop.write_eval_results(run, 7, {'loss': float('nan'), 'top1_accuracy': 0.5,
                                             'num_examples': 3})

  def reject(constant):
    raise ValueError(f'{constant} is not JSON')

  saved = json.loads((tmp_path / 'eval_results.json').read_text(), parse_constant=reject)
  assert saved == results
  assert saved['loss'] is None and saved['top1_accuracy'] == 0.5 and saved['step'] == 7


def test_a_run_from_before_run_records_cannot_resume_with_an_average(straight_run, digits_config,
                                                                    tmp_path):
  """Checkpoints without a run.json (runs recorded nothing before) hold no moving average:
  adding one is refused in one line before any work, and the record is left as it was."""
  workdir, _ = straight_run
  legacy = tmp_path / 'legacy'
  shutil.copytree(workdir, legacy)
  (legacy / 'run.json').unlink()
  with pytest.raises(ValueError, match=r'^this run was started with ema_decay=unset \(the '
                     r'default\) and cannot resume with 0.9: that adds or drops the moving '
                     r'average its checkpoints hold;'):
    loop.train_and_evaluate(digits_config(ema_decay=0.9), str(legacy))
  assert not (legacy / 'run.json').exists()
