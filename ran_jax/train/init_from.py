"""Fine-tuning: a new run's first state from another run's latest checkpoint (`init_from`).

Every variable (parameter or BatchNorm statistic) whose path and shape match one of the other
run's is loaded; the others keep their fresh initialisation (the classifier, when the number
of classes differs), and the other run's variables left unused are skipped. The log lists the
three. A run of another stem (the CIFAR or ImageNet stem) or number of image channels, or whose
variables are in the other variable layout (`model.scan`), is refused.

What was loaded is recorded in the new run's work directory (`init_from.json`) when it starts,
with `freeze` and `init_lr_scale`: a resumed run, predict and visualize rebuild the same
optimizer from it (`optim.ParamGroups`), without the other run.
"""

import dataclasses
import json
import logging
from typing import Any

import flax.traverse_util
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from ran_jax.models import layout
from ran_jax.workdir import checkpoints
from ran_jax.train.optim import ParamGroups
from ran_jax.train.state import TrainState

RECORD = 'init_from.json'
STEM = 'params/stem_conv/kernel'
_LISTED = 8  # names shown per list in the log


class InitFromError(ValueError):
  """`init_from` can't be used; the message says why and what to give instead."""


@dataclasses.dataclass(frozen=True)
class InitRecord:
  """What a fine-tuned run took from `source` (paths like 'params/stage1/...')."""
  source: str
  step: int
  loaded: tuple[str, ...]
  skipped: tuple[str, ...]
  initialised: tuple[str, ...]
  freeze: str = 'none'
  init_lr_scale: float = 1.0

  def param_groups(self) -> ParamGroups:
    loaded = frozenset(path.split('/', 1)[1] for path in self.loaded
                       if path.startswith('params/'))
    return ParamGroups(loaded, self.freeze == 'backbone', self.init_lr_scale)


def _flat(variables: dict[str, Any]) -> dict[str, Any]:
  return flax.traverse_util.flatten_dict(variables, sep='/')


def read_source(workdir: str) -> tuple[int, dict[str, np.ndarray], str]:
  """(step, variables by path, variable layout) of the newest readable, finite checkpoint of
  the run in `workdir`: its parameters and BatchNorm statistics (their moving average where the
  run kept one, as its predictions use it) in host memory (every process reads them; nothing
  there is changed)."""
  directory = epath.Path(workdir) / 'checkpoints'
  if not checkpoints.has_steps(workdir):
    raise InitFromError(f'init_from={workdir!r} holds no checkpoint ({directory} has no step); '
                        'give the --workdir of a trained run')
  manager = ocp.CheckpointManager(
      directory, options=ocp.CheckpointManagerOptions(create=False),  # reads only
      item_handlers={'state': ocp.PyTreeCheckpointHandler(), 'input': ocp.JsonCheckpointHandler()})
  steps = sorted(manager.all_steps(), reverse=True)
  try:
    for step in steps:
      try:
        meta = manager.restore(step, args=ocp.args.Composite(input=ocp.args.JsonRestore())).input
        tree = manager.item_metadata(step)['state'].tree
        averaged = checkpoints.holds_average(meta)
        part = tree[checkpoints.AVERAGE] if averaged else tree
        wanted = {key: part[key] for key in ('params', 'batch_stats') if key in part}
        args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), wanted)
        state = checkpoints.read_variables(  # not the optimizer's state
            directory / str(step) / 'state', args, args, averaged=averaged)
      except Exception as error:  # Orbax/TensorStore raise many types for bad files
        logging.warning('init_from: the checkpoint of step %d in %s could not be read (%s); '
                        'trying the one before.', step, directory, type(error).__name__)
        continue
      variables = _flat({'params': state['params'], 'batch_stats': state.get('batch_stats', {})})
      if not all(np.isfinite(v).all() for v in variables.values()
                 if np.issubdtype(v.dtype, np.inexact)):
        logging.warning('init_from: the checkpoint of step %d holds non-finite values; trying '
                        'the one before.', step)
        continue
      if averaged:
        logging.info('init_from: the run in %s kept a moving average of its weights; it is '
                     'what is loaded, as its predictions use it.', workdir)
      return step, variables, meta.get('state_layout', layout.UNROLLED)
  finally:
    manager.close()
  raise InitFromError(f'init_from={workdir!r}: none of its checkpoints ({len(steps)} steps) can '
                      'be read; give the --workdir of another trained run')


