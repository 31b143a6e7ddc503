"""Throughput of the ImageNet preprocessing (`ran_jax.data.preprocess`) on the host CPU.

    python benchmarks/input_pipeline.py --image-size 224 --num-jpegs 256 --images 2048

Encodes synthetic JPEGs of ImageNet's typical size (random sizes around 460x350, or 500x375;
quality 90; textured so they compress like photographs: ~105 KB mean, ~120 KB at 500x375), then
times a tf.data pipeline (repeat, map with the `imagenet_train` or `imagenet_eval` recipe,
batch, prefetch) on one core and on all cores. The training pipelines run without tf.data's
autotuning model (`ran_jax.data.pipeline.without_autotune_model`); `--autotune=both` measures
all cores with and without it, alternately, to show what that costs.
Decoding and resizing are measured; reading files and parsing records are not.

One core: the map runs with num_parallel_calls=1 in a private tf.data thread pool of one thread
with intra-op parallelism 1, and (on Linux) every thread of the process is pinned to one CPU
while it runs. Each result reports cpu_s (user + sys of the process) next to wall_s.

Prints one JSON line per measurement, then a summary line.
"""

import argparse
import contextlib
import json
import math
import os
import time
from collections.abc import Iterator

import numpy as np
import tensorflow as tf
from cli_args import positive_int

from ran_jax.data import preprocess
from ran_jax.data.pipeline import without_autotune_model

_OCTAVES = (256, 128, 64, 32, 16, 8, 4, 2)  # cell sizes of the noise layers, in pixels


