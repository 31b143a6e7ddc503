"""Builds a fresh virtual environment for each supported version set and runs the smoke set
(tests/compat_smoke.py) in it:

    python3 tests/compat.py [NAME ...]
    python3 tests/compat.py --versions     # what this Python has of the main packages

- `minimum`: Python 3.11 with the declared minimum versions (`ci/minimum-versions.txt`);
- `py3.12`: Python 3.12 with the newest versions, and the `[tpu]` extra (libtpu on a host
  without TPUs must stay quiet);
- `py3.13`: Python 3.13 with the newest versions.

Each environment is installed as the README installs (`pip install -e ".[test]"`, with the
constraints file for `minimum`) into a temporary directory, and the smoke set runs with an
empty home directory. An interpreter that is not on this machine is skipped with a line that
says so. Exit status 1 when any smoke set fails.

To reproduce the minimum environment by hand:
`python3.11 -m venv v && v/bin/pip install -c ci/minimum-versions.txt -e ".[test]"`.
"""

import dataclasses
import glob
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / 'ci' / 'minimum-versions.txt'
# Printed for each environment: what it tested.
PACKAGES = ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'tensorflow-cpu',
            'tensorflow-datasets', 'clu', 'numpy', 'protobuf', 'libtpu')


@dataclasses.dataclass(frozen=True)
class Environment:
  name: str
  python: str  # 'X.Y'
  minimum: bool = False
  extras: str = 'test'


ENVIRONMENTS = (Environment('minimum', '3.11', minimum=True),
                Environment('py3.12', '3.12', extras='test,tpu'),
                Environment('py3.13', '3.13'))


def find_python(version: str) -> str | None:
  """An interpreter of Python `version` that runs: one of pyenv's, or pythonX.Y on PATH."""
  pyenv = os.path.expanduser(os.environ.get('PYENV_ROOT', '~/.pyenv'))
  candidates = sorted(glob.glob(f'{pyenv}/versions/{version}.*/bin/python'),
                      reverse=True) + [shutil.which(f'python{version}')]
  for python in filter(None, candidates):
    if subprocess.run([python, '-c', ''], capture_output=True, check=False).returncode == 0:
      return python
  return None


def versions(python: str) -> str:
  """'name version, ...' of PACKAGES as installed for `python`."""
  code = ('import importlib.metadata as m\n'
          f'for name in {PACKAGES!r}:\n'
          '  try: print(name, m.version(name))\n'
          '  except m.PackageNotFoundError: pass\n')
  listed = subprocess.run([python, '-c', code], capture_output=True, text=True, check=True)
  return ', '.join(listed.stdout.splitlines())


def run_smoke_set(environment: Environment, scratch: pathlib.Path) -> bool | None:
  """Installs `environment` in a new venv under `scratch` and runs the smoke set in it; None
  when its interpreter is missing."""
  python = find_python(environment.python)
  if python is None:
    print(f'[{environment.name}] skipped: no Python {environment.python} on this machine '
          f'(neither in $PYENV_ROOT/versions/{environment.python}.* nor a working '
          f'python{environment.python} on PATH)', flush=True)
    return None
  start = time.perf_counter()
  venv = scratch / environment.name
  subprocess.run([python, '-m', 'venv', str(venv)], check=True)
  venv_python = str(venv / 'bin' / 'python')
  install = [venv_python, '-m', 'pip', 'install', '--quiet', '--disable-pip-version-check']
  if environment.minimum:
    install += ['-c', str(CONSTRAINTS)]
  subprocess.run([*install, '-e', f'.[{environment.extras}]'], cwd=ROOT, check=True)
  print(f'[{environment.name}] Python {environment.python}: {versions(venv_python)} '
        f'(installed in {time.perf_counter() - start:.0f} s)', flush=True)
  home = scratch / f'{environment.name}-home'
  home.mkdir()
  env = {key: value for key, value in os.environ.items()
         if key not in ('PYTHONPATH', 'VIRTUAL_ENV', 'JAX_PLATFORMS', 'TF_CPP_MIN_LOG_LEVEL')}
  env.update(HOME=str(home), PIP_CACHE_DIR=os.environ.get(
      'PIP_CACHE_DIR', os.path.expanduser(os.path.join('~', '.cache', 'pip'))))
  result = subprocess.run([venv_python, '-m', 'pytest', '-q', '-p', 'no:cacheprovider',
                           'tests/compat_smoke.py'], cwd=ROOT, env=env, check=False)
  print(f'[{environment.name}] smoke set {"passed" if result.returncode == 0 else "FAILED"} '
        f'in {time.perf_counter() - start:.0f} s with the install', flush=True)
  return result.returncode == 0


def main(names: list[str]) -> int:
  if names == ['--versions']:
    print(f'Python {sys.version.split()[0]}: {versions(sys.executable)}', flush=True)
    return 0
  known = {environment.name: environment for environment in ENVIRONMENTS}
  unknown = [name for name in names if name not in known]
  if unknown:
    print(f'error: unknown environment {", ".join(unknown)}; choose from {", ".join(known)}',
          file=sys.stderr)
    return 2
  chosen = [known[name] for name in names] or list(ENVIRONMENTS)
  with tempfile.TemporaryDirectory(prefix='ran_jax_compat_') as scratch:
    outcomes = {environment.name: run_smoke_set(environment, pathlib.Path(scratch))
                for environment in chosen}
  failed = [name for name, passed in outcomes.items() if passed is False]
  summary = ', '.join(f'{name} {"skipped" if passed is None else "passed" if passed else "failed"}'
                      for name, passed in outcomes.items())
  print(f'Compatibility: {summary}.', flush=True)
  return 1 if failed else 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
