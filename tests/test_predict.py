"""`python -m ran_jax.predict` and the shared restore on a tiny trained digits network: the
top-5 against a direct `model.apply`, --json, any image size and mode, the one-line errors."""

import json
import os
import re
import shutil
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
import tensorflow as tf
from PIL import Image
from trained_digits import error_line, run_tool, trained, write_png
from training_jobs import ROOT, job_env

from ran_jax import predict
from ran_jax.data import builders, images, preprocess
from ran_jax.data import sources
from ran_jax import inference_model
from ran_jax.train import build


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  return trained(tmp_path_factory)


@pytest.fixture(scope='module')
def eval_digit(run):
  """The first digit of the eval split, its 8x8 uint8 pixels, and the pipeline."""
  pipeline = sources.source_of(run.config).open()
  dataset, _ = pipeline.eval_dataset()
  batch = next(iter(dataset.as_numpy_iterator()))
  return batch['image'][0], pipeline


@pytest.fixture(scope='module')
def loaded(run):
  return inference_model.load_for_inference(run.config, str(run.workdir))


def test_loader_restores_the_checkpoints_variables(run, loaded):
  saved = ocp.StandardCheckpointer().restore(run.workdir / 'checkpoints' / '6' / 'state')
  assert loaded.step == run.results['step'] == 6
  for key in ('params', 'batch_stats'):
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(loaded.variables[key]),
                 saved[key])
  assert loaded.class_names == tuple(str(i) for i in range(10))
  assert (loaded.channels, loaded.image_size, loaded.recipe) == (1, 8, 'small')


def test_top5_are_the_sorted_softmax_of_the_network(run, loaded, eval_digit, tmp_path, capsys):
  pixels, pipeline = eval_digit
  image = write_png(tmp_path / 'digit.png', pixels[..., 0])
  status, out, err = run_tool(predict, [*run.tool_flags(), '--json', str(image)], capsys)
  assert status == 0, err
  (result,) = json.loads(out)
  batch = {'image': pixels[None], 'crop': np.zeros((1, 3), np.int32)}  # as eval batches
  logits = loaded.model.apply(loaded.variables, pipeline.normalizer()(batch), train=False)
  probabilities = np.asarray(jax.nn.softmax(logits[0]))
  order = np.argsort(-probabilities)[:5]
  assert result['image'] == str(image)
  assert [entry['class'] for entry in result['top5']] == order.tolist()
  assert [entry['name'] for entry in result['top5']] == [str(i) for i in order]
  np.testing.assert_allclose([entry['probability'] for entry in result['top5']],
                             probabilities[order], rtol=1e-5, atol=1e-7)


def test_any_size_and_mode_one_line_per_image(run, eval_digit, tmp_path, capsys):
  """A 20x13 RGB image for the 8x8 grey network: grey, then a bilinear resize to 8x8."""
  rgb = np.random.default_rng(0).integers(0, 256, (13, 20, 3))
  files = [write_png(tmp_path / 'rgb.png', rgb), write_png(tmp_path / 'digit.png',
                                                           eval_digit[0][..., 0])]
  status, out, err = run_tool(predict, [*run.tool_flags(), *map(str, files)], capsys)
  assert status == 0, err
  lines = out.splitlines()
  assert [line.split(': ')[0] for line in lines] == list(map(str, files))
  for line in lines:
    entries = line.split(': ', 1)[1].split(', ')
    probabilities = [float(entry.split()[1]) for entry in entries]
    assert len(entries) == 5 and probabilities == sorted(probabilities, reverse=True)
  grey = np.asarray(Image.fromarray(rgb.astype(np.uint8)).convert('L'), np.float32)
  expected = tf.image.resize(grey[..., None], (8, 8), method='bilinear').numpy()
  np.testing.assert_array_equal(
      images.eval_pixels(images.read_image(str(files[0]), 1), 'small', 8), expected)


@pytest.mark.parametrize('case', ['no checkpoint', 'missing file', 'not an image', 'too small'])
def test_errors_are_one_line_and_exit_1(case, run, tmp_path, capsys):
  image = write_png(tmp_path / 'ok.png', np.zeros((8, 8)))
  workdir = None
  if case == 'no checkpoint':
    workdir, expected = tmp_path / 'empty', f'no checkpoint in {tmp_path / "empty"}'
  elif case == 'missing file':
    image, expected = tmp_path / 'nothing.png', 'nothing.png: no such file'
  elif case == 'not an image':
    image = tmp_path / 'notes.png'
    image.write_text('not an image')
    expected = 'notes.png could not be read as an image'
  else:
    image, expected = write_png(tmp_path / 'tiny.png', np.zeros((1, 9))), 'tiny.png is 9x1'
  status, _, err = run_tool(predict, [*run.tool_flags(workdir), str(image)], capsys)
  assert expected in error_line(status, err)


