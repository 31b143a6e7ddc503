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
  from ran_jax.data import builders, saved_dataset, synthetic
  from ran_jax.data.datasets import FOLDER, get_spec
  from ran_jax.masks import forward as forward_lib
  from ran_jax.train import experiment, run_record
  if FLAGS.image is not None:
    loaded = inference_model.load_for_inference(config, workdir)
    files = inference_model.load_files(FLAGS.image, loaded)
    captions = tuple(os.path.basename(path) for path in files.captions)
    return loaded, forward_lib.Inputs(files.batch, files.pixels, captions)
  inference_model.check_has_checkpoint(workdir)  # before the dataset work
  config, record = run_record.resolve(config, workdir)
  if config.dataset == synthetic.NAME:
    raise ValueError(f'the {synthetic.NAME!r} dataset has no eval images; show image files '
                     'with --image=FILE instead of --num_examples')
  if config.dataset == FOLDER and not config.get('folder'):
    raise ValueError('the eval images of a folder run are read from the folder: give '
                     '--config.folder=DIR, or show image files with --image=FILE')
  trained_classes = record.class_names if record is not None else None
  if config.dataset == FOLDER and record is None:  # at the run's sizes (a run it recorded has them)
    saved = saved_dataset.load(workdir)
    trained_classes = saved.class_names
    config = experiment.with_data_defaults(config, recipe=saved.spec.recipe,
                                           image_size=saved.image_size,
                                           eval_image_size=saved.eval_image_size)
  elif config.dataset != FOLDER:  # only an embedded dataset is prepared here (no download)
    spec = get_spec(config.dataset)
    builders.load_builder(spec, config.data_dir, prepare_if_needed=spec.embedded)
  pipeline = experiment.make_input(config)
  if trained_classes is not None and pipeline.class_names != trained_classes:
    raise ValueError(f'the eval split now has the classes {list(pipeline.class_names)}, but the '
                     f'run was trained on {list(trained_classes)}; show image files with '
                     '--image=FILE instead')
  loaded = inference_model.load_for_inference(config, workdir, pipeline=pipeline)
  inputs = forward_lib.first_eval_examples(pipeline, FLAGS.num_examples)
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
  from ran_jax.train.errors import TrainingError
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
        f'{reduced}), from the checkpoint of step {loaded.step}.', flush=True)


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
