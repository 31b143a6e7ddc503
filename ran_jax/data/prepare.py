"""Prepares a supported dataset in a TFDS data directory, ahead of training.

    python3 -m ran_jax.data.prepare --dataset=imagenet2012 --data_dir=DIR [--manual_dir=DIR]

ImageNet is built from ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar, which must be in
the manual directory (`<data_dir>/downloads/manual/` unless --manual_dir is given); CIFAR is
downloaded by TFDS; digits ship with scikit-learn. A dataset already prepared is left as it is.
"""

from absl import app, flags, logging

from ran_jax.data.datasets import DATASETS

FLAGS = flags.FLAGS
flags.DEFINE_string('dataset', None, f'One of: {", ".join(sorted(DATASETS))}.')
flags.DEFINE_string('data_dir', None, 'TFDS data directory (default: ~/tensorflow_datasets).')
flags.DEFINE_string('manual_dir', None,
                    'Directory of the manually downloaded files (default: '
                    '<data_dir>/downloads/manual).')
flags.DEFINE_integer('num_shards', None, 'Files per split (default: TFDS chooses by size).',
                     lower_bound=1)
flags.mark_flags_as_required(['dataset'])


def parse_flags(argv: list[str]) -> list[str]:
  """Parses flags; a missing or ill-typed flag ends with one clear line."""
  try:
    return FLAGS(argv)
  except flags.Error as error:
    raise SystemExit(f'error: {error} (see --helpfull)') from None


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise SystemExit(f'error: unexpected arguments: {" ".join(argv[1:])}')
  if not FLAGS['verbosity'].present:  # the lines printed here report; TFDS's INFO lines repeat
    logging.set_verbosity(logging.WARNING)
  from ran_jax.data.builders import DatasetUnavailableError, prepare  # after flag parsing
  from ran_jax.data.datasets import get_spec
  try:
    prepare(get_spec(FLAGS.dataset), FLAGS.data_dir, FLAGS.manual_dir, FLAGS.num_shards,
            report=lambda line: print(line, flush=True))
  except (ValueError, DatasetUnavailableError) as error:
    raise SystemExit(f'error: {error}') from None


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
