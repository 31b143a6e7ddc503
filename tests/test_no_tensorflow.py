"""The trainer on synthetic data runs where TensorFlow, tfds and clu are not installed (a bare
GPU host measuring the trainer, benchmarks/gpu_check.sh): one real run in a Python that
cannot see them. The soft masks of `ran_jax.masks.forward`, offered to any JAX project, import
there too."""

import json
import os
import pathlib
import re
import site
import subprocess
import sys

from training_jobs import TINY_FLAGS

ABSENT = ('tensorflow', 'tensorflow_datasets', 'clu', 'tensorboard', 'keras', 'tf_keras')
REPO = pathlib.Path(__file__).resolve().parents[1]


def site_without(tmp_path: pathlib.Path, absent: tuple[str, ...]) -> pathlib.Path:
  """A folder of links to every installed package but those named in `absent`."""
  view = tmp_path / 'site'
  view.mkdir()
  for entry in pathlib.Path(site.getsitepackages()[0]).iterdir():
    package = entry.name.split('-')[0].split('.')[0].lower()
    if package not in absent and not entry.name.endswith('.pth'):
      (view / entry.name).symlink_to(entry)
  return view


def test_synthetic_training_imports_no_tensorflow_tfds_or_clu(tmp_path):
  view = site_without(tmp_path, ABSENT)
  env = {**os.environ, 'PYTHONPATH': f'{view}{os.pathsep}{REPO}', 'HOME': str(tmp_path)}
  probe = subprocess.run([sys.executable, '-S', '-c', 'import tensorflow'], env=env,
                         capture_output=True, text=True, check=False)
  assert 'No module named' in probe.stderr  # the Python of this test cannot see them
  masks = subprocess.run([sys.executable, '-S', '-c', 'import ran_jax.masks.forward'], env=env,
                         cwd=REPO, capture_output=True, text=True, check=False)
  assert masks.returncode == 0, masks.stderr[-2000:]
  workdir = tmp_path / 'run'
  done = subprocess.run(
      [sys.executable, '-S', '-m', 'ran_jax.main', '--config=configs/fake_data_benchmark.py',
       f'--workdir={workdir}', '--config.model.name=attention56_cifar', *TINY_FLAGS,
       '--config.image_size=16', '--config.eval_image_size=16', '--config.num_train_steps=3',
       '--config.log_every_steps=1'],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  results = json.loads((workdir / 'eval_results.json').read_text())
  assert results['step'] == 3 and results['num_examples'] == 8
  assert 'metrics go to the log only' in done.stderr
  assert re.search(r'Step 3/3 \(100\.0%\): loss [\d.]+, top-1 [\d.]+%, [\d,]+ images/s, ETA ',
                   done.stderr), done.stderr[-3000:]
  assert any(p.name == '3' for p in (workdir / 'checkpoints').iterdir())
