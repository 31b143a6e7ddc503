"""Two processes (as two hosts) train together over CPU collectives and agree."""

import json
import os
import pathlib
import socket
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def test_two_processes_train_and_count_every_eval_example_once(tmp_path):
  port = str(free_port())
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / 'tests')]))
  env.pop('XLA_FLAGS', None)  # each worker asks for 2 CPU devices itself
  workers = [subprocess.Popen(
      [sys.executable, str(ROOT / 'tests' / 'multihost_worker.py'), str(i), port,
       str(tmp_path / 'workdir'), str(tmp_path / 'tfds')],
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
      for i in range(2)]
  try:
    outputs = [worker.communicate(timeout=400)[0] for worker in workers]
  finally:
    for worker in workers:
      worker.kill()
  results = []
  for worker, output in zip(workers, outputs, strict=True):
    assert worker.returncode == 0, output[-3000:]
    line = next(line for line in output.splitlines() if line.startswith('RESULT '))
    results.append(json.loads(line[len('RESULT '):]))
  assert results[0] == results[1]
  assert results[0]['process_count'] == 2 and results[0]['device_count'] == 4
  assert results[0]['step'] == 4 and results[0]['num_examples'] == 360
  assert sorted(os.listdir(tmp_path / 'workdir' / 'checkpoints')) == ['2', '4']
