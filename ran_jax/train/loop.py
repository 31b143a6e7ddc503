"""`train_and_evaluate`: the whole training run, resumable, with metrics and evaluation."""

import dataclasses
import functools
import json
import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
from clu import metric_writers, periodic_actions
from etils import epath

from ran_jax.data.pipeline import InputPipeline, as_numpy, hide_accelerators_from_tensorflow
from ran_jax.models import model_costs
from ran_jax.train import checkpoint, experiment, optim
from ran_jax.train import mesh as mesh_lib
from ran_jax.train.state import shardings_of, train_state_factory
from ran_jax.train.steps import jit_steps

EVAL_RESULTS = 'eval_results.json'


@dataclasses.dataclass
class Run:
  """Everything a training run holds on to."""
  config: ml_collections.ConfigDict
  workdir: str
  pipeline: InputPipeline
  model: Any
  mesh: Any
  state: Any
  train_step: Callable
  eval_step: Callable
  manager: Any
  writer: Any
  num_train_steps: int
  start_step: int


def _setup(config: ml_collections.ConfigDict, workdir: str) -> Run:
  hide_accelerators_from_tensorflow()
  mesh = mesh_lib.make_mesh()
  mesh_lib.check_batch_size(config.batch_size, mesh)
  mesh_lib.check_batch_size(config.eval_batch_size, mesh, 'eval_batch_size')
  pipeline = InputPipeline(experiment.input_config(config))
  model = experiment.build_model(config, pipeline.num_classes)
  for size in {config.image_size, config.eval_image_size}:
    model.check_input((1, size, size, pipeline.channels))
  total_steps = experiment.num_train_steps(config, pipeline.steps_per_epoch)
  schedule = optim.learning_rate_schedule(config, total_steps)
  tx = optim.make_optimizer(config, schedule)
  init, target = train_state_factory(
      model, tx, mesh, (config.image_size, config.image_size, pipeline.channels), config.seed)
  shardings = shardings_of(target)
  manager = checkpoint.make_manager(workdir, keep=config.keep_checkpoints)
  restored = checkpoint.restore_latest(manager, target)
  if restored is None:
    state, start_step = init(), 0
  else:
    state, input_state = restored
    start_step = int(jax.device_get(state.step))
    _check_input_state(input_state, config)
  train_step, eval_step = jit_steps(shardings, mesh_lib.data_sharding(mesh),
                                    mesh_lib.replicated(mesh), schedule, config.label_smoothing)
  writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
  return Run(config, workdir, pipeline, model, mesh, state, train_step, eval_step, manager,
             writer, total_steps, start_step)


def _input_state(config: ml_collections.ConfigDict, step: int) -> dict:
  """What decides the data order from `step` on (see `InputPipeline.train_dataset`)."""
  return {'step': step, 'seed': config.seed, 'batch_size': config.batch_size,
          'dataset': config.dataset, 'shuffle_buffer': config.shuffle_buffer,
          'process_count': jax.process_count()}


def _check_input_state(saved: dict, config: ml_collections.ConfigDict) -> None:
  current = _input_state(config, saved.get('step', 0))
  for key, value in current.items():
    if key in saved and saved[key] != value:
      logging.warning('Resuming with %s=%r, but the checkpoint was written with %r: the data '
                      'order will differ from the original run.', key, value, saved[key])


def _log_model(run: Run) -> None:
  costs = model_costs(run.model, run.config.image_size, run.pipeline.channels)
  message = (f'{run.config.model.name}: {costs.total_params:,} parameters, '
             f'{costs.total_macs / 1e9:.3f} G multiply-adds per {run.config.image_size}px image; '
             f'{jax.device_count()} devices, {jax.process_count()} processes; '
             f'{run.num_train_steps} steps ({run.pipeline.steps_per_epoch} per epoch), '
             f'starting at step {run.start_step}.')
  logging.info(message)
  run.writer.write_texts(run.start_step, {'model': message})
  run.writer.write_hparams({k: v for k, v in run.config.to_dict().items()
                            if isinstance(v, (int, float, str, bool))})


def evaluate(run: Run) -> dict[str, Any]:
  """Metrics over the whole eval split (each example exactly once)."""
  dataset, _ = run.pipeline.eval_dataset()
  sharding = mesh_lib.data_sharding(run.mesh)
  total = merge_on_host([run.eval_step(run.state, batch) for batch in
                         mesh_lib.prefetch_to_device(as_numpy(dataset), sharding)])
  values = {k: float(v) for k, v in total.compute().items()}
  values['num_examples'] = int(total.loss.count)
  return values


