"""Every bad input to `python -m ran_jax.main` ends within a bounded time with a non-zero exit
and one clear line last on stderr, without a traceback (`assert_one_closing_line`; the faults of
the machine are in test_machine_faults.py). Each case is a real process; they run side by side.

Every value check of the config is tested in-process, with its message, in
test_config_checks.py; here each way a bad value reaches the command line has one case (a
config check, a model-dependent check, a parse error, an unknown field or flag, the
distributed flags). (A batch size that divides over the devices also divides over the
processes, which hold equal numbers of devices; the process check itself is in
test_config_checks.py.)"""

import concurrent.futures
import os
import shutil
import subprocess
import sys

import pytest
from training_jobs import BOUND, ROOT, assert_one_closing_line, digits_flags, job_env

DIGITS = '--config=configs/digits_attention56.py'

# name: (arguments after the config and workdir, text the error line must contain).
BAD_VALUES = {
    'unknown model': (['--config.model.name=attention57'], "model.name='attention57'"),
    'wrong type': (['--config.batch_size=many'], 'batch_size'),
    'unknown key': (['--config.batch_sise=3'], 'Did you mean "batch_size"'),
    'unknown flag': (['--workers=3'], 'workers'),
    'batch not divisible by devices': (['--config.batch_size=12'], 'batch_size=12'),
    'image too small for the mask branch': (['--config.image_size=4'], 'image_size=4'),
    'stem width 0': (['--config.model.stem_width=0'], 'model.stem_width=0'),
    'coordinator without process id': (['--coordinator_address=localhost:1234',
                                        '--num_processes=2'], '--process_id'),
    'process id out of range': (['--coordinator_address=localhost:1234', '--num_processes=2',
                                 '--process_id=2'], '--process_id=2'),
}
# Cases that need a particular command line or work directory.
SPECIAL = {
    'missing --workdir': '--workdir is required',
    'missing --config': '--config is required',
    'config file not found': 'no_such_config.py',
    'unknown config variant': "unknown variant 'attention57,arl'",
    'workdir is a file': 'workdir=',
    'checkpoints is a file': 'is a file where the checkpoints directory goes',
    'workdir cannot be created': 'Cannot create the work directory /proc/ran_jax_run',
    'float16': "dtype='float16' is not allowed",
    'eval_only without a checkpoint': 'eval_only needs a checkpoint',
    'checkpoint of another width': 'was written for another model or optimizer',
    'non-finite loss': 'training loss became non-finite at step',
}


def tiny_run(workdir, data_dir, *extra: str) -> list[str]:
  return [*digits_flags(workdir, data_dir, num_train_steps=2), *extra]


def run_main(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, '-m', 'ran_jax.main', *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=BOUND, check=False)


def special_args(base, data_dir, trained) -> dict[str, list[str]]:
  (base / 'a_file').write_text('not a directory')
  (base / 'checkpoints').write_text('not a directory')
  resumable = base / 'resumable'
  shutil.copytree(trained, resumable)  # the non-finite run goes on from its step 2
  return {
      'missing --workdir': [DIGITS],
      'missing --config': [f'--workdir={base / "x"}'],
      'config file not found': ['--config=configs/no_such_config.py', f'--workdir={base / "x"}'],
      'unknown config variant': ['--config=configs/cifar_arl_nal.py:attention57,arl',
                                 f'--workdir={base / "x"}'],
      'workdir is a file': [DIGITS, f'--workdir={base / "a_file"}'],
      'checkpoints is a file': [DIGITS, f'--workdir={base}'],  # base/checkpoints: below
      'workdir cannot be created': tiny_run('/proc/ran_jax_run', data_dir),
      'float16': [DIGITS, f'--workdir={base / "x"}', '--config.dtype=float16'],
      'eval_only without a checkpoint': tiny_run(base / 'empty', data_dir,
                                                 '--config.eval_only=True'),
      'checkpoint of another width': tiny_run(trained, data_dir, '--config.model.stem_width=16'),
      'non-finite loss': tiny_run(resumable, data_dir, '--config.learning_rate=1e30',
                                  '--config.num_train_steps=6'),
  }


@pytest.fixture(scope='module')
def outcomes(tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess, object]]:
  """Every case's finished process (and its workdir), run four at a time."""
  base = tmp_path_factory.mktemp('cli')
  data_dir, trained = base / 'tfds', base / 'trained'
  env = job_env()
  env['XLA_FLAGS'] = '--xla_force_host_platform_device_count=8'
  first = run_main(tiny_run(trained, data_dir), env)  # a checkpoint of step 2
  assert first.returncode == 0, first.stderr[-3000:]
  commands = {name: ([DIGITS, f'--workdir={base / name}',
                      *args], base / name)
              for name, (args, _) in BAD_VALUES.items()}
  commands.update({name: (args, None)
                   for name, args in special_args(base, data_dir, trained).items()})
  with concurrent.futures.ThreadPoolExecutor(4) as pool:
    futures = {name: pool.submit(run_main, args, env) for name, (args, _) in commands.items()}
  results = {name: (future.result(), commands[name][1]) for name, future in futures.items()}
  results['non-finite loss checkpoints'] = (None, sorted(os.listdir(base / 'resumable' /
                                                                    'checkpoints')))
  results['another width checkpoints'] = (None, sorted(os.listdir(trained / 'checkpoints')))
  return results


@pytest.mark.parametrize('case', sorted(BAD_VALUES) + sorted(SPECIAL))
def test_bad_input_gives_one_clear_line(case, outcomes):
  result, workdir = outcomes[case]
  expected = BAD_VALUES[case][1] if case in BAD_VALUES else SPECIAL[case]
  stderr = result.stderr
  assert result.returncode in (1, 2), stderr[-3000:]
  line = assert_one_closing_line(stderr, result.returncode)
  assert expected in line, line
  if case in BAD_VALUES:  # refused up front: nothing was created, nothing else was printed
    assert not workdir.exists() and stderr.strip() == line


def test_errors_keep_checkpoints_as_they_were(outcomes):
  assert outcomes['non-finite loss checkpoints'][1] == ['2']  # no non-finite state saved
  assert outcomes['another width checkpoints'][1] == ['2']  # not set aside as damaged
