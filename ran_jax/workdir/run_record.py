"""What a run records in its work directory when it starts, so that the work directory alone
serves inference: `run.json` (the resolved config, the command line and what inference needs
of the data: class names, channels, recipe, image sizes) and `normalizer.npz` (the input
normalisation's arrays: the mean image of the 'small' recipe, per-channel mean and standard
deviation otherwise). Written by process 0, each file atomically. Imports no TensorFlow.
"""

import dataclasses
import io
import json
import logging
import sys
from typing import Any

import jax
import ml_collections
import numpy as np
from etils import epath

from ran_jax.data import saved_dataset
from ran_jax.data.normalize import InputNormalizer
from ran_jax.data.source import InputSource
from ran_jax.experiments import checks
from ran_jax.workdir import checkpoints

FILE = 'run.json'
ARRAYS = 'normalizer.npz'
VERSION = 1


@dataclasses.dataclass(frozen=True)
class RunRecord:
  """A run's record (see the module docstring).

  Attributes:
    config: the resolved config the run started with.
    command_line: the command that started it.
    class_names: one name per class, in label order.
    channels: image channels.
    normalizer: the devices' input normalisation (its recipe and pad included).
    changes: one entry per resume that changed fields: its command line and the fields with
      their old and new values.
  """
  config: ml_collections.ConfigDict
  command_line: tuple[str, ...]
  class_names: tuple[str, ...]
  channels: int
  normalizer: InputNormalizer
  changes: tuple[dict, ...] = ()


def _jsonable(value: Any) -> Any:
  if isinstance(value, dict):
    return {key: _jsonable(item) for key, item in value.items()}
  if isinstance(value, (list, tuple)):
    return [_jsonable(item) for item in value]
  return value


def _write_atomically(path: epath.Path, data: bytes) -> None:
  staging = path.with_name(path.name + '.tmp')
  staging.write_bytes(data)
  staging.replace(path)


def write(workdir: str, record: RunRecord) -> None:
  """Writes `record` into `workdir` (process 0 only; other processes return at once)."""
  if jax.process_index() != 0:
    return
  normalizer = record.normalizer
  arrays = io.BytesIO()
  np.savez(arrays, mean=np.asarray(normalizer.mean, np.float32),
           **({} if normalizer.std is None else {'std': np.asarray(normalizer.std, np.float32)}))
  _write_atomically(epath.Path(workdir) / ARRAYS, arrays.getvalue())
  value = {'version': VERSION, 'config': _jsonable(record.config.to_dict()),
           'command_line': list(record.command_line),
           'class_names': list(record.class_names), 'channels': record.channels,
           'recipe': normalizer.recipe, 'pad': normalizer.pad, 'changes': list(record.changes)}
  _write_atomically(epath.Path(workdir) / FILE, json.dumps(value, indent=1).encode())


def _config(value: dict) -> ml_collections.ConfigDict:
  """The saved config as a ConfigDict (lists back to tuples, as the configs write them)."""
  def tuples(item: Any) -> Any:
    if isinstance(item, dict):
      return {key: tuples(inner) for key, inner in item.items()}
    return tuple(tuples(inner) for inner in item) if isinstance(item, list) else item
  return ml_collections.ConfigDict(tuples(value))


def read(workdir: str) -> RunRecord | None:
  """The record of `workdir`; None for a run that has none (one started before runs recorded
  themselves). A damaged record raises a ValueError that names the file."""
  path = epath.Path(workdir) / FILE
  if not path.exists():
    return None
  try:
    value = json.loads(path.read_text())
    with (epath.Path(workdir) / ARRAYS).open('rb') as file:
      arrays = dict(np.load(file))
    normalizer = InputNormalizer(value['recipe'], arrays['mean'], arrays.get('std'),
                                 value['pad'])
    config = checks.with_current_names(_config(value['config']), warn=False)
    return RunRecord(config, tuple(value['command_line']),
                     tuple(value['class_names']), int(value['channels']), normalizer,
                     tuple(value.get('changes', ())))
  except (OSError, ValueError, KeyError, TypeError) as error:
    raise ValueError(f'the record of the run in {workdir} ({FILE}, {ARRAYS}) cannot be read: '
                     f'{type(error).__name__}: {error}; give --config as the run was started '
                     'with') from None


def of_run(config: ml_collections.ConfigDict, class_names: tuple[str, ...], channels: int,
           normalizer: InputNormalizer, changes: tuple[dict, ...] = ()) -> RunRecord:
  """The record of a run starting now with `config` (the command line is this process's)."""
  return RunRecord(config, tuple(sys.argv), class_names, channels, normalizer, changes)


# Fields whose change alters the network or what it sees: a resumed run refuses them. The
# variable layout and rematerialisation change how the same network is computed, not what.
MODEL_AND_INPUT = ('model.', 'dataset', 'image_size', 'eval_image_size', 'recipe')
SAME_NETWORK = ('model.scan', 'model.remat', 'model.remat_policy')


