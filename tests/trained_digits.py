"""A tiny digits network trained in this process once per test session, and running the
`ran_jax.predict` and `ran_jax.visualize` tools on it in-process."""

import dataclasses
import logging as std_logging
import pathlib
import sys

import numpy as np
from absl import flags
from PIL import Image
from test_train import shrink
from training_jobs import QUICK_FIELDS, ROOT, TINY_FLAGS

from configs import digits_attention56
from ran_jax.train import loop

CONFIG = str(ROOT / 'configs' / 'digits_attention56.py')
ATTENTION_IMAGES = 2  # written to TensorBoard at the run's evaluation
STEPS = 6


@dataclasses.dataclass(frozen=True)
class Trained:
  workdir: pathlib.Path
  data_dir: str
  config: object
  results: dict

  def tool_flags(self, workdir: pathlib.Path | None = None) -> list[str]:
    """--config (with the tiny widths) and --workdir for predict and visualize."""
    return [f'--config={CONFIG}', f'--workdir={workdir or self.workdir}',
            f'--config.data_dir={self.data_dir}', *TINY_FLAGS]


_trained: dict[str, Trained] = {}


def trained(tmp_path_factory) -> Trained:
  """The run, trained on first use (with mask images written at its one evaluation)."""
  if 'run' not in _trained:
    data_dir = str(tmp_path_factory.mktemp('tfds'))
    workdir = tmp_path_factory.mktemp('trained_digits')
    config = shrink(digits_attention56.get_config(), data_dir=data_dir,
                    **dict(QUICK_FIELDS, attention_images=ATTENTION_IMAGES),
                    num_train_steps=STEPS, log_every_steps=STEPS, eval_every_steps=100,
                    checkpoint_every_steps=100)
    results = loop.train_and_evaluate(config, str(workdir))
    _trained['run'] = Trained(workdir, data_dir, config, results)
  return _trained['run']


def run_tool(module, args: list[str], capsys) -> tuple[int, str, str]:
  """(exit status, stdout, stderr) of the tool `module` run in this process."""
  absl_logger = std_logging.getLogger('absl')  # (un)parsing --verbosity sets its level
  level, saved_argv = absl_logger.level, sys.argv
  flags.FLAGS.unparse_flags()
  sys.argv = [module.__name__, *args]  # config_flags reads --config.FIELD from sys.argv
  capsys.readouterr()
  try:
    module.main(module.parse_flags(sys.argv))
    status = 0
  except SystemExit as stop:
    status = stop.code
  finally:
    absl_logger.setLevel(level)
    sys.argv = saved_argv
    for name in list(flags.FLAGS):  # defined by parsing --config.FIELD, again next time
      if name.startswith('config.'):
        delattr(flags.FLAGS, name)
  out, err = capsys.readouterr()
  return status, out, err


def write_png(path: pathlib.Path, pixels: np.ndarray) -> pathlib.Path:
  Image.fromarray(np.asarray(pixels, np.uint8)).save(path)
  return path


def error_line(status: int, err: str) -> str:
  """The one `error: ...` line a failed tool printed (asserted), for its text to be checked."""
  lines = [line for line in err.splitlines() if line.startswith('error: ')]
  assert status == 1 and len(lines) == 1 and err.rstrip().endswith(lines[0]), (status, err)
  return lines[0]
