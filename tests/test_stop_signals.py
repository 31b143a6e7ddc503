"""One process stops cleanly on real signals (SIGTERM, SIGINT, SIGHUP): checkpoint, exit status
75, resume; one run per workdir, and no lock left behind by a killed run."""

import os
import re
import signal

import pytest
from training_jobs import Job, assert_log_lines_only, digits_flags

from ran_jax.process.errors import EXIT_PREEMPTED
from ran_jax.process.stop_signals import StopRequested, StopSignals


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
  session) while that run restores and compiles, then SIGINT and SIGTERM before the save: it
  saves the first step it finishes, once, waits for the write, and exits."""
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
  resumed = start(workdir, checkpoint_every_steps=2)
  resumed.wait_for(rf'Restored checkpoint of step {last}')
  resumed.signal(signal.SIGHUP)
  resumed.wait_for(r'SIGHUP received')
  resumed.signal(signal.SIGINT)
  resumed.signal(signal.SIGTERM)
  assert assert_stopped(resumed, workdir, 'SIGHUP') == last + 1
  assert resumed.output.count('received again') == 2
  assert 'Taking over the lock of a run that is gone' in resumed.output
  assert not unfinished.exists() and 'temporary directory' not in resumed.output  # Orbax's note
  assert_log_lines_only('\n'.join(resumed.lines[:-1]))  # no library's start-up lines


def test_a_signal_while_interruptible_stops_at_once():
  """Preparing a dataset can take hours with nothing to save: a signal stops it at once."""
  with StopSignals() as stop:
    with pytest.raises(StopRequested) as stopped, stop.interruptible('while loading the dataset'):
      signal.raise_signal(signal.SIGHUP)
      pytest.fail('the signal did not stop the interruptible work')
    assert str(stopped.value) == ('Stopped by SIGHUP while loading the dataset; nothing needed '
                                  'saving. Run the same command to resume.')
    assert stop.received == 'SIGHUP'
