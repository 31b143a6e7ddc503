"""What the command-line tools share: the --config and --workdir flags, flag parsing that
ends a bad command line with one clear line (exit 2), and the one-line error (exit 1).

Used by `ran_jax.main`, `ran_jax.predict`, `ran_jax.visualize` and `ran_jax.plan`; `--config`
takes a config file, optionally as PATH:ARG, and `--config.FIELD=VALUE` overrides any field.
The tools that read or write a run also call `define_workdir_flag()`.
"""

import logging as std_logging
import os
import sys
import traceback
from typing import NoReturn

from absl import flags, logging
from ml_collections import config_flags

from ran_jax.process import platforms

EXIT_ERROR = 1
EXIT_USAGE = 2

FLAGS = flags.FLAGS


class ConfigFileError(flags.Error):
  """The --config file raised an error (its 'Type: message' is the message)."""


class _ConfigFileParser(flags.ArgumentParser):
  """ml_collections' parser of --config (`parser`), raising the config file's own error as a
  ConfigFileError: absl would turn a TypeError or ValueError into an IllegalFlagValueError
  that carries only ml_collections' copy of it, with its traceback in the message."""

  def __init__(self, parser: flags.ArgumentParser):
    self._parser = parser

  def parse(self, argument: str) -> object:
    try:
      return self._parser.parse(argument)
    except (TypeError, ValueError) as error:
      raised = ''.join(traceback.format_exception_only(_raised_by_config(error)))
      raise ConfigFileError(' '.join(raised.split())) from error

  def flag_type(self) -> str:
    return self._parser.flag_type()


def _raised_by_config(error: BaseException) -> BaseException:
  """The exception the config file raised: `error`, or the one it was raised in handling of
  when ml_collections raised it (a copy with the traceback added to the message)."""
  library = os.path.dirname(config_flags.__file__)
  while (error.__context__ is not None and error.__traceback__ is not None and
         traceback.extract_tb(error.__traceback__)[-1].filename.startswith(library + os.sep)):
    error = error.__context__
  return error


config_flags.DEFINE_config_file('config', None, 'Experiment config file (PATH or PATH:ARG).',
                                lock_config=True)
FLAGS['config'].parser = _ConfigFileParser(FLAGS['config'].parser)
# Flags that parse_flags ends with '--NAME is required' when they are not given.
_REQUIRED: list[str] = []


def define_json_flag(help_text: str) -> None:
  """Defines --json (once per process; the first tool's help text is kept)."""
  if 'json' not in FLAGS:
    flags.DEFINE_bool('json', False, help_text)


def define_out_flag(help_text: str) -> None:
  """Defines --out (once per process; the first tool's help text is kept)."""
  if 'out' not in FLAGS:
    flags.DEFINE_string('out', None, help_text)


def define_ema_flag() -> None:
  """Defines --ema (once per process): the tools that load a trained network use the moving
  average of its weights where the run kept one."""
  if 'ema' not in FLAGS:
    flags.DEFINE_bool('ema', True, 'Use the moving average of the weights where the run kept '
                      'one (config.ema_decay); --noema: the weights themselves.')


def define_workdir_flag() -> None:
  """Defines the required --workdir flag (once per process, whichever tools import this)."""
  if 'workdir' not in FLAGS:
    flags.DEFINE_string('workdir', None,
                        'Directory of the run: checkpoints, metrics, eval results.')
    _REQUIRED.append('workdir')


class QuietRoutineLogs(std_logging.Filter):
  """Keeps the libraries' routine INFO lines out of the log, and the tracebacks of a save that
  failed.

  Orbax reports each save and restore, TFDS each dataset it opens and clu each progress note;
  the trainer writes its own line per log step. A save that fails (a full disk, say) is logged
  by Orbax's threads with a traceback each, and its background tasks by asyncio; the trainer
  reports it once, in its closing error line.
  """

  ROUTINE = ('orbax', 'tensorflow_datasets', os.path.join('clu', 'platform'))
  # Orbax's warnings that are routine here: the unfinished save of a killed run is removed
  # before the next save, a save waits for the one before it, a step saved without Orbax's
  # metadata file is read without it, (before Orbax 0.11.20 or so) a step saved without
  # metrics is reported with the missing file when its steps are listed, and (older Orbax)
  # inference reads part of a state through the transformations API.
  ROUTINE_ORBAX_WARNINGS = ('Attempted to create temporary directory',
                            'Waiting for previous save to complete',
                            'Metadata file does not exist',
                            'Missing metrics for step',
                            'The transformations API will eventually be replaced')

  def filter(self, record: std_logging.LogRecord) -> bool:
    if record.name == 'asyncio' and record.getMessage().startswith('Task exception'):
      return False
    if not any(part in record.pathname for part in self.ROUTINE):
      return True
    if 'orbax' in record.pathname and (
        record.exc_info or str(record.msg).startswith(self.ROUTINE_ORBAX_WARNINGS) or
        (isinstance(record.msg, FileNotFoundError) and 'metrics' in str(record.msg))):
      return False
    return record.levelno >= std_logging.WARNING


