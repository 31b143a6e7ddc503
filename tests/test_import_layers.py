"""The package's rooms import only downwards, in the order of `ROOMS` (the README's layout
section lists them): each room may import the rooms before it, never one after it; the
top-level modules (the command-line tools and the inference loader) may import any room.
And no module outside `ran_jax/data/` decides anything by comparing a dataset's or a recipe's
name: the data source objects (`ran_jax.data.sources`) answer.

Read from the source (every import statement and comparison, inside functions too), so that
an import that runs up a layer fails here even where it is made lazily."""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / 'ran_jax'
TOP_LEVEL = tuple(f'ran_jax.{path.stem}' for path in PACKAGE.glob('*.py')
                  if path.stem != '__init__')
ROOMS = ('process', 'models', 'data', 'masks', 'experiments', 'workdir', 'reporting', 'train',
         'planning')
# room: the modules its modules may not import (and their submodules).
FORBIDDEN = {room: (*(f'ran_jax.{later}' for later in ROOMS[index + 1:]), *TOP_LEVEL)
             for index, room in enumerate(ROOMS)}
# What only `ran_jax/data/` may compare: the config's dataset and recipe fields, a normaliser's
# recipe, and the names of datasets and recipes.
NAMED_FIELDS = ('dataset', 'recipe', 'image_layout')
NAMES = ('image_folder', 'fake', 'small', 'imagenet', 'auto', 'cifar10', 'cifar100', 'digits',
         'imagenet2012', 'FOLDER', 'NAME', 'DATASETS')


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


def test_every_room_is_listed():
  rooms = {path.name for path in PACKAGE.iterdir() if (path / '__init__.py').is_file()}
  assert rooms == set(ROOMS)


@pytest.mark.parametrize('room', ROOMS)
def test_no_import_runs_up_a_layer(room):
  offences = []
  for path in sorted((PACKAGE / room).rglob('*.py')):
    for name in sorted(imported_modules(path)):
      if any(name == up or name.startswith(up + '.') for up in FORBIDDEN[room]):
        offences.append(f'{path.relative_to(PACKAGE.parent)} imports {name}')
  assert not offences, '\n'.join(offences)


def name_comparisons(path: pathlib.Path) -> list[str]:
  """The comparisons in `path` that involve a dataset or recipe field or name, as source."""
  def named(node: ast.expr) -> bool:
    if isinstance(node, ast.Attribute):
      return node.attr in NAMED_FIELDS or node.attr in NAMES
    if isinstance(node, ast.Name):
      return node.id in NAMED_FIELDS or node.id in NAMES
    if isinstance(node, ast.Constant):
      return node.value in NAMES
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
      return (node.func.attr == 'get' and bool(node.args) and
              isinstance(node.args[0], ast.Constant) and node.args[0].value in NAMED_FIELDS)
    return False

  def stem(node: ast.expr) -> bool:  # the network's stem kind ('imagenet' or 'cifar') is its own
    return getattr(node, 'attr', getattr(node, 'id', None)) == 'stem'

  tree = ast.parse(path.read_text(), str(path))
  return [ast.unparse(node) for node in ast.walk(tree) if isinstance(node, ast.Compare)
          and not any(stem(side) for side in (node.left, *node.comparators))
          and any(named(side) for side in (node.left, *node.comparators))]


def test_the_checker_sees_name_comparisons(tmp_path):
  module = tmp_path / 'branches.py'
  module.write_text('def f(config, spec, n):\n  if config.dataset == FOLDER: pass\n'
                    '  if spec.recipe != "small": pass\n  if config.get("dataset") in x: pass\n'
                    '  if n == 3: pass\n')
  assert name_comparisons(module) == ['config.dataset == FOLDER', "spec.recipe != 'small'",
                                      "config.get('dataset') in x"]


def test_only_the_data_room_compares_dataset_or_recipe_names():
  offences = [f'{path.relative_to(PACKAGE.parent)}: {comparison}'
              for path in sorted(PACKAGE.rglob('*.py')) if 'data' not in path.relative_to(
                  PACKAGE).parts[:1]
              for comparison in name_comparisons(path)]
  assert not offences, '\n'.join(offences)
