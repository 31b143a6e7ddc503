"""Real `python -m ran_jax.main` processes for tests: start, watch the log, signal, collect.

Jobs train a tiny network on the digits data. Waiting is done by reading the job's log
lines as they come (no sleeping).
"""

import os
import pathlib
import queue
import re
import socket
import subprocess
import sys
import threading

import jax

ROOT = pathlib.Path(__file__).resolve().parents[1]
TIMEOUT = 300  # seconds for any one awaited log line or exit
BOUND = 240  # seconds by which a job that fails or is stopped must have ended
# absl-py's log lines (I1203 16:31:01.719535 140092546997120 loop.py:338] ...): Python's only,
# so that a C++ library's lines (I0000 00:00:1796408611.024406 2874 port.cc:153] ...) are strays.
LOG_LINE = re.compile(r'[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \S+\.py:\d+\] ')

# One narrow stage whose mask branch pools once (the fewest operations, so the quickest
# compiles): the network of every training test (in this process or another), so that each of
# its programs compiles once per test session. test_scan.py and test_models.py cover deeper
# mask branches.
TINY_NETWORK = dict(stem_width=8, stage_widths=(16,), modules_per_stage=(1,), mask_poolings=(1,),
                    final_width=64)
TINY_FLAGS = [f'--config.model.{key}={value}' for key, value in TINY_NETWORK.items()]


# Every tiny digits run of the tests, in this process or another, compiles the same steps
# (constant learning rate, same batch shapes), so the persistent compilation cache serves all
# but the first; the run length and the logging and saving intervals don't change them.
QUICK_FIELDS = {'batch_size': 32, 'eval_batch_size': 120, 'schedule': 'piecewise',
                'lr_decay_epochs': (), 'warmup_epochs': 0.0, 'attention_images': 0}


def digits_flags(workdir, data_dir, **fields) -> list[str]:
  """Flags of a tiny digits run in `workdir` (field overrides as keyword arguments)."""
  fields = {**QUICK_FIELDS, 'num_train_steps': 100_000, 'log_every_steps': 1,
            'eval_every_steps': 100_000, 'checkpoint_every_steps': 100_000, **fields}
  return ['--config=configs/digits_attention56.py', f'--workdir={workdir}',
          f'--config.data_dir={data_dir}', *TINY_FLAGS,
          *[f'--config.{key}={value}' for key, value in fields.items()]]


def job_env(**extra: str) -> dict[str, str]:
  """The test session's environment for a child process, sharing its compilation cache.

  TensorFlow is made to print its start-up lines as loudly as on any machine (oneDNN's notice
  is printed on every x86 CPU with TF_ENABLE_ONEDNN_OPTS=1), so that the tests that read a
  child's stderr see them wherever they leak.
  """
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / 'tests')]),
             TF_ENABLE_ONEDNN_OPTS='1', **extra)
  env.pop('TF_CPP_MIN_LOG_LEVEL', None)
  cache = jax.config.jax_compilation_cache_dir
  if cache:
    env.update(JAX_COMPILATION_CACHE_DIR=cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0')
  return env


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


class Job:
  """One `ran_jax.main` process whose combined output is read line by line."""

  def __init__(self, flags: list[str], env: dict[str, str] | None = None):
    self.process = subprocess.Popen(
        [sys.executable, '-m', 'ran_jax.main', *flags], cwd=ROOT, env=env or job_env(),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    self.lines: list[str] = []
    self._queue: queue.Queue = queue.Queue()
    threading.Thread(target=self._read, daemon=True).start()

  def _read(self) -> None:
    for line in self.process.stderr:
      self._queue.put(line.rstrip('\n'))
    self._queue.put(None)

  def wait_for(self, pattern: str) -> re.Match:
    """Blocks until a log line matches `pattern`; fails if the job ends first."""
    regex = re.compile(pattern)
    while True:
      try:
        line = self._queue.get(timeout=TIMEOUT)
      except queue.Empty:
        raise AssertionError(f'no line matching {pattern!r}:\n' + self.tail()) from None
      if line is None:
        self._queue.put(None)
        raise AssertionError(f'job ended before {pattern!r}:\n' + self.tail())
      self.lines.append(line)
      if match := regex.search(line):
        return match

  def wait_for_step(self, at_least: int) -> int:
    """Blocks until the training metrics of a step >= `at_least` are logged; that step."""
    while True:
      step = int(self.wait_for(r'Step (\d+)/\d+ .*: loss ')[1])
      if step >= at_least:
        return step

  def signal(self, signum: int) -> None:
    self.process.send_signal(signum)

  def finish(self) -> int:
    """Waits for the exit; the exit status (all output is then in `lines`)."""
    try:
      status = self.process.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
      self.process.kill()
      raise
    while (line := self._queue.get(timeout=TIMEOUT)) is not None:
      self.lines.append(line)
    self._queue.put(None)
    return status

  def tail(self, n: int = 40) -> str:
    return '\n'.join(self.lines[-n:])

  @property
  def output(self) -> str:
    return '\n'.join(self.lines)

  def last_line(self) -> str:
    return next(line for line in reversed(self.lines) if line.strip())

  def kill(self) -> None:
    if self.process.poll() is None:
      self.process.kill()
    self.process.wait()


def assert_one_closing_line(stderr: str, status: int, *, starts: str = 'error: ') -> str:
  """The contract of every failure: a non-zero status, one closing line last on stderr and no
  other, nothing but log lines before it, and no traceback. Returns the closing line."""
  assert status != 0, stderr[-3000:]
  lines = [line for line in stderr.splitlines() if line.strip()]
  closing = [line for line in lines if line.startswith(('error: ', 'Stopped by '))]
  assert closing == [lines[-1]] and lines[-1].startswith(starts), stderr[-3000:]
  for noise in ('Traceback', 'Task exception', 'Exception ignored', 'Event loop is closed'):
    assert noise not in stderr, stderr[-3000:]
  assert_log_lines_only('\n'.join(lines[:-1]))
  return lines[-1]


def assert_log_lines_only(stderr: str) -> None:
  """Every line of `stderr` is one of the program's log lines (no library's start-up lines)."""
  strays = [line for line in stderr.splitlines() if line.strip() and not LOG_LINE.match(line)]
  assert not strays, '\n'.join(strays[:20])
