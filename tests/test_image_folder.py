"""Training on a folder of images: preparation, the split, fine-tuning, predict, bad folders.

The folder is made here from real images: the embedded digits written as PNG files in class
folders (examples/digits_folder.py, as the README's example does), plus images of other
sizes and modes and a file that is not an image. The fine-tuned runs start from the shared
tiny digits run (10 classes) with 3 classes of their own.
"""

import collections
import json
import os
import shutil
import subprocess
import sys

import logging

import jax
import numpy as np
import optax
import tensorflow_datasets as tfds
import pytest
from PIL import Image
from test_train import shrink
from trained_digits import error_line, run_tool, trained
from training_jobs import QUICK_FIELDS, ROOT, TINY_FLAGS

from configs import image_folder as folder_config
from examples.digits_folder import write_digits
from ran_jax import predict, visualize
from ran_jax.data import image_folder
from ran_jax.data import pipeline as pipeline_lib
from ran_jax.data.folder_listing import (FolderError, FolderOptions, fingerprint, list_folder,
                                         split, split_for_validation)
from ran_jax.train import build, init_from, loop, optim
from ran_jax.workdir import run_record

CLASSES = ('one', 'two', 'zero')  # the class folders' names, sorted
PER_CLASS = 12
STEPS = 4


def make_folder(root, per_class: int = PER_CLASS, digits=(0, 1, 2)):
  """Digits as PNG files, plus images of other sizes and modes and a file that is no image."""
  write_digits(str(root), per_class, digits)
  rng = np.random.default_rng(0)
  Image.fromarray(rng.integers(0, 256, (10, 12), np.uint8), 'L').save(root / 'one' / 'wide.jpg')
  Image.fromarray(rng.integers(0, 65535, (9, 9)).astype(np.uint16)).save(root / 'one' / 'deep.png')
  Image.fromarray(rng.integers(0, 256, (8, 8, 2), np.uint8), 'LA').save(root / 'two' / 'alpha.png')
  (root / 'two' / 'notes.txt').write_text('not an image')
  (root / 'zero' / '.hidden.png').write_bytes(b'ignored')
  return root


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
  return make_folder(tmp_path_factory.mktemp('images'))


def folder_run_config(folder_path, data_dir, **fields):
  config = folder_config.get_config()
  return shrink(config, **{'folder': str(folder_path), 'data_dir': data_dir, **QUICK_FIELDS,
                           'num_train_steps': STEPS, 'log_every_steps': 2,
                           'eval_every_steps': 100, 'checkpoint_every_steps': 100, **fields})


@pytest.fixture(scope='module')
def source(tmp_path_factory):
  return trained(tmp_path_factory)  # the tiny digits run: 10 classes


@pytest.fixture(scope='module')
def finetuned(folder, source, tmp_path_factory):
  """A run on the folder, fine-tuned from the digits run with a frozen backbone, straight to
  step 4 (with its log, and how often it built its network and optimizer)."""
  data_dir = str(tmp_path_factory.mktemp('folder_tfds'))
  workdir = str(tmp_path_factory.mktemp('finetuned'))

  def config(**fields):
    return folder_run_config(folder, data_dir, init_from=str(source.workdir), freeze='backbone',
                             **fields)

  built = collections.Counter()

  def counted(module, name):
    real = getattr(module, name)
    def call(*args, **kwargs):
      built[name] += 1
      return real(*args, **kwargs)
    return call

  with _captured_log() as lines, pytest.MonkeyPatch.context() as patch:
    for module, name in ((build, 'build_model'), (build, 'abstract_variables'),
                         (optim, 'make_optimizer')):
      patch.setattr(module, name, counted(module, name))
    results = loop.train_and_evaluate(config(), workdir)
  return workdir, results, config, lines, built


