"""Runs the whole test suite as two pytest processes side by side, and fails if either fails.

    python3 tests/run_suite.py [PYTEST OPTIONS]

Most of the suite's time is XLA compiling small programs, which uses one core; two processes
use both cores of a small machine and finish in well under the time of one. Each process runs
its own session (its own fixtures) and both share one compilation cache (a program the other
process compiled already is read from it). The test files that share the tiny
digits run trained once per session (`trained_digits`) stay in one process; `FIRST` lists that
process's files (chosen so that both take about the same time), and every other test file runs
in the second. Each output line is prefixed
with its process ([1] or [2]); a process that collects no test counts as a failure.
"""

import os
import pathlib
import subprocess
import sys
import tempfile
import threading
import time

TESTS = pathlib.Path(__file__).resolve().parent
FIRST = ('test_cli_errors.py', 'test_configs.py', 'test_export.py', 'test_image_folder.py',
         'test_label_noise.py', 'test_models.py', 'test_nnx_example.py', 'test_plan.py',
         'test_predict.py', 'test_regression.py', 'test_remat.py', 'test_scan.py',
         'test_visualize.py')


def shards() -> list[list[str]]:
  """The test files of each process (paths relative to the repository root)."""
  files = sorted(path.name for path in TESTS.glob('test_*.py'))
  missing = sorted(set(FIRST) - set(files))
  if missing:
    raise SystemExit(f'error: tests/run_suite.py lists {missing}, which do not exist; update FIRST')
  return [[f'tests/{name}' for name in files if (name in FIRST) == first]
          for first in (True, False)]


def _relay(process: subprocess.Popen, prefix: str) -> None:
  for line in process.stdout:
    print(f'{prefix} {line}', end='', flush=True)


def main(options: list[str]) -> int:
  start = time.perf_counter()
  with tempfile.TemporaryDirectory(prefix='ran_jax_xla_cache_') as cache:
    return _run(options, dict(os.environ, RAN_JAX_TEST_CACHE=cache), start)


def _run(options: list[str], env: dict[str, str], start: float) -> int:
  processes = [subprocess.Popen([sys.executable, '-m', 'pytest', *options, *files],
                                cwd=TESTS.parent, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
               for files in shards()]
  relays = [threading.Thread(target=_relay, args=(process, f'[{i}]'))
            for i, process in enumerate(processes, 1)]
  for relay in relays:
    relay.start()
  try:
    statuses = [process.wait() for process in processes]
  except KeyboardInterrupt:
    for process in processes:
      process.terminate()
    return 130
  for relay in relays:
    relay.join()
  failed = [i for i, status in enumerate(statuses, 1) if status != 0]
  verdict = f'failed in process {failed} (exit statuses {statuses})' if failed else 'passed'
  print(f'Test suite {verdict}: {time.perf_counter() - start:.0f} s in all.', flush=True)
  return 1 if failed else 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
