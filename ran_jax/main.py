"""Trains and evaluates a Residual Attention Network.

    python -m ran_jax.main --config=configs/imagenet_attention56.py --workdir=DIR

The logic lives in `ran_jax.train.loop.train_and_evaluate`; this file parses flags and turns
errors into one line on stderr. Override any config field with `--config.FIELD=VALUE`.
Rerunning the same command resumes from the latest checkpoint in DIR.

Compiled steps are cached across runs (a rerun or a resumed run skips most compilation) in
$JAX_COMPILATION_CACHE_DIR, or ~/.cache/ran_jax/jax when that is not set.

Exit status: 0 when done; 1 on an error (one line on stderr says what to change); 2 on a bad
command line; 75 when stopped by SIGTERM, SIGINT or a preemption notice after saving a
checkpoint (rerun the same command to resume; schedulers can requeue on it).
"""

import logging as std_logging
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

EXIT_ERROR = 1
EXIT_USAGE = 2
DEFAULT_COMPILATION_CACHE = os.path.join('~', '.cache', 'ran_jax', 'jax')

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Experiment config file.', lock_config=True)
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics and eval results.')
flags.DEFINE_bool('distributed', False,
                  'Call jax.distributed.initialize() first (several hosts: TPU pods, SLURM).')
flags.DEFINE_string('coordinator_address', None,
                    'HOST:PORT of process 0, for clusters that JAX does not detect (implies '
                    '--distributed; give --num_processes and --process_id too).')
flags.DEFINE_integer('num_processes', None, 'Number of processes (with --coordinator_address).')
flags.DEFINE_integer('process_id', None, 'This process, 0..num_processes-1 (with '
                     '--coordinator_address).')
flags.mark_flags_as_required(['config', 'workdir'])


class _QuietCheckpointer(std_logging.Filter):
  """Keeps Orbax's routine INFO lines out of the training log."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    return record.levelno >= std_logging.WARNING or 'orbax' not in record.pathname


def _one_line(text: object) -> str:
  return ' '.join(str(text).split())


def _fail(message: str, status: int = EXIT_ERROR) -> None:
  print(f'error: {_one_line(message)}', file=sys.stderr, flush=True)
  sys.exit(status)


def parse_flags(argv: list[str]) -> list[str]:
  """Parses flags; a bad flag, config file or --config.FIELD ends with one clear line."""
  try:
    argv = FLAGS(argv)
    FLAGS.config.get('dataset')  # a config that failed to load raises here
  except OSError as error:
    _fail(error, EXIT_USAGE)
  except (ImportError, SyntaxError) as error:  # raised by the config file itself
    _fail(f'the --config file could not be loaded: {type(error).__name__}: {error}', EXIT_USAGE)
  except flags.Error as error:
    for name in ('config', 'workdir'):
      if getattr(FLAGS, name) is None and f'--{name} must have a value' in str(error):
        _fail(f'--{name} is required, e.g. python3 -m ran_jax.main '
              '--config=configs/digits_attention56.py --workdir=/tmp/ran_digits', EXIT_USAGE)
    _fail(f'{error} (see --helpfull)', EXIT_USAGE)
  except (AttributeError, KeyError, TypeError, ValueError) as error:
    reason = error
    while isinstance(reason, BaseException) and reason.args:
      reason = reason.args[0]
    _fail(f'bad --config: {reason}', EXIT_USAGE)
  if len(argv) > 1:
    _fail(f'unexpected arguments {argv[1:]}; config fields are set as --config.FIELD=VALUE',
          EXIT_USAGE)
  return argv


def _distributed_args() -> dict | None:
  """Arguments of jax.distributed.initialize(), or None for a single-process run."""
  explicit = {'coordinator_address': FLAGS.coordinator_address,
              'num_processes': FLAGS.num_processes, 'process_id': FLAGS.process_id}
  given = {k: v for k, v in explicit.items() if v is not None}
  if given and len(given) < len(explicit):
    missing = ', '.join(f'--{k}' for k in explicit if k not in given)
    _fail(f'--coordinator_address, --num_processes and --process_id go together; missing '
          f'{missing}.', EXIT_USAGE)
  if given and not 0 <= FLAGS.process_id < FLAGS.num_processes:
    _fail(f'--process_id={FLAGS.process_id} must be in [0, --num_processes={FLAGS.num_processes}).',
          EXIT_USAGE)
  return given if (given or FLAGS.distributed) else None


def main(argv: list[str]) -> None:
  del argv  # checked by parse_flags
  logging.get_absl_handler().addFilter(_QuietCheckpointer())
  # JAX reports at INFO that it found no TPU; that is no news on a GPU or CPU host.
  std_logging.getLogger('jax._src.xla_bridge').setLevel(std_logging.WARNING)
  distributed = _distributed_args()
  import jax  # after flag parsing, so --help stays fast
  if not os.environ.get('JAX_COMPILATION_CACHE_DIR'):
    jax.config.update('jax_compilation_cache_dir', os.path.expanduser(DEFAULT_COMPILATION_CACHE))
  if distributed is not None:  # before anything asks JAX about devices
    try:
      jax.distributed.initialize(**distributed)
    except (RuntimeError, ValueError) as error:
      _fail(f'jax.distributed.initialize() failed: {error}')
  from ran_jax.train import config_checks
  try:  # before TensorFlow is even imported: a bad value stops at once
    config_checks.validate(FLAGS.config, FLAGS.workdir)
  except ValueError as error:
    _fail(error)
  from ran_jax.data.pipeline import DatasetUnavailableError
  from ran_jax.train.errors import EXIT_PREEMPTED, Preempted, TrainingError
  from ran_jax.train.loop import train_and_evaluate
  try:
    train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except Preempted as stop:
    logging.warning('%s', stop)
    print(_one_line(stop), file=sys.stderr, flush=True)
    sys.exit(EXIT_PREEMPTED)
  except (ValueError, FileNotFoundError, NotADirectoryError, DatasetUnavailableError,
          TrainingError) as error:
    logging.debug('Stopped by an error', exc_info=True)
    _fail(f'{error} (--verbosity=1 shows where it was raised)')


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
