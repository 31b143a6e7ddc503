"""ImageNet from the manual download: the prepare command, missing archives, two training steps.

The archives are tiny fakes in the real layout (tests/fake_datasets.py), prepared by
`python3 -m ran_jax.data.prepare` into 4 train files.
"""

import subprocess
import sys

import fake_datasets
import numpy as np
import pytest
import tensorflow_datasets as tfds
from test_train import shrink

from configs import imagenet_attention56
from ran_jax.data.pipeline import DatasetUnavailableError, InputConfig, InputPipeline
from ran_jax.train import loop


@pytest.fixture(scope='session')
def imagenet_dir(tmp_path_factory):
  return fake_datasets.imagenet(tmp_path_factory)


def test_prepare_command_builds_imagenet_from_the_archives(imagenet_dir):
  builder = tfds.builder('imagenet2012', data_dir=imagenet_dir)
  splits = builder.info.splits
  assert (splits['train'].num_examples, splits['train'].num_shards) == (24, 4)
  assert splits['validation'].num_examples == 8
  names = builder.info.features['label'].names

  def labels(split):
    ds = builder.as_dataset(split=split, decoders={'image': tfds.decode.SkipDecoding()})
    return sorted((ex['file_name'].decode(), names[ex['label']]) for ex in tfds.as_numpy(ds))

  train = labels('train')
  assert {label for _, label in train} == set(fake_datasets.synsets(4))
  assert all(name.startswith(f'{label}_') for name, label in train)
  bundled = tfds.core.tfds_path('datasets/imagenet2012/validation_labels.txt').read_text().split()
  assert [label for _, label in labels('validation')] == bundled[:8]


def test_missing_archive_is_named_with_its_path(tmp_path):
  manual = tmp_path / 'downloads' / 'manual'
  fake_datasets.write_imagenet_archives(str(manual), per_class=1,
                                        archives=(fake_datasets.IMAGENET_ARCHIVES[0],))
  with pytest.raises(DatasetUnavailableError) as error:  # the training path
    InputPipeline(InputConfig('imagenet2012', 8, 8, 32, 32, data_dir=str(tmp_path)))
  message = str(error.value)
  assert (f'ILSVRC2012_img_val.tar is missing from {manual} '
          f'(looked for {manual / "ILSVRC2012_img_val.tar"})') in message
  assert 'ILSVRC2012_img_train.tar is missing' not in message
  run = subprocess.run(
      [sys.executable, '-m', 'ran_jax.data.prepare', '--dataset=imagenet2012',
       f'--data_dir={tmp_path}'], capture_output=True, text=True, check=False)
  assert run.returncode != 0 and 'Traceback' not in run.stderr
  assert run.stderr.strip().splitlines()[-1] == f'error: {message}'


def test_preparation_error_keeps_its_cause(tmp_path):
  manual = tmp_path / 'downloads' / 'manual'
  fake_datasets.write_imagenet_archives(str(manual), num_val=2,
                                        archives=(fake_datasets.IMAGENET_ARCHIVES[1],))
  (manual / 'ILSVRC2012_img_train.tar').write_bytes(b'not a tar archive')
  with pytest.raises(DatasetUnavailableError, match='preparing it failed: ReadError: '):
    InputPipeline(InputConfig('imagenet2012', 8, 8, 32, 32, data_dir=str(tmp_path)))


def test_imagenet_config_trains_two_steps(imagenet_dir, tmp_path):
  """The paper's ImageNet recipe (random-resized crops for training, larger centre crops for
  evaluation) trains a tiny network. The other ImageNet configs differ from this one in the
  network only (test_configs.py builds each)."""
  config = shrink(imagenet_attention56.get_config(), data_dir=imagenet_dir, batch_size=8,
                  eval_batch_size=8, num_train_steps=2, log_every_steps=1, shuffle_buffer=16,
                  image_size=32, eval_image_size=40, dtype='float32')
  results = loop.train_and_evaluate(config, str(tmp_path))
  assert results['step'] == 2 and results['num_examples'] == 8
  assert results['dataset'] == 'imagenet2012' and np.isfinite(results['loss'])