def test_workdir_alone_predicts_without_its_dataset(run, eval_digit, tmp_path, capsys,
                                                    monkeypatch):
  """The run's record holds what inference needs (the 'small' recipe's mean image included):
  its config names a data_dir where nothing is prepared, and no dataset may be opened."""
  workdir = shutil.copytree(run.workdir, tmp_path / 'run')
  recorded = json.loads((workdir / 'run.json').read_text())
  recorded['config']['data_dir'] = str(tmp_path / 'no_data')
  (workdir / 'run.json').write_text(json.dumps(recorded))
  monkeypatch.setattr(builders, 'make_builder', lambda *a: pytest.fail('a dataset was opened'))
  monkeypatch.setattr(build, 'build_training',  # only params and batch_stats are read
                      lambda *a, **k: pytest.fail('an optimizer and schedule were built'))
  image = write_png(tmp_path / 'digit.png', eval_digit[0][..., 0])
  status, out, err = run_tool(predict, [f'--workdir={workdir}', str(image)], capsys)
  assert status == 0, err
  _, expected, _ = run_tool(predict, [*run.tool_flags(), str(image)], capsys)
  assert out == expected and not (tmp_path / 'no_data').exists()


def test_a_run_without_a_record_needs_its_config(run, eval_digit, tmp_path, capsys):
  """Work directories written before runs recorded themselves: --config as before."""
  workdir = shutil.copytree(run.workdir, tmp_path / 'run')
  for name in ('run.json', 'normalizer.npz'):
    os.remove(workdir / name)
  image = write_png(tmp_path / 'digit.png', eval_digit[0][..., 0])
  status, _, err = run_tool(predict, [f'--workdir={workdir}', str(image)], capsys)
  assert f'{workdir} has no run.json' in error_line(status, err) and '--config' in err
  status, out, err = run_tool(predict, [*run.tool_flags(workdir), str(image)], capsys)
  assert status == 0 and out.startswith(f'{image}: '), err


def test_image_paths_are_checked_before_the_network_is_loaded(tmp_path, capsys):
  """Named at once, even where no run is (the work directory is not looked at)."""
  status, _, err = run_tool(predict, [f'--workdir={tmp_path / "none"}', 'missing.png'], capsys)
  assert 'missing.png: no such file' in error_line(status, err)
  status, _, err = run_tool(predict, [f'--workdir={tmp_path / "none"}', str(tmp_path)], capsys)
  assert f'{tmp_path} is not a file' in error_line(status, err)


def test_no_image_is_a_usage_error(run, capsys):
  status, _, err = run_tool(predict, run.tool_flags(), capsys)
  assert status == 2 and err.strip().startswith('error: give one or more IMAGE files')


def predict_process(run, image) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, '-m', 'ran_jax.predict', *run.tool_flags(), str(image)],
                        cwd=ROOT, env=job_env(), capture_output=True, text=True, timeout=300,
                        check=False)


def test_real_process_prints_its_result_and_nothing_on_stderr(run, eval_digit, tmp_path):
  """No library's start-up lines either (job_env makes TensorFlow print its own)."""
  image = write_png(tmp_path / 'digit.png', eval_digit[0][..., 0])
  result = predict_process(run, image)
  assert (result.returncode, result.stderr) == (0, '')
  assert re.fullmatch(rf'{image}: (\d \d\.\d{{4}}, ){{4}}\d \d\.\d{{4}}\n', result.stdout)


def test_real_process_prints_one_error_line(run, tmp_path):
  """An image below the network's 2 pixels (min_input_size)."""
  image = write_png(tmp_path / 'small.png', np.zeros((1, 1, 3)))
  result = predict_process(run, image)
  assert 'Traceback' not in result.stderr
  line = error_line(result.returncode, result.stderr)
  assert 'small.png is 1x1 pixels' in line and 'at least 2x2' in line
  assert result.stdout == '' and result.stderr.strip() == line


def test_decoded_eval_crop_is_the_jpeg_paths():
  """`imagenet_eval` and `imagenet_eval_decoded` cut the same window; the decoded path's
  pixels are the crop of the whole decoded image, resized and rounded to uint8."""
  rng = np.random.default_rng(1)
  for height, width in ((57, 81), (300, 211), (41, 41)):
    window = preprocess.eval_window(tf.constant(height), tf.constant(width), 32).numpy()
    side = int(32 / 64 * min(height, width))
    assert window.tolist() == [(height - side + 1) // 2, (width - side + 1) // 2, side, side]
    pixels = rng.integers(0, 256, (height, width, 3)).astype(np.uint8)
    top, left = window[:2]
    expected = tf.image.resize(pixels[top:top + side, left:left + side], (32, 32)).numpy()
    decoded = preprocess.imagenet_eval_decoded(tf.constant(pixels), 32).numpy()
    assert decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, np.clip(np.round(expected), 0, 255))
    jpeg = tf.io.encode_jpeg(pixels, quality=95)
    from_jpeg = preprocess.imagenet_eval(jpeg, 32).numpy()
    decoded = preprocess.imagenet_eval_decoded(tf.io.decode_jpeg(jpeg, channels=3), 32)
    assert from_jpeg.shape == (32, 32, 3)
    assert from_jpeg.dtype == np.uint8
    assert np.abs(from_jpeg.astype(float) - decoded.numpy()).mean() < 2.0  # libjpeg's crop edge
