"""The kinds of data a run trains on, each an object built once from the config: `source_of`.

A `DataSource` answers everything the rest of the package asks about its data: which config
fields it reads, whether the image sizes and the network are left to the data, the image size
it imposes, the input facts without the data (planning) or from a trained
run's directory, and how to open (and, where needed, prepare) it. Outside `ran_jax.data`, no
module compares `config.dataset` or a recipe name: a new kind of source is a subclass here and
an entry in `KINDS`. Imports no TensorFlow (the TFDS kinds import it when they open data).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import jax
import ml_collections
import numpy as np

from ran_jax.data import normalize, synthetic
from ran_jax.data.datasets import (DATASETS, FOLDER, RECIPES, DatasetSpec,
                                   DatasetUnavailableError)
from ran_jax.data.source import InputFacts, InputSource

if TYPE_CHECKING:
  from ran_jax.data.pipeline import InputConfig

# The network of each recipe, for data that leaves the choice to its images.
DEFAULT_NETWORKS = {'small': 'attention56_cifar', 'imagenet': 'attention56'}


class DataSource:
  """One kind of data (see the module docstring), for one config.

  Attributes:
    sizes_from_data: the image sizes and `model.name` may be left unset: the data gives them.
    has_eval_images: its evaluation examples are real images (for mask images).
    native_image_size: the side its images are used at, whatever the config says (None: any).
  """
  sizes_from_data = False
  has_eval_images = True
  native_image_size: int | None = None

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config

  def field_rules(self) -> dict[str, tuple[Callable[[Any], bool], str]]:
    """The config fields only this kind reads: {field: (allows(value), what is allowed)}
    (`ran_jax.experiments.checks` applies them before any data is read)."""
    return {}

  def open(self, *, may_download: bool = True) -> InputSource:
    """The input of this process, prepared first where needed; `may_download` False prepares
    only data that needs no download (embedded data, a folder of images)."""
    raise NotImplementedError

  def planning_facts(self) -> InputFacts:
    """The facts known without the data (numbered class names; the 'small' recipe's mean image
    is zeros: the same program as with the real one). A ValueError where they need the data."""
    raise NotImplementedError

  def trained_run_facts(self, workdir: str) -> InputFacts:
    """The facts of a run in `workdir` that kept no record of them (one started before runs
    recorded themselves): from the data, or from what such a run saved."""
    raise NotImplementedError

  def data_defaults(self, facts: InputFacts) -> dict[str, Any]:
    """Config fields the data decides ({dotted field: value}), applied where they are unset."""
    del facts
    return {}

  def _input_config(self, **extra: Any) -> InputConfig:
    from ran_jax.data.pipeline import InputConfig
    config = self.config
    return InputConfig(
        dataset=config.dataset, global_batch_size=config.batch_size,
        eval_batch_size=config.eval_batch_size, image_size=config.image_size,
        eval_image_size=config.eval_image_size, seed=config.seed, data_dir=config.data_dir,
        shuffle_buffer=config.shuffle_buffer, process_index=jax.process_index(),
        process_count=jax.process_count(), label_noise=config.label_noise,
        label_noise_seed=config.label_noise_seed, **extra)


class TfdsSource(DataSource):
  """A TFDS dataset of `DATASETS`."""

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__(config)
    self.spec: DatasetSpec = DATASETS[config.dataset]
    self.native_image_size = self.spec.image_size

  def open(self, *, may_download: bool = True) -> InputSource:
    from ran_jax.data import builders, pipeline
    pipeline.hide_accelerators_from_tensorflow()
    if not may_download:  # raises, saying how to prepare it, unless prepared or embedded
      builders.load_builder(self.spec, self.config.data_dir,
                            prepare_if_needed=self.spec.embedded)
    return pipeline.InputPipeline(self._input_config(), spec=self.spec)

  def planning_facts(self) -> InputFacts:
    spec, config = self.spec, self.config
    mean = None
    if spec.recipe == 'small':
      size = spec.image_size or config.image_size
      mean = np.zeros((size, size, spec.channels), np.float32)
    return InputFacts(tuple(str(i) for i in range(spec.num_classes)), spec.channels,
                      normalize.for_dataset(spec, mean), config.image_size,
                      config.eval_image_size, spec.num_train_examples)

  def trained_run_facts(self, workdir: str) -> InputFacts:
    """From the dataset: the class names, and the 'small' recipe's mean image of the training
    split (so that dataset must be prepared; an embedded one is, here)."""
    del workdir  # such a run saved nothing of its data
    from ran_jax.data import builders, pipeline
    spec, config = self.spec, self.config
    mean = None
    if spec.recipe == 'imagenet':  # the class names are in the code: no data needed
      builder = builders.make_builder(spec, config.data_dir)
    else:
      try:
        builder = builders.load_builder(spec, config.data_dir, prepare_if_needed=spec.embedded)
      except DatasetUnavailableError as error:
        raise DatasetUnavailableError(
            f'the {spec.tfds_name} network normalises its input with the mean image of the '
            f'training split, so the dataset must be prepared: {error}') from error
      mean = pipeline.mean_image(builder, spec).numpy()
    prepared = builders.is_prepared(builder)
    return InputFacts(
        tuple(builder.info.features['label'].names), builder.info.features['image'].shape[-1],
        normalize.for_dataset(spec, mean), config.image_size, config.eval_image_size,
        pipeline.count_examples(builder, spec.train_split) if prepared else None)


class FolderSource(DataSource):
  """A folder of images, one subfolder per class (`ran_jax.data.image_folder`)."""
  sizes_from_data = True

  def field_rules(self) -> dict[str, tuple[Callable[[Any], bool], str]]:
    def number(value: Any) -> bool:
      return isinstance(value, numbers.Real) and not isinstance(value, bool)

    return {
        'folder': (lambda value: isinstance(value, str) and bool(value),
                   'give the directory of your images, one subfolder per class: '
                   '--config.folder=DIR'),
        'val_fraction': (lambda value: number(value) and 0 < value < 1,
                         'it must be in (0, 1), e.g. 0.1'),
        'split_seed': (lambda value: (isinstance(value, numbers.Integral) and number(value)
                                      and 0 <= value < 2**31),
                       'it must be an integer in [0, 2**31)'),
        'recipe': (lambda value: value in RECIPES, f'choose one of {", ".join(RECIPES)}'),
        'flip': (lambda value: isinstance(value, bool), 'use True or False'),
    }

  def open(self, *, may_download: bool = True) -> InputSource:
    """The folder's images, prepared first if needed (training requires `folder`; tools that
    read a folder run's eval images need it given)."""
    del may_download  # the images are local
    from ran_jax.data import pipeline
    from ran_jax.data.folder_listing import FolderOptions
    config = self.config
    if not config.get('folder'):
      raise ValueError('the eval images of a folder run are read from the folder: give '
                       '--config.folder=DIR, or show image files with --image=FILE')
    pipeline.hide_accelerators_from_tensorflow()
    options = FolderOptions(config.folder, config.val_fraction, config.split_seed,
                            config.recipe, config.flip)
    return pipeline.InputPipeline(self._input_config(folder=options))

  def planning_facts(self) -> InputFacts:
    raise ValueError(f'the {FOLDER} dataset is known only from its images, when a run prepares '
                     'them; here, use a config of the same recipe (configs/cifar.py for '
                     'small images, configs/imagenet_attention56.py for 224-pixel ones)')

  def trained_run_facts(self, workdir: str) -> InputFacts:
    """What the run saved of its images (`dataset.json`)."""
    from ran_jax.data import saved_dataset
    saved = saved_dataset.load(workdir)
    return InputFacts(saved.class_names, saved.spec.channels, saved.normalizer(),
                      saved.image_size, saved.eval_image_size, saved.spec.num_train_examples)

  def data_defaults(self, facts: InputFacts) -> dict[str, Any]:
    """The image sizes the images gave, and the network of their recipe."""
    return {'image_size': facts.image_size, 'eval_image_size': facts.eval_image_size,
            'model.name': DEFAULT_NETWORKS[facts.normalizer.recipe]}


class SyntheticSource(DataSource):
  """Random ImageNet-shaped batches held on the devices (`ran_jax.data.synthetic`)."""
  has_eval_images = False

  def open(self, *, may_download: bool = True) -> InputSource:
    del may_download
    config = self.config
    return synthetic.SyntheticInput(config.batch_size, config.eval_batch_size,
                                    config.image_size, config.eval_image_size, config.seed)

  def planning_facts(self) -> InputFacts:
    return synthetic.facts(self.config.image_size, self.config.eval_image_size)

  def trained_run_facts(self, workdir: str) -> InputFacts:
    del workdir
    return self.planning_facts()


KINDS: dict[str, type[DataSource]] = {
    **{name: TfdsSource for name in sorted(DATASETS)}, FOLDER: FolderSource,
    synthetic.NAME: SyntheticSource}


def names() -> list[str]:
  """The values `config.dataset` may take."""
  return list(KINDS)


def source_of(config: ml_collections.ConfigDict) -> DataSource:
  """The source `config.dataset` names; a ValueError listing the others."""
  kind = KINDS.get(config.dataset)
  if kind is None:
    raise ValueError(f'dataset={config.dataset!r} is not allowed: choose one of '
                     f'{", ".join(names())}')
  return kind(config)