def quiet_routine_logs() -> None:
  """Keeps the libraries' routine lines (`QuietRoutineLogs`) and JAX's platform search out of
  the log, and libtpu's errors on a host without TPUs (`platforms.cpu_only_without_accelerators`).
  """
  platforms.cpu_only_without_accelerators()
  logging.get_absl_handler().addFilter(QuietRoutineLogs())
  # JAX reports at INFO that it found no TPU; that is no news on a GPU or CPU host.
  std_logging.getLogger('jax._src.xla_bridge').setLevel(std_logging.WARNING)


def warnings_only() -> None:
  """For tools whose output is their result: log warnings and errors only (unless
  --verbosity is given)."""
  quiet_routine_logs()
  if not FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)


def one_line(text: object) -> str:
  """`text` with every run of whitespace (newlines included) made one space."""
  return ' '.join(str(text).split())


def fail(message: object, status: int = EXIT_ERROR) -> NoReturn:
  """Prints `error: MESSAGE` as one line on stderr and exits with `status`."""
  print(f'error: {one_line(message)}', file=sys.stderr, flush=True)
  sys.exit(status)


def check_image_paths(paths: list[str]) -> None:
  """Ends with one line (exit 1) naming the first path that is missing, not a file, or not
  readable: checked before a network is loaded."""
  for path in paths:
    if not os.path.exists(path):
      fail(f'{path}: no such file; give the path of an image file')
    if not os.path.isfile(path):
      fail(f'{path} is not a file; give the path of an image file')
    if not os.access(path, os.R_OK):
      fail(f'{path} is not readable (permission denied)')


def _unreadable_config(error: OSError) -> str:
  """Why the --config file could not be read, naming its path."""
  path = FLAGS['config'].config_filename.split(':', 1)[0]
  if not os.path.exists(path):
    where = '' if os.path.isabs(path) else f' (relative to {os.getcwd()})'
    return f'the --config file {path} does not exist{where}'
  if os.path.isdir(path):
    return f'the --config file {path} is a directory, not a Python file'
  if not os.access(path, os.R_OK):
    return f'the --config file {path} is not readable (permission denied)'
  return f'the --config file {path} could not be read: {error}'


def parse_flags(argv: list[str], example: str, arguments: str | None = None,
                config_required: bool = True) -> list[str]:
  """Parses flags; a bad flag, config file or --config.FIELD ends with one clear line.

  Args:
    argv: the command line, program name first.
    example: a complete command, shown when --config or --workdir is missing.
    arguments: what the positional arguments are (e.g. 'IMAGE files'), or None when the tool
      takes none.
    config_required: False for the tools that read a run's recorded config from its work
      directory (then --config is optional).

  Returns:
    The program name followed by the positional arguments.
  """
  try:
    argv = FLAGS(argv)
    for name in _REQUIRED:
      if FLAGS[name].value is None:
        fail(f'--{name} is required, e.g. {example}', EXIT_USAGE)
    if FLAGS.config is None and config_required:
      fail(f'--config is required, e.g. {example}', EXIT_USAGE)
    if FLAGS.config is not None:
      FLAGS.config.get('dataset')  # a config that failed to load raises here
  except OSError as error:  # the config file could not be read
    fail(_unreadable_config(error), EXIT_USAGE)
  except (ImportError, SyntaxError) as error:  # raised by the config file itself
    fail(f'the --config file could not be loaded: {type(error).__name__}: {error}', EXIT_USAGE)
  except ConfigFileError as error:  # get_config() raised
    fail(f'the --config file could not be loaded: {error}', EXIT_USAGE)
  except flags.Error as error:
    fail(f'{error} (see --helpfull)', EXIT_USAGE)
  except (AttributeError, KeyError, TypeError, ValueError) as error:
    reason = error
    while isinstance(reason, BaseException) and reason.args:
      reason = reason.args[0]
    fail(f'bad --config: {reason}', EXIT_USAGE)
  if arguments is None and len(argv) > 1:
    fail(f'unexpected arguments {argv[1:]}; config fields are set as --config.FIELD=VALUE',
         EXIT_USAGE)
  if arguments is not None and len(argv) < 2:
    fail(f'give one or more {arguments}, e.g. {example}', EXIT_USAGE)
  return argv