def _flat(value: dict, prefix: str = '') -> dict[str, Any]:
  flat = {}
  for key, item in value.items():
    if isinstance(item, dict):
      flat.update(_flat(item, f'{prefix}{key}.'))
    else:
      flat[f'{prefix}{key}'] = item
  return flat


# Fields added after runs began recording themselves, with the value that does what a run
# recorded without them did: their absence from a record is not a change.
ADDED_FIELDS = {'grad_accum_steps': 1, 'ema_decay': None}


def changed_fields(saved: ml_collections.ConfigDict,
                   config: ml_collections.ConfigDict) -> dict[str, tuple[Any, Any]]:
  """The fields whose values differ: {field: (saved value, new value)}; a field of
  `ADDED_FIELDS` missing from either side has its former value."""
  before, after = (
      {**ADDED_FIELDS, **_flat(_jsonable(given.to_dict()))} for given in (saved, config))
  return {key: (before.get(key), after.get(key)) for key in sorted(set(before) | set(after))
          if before.get(key) != after.get(key)}


def alters_model_or_input(field: str) -> bool:
  return field.startswith(MODEL_AND_INPUT) and field not in SAME_NETWORK


def record_start(config: ml_collections.ConfigDict, workdir: str, pipeline: InputSource) -> None:
  """Records the run starting in `workdir`. A run that resumes must train the same network
  on the same input (and classes), and keep or not keep a moving average, as it started;
  other changed fields are logged and recorded."""
  saved = read(workdir) if checkpoints.has_steps(workdir) else None
  started = saved.class_names if saved is not None else _legacy_class_names(workdir)
  if started is not None and started != pipeline.class_names:
    raise ValueError(f'the classes are now {list(pipeline.class_names)}, but this run started '
                     f'with {list(started)}; restore those class folders, or give a new '
                     '--workdir (with init_from=this one to start from its network)')
  changes = ()
  if saved is None and checkpoints.has_steps(workdir):  # from before runs recorded themselves
    _refuse_resume({'ema_decay': (None, config.get('ema_decay'))})
  if saved is not None:
    changed = changed_fields(saved.config, config)
    changed.pop('eval_only', None)  # how this invocation uses the run, not a change of it
    _refuse_resume(changed)
    changes = saved.changes
    if changed:
      logging.warning('Resuming with changed fields (recorded in %s): %s', FILE,
                      ', '.join(f'{field}={new!r} (was {old!r})'
                                for field, (old, new) in changed.items()))
      changes += ({'command_line': sys.argv, 'changed': {
          field: list(values) for field, values in changed.items()}},)
  write(workdir, of_run(config, pipeline.class_names, pipeline.channels, pipeline.normalizer(),
                        changes))


def _refuse_resume(changed: dict[str, tuple[Any, Any]]) -> None:
  """A ValueError naming the first changed field a resumed run cannot take."""
  refused = [field for field in changed if alters_model_or_input(field)]
  why = 'changes the network or its input'
  averages = changed.get('ema_decay', (None, None))
  if not refused and (averages[0] is None) != (averages[1] is None):
    refused, why = ['ema_decay'], 'adds or drops the moving average its checkpoints hold'
  if not refused:
    return
  old, new = (repr(value) if value is not None else 'unset (the default)'
              for value in changed[refused[0]])
  raise ValueError(
      f'this run was started with {refused[0]}={old} and cannot resume with {new}: that '
      f'{why}; give a new --workdir (with init_from=this one to start from its network), or '
      'the value it started with')


def _legacy_class_names(workdir: str) -> tuple[str, ...] | None:
  """The classes a folder run started before runs recorded them (`dataset.json`)."""
  if checkpoints.has_steps(workdir) and (epath.Path(workdir) / saved_dataset.FILE).exists():
    return saved_dataset.load(workdir).class_names
  return None


def resolve(config: ml_collections.ConfigDict | None, workdir: str
            ) -> tuple[ml_collections.ConfigDict, RunRecord | None]:
  """(config, record) of the run in `workdir`, its record read once: the config it recorded,
  with the fields of `config` (when given) that change neither the network nor its input
  (`data_dir`, `folder`, batch sizes, ...); `config` itself (and None) for a run that recorded
  none."""
  record = read(workdir)
  config = None if config is None else checks.with_current_names(config)
  if record is None:
    if config is None:
      raise FileNotFoundError(
          f'{workdir} has no {FILE} (a run started before runs recorded their '
          'config, or no run): give the --config it was trained with')
    return config, None
  if config is None:
    return record.config, record
  merged = record.config.copy_and_resolve_references()
  for field, (_, value) in changed_fields(record.config, config).items():
    if not alters_model_or_input(field) and value is not None:
      checks.set_field(merged, field, tuple(value) if isinstance(value, list) else value)
  return merged, record
