"""Shows where the attention modules of a trained network look: a PNG grid of soft masks.

    python -m ran_jax.visualize --workdir=DIR --image=FILE [--image=FILE ...]
    python -m ran_jax.visualize --workdir=DIR --num_examples=N

Restores the latest checkpoint in DIR with the config the run recorded there (a run started
before runs recorded their config needs --config=CONFIG.py as it was trained with; --config
may also set fields that change neither the network nor its input, such as data_dir or
folder for --num_examples), runs the network on the images
and writes DIR/attention.png (or --out): one row per image. First the image, titled with its
top classes and their probabilities; then, for each attention module, its soft mask as a heat
map over the image, titled with the module (stage1/module1, ...) and the mask's value range.
The mask's channels are reduced to one value per position by --reduce (mean or max) and the
map is up-sampled bilinearly to the image. Each map is coloured from its own minimum (dark)
to its own maximum (bright), so colours compare positions within a map, not across maps.

--image takes any file Pillow reads, of any size and mode, preprocessed as the run's
evaluation does (ImageNet: the centre crop and resize; CIFAR, digits: a resize to the
network's input size if needed); --num_examples takes the first N examples of the eval split.
A run that kept a moving average of its weights (config.ema_decay) is shown with it; --noema
shows the weights themselves.

Exit status: 0 when done; 1 on an error (one line on stderr says what to do: no checkpoint, an
image that can't be read or is too small, ...); 2 on a bad command line.
"""

import os
from typing import TYPE_CHECKING

import ml_collections
from absl import app, flags

from ran_jax import cli
from ran_jax.cli import EXIT_USAGE, FLAGS

if TYPE_CHECKING:  # imported when run: they import JAX and TensorFlow
  from ran_jax import inference_model
  from ran_jax.masks import forward as forward_lib

cli.define_workdir_flag()

EXAMPLE = 'python3 -m ran_jax.visualize --workdir=/tmp/ran_digits --num_examples=4'
DEFAULT_OUT = 'attention.png'

flags.DEFINE_multi_string('image', None, 'An image file to show (repeat for more rows).')
flags.DEFINE_integer('num_examples', None, 'Show the first N examples of the eval split.',
                     lower_bound=1)
cli.define_out_flag(f'The PNG file to write (default: WORKDIR/{DEFAULT_OUT}).')
cli.define_ema_flag()
flags.DEFINE_enum('reduce', 'mean', ['mean', 'max'],
                  "How a mask's channels become one value per position.")


def parse_flags(argv: list[str]) -> list[str]:
  """Parses flags; exactly one of --image and --num_examples must be given."""
  argv = cli.parse_flags(argv, EXAMPLE, config_required=False)
  if (FLAGS.image is None) == (FLAGS.num_examples is None):
    cli.fail('give either --image=FILE (repeatable) or --num_examples=N, e.g. ' + EXAMPLE,
             EXIT_USAGE)
  return argv


def _inputs(config: ml_collections.ConfigDict | None, workdir: str
            ) -> tuple['inference_model.InferenceModel', 'forward_lib.Inputs']:
  """(InferenceModel, Inputs) of the images the flags name."""
  from ran_jax import inference_model
  from ran_jax.data import sources
  from ran_jax.masks import forward as forward_lib
  from ran_jax.train import build
  from ran_jax.workdir import run_record
  if FLAGS.image is not None:
    loaded = inference_model.load_for_inference(config, workdir, average=FLAGS.ema)
    files = inference_model.load_files(FLAGS.image, loaded)
    captions = tuple(os.path.basename(path) for path in files.captions)
    return loaded, forward_lib.Inputs(files.batch, files.pixels, captions)
  inference_model.check_has_checkpoint(workdir)  # before the dataset work
  config, record = run_record.resolve(config, workdir)
  source = sources.source_of(config)
  if not source.has_eval_images:
    raise ValueError(f'the {config.dataset!r} dataset has no eval images; show image files '
                     'with --image=FILE instead of --num_examples')
  if record is None and source.sizes_from_data:  # the sizes the run saved (a record has them)
    facts = source.trained_run_facts(workdir)
    config = build.with_data_defaults(config, source.data_defaults(facts), replace=True)
  evaluation = source.open(may_download=False)  # only data that needs no download is prepared
  loaded = inference_model.load_for_inference(config, workdir, average=FLAGS.ema)
  if evaluation.class_names != loaded.class_names:
    raise ValueError(f'the eval split now has the classes {list(evaluation.class_names)}, but '
                     f'the run was trained on {list(loaded.class_names)}; show image files with '
                     '--image=FILE instead')
  inputs = forward_lib.first_eval_examples(evaluation, FLAGS.num_examples)
  if len(inputs.captions) < FLAGS.num_examples:
    raise ValueError(f'--num_examples={FLAGS.num_examples}, but the eval split of '
                     f'{config.dataset} has only {len(inputs.captions)} examples; ask for fewer')
  return loaded, inputs


def main(argv: list[str]) -> None:
  del argv  # checked by parse_flags
  cli.warnings_only()
  from ran_jax.data.pipeline import DatasetUnavailableError, hide_accelerators_from_tensorflow
  from ran_jax.masks import forward as forward_lib
  from ran_jax.masks import grid as grid_lib
  from ran_jax.process.errors import TrainingError
  hide_accelerators_from_tensorflow()
  config, workdir = FLAGS.config, FLAGS.workdir
  cli.check_image_paths(FLAGS.image or [])
  out = FLAGS.out or os.path.join(workdir, DEFAULT_OUT)
  try:
    loaded, inputs = _inputs(config, workdir)
    forward = forward_lib.make_forward(loaded.model, loaded.normalizer, FLAGS.reduce)
    probabilities, masks = forward(loaded.variables, inputs.batch)
    rows = forward_lib.grid_rows(inputs, probabilities, masks, loaded.class_names)
    grid = grid_lib.render(rows, loaded.image_size)
  except (ValueError, FileNotFoundError, NotADirectoryError, DatasetUnavailableError,
          TrainingError) as error:
    cli.fail(error)
  try:
    grid_lib.save_png(grid, out)
  except OSError as error:
    cli.fail(f'could not write {out} ({error}); give a writable --out=FILE.png')
  if not masks:
    print('note: this network has no attention masks (e.g. model.attention=none); the grid '
          'shows only the images and their top classes.', flush=True)
  reduced = f', channels reduced by {FLAGS.reduce}' if masks else ''
  print(f'Wrote {out}: {len(rows)} rows (the image, then {len(masks)} attention masks'
        f'{reduced}), from the checkpoint of step {loaded.step}'
        f'{" (the moving average of its weights)" if loaded.averaged else ""}.', flush=True)


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
