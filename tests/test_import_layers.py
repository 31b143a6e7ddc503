"""The package's layers import only downwards: models <- data <- masks <- train <- the
top-level modules (the command-line tools and the inference loader).

Read from the source (every import statement, inside functions too), so that an import that
runs up a layer fails here even where it is made lazily."""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / 'ran_jax'
TOP_LEVEL = tuple(f'ran_jax.{path.stem}' for path in PACKAGE.glob('*.py')
                  if path.stem != '__init__')
# layer: the modules its modules may not import (and their submodules).
FORBIDDEN = {'models': ('ran_jax.data', 'ran_jax.masks', 'ran_jax.train', *TOP_LEVEL),
             'data': ('ran_jax.masks', 'ran_jax.train', *TOP_LEVEL),
             'masks': ('ran_jax.train', *TOP_LEVEL),
             'train': TOP_LEVEL}


def imported_modules(path: pathlib.Path) -> set[str]:
  """The absolute names of the modules that `path` imports (`from a import b` gives a.b too)."""
  names = set()
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      names.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      names.add(node.module)
      names.update(f'{node.module}.{alias.name}' for alias in node.names)
  return names


def test_the_checker_sees_lazy_imports(tmp_path):
  module = tmp_path / 'lazy.py'
  module.write_text('def f():\n  from ran_jax.train import loop\n  import ran_jax.data.pipeline\n')
  assert {'ran_jax.train', 'ran_jax.train.loop', 'ran_jax.data.pipeline'} <= imported_modules(
      module)


@pytest.mark.parametrize('layer', sorted(FORBIDDEN))
def test_no_import_runs_up_a_layer(layer):
  offences = []
  for path in sorted((PACKAGE / layer).rglob('*.py')):
    for name in sorted(imported_modules(path)):
      if any(name == up or name.startswith(up + '.') for up in FORBIDDEN[layer]):
        offences.append(f'{path.relative_to(PACKAGE.parent)} imports {name}')
  assert not offences, '\n'.join(offences)
