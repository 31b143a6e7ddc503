"""The smoke set that `tests/compat.py` runs in each environment it builds (the declared minimum
versions, the newest ones on Python 3.12 and 3.13): every module imports, and a user's session
of real processes on 8 CPU devices (a short digits run, its resume, a run fine-tuned from it,
predict, visualize, an export run by a script that imports only JAX and NumPy, and the plan
command's CPU path) succeeds with nothing on stderr but its own lines.

The processes run with every deprecation warning shown; none may come from JAX, Flax, optax,
Orbax or this package. Not part of the main suite (run it with `python3 -m pytest
tests/compat_smoke.py`).
"""

import importlib
import json
import pathlib
import pkgutil
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest
from training_jobs import LOG_LINE, ROOT, digits_flags, job_env

import ran_jax

WATCHED = ('ran_jax', 'jax', 'jaxlib', 'flax', 'optax', 'orbax')
DEPRECATIONS = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)
# Python's warning lines: "path:line: Category: message", then the source line, indented.
WARNING_LINE = re.compile(r'(.+?):\d+: (\w*Warning): ')


def from_watched_package(path: str) -> bool:
  parts = pathlib.Path(path).parts
  return any(package in parts for package in WATCHED)


def test_every_module_imports_without_deprecations():
  names = [module.name for module in pkgutil.walk_packages(ran_jax.__path__, 'ran_jax.')
           if not module.name.endswith('__main__')]
  assert len(names) > 50
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    for name in names:
      importlib.import_module(name)
  ours = [f'{w.filename}:{w.lineno}: {w.category.__name__}: {w.message}' for w in caught
          if issubclass(w.category, DEPRECATIONS) and from_watched_package(w.filename)]
  assert not ours, '\n'.join(ours)


def tool(module: str, *args: str, allowed: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
  """Runs `python -m MODULE ARGS` with deprecations shown; checks its success and its stderr:
  log lines, lines starting with one of `allowed`, and deprecations of other packages only."""
  env = job_env(PYTHONWARNINGS=','.join(f'always::{w.__name__}' for w in DEPRECATIONS))
  result = subprocess.run([sys.executable, '-m', module, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  strays, source_line = [], False
  for line in result.stderr.splitlines():
    warning = WARNING_LINE.match(line)
    if warning:
      assert not from_watched_package(warning[1]), line
    elif not (LOG_LINE.match(line) or line.startswith(allowed) or
              (source_line and line.startswith(' '))):
      strays.append(line)
    source_line = bool(warning)
  assert not strays, '\n'.join(strays[:20])
  return result


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  """A digits run of 4 steps on the 8 CPU devices, saved at steps 2 and 4, keeping a moving
  average of the weights (which the tools then use)."""
  workdir, data_dir = tmp_path_factory.mktemp('run'), tmp_path_factory.mktemp('tfds')
  flags = digits_flags(workdir, data_dir, num_train_steps=4, checkpoint_every_steps=2,
                       ema_decay=0.9)
  result = tool('ran_jax.main', *flags)
  assert 'Step 4/4 (100.0%)' in result.stderr and ' 8 devices, ' in result.stderr
  results = json.loads((workdir / 'eval_results.json').read_text())
  assert results['step'] == 4 and 'ema_top1_accuracy' in results
  tool_flags = [*flags[:3], *[flag for flag in flags if flag.startswith('--config.model.')]]
  return workdir, flags, tool_flags


def test_resume(run):
  """Resumed with each update over 2 micro-batches."""
  workdir, flags, _ = run
  result = tool('ran_jax.main', *flags, '--config.num_train_steps=6',
                '--config.grad_accum_steps=2')
  assert 'Restored checkpoint of step 4' in result.stderr and 'Step 6/6' in result.stderr
  assert 'in 2 micro-batches of 2' in result.stderr
  assert json.loads((workdir / 'eval_results.json').read_text())['step'] == 6


def test_fine_tune_from_the_run(run, tmp_path):
  """A new run that starts from the run's average (init_from)."""
  workdir, flags, _ = run
  flags = [f'--workdir={tmp_path}' if flag.startswith('--workdir=') else flag for flag in flags]
  result = tool('ran_jax.main', *flags, '--config.num_train_steps=2',
                f'--config.init_from={workdir}')
  assert 'kept a moving average of its weights; it is what is loaded' in result.stderr
  assert 'Initialised from' in result.stderr and 'Step 2/2' in result.stderr


def test_predict(run):
  image = ROOT / 'docs' / 'digit.png'
  result = tool('ran_jax.predict', *run[2], str(image))
  assert re.fullmatch(rf'{image}: (\d \d\.\d{{4}}, ){{4}}\d \d\.\d{{4}}\n', result.stdout)
  assert not LOG_LINE.search(result.stderr)  # a tool whose output is its result logs nothing


def test_visualize(run, tmp_path):
  out = tmp_path / 'masks.png'
  tool('ran_jax.visualize', *run[2], '--num_examples=2', f'--out={out}')
  assert out.read_bytes().startswith(b'\x89PNG')


def test_export_and_its_function(run, tmp_path):
  out = tmp_path / 'export'
  tool('ran_jax.export', f'--workdir={run[0]}', f'--out={out}')
  images = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 1)).astype(np.uint8)
  np.save(tmp_path / 'images.npy', images)
  served = subprocess.run([sys.executable, str(ROOT / 'examples' / 'run_exported.py'), str(out),
                           str(tmp_path / 'images.npy')], capture_output=True, text=True,
                          timeout=300, check=True)
  assert len(served.stdout.splitlines()) == 3


def test_plan_on_this_hosts_devices(run):
  result = tool('ran_jax.plan', *[flag for flag in run[2] if not flag.startswith('--workdir')],
                '--topology=local', '--capacity_gib=1', '--json', allowed=('compiling ',))
  plan = json.loads(result.stdout)
  assert plan['fits'] and plan['train']['per_device_batch'] == 8  # 64 over 8 devices
