"""The experiment catalogue: every config of `configs/` with its variants, and the row of the
paper's tables each reproduces (listed by `python -m ran_jax.configs`).

A config file either has one experiment (its `PAPER_RESULT`) or several, chosen with a
variant argument: `--config=configs/cifar_arl_nal.py:attention92,nal` calls
`get_config('attention92,nal')`; its `VARIANTS` maps each variant to the paper's result.
"""

import dataclasses
import importlib
import pathlib
import sys
from collections.abc import Iterator
from types import ModuleType

import jax
import jax.numpy as jnp
import ml_collections

from ran_jax.data import sources
from ran_jax.experiments.network import build_model, model_overrides
from ran_jax.models import count_params

PACKAGE = 'configs'


@dataclasses.dataclass(frozen=True)
class Experiment:
  """One runnable row: a config file with an optional variant."""
  file: str
  variant: str | None
  config: ml_collections.ConfigDict
  paper_result: str

  @property
  def flag(self) -> str:
    """The --config flag that selects this experiment."""
    return f'--config={self.file}' + (f':{self.variant}' if self.variant else '')


def default_directory() -> pathlib.Path:
  """`./configs` when run from a checkout, else the `configs/` beside the installed package."""
  local = pathlib.Path.cwd() / PACKAGE
  if (local / 'base.py').is_file():
    return local
  return pathlib.Path(__file__).resolve().parents[2] / PACKAGE


def import_config_module(directory: pathlib.Path, stem: str) -> ModuleType:
  """Imports `configs.<stem>` from `directory` (whose parent goes on sys.path)."""
  root = str(directory.resolve().parent)
  if root not in sys.path:
    sys.path.insert(0, root)
  return importlib.import_module(f'{PACKAGE}.{stem}')


def experiments(directory: pathlib.Path | None = None) -> Iterator[Experiment]:
  """Every experiment of every config file in `directory`, in file order then table order."""
  directory = directory or default_directory()
  if not (directory / 'base.py').is_file():
    raise FileNotFoundError(f'{directory} holds no experiment configs (no base.py); run from '
                            'the repository root or pass --configs_dir.')
  for path in sorted(directory.glob('*.py')):
    if path.stem in ('__init__', 'base'):
      continue
    module = import_config_module(directory, path.stem)
    if not hasattr(module, 'get_config'):
      continue
    file = f'{PACKAGE}/{path.name}'
    variants = getattr(module, 'VARIANTS', None)
    if variants is None:
      yield Experiment(file, None, module.get_config(), getattr(module, 'PAPER_RESULT', '-'))
      continue
    for variant, result in variants.items():
      yield Experiment(file, variant, module.get_config(variant), result)


def describe_model(config: ml_collections.ConfigDict) -> str:
  """The preset name and the architecture fields the config changes."""
  changed = {key: value for key, value in model_overrides(config).items()
             if (key, value) not in (('remat', 'none'), ('remat_policy', 'nothing'))}
  name = config.model.name or 'from the images'
  return ' '.join([name, *(f'{key}={value}' for key, value in changed.items())])


def describe_data(config: ml_collections.ConfigDict) -> str:
  """The dataset, with its label noise if any."""
  if config.get('label_noise', 0):
    return f'{config.dataset}, {config.label_noise:.0%} label noise'
  return config.dataset


def param_count(config: ml_collections.ConfigDict) -> int | None:
  """Parameters of the config's model for its dataset (traced, nothing computed); None when
  the data decides the network (a folder of images)."""
  source = sources.source_of(config)
  if source.sizes_from_data:
    return None
  facts = source.planning_facts()
  model = build_model(config, facts.num_classes)
  images = jax.ShapeDtypeStruct((1, config.image_size, config.image_size, facts.channels),
                                jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), images)
  return count_params(variables['params'])
