"""One process stops cleanly on real signals (SIGTERM, SIGINT, SIGHUP): checkpoint, exit status
75, resume; one run per workdir, and no lock left behind by a killed run."""

import os
import re
import shutil
import signal
import time

import pytest
from training_jobs import Job, assert_log_lines_only, digits_flags, job_env

from ran_jax.process.errors import EXIT_PREEMPTED


def saved_steps(workdir) -> list[int]:
  return sorted(int(name) for name in os.listdir(workdir / 'checkpoints') if name.isdigit())


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp('tfds')


@pytest.fixture
def start(data_dir):
  """Starts tiny digits runs; any still alive when the test ends are killed."""
  jobs = []

  def start_job(workdir, **fields) -> Job:
    jobs.append(Job(digits_flags(workdir, data_dir, **fields)))
    return jobs[-1]

  yield start_job
  for job in jobs:
    job.kill()


def assert_stopped(job: Job, workdir, by: str) -> int:
  """Checks a clean stop (status 75, one closing line, checkpoint, metrics); its step."""
  assert job.finish() == EXIT_PREEMPTED, job.tail()
  match = re.fullmatch(rf'Stopped by {by} at step (\d+); its checkpoint is saved in '
                       rf'{workdir}/checkpoints\. Run the same command to resume\.',
                       job.last_line())
  assert match, job.tail()
  step = int(match[1])
  assert saved_steps(workdir)[-1] == step
  assert f'Step {step}/' in job.output  # the metrics of the interrupted step are logged
  assert job.output.count('Stopped by') == 1
  assert 'Traceback' not in job.output and 'Exception ignored' not in job.output
  assert not (workdir / 'run.lock').exists()
  return step


def test_a_second_run_is_refused_and_after_sigkill_the_run_resumes_and_stops_on_signals(
    tmp_path, start):
  """While a run trains, a second run of its workdir is refused. SIGKILL leaves the lock file
  behind: the next run takes it over at once and resumes. SIGHUP (a closed terminal or ssh
  session) once that run trains, then SIGINT and SIGTERM before the save: it saves the step it
  finishes, once, waits for the write, and exits."""
  workdir = tmp_path / 'run'
  killed = start(workdir, checkpoint_every_steps=2)
  killed.wait_for_step(5)
  second = start(workdir)
  assert second.finish() == 1
  assert second.last_line().startswith('error: ') and 'in use by another run' in second.output
  assert 'Traceback' not in second.output
  killed.kill()  # no handler runs
  assert (workdir / 'run.lock').exists()
  last = saved_steps(workdir)[-1]
  # What a kill during a save leaves: the next run removes it before saving that step again.
  unfinished = workdir / 'checkpoints' / f'{last + 1}.orbax-checkpoint-tmp'
  unfinished.mkdir()
  (unfinished / 'part').write_bytes(b'x' * 100)
  resumed = start(workdir, checkpoint_every_steps=1)
  resumed.wait_for(rf'Restored checkpoint of step {last}')
  resumed.wait_for_step(last + 1)
  resumed.signal(signal.SIGHUP)
  resumed.wait_for(r'SIGHUP received')
  resumed.signal(signal.SIGINT)
  resumed.signal(signal.SIGTERM)
  assert assert_stopped(resumed, workdir, 'SIGHUP') > last
  assert resumed.output.count('received again') == 2
  assert 'Taking over the lock of a run that is gone' in resumed.output
  assert not unfinished.exists() and 'temporary directory' not in resumed.output  # Orbax's note
  assert_log_lines_only('\n'.join(resumed.lines[:-1]))  # no library's start-up lines


def files_of(workdir) -> dict[str, bytes]:
  """Every file under `workdir/checkpoints`, by path: what a stop must leave as it was."""
  root = workdir / 'checkpoints'
  return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob('*'))
          if path.is_file()}


@pytest.fixture(scope='module')
def trained(data_dir, tmp_path_factory):
  """A work directory with the checkpoint of step 2."""
  workdir = tmp_path_factory.mktemp('trained') / 'run'
  job = Job(digits_flags(workdir, data_dir, num_train_steps=2))
  assert job.finish() == 0, job.tail()
  return workdir


# Before the first step there is nothing to save: a signal in each phase of the start (the
# log line after which it is sent) ends the process at once, naming the phase (or the next
# one, if that phase ended first).
PHASES = {
    'loading the dataset': (r'Preparing digits in ', ('loading the dataset', 'compiling')),
    'restoring the checkpoint': (r'Resuming from the checkpoint of step 2',
                                 ('restoring the checkpoint', 'compiling')),
    'compiling': (r'Compiling the train and eval steps', ('compiling',)),
}


@pytest.mark.parametrize('phase', sorted(PHASES))
def test_a_signal_before_the_first_step_exits_at_once(phase, trained, data_dir, tmp_path):
  """Within 5 s of the signal: exit status 75, one stop line naming the phase, no traceback,
  the checkpoints as they were and the lock released. The compile runs with an empty
  compilation cache (seconds of XLA in C++, where the main thread could not take a signal)."""
  after, named = PHASES[phase]
  workdir = tmp_path / 'run'
  if phase == 'loading the dataset':
    data_dir = tmp_path / 'tfds'  # digits prepared afresh
  if phase == 'restoring the checkpoint':
    shutil.copytree(trained, workdir)
  before = files_of(workdir) if workdir.exists() else {}
  env = job_env()
  if phase == 'compiling':
    env['JAX_COMPILATION_CACHE_DIR'] = str(tmp_path / 'empty_cache')
  job = Job(digits_flags(workdir, data_dir), env)
  job.wait_for(after)
  job.signal(signal.SIGTERM)
  sent = time.monotonic()
  assert job.finish() == EXIT_PREEMPTED, job.tail()
  assert time.monotonic() - sent < 5, job.tail()
  assert re.fullmatch(rf'Stopped by SIGTERM while ({"|".join(named)}); nothing needed saving\. '
                      r'Run the same command to resume\.', job.last_line()), job.tail()
  assert job.output.count('Stopped by') == 1
  assert 'Traceback' not in job.output and 'Exception ignored' not in job.output
  assert not (workdir / 'run.lock').exists()
  assert (files_of(workdir) if (workdir / 'checkpoints').exists() else {}) == before
