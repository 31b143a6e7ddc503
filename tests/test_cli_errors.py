"""Every bad input to `python -m ran_jax.main` ends with a non-zero exit and one clear line
last on stderr, without a traceback (`assert_one_closing_line`; the faults of the machine are
in test_machine_faults.py).

Every value check of the config is tested with its message in test_config_checks.py; here each
way a bad value reaches the command line has one case (a config check, a model-dependent
check, a parse error, an unknown field or flag, the distributed flags). The cases that stop
before a run starts go through the entry point's own `parse_flags` and `main` in this process
(its final `os._exit` becomes a SystemExit); a run that fails after it has started its
threads (checkpointer, writer, input) is a real process, which must end by itself within the
bound. (A batch size that divides over the devices also divides over the processes, which
hold equal numbers of devices; the process check itself is in test_config_checks.py.)"""

import concurrent.futures
import json
import os
import shutil
import signal
import subprocess
import sys

import jax
import pytest
from absl import flags, logging
from trained_digits import run_tool, trained
from training_jobs import BOUND, ROOT, assert_one_closing_line, digits_flags, job_env

from ran_jax import cli

DIGITS = '--config=configs/digits_attention56.py'
FOLDER = '--config=configs/image_folder.py'

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
    'config file not found': 'the --config file configs/no_such_config.py does not exist '
                             f'(relative to {ROOT})',
    'config path is a directory': 'the --config file configs is a directory',
    'unknown config variant': "unknown variant 'attention57,arl'",
    'workdir is a file': 'workdir=',
    'checkpoints is a file': 'is a file where the checkpoints directory goes',
    'workdir cannot be created': 'Cannot create the work directory /proc/ran_jax_run',
    'float16': "dtype='float16' is not allowed",
    'eval_only without a checkpoint': 'eval_only needs a checkpoint',
    'image folder not given': 'folder=None is not allowed: give the directory of your images',
    'image folder missing': "folder='/no/such/images' does not exist; give a directory",
}
# Cases in real processes: a run of the trained checkpoint that fails once it has started.
STARTED = {
    'non-finite loss': 'training loss became non-finite at step',
}


def tiny_run(workdir, data_dir, *extra: str) -> list[str]:
  return [*digits_flags(workdir, data_dir, num_train_steps=2), *extra]


def special_args(base, data_dir) -> dict[str, list[str]]:
  (base / 'a_file').write_text('not a directory')
  (base / 'with_file' / 'checkpoints').parent.mkdir()
  (base / 'with_file' / 'checkpoints').write_text('not a directory')
  return {
      'missing --workdir': [DIGITS],
      'missing --config': [f'--workdir={base / "x"}'],
      'config file not found': ['--config=configs/no_such_config.py', f'--workdir={base / "x"}'],
      'config path is a directory': ['--config=configs:arl', f'--workdir={base / "x"}'],
      'unknown config variant': ['--config=configs/cifar_arl_nal.py:attention57,arl',
                                 f'--workdir={base / "x"}'],
      'workdir is a file': [DIGITS, f'--workdir={base / "a_file"}'],
      'checkpoints is a file': [DIGITS, f'--workdir={base / "with_file"}'],
      'workdir cannot be created': tiny_run('/proc/ran_jax_run', data_dir),
      'float16': [DIGITS, f'--workdir={base / "x"}', '--config.dtype=float16'],
      'eval_only without a checkpoint': tiny_run(base / 'empty', data_dir,
                                                 '--config.eval_only=True'),
      'image folder not given': [FOLDER, f'--workdir={base / "x"}'],
      'image folder missing': [FOLDER, '--config.folder=/no/such/images',
                               f'--workdir={base / "folder_run"}', f'--config.data_dir={data_dir}'],
  }