class _captured_log:
  """The messages logged at INFO or above inside the block (caplog is per test function)."""

  def __enter__(self) -> list[str]:
    lines: list[str] = []
    self.root = logging.getLogger()
    self.level = self.root.level
    self.handler = logging.Handler(logging.INFO)
    self.handler.emit = lambda record: lines.append(record.getMessage())
    self.root.addHandler(self.handler)
    self.root.setLevel(logging.INFO)
    return lines

  def __exit__(self, *exc) -> None:
    self.root.removeHandler(self.handler)
    self.root.setLevel(self.level)


def test_split_is_stratified_seeded_and_the_same_in_another_process(folder):
  listing = list_folder(str(folder))
  assert listing.classes == CLASSES
  train, validation = split(listing, FolderOptions(str(folder)))
  for name in CLASSES:
    files = listing.train[name]
    assert len(validation[name]) == max(1, round(0.1 * len(files)))
    assert sorted(train[name] + validation[name]) == files
  assert split(list_folder(str(folder)), FolderOptions(str(folder))) == (train, validation)
  other_seed = split(listing, FolderOptions(str(folder), split_seed=1))[1]
  assert other_seed != validation
  kept, held = split_for_validation(['b.png', 'a.png'], 0, 0.9, 0)  # one is always kept
  assert len(kept) == len(held) == 1 and sorted(kept + held) == ['a.png', 'b.png']
  code = ('import json, sys; from ran_jax.data.folder_listing import *; '
          f'print(json.dumps(split(list_folder({str(folder)!r}), '
          f'FolderOptions({str(folder)!r}))[1]))')
  out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True,
                       check=True, env=dict(os.environ, PYTHONHASHSEED='123')).stdout
  assert json.loads(out) == validation


def _bad_folder(base, case: str) -> tuple[str, str]:
  """(folder, text of the error) of each bad folder."""
  root = base / case.replace(' ', '_')
  root.mkdir()
  if case == 'missing':
    return str(root / 'nothing'), 'does not exist'
  if case == 'no class folders':
    (root / 'loose.png').write_bytes(b'')
    return str(root), 'has no class folders'
  if case == 'one class':
    write_digits(str(root), 3, (0,))
    return str(root), "one class folder only ('zero')"
  if case == 'empty class':
    write_digits(str(root), 3, (0,))
    (root / 'one').mkdir()
    return str(root), "the class folder 'one' in"
  if case == 'no readable image':
    write_digits(str(root), 3, (0,))
    (root / 'one').mkdir()
    (root / 'one' / 'a.jpg').write_text('not a jpeg')
    return str(root), "the class folder 'one' in " + str(root) + ' has no image Pillow can read'
  if case == 'one image in a class':
    write_digits(str(root), 3, (0,))
    write_digits(str(root), 1, (1,))
    return str(root), 'holding out a validation image per class needs at least 2'
  if case == 'split classes differ':
    write_digits(str(root / 'train'), 3, (0, 1))
    write_digits(str(root / 'val'), 3, (0, 2))
    return str(root), "only in train: ['one']; only in val: ['two']"
  raise ValueError(case)


@pytest.mark.parametrize('case', ['missing', 'no class folders', 'one class', 'empty class',
                                  'no readable image', 'one image in a class',
                                  'split classes differ'])
def test_bad_folders_are_refused_with_what_to_do(case, tmp_path):
  path, expected = _bad_folder(tmp_path, case)
  with pytest.raises(FolderError) as error:
    image_folder.load(FolderOptions(path), str(tmp_path / 'tfds'))
  assert expected in str(error.value) and '\n' not in str(error.value)
  assert not (tmp_path / 'tfds').exists()  # nothing was prepared


