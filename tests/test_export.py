"""`python -m ran_jax.export` of the tiny trained digits run: predict, `ran_jax.models.load` and
the serialised function run by a process that imports only JAX and NumPy agree; a damaged or
partial export, or one of another format version, is refused with one line."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from jax import export as jax_export
from test_no_tensorflow import site_without
from trained_digits import run_tool, trained, write_png
from training_jobs import ROOT

from ran_jax import export, predict
from ran_jax.models import ExportError, exported, load


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  return trained(tmp_path_factory)


@pytest.fixture(scope='module')
def export_dir(run, tmp_path_factory):
  """The run exported with its soft masks, from its work directory alone."""
  out = tmp_path_factory.mktemp('export')
  export.export(None, str(run.workdir), str(out), masks=True)
  return out


def test_the_command_line_writes_an_export(run, tmp_path, capsys):
  status, out, err = run_tool(export, [f'--workdir={run.workdir}', f'--out={tmp_path}'], capsys)
  assert status == 0, err
  assert out.startswith(f'Wrote {tmp_path}: attention56_cifar of step 6 (10 classes, 8px '
                        '1-channel uint8 input), inference.jax for cpu, cuda, tpu.')
  assert sorted(os.listdir(tmp_path)) == ['inference.jax', 'model.json', 'weights.npz']


def digits(count: int) -> np.ndarray:
  """uint8 8x8 grey images at the network's input size."""
  return np.random.default_rng(3).integers(0, 256, (count, 8, 8, 1)).astype(np.uint8)


def test_predict_load_and_the_serialised_function_agree(run, export_dir, tmp_path, capsys):
  images = digits(3)
  files = [str(write_png(tmp_path / f'{i}.png', image[..., 0])) for i, image in enumerate(images)]
  status, out, err = run_tool(predict, [f'--workdir={run.workdir}', '--json', *files], capsys)
  assert status == 0, err
  predicted = [[(entry['class'], entry['probability']) for entry in result['top5']]
               for result in json.loads(out)]

  model, variables, preprocess = load(str(export_dir))
  probabilities = np.asarray(jax.nn.softmax(model.apply(variables, preprocess(images),
                                                        train=False)))
  loaded = [[(int(i), float(row[i])) for i in np.argsort(-row, kind='stable')[:5]]
            for row in probabilities]

  np.save(tmp_path / 'images.npy', images)
  view = site_without(tmp_path, ('flax', 'ran_jax', 'tensorflow', 'tensorflow_datasets'))
  env = {**os.environ, 'PYTHONPATH': str(view)}
  for module in ('flax', 'ran_jax'):  # that process cannot import them
    probe = subprocess.run([sys.executable, '-S', '-c', f'import {module}'], env=env,
                           cwd=tmp_path, capture_output=True, text=True, check=False)
    assert f"No module named '{module}'" in probe.stderr
  served = subprocess.run([sys.executable, '-S', str(ROOT / 'examples' / 'run_exported.py'),
                           str(export_dir), str(tmp_path / 'images.npy')], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, check=True)
  names = json.loads((export_dir / 'model.json').read_text())['class_names']
  serialised = [[(names.index(entry.rsplit(' ', 1)[0]), float(entry.rsplit(' ', 1)[1]))
                 for entry in line.split(', ')] for line in served.stdout.splitlines()]

  for ways in zip(predicted, loaded, serialised, strict=True):
    assert [i for i, _ in ways[0]] == [i for i, _ in ways[1]] == [i for i, _ in ways[2]]
    np.testing.assert_allclose([p for _, p in ways[1]], [p for _, p in ways[0]], atol=1e-5)
    np.testing.assert_allclose([p for _, p in ways[2]], [p for _, p in ways[0]], atol=1e-5)


def test_the_export_describes_the_run(run, export_dir):
  description = exported.read_description(str(export_dir))
  assert description['step'] == run.results['step'] == description['eval_results']['step']
  assert description['input'] == {'image_size': 8, 'channels': 1, 'recipe': 'small',
                                  'dtype': 'uint8'}
  assert description['class_names'] == [str(i) for i in range(10)]
  assert [mask['name'] for mask in description['masks']] == ['stage1/module1']
  function = jax_export.deserialize(bytearray((export_dir / 'inference.jax').read_bytes()))
  assert function.platforms == ('cpu', 'cuda', 'tpu')
  probabilities, (mask,) = function.call(digits(2))
  assert probabilities.shape == (2, 10) and mask.shape == (2, *description['masks'][0]['shape'])


@pytest.mark.parametrize('damage, message', [
    ('no model.json', 'model.json is missing: give a directory written by python -m '
                      'ran_jax.export'),
    ('truncated weights', 'weights.npz cannot be read'),
    ('missing array', 'weights.npz lacks 1 arrays (params/classifier/kernel, ...)'),
    ('other version', "model.json is of export format 99; this ran_jax reads format 1"),
])
def test_a_damaged_or_other_version_export_is_refused_in_one_line(export_dir, tmp_path, damage,
                                                                 message):
  copy = tmp_path / 'export'
  copy.mkdir()
  for name in os.listdir(export_dir):
    (copy / name).write_bytes((export_dir / name).read_bytes())
  if damage == 'no model.json':
    os.remove(copy / 'model.json')
  elif damage == 'truncated weights':
    (copy / 'weights.npz').write_bytes((export_dir / 'weights.npz').read_bytes()[:1000])
  elif damage == 'missing array':
    with np.load(export_dir / 'weights.npz') as stored:
      arrays = {name: stored[name] for name in stored.files if name != 'params/classifier/kernel'}
    np.savez(copy / 'weights.npz', **arrays)
  else:
    description = json.loads((copy / 'model.json').read_text())
    (copy / 'model.json').write_text(json.dumps({**description, 'format_version': 99}))
  with pytest.raises(ExportError) as error:
    load(str(copy))
  assert message in str(error.value) and '\n' not in str(error.value)