@pytest.fixture(scope='module')
def entry_point():
  """`ran_jax.main`, imported here without its early signal handlers staying installed."""
  handlers = {signum: signal.getsignal(signum)
              for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
  from ran_jax import main
  for signum, handler in handlers.items():
    signal.signal(signum, handler)
  return main


def run_entry_point(main, args: list[str], capsys, monkeypatch) -> tuple[int, str]:
  """(exit status, stderr) of `python -m ran_jax.main ARGS`, run in this process."""
  def exit_now(status: int):
    raise SystemExit(status)

  monkeypatch.setattr(os, '_exit', exit_now)
  monkeypatch.setenv('JAX_COMPILATION_CACHE_DIR', jax.config.jax_compilation_cache_dir)
  monkeypatch.chdir(ROOT)  # the config paths are relative to the repository
  status, out, err = run_tool(main, args, capsys)
  monkeypatch.undo()
  return status, out + err


@pytest.fixture(scope='module')
def paths(tmp_path_factory):
  base = tmp_path_factory.mktemp('cli')
  return base, special_args(base, base / 'tfds')


@pytest.mark.parametrize('case', sorted(BAD_VALUES) + sorted(SPECIAL))
def test_bad_input_gives_one_clear_line(case, paths, entry_point, capsys, monkeypatch):
  base, special = paths
  args = [DIGITS, f'--workdir={base / case}', *BAD_VALUES[case][0]] if case in BAD_VALUES \
      else special[case]
  status, stderr = run_entry_point(entry_point, args, capsys, monkeypatch)
  expected = BAD_VALUES[case][1] if case in BAD_VALUES else SPECIAL[case]
  assert status in (1, 2), stderr[-3000:]
  line = assert_one_closing_line(stderr, status)
  assert expected in line, line
  if case in BAD_VALUES:  # refused up front: nothing was created, nothing else was printed
    assert not (base / case).exists() and stderr.strip() == line


def run_main(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, '-m', 'ran_jax.main', *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=BOUND, check=False)


@pytest.fixture(scope='module')
def started(tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess, list[str]]]:
  """Each STARTED case's finished process and the checkpoint steps it left, side by side."""
  run = trained(tmp_path_factory)
  base = tmp_path_factory.mktemp('started')
  workdirs = {name: base / name.replace(' ', '_') for name in STARTED}
  for workdir in workdirs.values():
    shutil.copytree(run.workdir, workdir)
  steps = int(run.results['step'])
  flags = {'non-finite loss': ['--config.learning_rate=1e30']}
  env = job_env()
  with concurrent.futures.ThreadPoolExecutor(len(STARTED)) as pool:
    futures = {name: pool.submit(run_main, [*digits_flags(
        workdirs[name], run.data_dir, num_train_steps=steps + 4), *flags[name]], env)
               for name in STARTED}
  return {name: (future.result(), sorted(os.listdir(workdirs[name] / 'checkpoints')))
          for name, future in futures.items()}


@pytest.mark.parametrize('case', sorted(STARTED))
def test_a_run_that_fails_once_started_ends_with_one_line(case, started, tmp_path_factory):
  result, checkpoints = started[case]
  line = assert_one_closing_line(result.stderr, result.returncode)
  assert result.returncode == 1 and STARTED[case] in line, line
  # No non-finite state was saved.
  assert checkpoints == [str(trained(tmp_path_factory).results['step'])]


@pytest.fixture
def run_copy(tmp_path_factory, tmp_path):
  """The trained run and a copy of its work directory, to resume or evaluate."""
  run = trained(tmp_path_factory)
  return run, shutil.copytree(run.workdir, tmp_path / 'run')


def resume_args(run, workdir, more_steps: int, *extra: str) -> list[str]:
  """The run's flags for `workdir`, to train `more_steps` past its checkpoint."""
  steps = int(run.results['step'])
  return [*digits_flags(workdir, run.data_dir, num_train_steps=steps + more_steps), *extra]


def test_checkpoint_of_another_width_is_refused_and_kept(entry_point, run_copy, capsys,
                                                         monkeypatch):
  run, workdir = run_copy
  steps = int(run.results['step'])
  args = resume_args(run, workdir, 4, '--config.model.stem_width=16')
  status, stderr = run_entry_point(entry_point, args, capsys, monkeypatch)
  line = assert_one_closing_line(stderr, status)  # refused by the run's record, named
  assert status == 1 and ('this run was started with model.stem_width=8 and cannot resume with '
                          '16: that changes the network or its input') in line, line
  for name in ('run.json', 'normalizer.npz'):  # a run started before runs recorded themselves
    os.remove(workdir / name)
  status, stderr = run_entry_point(entry_point, args, capsys, monkeypatch)
  line = assert_one_closing_line(stderr, status)  # refused by the checkpoint's structure
  assert status == 1 and 'was written for another model or optimizer' in line, line
  assert os.listdir(workdir / 'checkpoints') == [str(steps)]  # not set aside as damaged


