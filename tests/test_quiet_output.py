"""Other libraries' routine output stays out of the tools' output: TensorFlow's start-up lines
(whatever the CPU), TFDS's preparation lines, Orbax's routine warnings, and libtpu on a host
without TPUs. The training runs' and predict's own processes are checked line by line where
they run (training_jobs.assert_one_closing_line, test_stop_signals.py, test_predict.py)."""

import importlib.util
import logging
import os
import subprocess
import sys

import jax
import pytest
from training_jobs import ROOT, job_env

from ran_jax.cli import QuietRoutineLogs
from ran_jax.data import quiet_tf
from ran_jax.process import platforms

# As TensorFlow 2.21 prints them on import on an x86 CPU with AVX-512.
START_UP = """\
WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
I0000 00:00:1796408611.024406    2874 port.cc:153] oneDNN custom operations are on. You may \
see slightly different numerical results due to floating-point round-off errors.
I0000 00:00:1796408611.062811    2874 cpu_feature_guard.cc:227] This TensorFlow binary is \
optimized to use available CPU instructions in performance-critical operations.
To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild \
TensorFlow with the appropriate compiler flags.
"""
KEPT = """\
W0000 00:00:1796408613.100000    2874 env.cc:12] a warning of TensorFlow's C++ code
E0000 00:00:1796408613.200000    2874 env.cc:13] an error of TensorFlow's C++ code
/usr/lib/python3/x.py:7: UserWarning: a warning of Python code
I1204 20:24:38.312336 140092546997120 dataset_builder.py:711] a log line of Python code
"""


def test_tensorflow_start_up_lines_are_dropped_and_warnings_kept():
  assert quiet_tf.routine_lines_removed(START_UP) == ''
  assert quiet_tf.routine_lines_removed(START_UP + KEPT + START_UP) == KEPT


def test_prepare_prints_its_own_lines_only(tmp_path):
  result = subprocess.run(
      [sys.executable, '-m', 'ran_jax.data.prepare', '--dataset=digits',
       f'--data_dir={tmp_path}'], cwd=ROOT, env=job_env(), capture_output=True, text=True,
      timeout=300, check=True)
  assert result.stdout.splitlines() == [
      f'Preparing digits in {tmp_path} from its source ...',
      f'Prepared digits/1.0.0 in {tmp_path}/digits/1.0.0: test 360 examples (1 files), '
      'train 1,437 examples (1 files)']
  # Only TFDS's progress bars on stderr: no log line, no TensorFlow line.
  for routine in ('absl::InitializeLog', 'oneDNN', 'cpu_feature_guard', 'Generating dataset',
                  '] '):
    assert routine not in result.stderr, result.stderr[-3000:]


def orbax_record(message: object, level: int = logging.WARNING) -> logging.LogRecord:
  path = os.path.join('site-packages', 'orbax', 'checkpoint', '_src', 'path', 'atomicity.py')
  return logging.LogRecord('absl', level, path, 134, message, ('/w/checkpoints/8',), None)


def test_orbax_routine_warnings_are_dropped_and_others_kept():
  quiet = QuietRoutineLogs()
  for routine in ('Attempted to create temporary directory %s which already exists.',
                  'Waiting for previous save to complete took %s seconds.',
                  'Metadata file does not exist: %s', 'Missing metrics for step %s'):
    assert not quiet.filter(orbax_record(routine))
  assert not quiet.filter(orbax_record(FileNotFoundError('File /w/8/metrics/metrics not found.'),
                                       logging.ERROR))
  assert not quiet.filter(orbax_record('Saving checkpoint %s', logging.INFO))
  assert quiet.filter(orbax_record('Could not write %s', logging.WARNING))


@pytest.fixture
def platform_setting():
  """Restores JAX's platform setting after a test that changes it."""
  saved = jax.config.jax_platforms
  yield
  jax.config.update('jax_platforms', saved)


@pytest.mark.parametrize('host, expected', [
    ({}, 'cpu'),  # libtpu installed, no TPU chip, no GPU plugin: libtpu is not loaded
    ({'tpu_chips_present': True}, None),  # a TPU VM: as it is
    ({'gpu_plugin_installed': True}, None),  # a GPU host: as it is
    ({'JAX_PLATFORMS': 'cuda'}, None),  # the user chose
    ({'libtpu': False}, None),  # nothing to keep quiet
])
def test_libtpu_is_not_loaded_on_a_host_without_tpus(host, expected, monkeypatch,
                                                     platform_setting):
  jax.config.update('jax_platforms', None)
  real_find_spec = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, 'find_spec', lambda name, *a: (
      (real_find_spec('jax') if host.get('libtpu', True) else None) if name == 'libtpu'
      else real_find_spec(name, *a)))
  monkeypatch.setattr(platforms, 'tpu_chips_present', lambda: host.get('tpu_chips_present', False))
  monkeypatch.setattr(platforms, 'gpu_plugin_installed',
                      lambda: host.get('gpu_plugin_installed', False))
  monkeypatch.delenv('JAX_PLATFORMS', raising=False)
  if 'JAX_PLATFORMS' in host:
    monkeypatch.setenv('JAX_PLATFORMS', host['JAX_PLATFORMS'])
  platforms.cpu_only_without_accelerators()
  assert jax.config.jax_platforms == expected


def test_gpu_plugins_are_recognised_by_their_distribution_names():
  assert all(platforms.GPU_PLUGIN.match(name) for name in (
      'jax-cuda12-plugin', 'jax_cuda13_pjrt', 'jax-rocm60-plugin'))
  assert not any(platforms.GPU_PLUGIN.match(name) for name in ('jax', 'jaxlib', 'libtpu'))