def match(config: ml_collections.ConfigDict, variables: dict[str, Any], step: int,
          source: dict[str, np.ndarray], source_layout: str) -> InitRecord:
  """Which of the network's `variables` (abstract: shapes suffice) `source` provides (same path
  and shape), after checking that both networks take the same images and use the same
  variable layout."""
  wanted = _flat({'params': variables['params'], 'batch_stats': variables.get('batch_stats', {})})
  ours = layout.layout_of(variables['params'])
  if source_layout != ours:
    raise InitFromError(
        f'init_from={config.init_from!r} holds {source_layout} variables and this run builds '
        f'{ours} ones; set --config.model.scan={source_layout == layout.SCANNED}')
  if STEM in source and STEM in wanted and source[STEM].shape != tuple(wanted[STEM].shape):
    raise InitFromError(
        f'init_from={config.init_from!r} is a network of another stem (its stem kernel is '
        f'{source[STEM].shape}, this one {tuple(wanted[STEM].shape)}: another stem or another '
        'number of image channels); fine-tune from a run of the same stem and channels')
  loaded = tuple(sorted(p for p, leaf in wanted.items()
                        if p in source and source[p].shape == tuple(leaf.shape)))
  return InitRecord(
      config.init_from, step, loaded,
      skipped=tuple(sorted(p for p in source if p not in loaded)),
      initialised=tuple(sorted(p for p in wanted if p not in loaded)),
      freeze=config.freeze, init_lr_scale=float(config.init_lr_scale))


def load_into(state: TrainState, source: dict[str, np.ndarray], record: InitRecord) -> TrainState:
  """`state` with the recorded variables replaced by `source`'s, placed as `state`'s are; a
  moving average of the variables (`config.ema_decay`) starts at them too."""
  loaded = set(record.loaded)

  def place(path: str, fresh: jax.Array) -> jax.Array:
    if path not in loaded:
      return fresh
    value = np.asarray(source[path], fresh.dtype)
    return jax.make_array_from_callback(fresh.shape, fresh.sharding, lambda index: value[index])

  variables = {path: place(path, leaf) for path, leaf in _flat(state.variables).items()}
  variables = flax.traverse_util.unflatten_dict(variables, sep='/')
  state = state.with_variables(variables)
  if state.averaged() is not None:  # its own buffers: the train step donates the whole state
    state = state.replace(ema=jax.tree.map(jnp.copy, variables))
  return state


def _listed(paths: tuple[str, ...]) -> str:
  shown = ', '.join(paths[:_LISTED])
  return shown + (f', ... ({len(paths) - _LISTED} more)' if len(paths) > _LISTED else '')


def log_record(record: InitRecord, source: dict[str, np.ndarray] | None = None) -> None:
  """One line each: where from, what was loaded, skipped and initialised afresh."""
  values = f' ({sum(source[p].size for p in record.loaded):,} values)' if source else ''
  logging.info('Initialised from %s (step %d): loaded %d variables%s; skipped %d of its '
               'variables: %s; initialised %d afresh: %s.', record.source, record.step,
               len(record.loaded), values, len(record.skipped), _listed(record.skipped) or 'none',
               len(record.initialised), _listed(record.initialised) or 'none')
  if record.freeze == 'backbone' or record.init_lr_scale != 1:
    logging.info('Training: %s; learning rate of the loaded parameters x%g.',
                 'the classifier only (frozen backbone)' if record.freeze == 'backbone' else
                 'every parameter', record.init_lr_scale)


def save_record(workdir: str, record: InitRecord) -> None:
  """Writes `workdir/init_from.json` (process 0; atomically)."""
  if jax.process_index() != 0:
    return
  path = epath.Path(workdir) / RECORD
  staging = path.with_name(RECORD + '.tmp')
  staging.write_text(json.dumps(dataclasses.asdict(record), indent=1))
  staging.replace(path)


def remove_record(workdir: str) -> None:
  """Removes a record left by an attempt that saved no checkpoint (process 0)."""
  if jax.process_index() == 0:
    (epath.Path(workdir) / RECORD).unlink(missing_ok=True)


def read_record(workdir: str) -> InitRecord | None:
  """The record of a fine-tuned run in `workdir`, or None when it was not fine-tuned."""
  path = epath.Path(workdir) / RECORD
  if not path.exists():
    return None
  value = json.loads(path.read_text())
  return InitRecord(**{k: tuple(v) if isinstance(v, list) else v for k, v in value.items()})
