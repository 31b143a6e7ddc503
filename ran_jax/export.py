"""Writes a trained run as a directory that runs anywhere JAX runs.

    python -m ran_jax.export --workdir=DIR --out=EXPORT_DIR [--masks]

Restores the latest checkpoint of the run in DIR (with the config it recorded there; --config
as for predict) and writes into EXPORT_DIR:
- `weights.npz` and `model.json`: the float32 params and batch_stats in the default variable
  layout (their moving average where the run kept one, config.ema_decay, unless --noema), and
  what rebuilds the network and its input (`ran_jax.models.load(EXPORT_DIR)` -> (model,
  variables, preprocess), importing only JAX, Flax and NumPy);
- `inference.jax`: the whole inference function, uint8 images (N, S, S, C) at the network's
  input size, for any N -> class probabilities (N, classes) (and, with --masks, each attention
  module's soft mask averaged over its channels, (N, h, w), in the order model.json lists),
  serialised with `jax.export` for CPU, CUDA and TPU. A program that imports only JAX and
  NumPy runs it (`examples/run_exported.py`; JAX reads it with the flatbuffers package).

Exit status: 0 when done; 1 on an error (one line on stderr says what to do); 2 on a bad
command line.
"""

import json
import os

from absl import app, flags

from ran_jax import cli
from ran_jax.cli import FLAGS

cli.define_workdir_flag()
cli.define_out_flag('The directory to write the export into.')
cli.define_ema_flag()
flags.DEFINE_bool('masks', False, 'The serialised function also returns the soft masks.')
flags.DEFINE_list('platforms', ['cpu', 'cuda', 'tpu'],
                  'The platforms the serialised function is lowered for.')

EXAMPLE = 'python3 -m ran_jax.export --workdir=/tmp/ran_digits --out=/tmp/ran_digits_export'


def parse_flags(argv: list[str]) -> list[str]:
  """Parses flags; --out is required."""
  argv = cli.parse_flags(argv, EXAMPLE, config_required=False)
  if not FLAGS.out:
    cli.fail(f'--out is required, e.g. {EXAMPLE}', cli.EXIT_USAGE)
  return argv


def normalization(normalizer) -> dict:
  """The arrays of `ran_jax.models.exported.load`'s preprocess: (images / divisor - mean) / std,
  the evaluation normalisation of `normalizer` (an evaluation crop is the centre)."""
  import numpy as np
  divisor, mean, std = normalizer.eval_affine()
  return {'input_divisor': np.float32(divisor), 'input_mean': mean, 'input_std': std}


def export(config, workdir: str, out: str, *, masks: bool = False,
           platforms: tuple[str, ...] = ('cpu', 'cuda', 'tpu'), average: bool = True) -> dict:
  """Writes the export of the run in `workdir` into `out`; its model.json. `average`: the
  moving average of the weights where the run kept one."""
  import jax
  import jax.numpy as jnp
  from jax import export as jax_export

  from ran_jax import inference_model
  from ran_jax.masks import forward as forward_lib
  from ran_jax.models import exported, layout
  from ran_jax.experiments.network import model_overrides
  from ran_jax.train.loop import EVAL_RESULTS
  from ran_jax.train.state import abstract_variables
  loaded = inference_model.load_for_inference(config, workdir, average=average)
  config = loaded.config
  overrides = {**model_overrides(config), 'dtype': config.dtype, 'scan': False, 'remat': 'none'}
  model = loaded.model.clone(scan=False, remat='none')
  size, channels = loaded.image_size, loaded.channels
  like = abstract_variables(model, (size, size, channels))
  variables = {key: loaded.variables[key] for key in ('params', 'batch_stats')}
  if layout.layout_of(variables) != layout.layout_of(like):
    variables = layout.convert(variables, like)
  results_path = os.path.join(workdir, EVAL_RESULTS)
  results = None
  if os.path.exists(results_path):
    with open(results_path, encoding='utf-8') as file:
      results = json.load(file)
  names = []
  description = {
      'model': {'name': config.model.name, 'num_classes': len(loaded.class_names),
                'overrides': overrides},
      'input': {'image_size': size, 'channels': channels, 'recipe': loaded.recipe,
                'dtype': 'uint8'},
      'class_names': list(loaded.class_names), 'step': loaded.step,
      'weights': 'moving average' if loaded.averaged else 'as trained', 'eval_results': results,
      'jax_version': jax.__version__, 'function': exported.FUNCTION,
      'function_platforms': list(platforms), 'masks': []}
  if masks:  # their names and sizes, from the shapes alone
    _, found = jax.eval_shape(
        forward_lib.make_forward(model, lambda batch: batch['image']), like,
        {'image': jax.ShapeDtypeStruct((1, size, size, channels), jnp.float32)})
    names = sorted(found, key=forward_lib.natural_key)
    description['masks'] = [{'name': name, 'shape': list(found[name].shape[1:])}
                            for name in names]
  exported.save(out, description, variables, normalization(loaded.normalizer))
  net, weights, preprocess = exported.load(out)  # the function runs what load gives
  forward = forward_lib.make_forward(net, lambda batch: preprocess(batch['image']))

  def infer(images):
    probabilities, found = forward(weights, {'image': images})
    return (probabilities, tuple(found[name] for name in names)) if masks else probabilities

  batch = jax_export.symbolic_shape('batch')[0]
  spec = jax.ShapeDtypeStruct((batch, size, size, channels), jnp.uint8)
  function = jax_export.export(jax.jit(infer), platforms=platforms)(spec)
  with open(os.path.join(out, exported.FUNCTION), 'wb') as file:
    file.write(function.serialize())
  return description


def main(argv: list[str]) -> None:
  del argv  # checked by parse_flags
  cli.warnings_only()
  from ran_jax.data.pipeline import DatasetUnavailableError, hide_accelerators_from_tensorflow
  from ran_jax.process.errors import TrainingError
  hide_accelerators_from_tensorflow()
  try:
    os.makedirs(FLAGS.out, exist_ok=True)
  except OSError as error:
    cli.fail(f'cannot create --out={FLAGS.out} ({error.strerror or error}); give a writable '
             'directory')
  try:
    description = export(FLAGS.config, FLAGS.workdir, FLAGS.out, masks=FLAGS.masks,
                         platforms=tuple(FLAGS.platforms), average=FLAGS.ema)
  except (ValueError, FileNotFoundError, NotADirectoryError, DatasetUnavailableError,
          TrainingError) as error:
    cli.fail(error)
  except OSError as error:
    cli.fail(f'could not write {FLAGS.out} ({error}); give a writable --out directory')
  averaged = description['weights'] == 'moving average'
  print(f'Wrote {FLAGS.out}: {description["model"]["name"]} of step {description["step"]} '
        f'({"the moving average of its weights, " if averaged else ""}'
        f'{len(description["class_names"])} classes, {description["input"]["image_size"]}px '
        f'{description["input"]["channels"]}-channel uint8 input), inference.jax for '
        f'{", ".join(description["function_platforms"])}'
        f'{" with the soft masks" if FLAGS.masks else ""}.', flush=True)


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
