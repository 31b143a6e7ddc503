"""TensorFlow and TFDS, imported without the lines TensorFlow's C++ libraries print on import.

Every module of the package that needs them imports them from here:

    from ran_jax.data.quiet_tf import tf, tfds

While its libraries load, TensorFlow writes straight to the process's stderr (file descriptor
2, past Python's `sys.stderr`): absl's `All log messages before absl::InitializeLog()` notice,
INFO lines such as oneDNN's `oneDNN custom operations are on` (once per library, on most x86
CPUs) and `cpu_feature_guard`'s instruction list with its continuation line; which ones depends
on the CPU and the TensorFlow version, and `TF_CPP_MIN_LOG_LEVEL` does not reach the ones
printed while the libraries load. The import is made with that descriptor pointed at a file;
the INFO lines and the absl notice are dropped and anything else (a warning, an error) is
written back. `TF_CPP_MIN_LOG_LEVEL` defaults to 1 (warnings and errors only) for the C++
lines after the import, such as tf.data's `Local rendezvous is aborting` at the end of a
dataset; set it to 0 to see them. protobuf's warning that TensorFlow's generated code is a
major version older than the runtime is ignored. TensorFlow's computations are unchanged
(oneDNN stays on where TensorFlow turns it on).
"""

import os
import re
import sys
import tempfile
import types
import warnings

# A C++ INFO line of absl or TensorFlow's logging (not absl-py's, whose file ends in .py):
# I0000 00:00:1796408611.024406    2874 port.cc:153] oneDNN custom operations are on. ...
CPP_INFO = re.compile(r'I\d{4} \d\d:\d\d:\d+\.\d+ +\d+ (?!\S+\.py:)\S+:\d+\] ')
# The start of any other record: a log line of any level, or a Python warning.
RECORD = re.compile(r'([IWEF]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\] |\S+:\d+: \w*Warning: )')
ABSL_NOTICE = 'WARNING: All log messages before absl::InitializeLog() is called are written to'


def routine_lines_removed(text: str) -> str:
  """`text` without C++ INFO lines (and the lines that continue them) and absl's notice."""
  kept, dropping = [], False
  for line in text.splitlines(keepends=True):
    if line.startswith(ABSL_NOTICE) or CPP_INFO.match(line):
      dropping = True
    elif dropping and not RECORD.match(line):
      continue  # the rest of a dropped record (cpu_feature_guard's instruction list)
    else:
      dropping = False
      kept.append(line)
  return ''.join(kept)


def import_tensorflow() -> types.ModuleType:
  """`tensorflow`, imported once without the routine lines its libraries print as they load."""
  if 'tensorflow' in sys.modules:
    return sys.modules['tensorflow']
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')
  # TensorFlow's generated protocol buffers (imported as it loads, and later) warn when the
  # protobuf runtime is a major version newer than they were generated with, which it
  # supports: TensorFlow 2.20 (protobuf 5.28) beside the protobuf 6 that tfds needs.
  warnings.filterwarnings('ignore', message='Protobuf gencode version', category=UserWarning)
  try:
    captured = tempfile.TemporaryFile()
    sys.stderr.flush()
    saved = os.dup(2)
  except (OSError, AttributeError, ValueError):  # no temporary file, or no stderr descriptor
    import tensorflow  # pylint: disable=import-outside-toplevel
    return tensorflow
  try:
    os.dup2(captured.fileno(), 2)
    try:
      import tensorflow  # pylint: disable=import-outside-toplevel
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
  finally:
    captured.seek(0)
    leftover = routine_lines_removed(captured.read().decode(errors='replace'))
    captured.close()
    if leftover:
      sys.stderr.write(leftover)
      sys.stderr.flush()
  return tensorflow


tf = import_tensorflow()
import tensorflow_datasets as tfds  # noqa: E402  pylint: disable=wrong-import-position
