"""Faults from the machine, in real processes on real file systems: a full disk, a read-only
work directory, no network for a download, a signal while Python is still importing. Each ends
with one line and a bounded exit (`assert_one_closing_line`), keeping every good checkpoint.

The file-system cases mount a small tmpfs or a read-only bind mount, which needs root; they
are skipped, with the reason, where mounting is not allowed. The network case runs the job in
a new network namespace (`unshare -n`), likewise."""

import contextlib
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
from test_train import shrink
from training_jobs import (BOUND, QUICK_FIELDS, ROOT, assert_one_closing_line, digits_flags,
                           job_env)

from configs import digits_attention56
from ran_jax.train import loop
from ran_jax.process.errors import EXIT_PREEMPTED


def run_main(args: list[str], *, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
  """`python -m ran_jax.main ARGS` (under `prefix`, e.g. unshare -n), ended within BOUND s."""
  return subprocess.run([*prefix, sys.executable, '-m', 'ran_jax.main', *args], cwd=ROOT,
                        env=job_env(), capture_output=True, text=True, timeout=BOUND,
                        check=False)


def _mount(*args: str) -> None:
  if os.geteuid() != 0:
    pytest.skip('mounting a file system for this test needs root')
  done = subprocess.run(['mount', *args], capture_output=True, text=True, check=False)
  if done.returncode:
    pytest.skip(f'mount {" ".join(args)} is not allowed here: {done.stderr.strip()}')


@contextlib.contextmanager
def mounted(*args: str, target) -> None:
  target.mkdir(parents=True, exist_ok=True)
  _mount(*args, str(target))
  try:
    yield target
  finally:
    subprocess.run(['umount', '-l', str(target)], check=False)


def saved_steps(workdir) -> list[int]:
  return sorted(int(p.name) for p in (workdir / 'checkpoints').iterdir() if p.name.isdigit())


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp('tfds')


def test_disk_full_ends_with_one_line_and_the_last_good_checkpoint_resumes(tmp_path, data_dir,
                                                                           caplog):
  """A 6 MiB disk fills up with checkpoints (of about 0.8 MiB): a save is refused, cleanly.
  The copy of the work directory then resumes (in this process) from the last good one."""
  with mounted('-t', 'tmpfs', '-o', 'size=6m', 'tmpfs', target=tmp_path / 'small') as small:
    workdir = small / 'run'
    result = run_main(digits_flags(workdir, data_dir, num_train_steps=200,
                                   checkpoint_every_steps=1, keep_checkpoints=200,
                                   log_every_steps=50))
    line = assert_one_closing_line(result.stderr, result.returncode)
    match = re.fullmatch(
        rf'error: Could not save the checkpoint of step (\d+) in {workdir}/checkpoints: no '
        r'space left on device \([\d.]+ MiB free; a save needs about [\d.]+ MiB, 2 times a '
        r'checkpoint\); the last good checkpoint, of step (\d+), is kept\. Then free space '
        r'there .* and run the same command to resume from it\. .*', line)
    assert match, line
    good = int(match[2])
    assert int(match[1]) == good + 1 and saved_steps(workdir) == list(range(1, good + 1))
    shutil.copytree(workdir, tmp_path / 'roomy')  # with room again, the run goes on from there
  config = shrink(digits_attention56.get_config(), data_dir=str(data_dir),
                  **dict(QUICK_FIELDS, num_train_steps=good + 1, keep_checkpoints=200))
  with caplog.at_level(logging.INFO):
    results = loop.train_and_evaluate(config, str(tmp_path / 'roomy'))
  assert f'Restored checkpoint of step {good} ' in caplog.text
  assert results['step'] == good + 1 and saved_steps(tmp_path / 'roomy')[-1] == good + 1


@pytest.mark.parametrize('where', ['the work directory', 'a new directory under it'])
def test_read_only_work_directory_gives_one_line(where, tmp_path, data_dir):
  source = tmp_path / 'source'
  source.mkdir()
  with mounted('--bind', '-o', 'ro', str(source), target=tmp_path / 'ro') as read_only:
    workdir = read_only if where == 'the work directory' else read_only / 'new' / 'run'
    result = run_main(digits_flags(workdir, data_dir, num_train_steps=2))
    line = assert_one_closing_line(result.stderr, result.returncode)
  assert 'read-only file system' in line and str(workdir) in line, line


def test_sigterm_while_importing_exits_75_with_the_stop_line():
  """The signal comes as soon as the process handles SIGTERM (the first line of main.py), while
  it still imports JAX: it stops at once with the stop line, not with a bare 143."""
  process = subprocess.Popen([sys.executable, '-m', 'ran_jax.main',
                              '--config=configs/digits_attention56.py', '--workdir=/nonexistent'],
                             cwd=ROOT, env=job_env(), stderr=subprocess.PIPE, text=True)
  deadline = time.monotonic() + BOUND
  while process.poll() is None and time.monotonic() < deadline:
    with open(f'/proc/{process.pid}/status') as status:
      caught = int(re.search(r'SigCgt:\s*([0-9a-f]+)', status.read())[1], 16)
    if caught >> (signal.SIGTERM - 1) & 1:
      break
  process.send_signal(signal.SIGTERM)
  stderr = process.communicate(timeout=BOUND)[1]
  line = assert_one_closing_line(stderr, process.returncode, starts='Stopped by ')
  assert process.returncode == EXIT_PREEMPTED, stderr
  assert line == ('Stopped by SIGTERM while starting; nothing needed saving. Run the same '
                  'command to resume.')


def test_dataset_download_without_network_fails_within_seconds(tmp_path):
  if shutil.which('unshare') is None or subprocess.run(
      ['unshare', '-n', 'true'], capture_output=True, check=False).returncode:
    pytest.skip('unshare -n (a process without network) is not allowed here')
  data_dir = tmp_path / 'tfds'
  started = time.monotonic()
  result = run_main(['--config=configs/digits_attention56.py', f'--workdir={tmp_path / "run"}',
                     '--config.dataset=cifar10', '--config.image_size=32',
                     '--config.eval_image_size=32', f'--config.data_dir={data_dir}'],
                    prefix=('unshare', '-n'))
  took = time.monotonic() - started
  line = assert_one_closing_line(result.stderr, result.returncode)
  assert took < 60, f'{took:.0f} s before: {line}'
  for part in ('cifar10', str(data_dir),
               'python3 -m ran_jax.data.prepare --dataset=cifar10 --data_dir=',
               'cannot be downloaded'):
    assert part in line, line