def test_split_folder_is_used_as_split_and_a_changed_folder_prepared_again(tmp_path):
  root = tmp_path / 'split'
  write_digits(str(root / 'train'), 3, (3, 4))
  write_digits(str(root / 'validation'), 2, (3, 4))
  data_dir, lines = str(tmp_path / 'tfds'), []
  first = image_folder.load(FolderOptions(str(root)), data_dir, report=lines.append)
  splits = first.builder.info.splits
  assert (splits['train'].num_examples, splits['validation'].num_examples) == (6, 4)
  assert first.builder.info.features['label'].names == ['four', 'three']
  assert first.recipe == 'small' and first.default_image_size == 8
  assert any(line.startswith('Preparing 6 training and 4 validation images') for line in lines)
  lines.clear()
  again = image_folder.load(FolderOptions(str(root)), data_dir, report=lines.append)
  assert again.builder.data_dir == first.builder.data_dir
  assert not any(line.startswith('Preparing') for line in lines)
  three = root / 'train' / 'three'
  shutil.copy(three / sorted(os.listdir(three))[0], three / 'copy.png')  # one more 'three'
  changed = image_folder.load(FolderOptions(str(root)), data_dir, report=lines.append)
  assert changed.builder.data_dir != first.builder.data_dir
  assert changed.builder.info.splits['train'].num_examples == 7
  assert any('the folder changed since it was last prepared: 1 files added, 0 removed, 0 '
             'rewritten' in line for line in lines), lines


@pytest.mark.parametrize('target', ['..', '.', '../..'])
def test_a_link_loop_is_skipped_and_named_in_a_warning(target, tmp_path, caplog):
  root = tmp_path / 'images'
  write_digits(str(root), 3, (0, 1))
  plain = list_folder(str(root))
  (root / 'one' / 'loop').symlink_to(target, target_is_directory=True)  # the folder, itself, above
  listing = list_folder(str(root))
  assert (listing.classes, listing.train, listing.entries) == (
      plain.classes, plain.train, plain.entries)
  options = FolderOptions(str(root))
  assert fingerprint(listing, options) == fingerprint(plain, options)  # the same prepared name
  with caplog.at_level(logging.INFO):
    prepared = image_folder.load(options, str(tmp_path / 'tfds'))
  splits = prepared.builder.info.splits
  assert splits['train'].num_examples + splits['validation'].num_examples == 6
  warned = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING
            and 'one/loop' in record.getMessage()]
  assert len(warned) == 1 and warned[0].startswith('Skipping 1 folder link'), caplog.text
  assert len(warned[0]) < 300 and 'one/loop/' not in warned[0]


def test_links_to_files_and_to_folders_elsewhere_are_followed(tmp_path):
  root, elsewhere = tmp_path / 'images', tmp_path / 'elsewhere'
  write_digits(str(root), 3, (0, 1))
  write_digits(str(elsewhere), 2, (2,))  # elsewhere/two/*.png
  two = sorted(os.listdir(elsewhere / 'two'))
  own = {name: sorted(os.listdir(root / name)) for name in ('one', 'zero')}
  (root / 'one' / 'more').symlink_to(elsewhere / 'two', target_is_directory=True)
  (root / 'zero' / 'also').symlink_to('../../elsewhere', target_is_directory=True)  # holds two/
  (root / 'zero' / 'single.png').symlink_to(elsewhere / 'two' / two[0])
  (root / 'three').symlink_to(elsewhere / 'two', target_is_directory=True)  # a class folder
  listing = list_folder(str(root))
  assert listing.classes == ('one', 'three', 'zero')
  assert listing.train['one'] == sorted([f'one/{name}' for name in own['one']] +
                                        [f'one/more/{name}' for name in two])
  assert listing.train['three'] == [f'three/{name}' for name in two]
  assert listing.train['zero'] == sorted([f'zero/{name}' for name in own['zero']] +
                                         [f'zero/also/two/{name}' for name in two] +
                                         ['zero/single.png'])
  assert len(listing.entries) == 3 + 2 + 2 + 3 + 2 + 1