def synthetic_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
  """A uint8 HxWx3 image with photograph-like statistics.

  Sums bilinear-upsampled random grids from coarse to fine (colourful at coarse scales, mostly
  luminance at fine ones), sharpens region edges with tanh, and adds mild pixel noise.
  """
  detail = rng.uniform(-0.6, -0.2)  # per-image spread of fine detail (and so of file size)
  image = np.zeros((height, width, 3), np.float32)
  for cell in _OCTAVES:
    rows, cols = -(-height // cell) + 1, -(-width // cell) + 1
    chroma = 0.6 if cell >= 64 else 0.15
    grid = rng.normal(size=(rows, cols, 3)).astype(np.float32)
    grid = (1 - chroma) * grid[..., :1] + chroma * grid
    layer = tf.image.resize(grid[None], (rows * cell, cols * cell), method='bilinear')[0]
    image += (cell / 256) ** detail * layer.numpy()[:height, :width]
  image = np.tanh(1.5 * (image - image.mean()) / (image.std() + 1e-6))
  image = 128 + 72 * (image - image.mean()) / (image.std() + 1e-6)
  image += rng.normal(scale=4.0, size=image.shape)
  return np.clip(np.round(image), 0, 255).astype(np.uint8)


def synthetic_jpegs(num: int, fixed_size: bool, seed: int = 0) -> list[bytes]:
  """`num` quality-90 JPEGs: 500x375, or random sizes in [400, 500] x [300, 400] (w x h)."""
  rng = np.random.default_rng(seed)
  jpegs = []
  for _ in range(num):
    height, width = (375, 500) if fixed_size else (rng.integers(300, 401), rng.integers(400, 501))
    image = synthetic_image(rng, int(height), int(width))
    jpegs.append(tf.io.encode_jpeg(image, quality=90).numpy())
  return jpegs


def make_dataset(jpegs: list[bytes], recipe: str, image_size: int, batch_size: int,
                 one_core: bool, autotune_model: bool = False) -> tf.data.Dataset:
  """Infinite batches of preprocessed images; per-example seeds come from a counter."""
  def preprocess_fn(image_bytes: tf.Tensor, index: tf.Tensor) -> tf.Tensor:
    if recipe == 'train':
      return preprocess.imagenet_train(image_bytes, tf.stack([tf.constant(0, tf.int64), index]),
                                       image_size)
    return preprocess.imagenet_eval(image_bytes, image_size)

  ds = tf.data.Dataset.zip((tf.data.Dataset.from_tensor_slices(jpegs).repeat(),
                            tf.data.Dataset.counter(dtype=tf.int64)))
  ds = ds.map(preprocess_fn, num_parallel_calls=1 if one_core else tf.data.AUTOTUNE,
              deterministic=True)
  ds = ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
  options = tf.data.Options()
  options.threading.private_threadpool_size = 1 if one_core else _num_cores()
  if one_core:
    options.threading.max_intra_op_parallelism = 1
  ds = ds.with_options(options)
  return ds if autotune_model else without_autotune_model(ds)


def _num_cores() -> int:
  if hasattr(os, 'sched_getaffinity'):
    return len(os.sched_getaffinity(0))
  return os.cpu_count() or 1


@contextlib.contextmanager
def _pinned_to_one_cpu(enabled: bool) -> Iterator[None]:
  """Pins every existing thread of this process (and so the threads they start) to one CPU."""
  if not enabled or not os.path.isdir('/proc/self/task') or not hasattr(os, 'sched_setaffinity'):
    yield
    return
  original = os.sched_getaffinity(0)

  def pin_all(cpus: set[int]) -> None:
    for tid in os.listdir('/proc/self/task'):
      with contextlib.suppress(OSError):  # a thread may exit meanwhile
        os.sched_setaffinity(int(tid), cpus)

  pin_all({min(original)})
  try:
    yield
  finally:
    pin_all(original)


def measure(jpegs: list[bytes], recipe: str, image_size: int, one_core: bool, images: int,
            batch_size: int = 64, warmup_batches: int = 4, autotune_model: bool = False) -> dict:
  """Images/second of one recipe after `warmup_batches` untimed batches."""
  num_batches = max(1, math.ceil(images / batch_size))
  with _pinned_to_one_cpu(one_core):
    iterator = iter(make_dataset(jpegs, recipe, image_size, batch_size, one_core,
                                 autotune_model))
    for _ in range(warmup_batches):
      next(iterator)
    cpu_start, start = os.times(), time.perf_counter()
    for _ in range(num_batches):
      next(iterator)  # returns once the batch's tensors are ready
    wall_s = time.perf_counter() - start
    cpu_end = os.times()
    del iterator
  cpu_s = (cpu_end.user - cpu_start.user) + (cpu_end.system - cpu_start.system)
  cores = 1 if one_core else _num_cores()
  rate = num_batches * batch_size / wall_s
  return {'recipe': recipe, 'cores': str(cores), 'autotune_model': autotune_model,
          'images_per_s': round(rate, 1),
          'images_per_s_per_core': round(rate / cores, 1), 'image_size': image_size,
          'images': num_batches * batch_size, 'wall_s': round(wall_s, 2),
          'cpu_s': round(cpu_s, 2), 'cpu_per_wall': round(cpu_s / wall_s, 2)}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--image-size', type=positive_int, default=224)
  parser.add_argument('--num-jpegs', type=positive_int, default=256, help='distinct source JPEGs')
  parser.add_argument('--fixed-size', action='store_true', help='all JPEGs 500x375')
  parser.add_argument('--images', type=positive_int, default=2048, help='timed images, all cores')
  parser.add_argument('--images-one-core', type=positive_int, default=None,
                      help='timed images, one core (default: --images / 4)')
  parser.add_argument('--batch-size', type=positive_int, default=64)
  parser.add_argument('--recipes', default='train,eval')
  parser.add_argument('--cores', default='1,all')
  parser.add_argument('--autotune', choices=('off', 'both'), default='off',
                      help="tf.data's autotuning model: off (as trained), or both, alternately")
  parser.add_argument('--rounds', type=positive_int, default=1, help='repeats of every measure')
  args = parser.parse_args()
  recipes = args.recipes.split(',')
  core_modes = args.cores.split(',')
  if not set(recipes) <= {'train', 'eval'} or not set(core_modes) <= {'1', 'all'}:
    parser.error('--recipes takes train,eval and --cores takes 1,all')

  start = time.perf_counter()
  jpegs = synthetic_jpegs(args.num_jpegs, args.fixed_size)
  mean_bytes = float(np.mean([len(jpeg) for jpeg in jpegs]))
  shapes = np.array([tf.io.extract_jpeg_shape(jpeg).numpy()[:2] for jpeg in jpegs])
  source_size = '500x375' if args.fixed_size else (
      f'{shapes[:, 1].mean():.0f}x{shapes[:, 0].mean():.0f} mean')
  print(f'{len(jpegs)} JPEGs ({source_size}), mean {mean_bytes / 1e3:.1f} KB, '
        f'made in {time.perf_counter() - start:.1f} s', flush=True)

  models = (False, True) if args.autotune == 'both' else (False,)
  results = []
  for _ in range(args.rounds):
    for recipe in recipes:
      for mode in core_modes:
        one_core = mode == '1'
        images = args.images
        if one_core:
          images = args.images_one_core or max(args.batch_size, args.images // 4)
        for autotune_model in models if not one_core else (False,):
          result = measure(jpegs, recipe, args.image_size, one_core, images, args.batch_size,
                           autotune_model=autotune_model)
          result.update(mean_jpeg_bytes=round(mean_bytes), source_size=source_size)
          results.append(result)
          print(json.dumps(result), flush=True)
  print('summary: ' + '; '.join(
      f"{r['recipe']} {r['cores']} core(s){' autotune model' if r['autotune_model'] else ''} "
      f"{r['images_per_s']:.0f} images/s ({r['images_per_s_per_core']:.0f}/core)"
      for r in results))


if __name__ == '__main__':
  main()
