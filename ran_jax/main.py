"""Trains and evaluates a Residual Attention Network.

    python -m ran_jax.main --config=configs/imagenet_attention56.py --workdir=DIR

The logic lives in `ran_jax.train.loop.train_and_evaluate`; this file only parses flags.
Override any config field with `--config.FIELD=VALUE` (e.g. `--config.batch_size=128`).
Rerunning the same command resumes from the latest checkpoint in DIR.
"""

import logging as std_logging

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Experiment config file.', lock_config=True)
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics and eval results.')
flags.DEFINE_bool('distributed', False,
                  'Call jax.distributed.initialize() first (multi-host, e.g. TPU pods).')
flags.mark_flags_as_required(['config', 'workdir'])


class _QuietCheckpointer(std_logging.Filter):
  """Keeps Orbax's routine INFO lines out of the training log."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    return record.levelno >= std_logging.WARNING or 'orbax' not in record.pathname


def parse_flags(argv: list[str]) -> list[str]:
  """Parses flags; a mistyped or ill-typed --config.FIELD ends with one clear line."""
  try:
    argv = FLAGS(argv)
    FLAGS.config.get('dataset')  # a config that failed to load raises here
    return argv
  except OSError as error:
    raise SystemExit(f'error: {" ".join(str(error).split())}') from None
  except flags.Error as error:
    raise SystemExit(f'error: {error}\nSee --helpfull for the flags.') from None
  except (AttributeError, KeyError, TypeError, ValueError) as error:
    reason = error
    while isinstance(reason, BaseException) and reason.args:
      reason = reason.args[0]
    message = ' '.join(str(reason).split())
    raise SystemExit(f'error: bad --config: {message}') from None


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logging.get_absl_handler().addFilter(_QuietCheckpointer())
  import jax  # after flag parsing, so --help stays fast
  if FLAGS.distributed:
    jax.distributed.initialize()
  from ran_jax.data.pipeline import DatasetUnavailableError
  from ran_jax.train.checkpoint import CheckpointError
  from ran_jax.train.loop import train_and_evaluate
  logging.info('JAX process %d of %d, local devices: %s', jax.process_index(),
               jax.process_count(), jax.local_devices())
  try:
    train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except (ValueError, FileNotFoundError, DatasetUnavailableError, CheckpointError) as error:
    logging.debug('Stopped by an error', exc_info=True)
    raise SystemExit(f'error: {error}\n(--verbosity=1 shows where it was raised)') from None
  except KeyboardInterrupt:
    raise SystemExit('Interrupted. Run the same command again to resume from the last '
                     f'checkpoint in {FLAGS.workdir}.') from None


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