def test_fine_tuned_run_loads_matching_variables_and_logs_them(finetuned, source):
  workdir, results, _, lines, built = finetuned
  # Matching the other run's variables and building the optimizer of the loaded ones traced
  # the network once and built one optimizer.
  assert built == {'build_model': 1, 'abstract_variables': 1, 'make_optimizer': 1}
  record = init_from.read_record(workdir)
  step, variables, _ = init_from.read_source(str(source.workdir))
  head = ('params/classifier/bias', 'params/classifier/kernel')
  assert record.step == step and record.skipped == head and record.initialised == head
  assert set(record.loaded) == set(variables) - set(head) and len(record.loaded) > 50
  logged = [line for line in lines if line.startswith('Initialised from')]
  assert len(logged) == 1 and f'loaded {len(record.loaded)} variables' in logged[0]
  assert 'skipped 2 of its variables: params/classifier/bias, params/classifier/kernel' in logged[0]
  # The folder's file that is no image is skipped and counted; its hidden file is not read.
  assert any(line.startswith('Skipping 1 of 40 files that are not images Pillow reads: '
                             'two/notes.txt') for line in lines), lines
  saved = run_record.read(workdir)
  assert saved.class_names == CLASSES and saved.channels == 1
  # One validation image held out of each class's 12 to 14 readable ones.
  assert saved.config.image_size == saved.config.eval_image_size == 8
  assert results['num_examples'] == 3


def test_fine_tuned_run_resumes_bit_identically_training_its_classifier_only(
    finetuned, source, tmp_path):
  workdir, straight, config, _, _ = finetuned
  loop.train_and_evaluate(config(num_train_steps=2), str(tmp_path))
  _, halfway, _ = init_from.read_source(str(tmp_path))
  assert loop.train_and_evaluate(config(), str(tmp_path)) == straight
  _, before, _ = init_from.read_source(str(source.workdir))
  _, after, _ = init_from.read_source(workdir)
  params = [path for path in after if path.startswith('params/')]
  frozen = [path for path in params if not path.startswith('params/classifier/')]
  assert len(frozen) == len(params) - 2
  assert all(np.array_equal(after[path], before[path]) for path in frozen)
  assert not np.array_equal(after['params/classifier/kernel'],
                            halfway['params/classifier/kernel'])


def test_resuming_with_other_class_folders_is_refused(finetuned, folder, tmp_path):
  workdir, _, config, _, _ = finetuned
  copy = shutil.copytree(workdir, tmp_path / 'run')
  more = shutil.copytree(folder, tmp_path / 'more')
  write_digits(str(more), 3, (3,))  # a fourth class, 'three'
  with pytest.raises(ValueError, match=r"the classes are now \['one', 'three', 'two', "
                     r"'zero'\], but this run started with \['one', 'two', 'zero'\]"):
    loop.train_and_evaluate(config(folder=str(more)), str(copy))
  assert run_record.read(str(copy)).class_names == CLASSES  # what predict reads is kept


def test_param_groups_freeze_the_backbone_and_scale_loaded_parameters():
  params = {'stem_conv': {'kernel': np.ones(2, np.float32)},
            'stage1': {'kernel': np.ones(2, np.float32)},
            'classifier': {'kernel': np.ones(2, np.float32)}}
  grads = jax.tree.map(np.ones_like, params)
  config = folder_config.get_config()
  config.weight_decay, config.momentum = 0.0, 0.0

  def update(groups):
    tx = optim.make_optimizer(config, optax.constant_schedule(1.0), groups)
    return jax.tree.map(lambda u: float(u[0]), tx.update(grads, tx.init(params), params)[0])

  plain = update(None)
  assert plain == update(optim.ParamGroups(frozenset({'stage1/kernel'})))  # nothing apart
  scaled = update(optim.ParamGroups(frozenset({'stage1/kernel'}), loaded_lr_scale=0.1))
  frozen = update(optim.ParamGroups(frozenset(), freeze_backbone=True))
  for module in params:
    assert scaled[module]['kernel'] == pytest.approx(
        plain[module]['kernel'] * (0.1 if module == 'stage1' else 1.0))
    assert frozen[module]['kernel'] == (plain[module]['kernel'] if module == 'classifier' else 0.0)


