"""Two processes (as two hosts, one CPU device each, CPU collectives) through the real entry
point: they train together, stop together on SIGTERM, resume, and count every eval example
once."""

import json
import os
import re
import signal

import pytest
from training_jobs import Job, digits_flags, free_port, job_env

from ran_jax.process.errors import EXIT_PREEMPTED


@pytest.fixture
def start_two_hosts(tmp_path):
  """Starts both processes of a job on `tmp_path/workdir`; kills leftovers at the end."""
  jobs = []

  def start(**fields) -> list[Job]:
    port = free_port()
    env = job_env(JAX_CPU_COLLECTIVES_IMPLEMENTATION='gloo', JAX_NUM_CPU_DEVICES='1')
    env.pop('XLA_FLAGS', None)
    flags = digits_flags(tmp_path / 'workdir', tmp_path / 'tfds', **fields)
    jobs.extend(Job([*flags, f'--coordinator_address=localhost:{port}', '--num_processes=2',
                     f'--process_id={i}'], env=env) for i in range(2))
    return jobs[-2:]

  yield start
  for job in jobs:
    job.kill()


def stopped_step(job: Job) -> int:
  assert job.finish() == EXIT_PREEMPTED, job.tail()
  assert 'Traceback' not in job.output, job.tail()
  match = re.fullmatch(r'Stopped by a preemption notice \(SIGTERM\) at step (\d+); .* Run the '
                       r'same command to resume\.', job.last_line())
  assert match, job.tail()
  return int(match[1])


def last_evaluation(job: Job) -> dict:
  return json.loads(re.findall(r'Evaluation at step \d+: (\{.*\})', job.output)[-1])


def test_two_hosts_stop_together_on_sigterm_resume_and_agree(tmp_path, start_two_hosts):
  """SIGTERM to one process, then to both: each time every process saves the same step,
  waits for it and exits with status 75, and the second run resumes from the first's step.
  Both processes report the same evaluation, of all 360 test examples (each counted once)."""
  checkpoints = tmp_path / 'workdir' / 'checkpoints'
  first = start_two_hosts()
  for job in first:
    job.wait_for_step(3)
  first[1].signal(signal.SIGTERM)  # one host is preempted
  steps = [stopped_step(job) for job in first]
  assert steps[0] == steps[1] >= 3
  assert os.listdir(checkpoints) == [str(steps[0])]
  assert '2 devices, 2 processes' in first[0].output

  second = start_two_hosts(eval_every_steps=1)
  for job in second:
    job.wait_for(rf'Restored checkpoint of step {steps[0]}')
  for job in second:
    job.wait_for(rf'Evaluation at step {steps[0] + 2}')
  for job in second:  # the whole slice is preempted
    job.signal(signal.SIGTERM)
  again = [stopped_step(job) for job in second]
  assert again[0] == again[1] > steps[0] + 1
  assert max(map(int, os.listdir(checkpoints))) == again[0]
  results = [last_evaluation(job) for job in second]
  assert results[0] == results[1]
  assert results[0]['step'] >= steps[0] + 2 and results[0]['num_examples'] == 360
  with open(tmp_path / 'workdir' / 'eval_results.json') as f:
    assert json.load(f)['step'] == results[0]['step']