def write_eval_results(run: Run, step: int, values: dict[str, Any]) -> dict[str, Any]:
  """Writes `workdir/eval_results.json` (process 0) and the eval metrics."""
  results = {'step': step, **values, 'dataset': run.config.dataset,
             'model': run.config.model.name, 'eval_image_size': run.config.eval_image_size}
  run.writer.write_scalars(step, {f'eval/{k}': v for k, v in values.items()})
  if jax.process_index() == 0:
    path = epath.Path(run.workdir) / EVAL_RESULTS
    staging = path.with_name(EVAL_RESULTS + '.tmp')
    staging.write_text(json.dumps(results, indent=2))
    staging.replace(path)
  logging.info('Evaluation at step %d: %s', step, json.dumps(values))
  return results


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains (resuming from `workdir` if it holds checkpoints) and evaluates.

  With `config.eval_only`, only evaluates the latest checkpoint. Returns the final
  evaluation results, also written to `workdir/eval_results.json`.
  """
  epath.Path(workdir).mkdir(parents=True, exist_ok=True)
  run = _setup(config, workdir)
  _log_model(run)
  try:
    if config.eval_only:
      if run.start_step == 0:
        raise FileNotFoundError(f'eval_only needs a checkpoint in {workdir}/checkpoints; '
                                'none was found.')
      return write_eval_results(run, run.start_step, evaluate(run))
    return _train(run)
  finally:
    run.manager.wait_until_finished()
    run.manager.close()
    run.writer.flush()


def _train(run: Run) -> dict[str, Any]:
  config, step = run.config, run.start_step
  results = None
  train_batches = mesh_lib.prefetch_to_device(
      as_numpy(run.pipeline.train_dataset(start_step=step)), mesh_lib.data_sharding(run.mesh),
      size=config.prefetch_to_device)
  hooks = _hooks(run)
  meter = _Throughput(config.batch_size)
  pending = []
  # One process: SIGTERM stops like Ctrl-C, with a checkpoint. Several processes: Orbax's
  # preemption sync point (reached_preemption) makes them all save at the same step.
  handle_sigterm = (threading.current_thread() is threading.main_thread() and
                    jax.process_count() == 1)
  previous_sigterm = signal.signal(signal.SIGTERM, _raise_interrupt) if handle_sigterm else None
  try:
    while step < run.num_train_steps:
      with jax.profiler.StepTraceAnnotation('train', step_num=step + 1):
        batch = next(train_batches)
        run.state, metrics = run.train_step(run.state, batch)
      step += 1
      meter.tick()
      pending.append(metrics)
      for hook in hooks:
        hook(step)
      last = step == run.num_train_steps
      if step % config.log_every_steps == 0 or last:
        _write_train_metrics(run, step, pending, meter)
        pending = []
      if step % config.eval_every_steps == 0 or last:
        with hooks[0].timed('eval'):
          results = write_eval_results(run, step, evaluate(run))
        meter.pause()
      if (step % config.checkpoint_every_steps == 0 or last or
          run.manager.reached_preemption(step)):
        checkpoint.save(run.manager, step, run.state, _input_state(config, step))
  except KeyboardInterrupt:
    _save_on_interrupt(run)
    raise
  finally:
    if handle_sigterm:
      signal.signal(signal.SIGTERM, previous_sigterm)
  if results is None:  # already trained to the end earlier: evaluate what was restored
    results = write_eval_results(run, step, evaluate(run))
  return results


def _hooks(run: Run) -> list:
  hooks = [periodic_actions.ReportProgress(
      num_train_steps=run.num_train_steps, writer=run.writer,
      every_steps=run.config.log_every_steps, every_secs=None)]
  if run.config.profile and jax.process_index() == 0:
    hooks.append(periodic_actions.Profile(logdir=run.workdir, num_profile_steps=5))
  return hooks


class _Throughput:
  """Images per second between log steps, leaving evaluation pauses out."""

  def __init__(self, batch_size: int):
    self.batch_size = batch_size
    self.pause()

  def pause(self) -> None:
    self.start, self.steps = time.perf_counter(), 0

  def tick(self) -> None:
    self.steps += 1

  def rate(self) -> float:
    rate = self.steps * self.batch_size / max(time.perf_counter() - self.start, 1e-9)
    self.pause()
    return rate


def merge_on_host(metrics: list) -> Any:
  """Merges per-step metric collections after one transfer (no per-step device work)."""
  return functools.reduce(lambda a, b: a.merge(b), jax.device_get(metrics))


def _write_train_metrics(run: Run, step: int, pending: list, meter: _Throughput) -> None:
  values = {f'train/{k}': float(v) for k, v in merge_on_host(pending).compute().items()}
  if not all(map(_finite, values.values())):
    raise FloatingPointError(f'Non-finite training metrics at step {step}: {values}. Lower the '
                             'learning rate or check the input data.')
  values['train/images_per_second'] = meter.rate()
  run.writer.write_scalars(step, values)


def _finite(value: float) -> bool:
  return value == value and abs(value) != float('inf')


def _raise_interrupt(signum, frame):
  raise KeyboardInterrupt(f'signal {signum}')


def _save_on_interrupt(run: Run) -> None:
  """Saves the state reached so far (one process), unless a step in flight consumed it."""
  if jax.process_count() > 1 or any(x.is_deleted() for x in jax.tree.leaves(run.state)):
    logging.warning('Interrupted; the last checkpoint (step %s) is kept.',
                    run.manager.latest_step())
    return
  step = int(jax.device_get(run.state.step))
  if step in (run.start_step, run.manager.latest_step()):
    return
  logging.warning('Interrupted at step %d; saving a checkpoint to resume from.', step)
  checkpoint.save(run.manager, step, run.state, _input_state(run.config, step))