def test_a_schedule_change_on_resume_is_logged_and_recorded(entry_point, run_copy, capsys,
                                                             monkeypatch, caplog):
  run, workdir = run_copy
  steps = int(run.results['step'])
  args = resume_args(run, workdir, 1, '--config.learning_rate=0.05')
  status, stderr = run_entry_point(entry_point, args, capsys, monkeypatch)
  assert status == 0, stderr[-3000:]
  assert 'Resuming with changed fields (recorded in run.json): ' in caplog.text
  assert 'learning_rate=0.05 (was 0.1)' in caplog.text
  record = json.loads((workdir / 'run.json').read_text())
  assert record['config']['learning_rate'] == 0.05
  assert record['changes'][-1]['changed']['learning_rate'] == [0.1, 0.05]
  assert record['changes'][-1]['changed']['num_train_steps'] == [steps, steps + 1]


def test_eval_only_needs_only_the_work_directory(entry_point, run_copy, capsys, monkeypatch):
  run, workdir = run_copy
  os.remove(workdir / 'eval_results.json')
  status, stderr = run_entry_point(entry_point, [f'--workdir={workdir}', '--eval_only'], capsys,
                                   monkeypatch)
  assert status == 0, stderr[-3000:]
  assert json.loads((workdir / 'eval_results.json').read_text()) == run.results
  assert json.loads((workdir / 'run.json').read_text())['changes'] == []  # nothing changed


def parse_flags_error(args: list[str], capsys, monkeypatch) -> tuple[int, str]:
  """(exit status, stderr) of `cli.parse_flags` on a command line it refuses."""
  cli.define_workdir_flag()
  argv = ['tool', *args]
  monkeypatch.setattr(sys, 'argv', argv)  # config_flags reads --config.FIELD from sys.argv
  monkeypatch.chdir(ROOT)
  level = logging.get_absl_logger().level  # parsing sets it (--verbosity): kept for later tests
  flags.FLAGS.unparse_flags()
  capsys.readouterr()
  try:
    with pytest.raises(SystemExit) as stop:
      cli.parse_flags(argv, 'tool --config=PATH --workdir=DIR')
  finally:
    flags.FLAGS.unparse_flags()
    logging.get_absl_logger().setLevel(level)
  return stop.value.code, capsys.readouterr().err


# What get_config() of a config file raises: the body of the file, its --config suffix, and the
# error the line names (a TypeError or ValueError, which ml_collections re-raises with its
# traceback in the message and absl turns into a flag error).
RAISING_CONFIGS = {
    'ValueError': ("def get_config():\n  raise ValueError('no variant x')\n", '',
                   'ValueError: no variant x'),
    'raised while handling another': (
        "def get_config():\n  try:\n    {}['x']\n  except KeyError:\n"
        "    raise ValueError('no variant x') from None\n", '', 'ValueError: no variant x'),
    'TypeError of the call': ('def get_config():\n  return None\n', ':x',
                              'TypeError: get_config() takes 0 positional arguments'),
}


@pytest.mark.parametrize('case', sorted(RAISING_CONFIGS))
def test_a_config_file_that_raises_gives_its_error_in_one_line(case, tmp_path, capsys,
                                                               monkeypatch):
  """The real ml_collections and absl path: the line names the config's own error."""
  body, suffix, expected = RAISING_CONFIGS[case]
  (tmp_path / 'raises.py').write_text(body)
  status, stderr = parse_flags_error([f'--config={tmp_path / "raises.py"}{suffix}',
                                      f'--workdir={tmp_path / "run"}'], capsys, monkeypatch)
  assert status == 2 and stderr.count('\n') == 1, stderr
  assert stderr.startswith(f'error: the --config file could not be loaded: {expected}'), stderr


@pytest.mark.parametrize('missing', ['--workdir', '--config'])
def test_a_missing_flag_is_named_with_an_example(missing, tmp_path, capsys, monkeypatch):
  given = {'--workdir': DIGITS, '--config': f'--workdir={tmp_path / "run"}'}[missing]
  status, stderr = parse_flags_error([given], capsys, monkeypatch)
  assert status == 2, stderr
  assert stderr == f'error: {missing} is required, e.g. tool --config=PATH --workdir=DIR\n'