def test_predict_prints_the_folders_class_names_from_the_workdir_alone(finetuned, folder, capsys,
                                                                       tmp_path):
  workdir, _, _, _, _ = finetuned
  image = str(folder / 'zero' / min(name for name in os.listdir(folder / 'zero')
                                     if name.endswith('.png') and not name.startswith('.')))
  status, out, err = run_tool(predict, [f'--workdir={workdir}', image], capsys)
  assert status == 0, err
  names = [entry.rsplit(' ', 1)[0] for entry in out.strip().split(': ', 1)[1].split(', ')]
  assert sorted(names) == list(CLASSES)
  # The run recorded its folder: its eval images are read from there.
  out_file = tmp_path / 'masks.png'
  status, out, err = run_tool(visualize, [f'--workdir={workdir}', '--num_examples=2',
                                          f'--out={out_file}'], capsys)
  assert status == 0 and out_file.exists() and out.startswith(f'Wrote {out_file}: 2 rows'), err


def test_init_from_needs_a_checkpoint_of_the_same_stem(folder, source, tmp_path):
  colour = shutil.copytree(folder, tmp_path / 'colour')
  Image.fromarray(np.full((8, 8, 3), [200, 10, 10], np.uint8), 'RGB').save(
      colour / 'one' / 'red.jpg')
  data_dir = str(tmp_path / 'tfds')
  config = folder_run_config(colour, data_dir, init_from=str(source.workdir))
  with pytest.raises(init_from.InitFromError, match='is a network of another stem '
                     r'\(its stem kernel is \(3, 3, 1, 8\), this one \(3, 3, 3, 8\)'):
    loop.train_and_evaluate(config, str(tmp_path / 'run'))
  assert run_record.read(str(tmp_path / 'run')).channels == 3  # colour: RGB
  (tmp_path / 'empty').mkdir()
  config = folder_run_config(colour, data_dir, init_from=str(tmp_path / 'empty'))
  with pytest.raises(init_from.InitFromError, match='holds no checkpoint'):
    loop.train_and_evaluate(config, str(tmp_path / 'run2'))



def test_large_images_take_the_imagenet_layout_with_measured_statistics(tmp_path):
  rng = np.random.default_rng(1)
  for name, colour in (('cats', (200, 60, 60)), ('dogs', (60, 60, 200))):
    (tmp_path / 'images' / name).mkdir(parents=True)
    for i in range(3):
      pixels = np.clip(rng.normal(colour, 20, (90 + 10 * i, 120, 3)), 0, 255).astype(np.uint8)
      Image.fromarray(pixels).save(tmp_path / 'images' / name / f'{i}.jpg')
  config = pipeline_lib.InputConfig(
      dataset='image_folder', global_batch_size=4, eval_batch_size=2, image_size=None,
      eval_image_size=40, data_dir=str(tmp_path / 'tfds'),
      folder=FolderOptions(str(tmp_path / 'images')))
  pipeline = pipeline_lib.InputPipeline(config)
  assert (pipeline.spec.recipe, pipeline.image_size, pipeline.eval_image_size) == (
      'imagenet', 224, 40)
  assert pipeline.class_names == ('cats', 'dogs') and pipeline.channels == 3
  train = next(iter(tfds.as_numpy(pipeline.train_dataset())))
  evaluation = next(iter(tfds.as_numpy(pipeline.eval_dataset()[0])))
  assert train['image'].shape == (4, 224, 224, 3) and train['image'].dtype == np.uint8
  assert evaluation['image'].shape == (2, 40, 40, 3)
  normalizer = pipeline.normalizer()
  # Of the 4 training images, 2 red (200, 60, 60) and 2 blue (60, 60, 200), noise 20.
  np.testing.assert_allclose(normalizer.mean, [130, 60, 130], atol=5)
  np.testing.assert_allclose(normalizer.std, [70, 15, 70], atol=10)
