"""Trains and evaluates a Residual Attention Network.

    python -m ran_jax.main --config=configs/imagenet_attention56.py --workdir=DIR

The logic lives in `ran_jax.train.loop.train_and_evaluate`; this file parses flags and turns
errors into one line on stderr. Override any config field with `--config.FIELD=VALUE`.
Rerunning the same command resumes from the latest checkpoint in DIR.

Compiled steps are cached across runs (a rerun or a resumed run skips most compilation) in
$JAX_COMPILATION_CACHE_DIR, or ~/.cache/ran_jax/jax when that is not set.

Exit status: 0 when done; 1 on an error (one line on stderr says what to change); 2 on a bad
command line; 75 when stopped by SIGTERM, SIGINT, SIGHUP or a preemption notice, after saving
a checkpoint when there was one to save (rerun the same command to resume; schedulers can
requeue on it).
"""

import os
import sys

from ran_jax.process import stop_signals

stop_signals.install_early_handlers()  # before the heavy imports: a stop exits 75 from here on

# pylint: disable=wrong-import-position
from absl import app, flags, logging  # noqa: E402

from ran_jax import cli  # noqa: E402
from ran_jax.cli import EXIT_ERROR, EXIT_USAGE  # noqa: E402
from ran_jax.process.errors import EXIT_PREEMPTED, describe_os_error  # noqa: E402

DEFAULT_COMPILATION_CACHE = os.path.join('~', '.cache', 'ran_jax', 'jax')
EXAMPLE = ('python3 -m ran_jax.main --config=configs/digits_attention56.py '
           '--workdir=/tmp/ran_digits')

FLAGS = flags.FLAGS  # --config and --workdir are defined in ran_jax.cli
cli.define_workdir_flag()
flags.DEFINE_bool('distributed', False,
                  'Call jax.distributed.initialize() first (several hosts: TPU pods, SLURM).')
flags.DEFINE_string('coordinator_address', None,
                    'HOST:PORT of process 0, for clusters that JAX does not detect (implies '
                    '--distributed; give --num_processes and --process_id too).')
flags.DEFINE_integer('num_processes', None, 'Number of processes (with --coordinator_address).')
flags.DEFINE_integer('process_id', None, 'This process, 0..num_processes-1 (with '
                     '--coordinator_address).')
flags.DEFINE_bool('eval_only', False, 'Only evaluate the latest checkpoint of --workdir, with '
                  'the config the run recorded there (--config is then optional).')


def parse_flags(argv: list[str]) -> list[str]:
  """Parses flags; a bad flag, config file or --config.FIELD ends with one clear line."""
  argv = cli.parse_flags(argv, EXAMPLE, config_required=False)
  if FLAGS.config is None and not FLAGS.eval_only:
    cli.fail(f'--config is required, e.g. {EXAMPLE}', EXIT_USAGE)
  return argv


def _config():
  """--config, or with --eval_only the config the run recorded (`run_record.resolve`), set to
  only evaluate."""
  if not FLAGS.eval_only:
    return FLAGS.config
  from ran_jax.workdir import run_record
  config = run_record.resolve(FLAGS.config, FLAGS.workdir)[0].copy_and_resolve_references()
  with config.unlocked():
    config.eval_only = True
  return config


def _distributed_args() -> dict | None:
  """Arguments of jax.distributed.initialize(), or None for a single-process run."""
  explicit = {'coordinator_address': FLAGS.coordinator_address,
              'num_processes': FLAGS.num_processes, 'process_id': FLAGS.process_id}
  given = {k: v for k, v in explicit.items() if v is not None}
  if given and len(given) < len(explicit):
    missing = ', '.join(f'--{k}' for k in explicit if k not in given)
    cli.fail(f'--coordinator_address, --num_processes and --process_id go together; missing '
             f'{missing}.', EXIT_USAGE)
  if given and not 0 <= FLAGS.process_id < FLAGS.num_processes:
    cli.fail(f'--process_id={FLAGS.process_id} must be in [0, '
             f'--num_processes={FLAGS.num_processes}).', EXIT_USAGE)
  return given if (given or FLAGS.distributed) else None


def _end(line: str, status: int) -> None:
  """Prints `line` last on stderr and ends the process at once with `status`.

  Once a run has started, threads of the checkpointer, the metric writer or the input may be
  left waiting on what failed; leaving without joining them is what ends the process.
  """
  logging.flush()
  print(cli.one_line(line), file=sys.stderr, flush=True)
  sys.stdout.flush()
  os._exit(status)  # pylint: disable=protected-access


def main(argv: list[str]) -> None:
  del argv  # checked by parse_flags
  cli.quiet_routine_logs()
  distributed = _distributed_args()
  import jax  # after flag parsing, so --help stays fast
  if not os.environ.get('JAX_COMPILATION_CACHE_DIR'):
    jax.config.update('jax_compilation_cache_dir', os.path.expanduser(DEFAULT_COMPILATION_CACHE))
  if distributed is not None:  # before anything asks JAX about devices
    try:
      jax.distributed.initialize(**distributed)
    except (RuntimeError, ValueError) as error:
      cli.fail(f'jax.distributed.initialize() failed: {error}')
  from ran_jax.data.datasets import DatasetUnavailableError
  from ran_jax.process.errors import BatchTooLargeError, Preempted, TrainingError
  from ran_jax.train.loop import train_and_evaluate
  try:  # checks the config first, before TensorFlow is imported: a bad value stops at once
    train_and_evaluate(_config(), FLAGS.workdir)
  except Preempted as stop:
    _end(str(stop), EXIT_PREEMPTED)
  except BatchTooLargeError as error:
    _end(f'error: {_fitting_batch_line(error)}', EXIT_ERROR)
  except (ValueError, DatasetUnavailableError, TrainingError) as error:
    logging.debug('Stopped by an error', exc_info=True)
    _end(f'error: {error} (--verbosity=1 shows where it was raised)', EXIT_ERROR)
  except OSError as error:
    logging.debug('Stopped by an error', exc_info=True)
    _end(f'error: {describe_os_error(error)} (--verbosity=1 shows where it was raised)',
         EXIT_ERROR)
  except Exception as error:  # a fault of this program: still one line, and no hang
    logging.debug('Stopped by an error', exc_info=True)
    _end(f'error: unexpected {type(error).__name__}: {error} (--verbosity=1 shows where it '
         'was raised; please report it)', EXIT_ERROR)


def _fitting_batch_line(error) -> str:
  """The line of a step too large for the devices, naming a batch that the planner compiled
  and found to fit (the error's own line if the search itself fails)."""
  import jax
  from ran_jax.planning.memory_plan import fitting_batch_line
  try:
    return fitting_batch_line(error, jax.devices())
  except Exception:  # the search is advice: the error itself still says what to do
    logging.debug('The search for a batch that fits failed', exc_info=True)
    return str(error)


def run() -> None:
  """The command line: `python -m ran_jax.main`."""
  app.run(main, flags_parser=parse_flags)


if __name__ == '__main__':
  run()
