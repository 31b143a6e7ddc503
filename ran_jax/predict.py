"""Classifies image files with a trained network: the top-5 classes of each.

    python -m ran_jax.predict --workdir=DIR IMAGE [IMAGE ...]

Restores the latest checkpoint in DIR with the config the run recorded there (a run started
before runs recorded their config needs --config=CONFIG.py as it was trained with; --config
may also set fields that change neither the network nor its input), reads no dataset, and
prints one line per image:
the image, then its five most probable classes (names from the dataset) with their
probabilities. With --json, prints a JSON list instead, one entry per image:
{"image": FILE, "top5": [{"class": INDEX, "name": NAME, "probability": P}, ...]}.

Images are any file Pillow reads, of any size and mode, preprocessed as the run's
evaluation does (the same loading as `ran_jax.visualize`). A run that kept a moving average of
its weights (config.ema_decay) predicts with it; --noema uses the weights themselves.

Exit status: 0 when done; 1 on an error (one line on stderr says what to do: no checkpoint, an
image that can't be read or is too small, ...); 2 on a bad command line.
"""

import json

from absl import app

from ran_jax import cli
from ran_jax.cli import FLAGS

cli.define_workdir_flag()
cli.define_ema_flag()

EXAMPLE = 'python3 -m ran_jax.predict --workdir=/tmp/ran_digits IMAGE.png'

cli.define_json_flag('Print a JSON list of {image, top5: [{class, name, probability}]} '
                     'instead of one line per image.')


def parse_flags(argv: list[str]) -> list[str]:
  """Parses flags; the positional arguments are the image files."""
  return cli.parse_flags(argv, EXAMPLE, arguments='IMAGE files', config_required=False)


def predictions(paths: list[str]) -> list[dict]:
  """The top-5 classes of each image file, as printed by --json."""
  from ran_jax.inference_model import load_files, load_for_inference
  from ran_jax.masks.forward import make_forward, top_classes
  loaded = load_for_inference(FLAGS.config, FLAGS.workdir, average=FLAGS.ema)
  inputs = load_files(paths, loaded)
  forward = make_forward(loaded.model, loaded.normalizer)
  probabilities, _ = forward(loaded.variables, inputs.batch)
  return [{'image': path,
           'top5': [{'class': index, 'name': name, 'probability': probability}
                    for index, name, probability in top_classes(
                        probs, loaded.class_names)]}
          for path, probs in zip(paths, probabilities.tolist(), strict=True)]


def main(argv: list[str]) -> None:
  cli.check_image_paths(argv[1:])
  cli.warnings_only()
  from ran_jax.data.pipeline import DatasetUnavailableError, hide_accelerators_from_tensorflow
  from ran_jax.process.errors import TrainingError
  hide_accelerators_from_tensorflow()
  try:
    results = predictions(argv[1:])
  except (ValueError, FileNotFoundError, NotADirectoryError, DatasetUnavailableError,
          TrainingError) as error:
    cli.fail(error)
  if FLAGS.json:
    print(json.dumps(results, indent=2), flush=True)
    return
  for result in results:
    classes = ', '.join(f'{entry["name"]} {entry["probability"]:.4f}'
                        for entry in result['top5'])
    print(f'{result["image"]}: {classes}', flush=True)


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
