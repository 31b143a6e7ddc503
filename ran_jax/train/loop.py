"""`train_and_evaluate`: the whole training run, resumable, with metrics and evaluation."""

import contextlib
import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import jax
import ml_collections
import orbax.checkpoint as ocp
from etils import epath
from jax.sharding import Mesh

from ran_jax.data import sources
from ran_jax.data.source import InputSource
from ran_jax.experiments import checks
from ran_jax.models import ResidualAttentionNetwork, model_costs
from ran_jax.process.errors import (BatchTooLargeError, NonFiniteError, Preempted, WorkdirError,
                                    describe_os_error)
from ran_jax.process.stop_signals import StopSignals, run_interruptibly
from ran_jax.reporting import writers
from ran_jax.train import build, compiled, init_from, optim
from ran_jax.train import mesh as mesh_lib
from ran_jax.train.metrics import mean_train_metrics, total_eval_metrics
from ran_jax.train.state import TrainState
from ran_jax.workdir import checkpoints, lock, run_record

if TYPE_CHECKING:  # imported when used: it needs TensorFlow, which synthetic data does not
  from ran_jax.reporting import attention_images

EVAL_RESULTS = 'eval_results.json'


@dataclasses.dataclass
class Run:
  """Everything a training run holds on to."""
  config: ml_collections.ConfigDict
  workdir: str
  pipeline: InputSource
  model: ResidualAttentionNetwork
  mesh: Mesh
  state: TrainState
  train_step: Callable
  eval_step: Callable
  manager: ocp.CheckpointManager
  writer: writers.MetricWriter
  stop: StopSignals
  steps_per_epoch: float
  num_train_steps: int
  start_step: int
  attention: 'attention_images.AttentionImages | None' = None  # process 0, if asked for


def _setup(config: ml_collections.ConfigDict, workdir: str, stop: StopSignals,
           cleanup: contextlib.ExitStack) -> Run:
  """Everything the run needs, its steps compiled; runs before the first step, where a stop
  signal ends the process at once (`StopSignals`)."""
  mesh = mesh_lib.make_mesh()
  source = sources.source_of(config)
  with stop.phase('while loading the dataset'):  # preparing it can take hours
    pipeline = source.open()
  facts = pipeline.facts
  config = build.with_data_defaults(config, source.data_defaults(facts))
  run_record.record_start(config, workdir, pipeline)
  # Epochs count examples of the whole train split, so the schedule is the same per example
  # seen at any batch size.
  steps_per_epoch = pipeline.num_train_examples / config.batch_size
  manager = checkpoints.make_manager(workdir, keep=config.keep_checkpoints)
  cleanup.callback(checkpoints.close_manager, manager)
  network = build.build_network(config, pipeline.num_classes, pipeline.channels)
  record, init_source = _init_from(config, workdir, manager, network)
  training = build.build_training(config, mesh, network, steps_per_epoch=steps_per_epoch,
                                  groups=record and record.param_groups())
  with stop.phase('while restoring the checkpoint'):
    if (latest := manager.latest_step()) is not None:
      logging.info('Resuming from the checkpoint of step %d in %s ...', latest, manager.directory)
    restored = checkpoints.restore_latest(manager, training.target,
                                          other_layout=training.other_layout_target)
  with stop.phase('while compiling'):
    train_step, eval_step = build.jit_config_steps(config, training, mesh, pipeline.normalizer())
    try:
      steps = compiled.compile_steps(None if config.eval_only else train_step, eval_step,
                                     training.target, mesh, facts, batch_size=config.batch_size,
                                     eval_batch_size=config.eval_batch_size,
                                     grad_accum_steps=config.get('grad_accum_steps', 1))
    except BatchTooLargeError as error:
      error.config, error.facts = config, facts  # for the search of one that fits
      raise
    if restored is None:
      state, start_step = training.init(), 0
      if init_source is not None:
        state = init_from.load_into(state, init_source, record)
    else:
      state, input_state = restored
      start_step = int(jax.device_get(state.step))
      _check_input_state(input_state, config)
    writer = writers.create_writer(workdir, just_logging=jax.process_index() > 0)
    cleanup.callback(writer.close)
    attention = None
    if source.has_eval_images:  # imports TensorFlow, as the input of such data does anyway
      from ran_jax.reporting import attention_images
      attention = attention_images.make(config, training.model, pipeline, network.variables)
  return Run(config, workdir, pipeline, training.model, mesh, state, steps.train, steps.eval,
             manager, writer, stop, steps_per_epoch, training.num_train_steps, start_step,
             attention)


def _init_from(config: ml_collections.ConfigDict, workdir: str, manager: ocp.CheckpointManager,
               network: build.Network) -> tuple['init_from.InitRecord | None', dict | None]:
  """The record of a fine-tuned run, and (when it starts afresh) the variables to load.

  A run that has checkpoints of its own resumes from them with the record it started with.
  """
  record = init_from.read_record(workdir)
  if manager.latest_step() is not None:
    if config.get('init_from') and (record is None or config.init_from != record.source):
      logging.warning('init_from=%s is ignored: this run resumes from its own checkpoints.',
                      config.init_from)
    return record, None
  if not config.get('init_from'):
    if record is not None:  # of an attempt that saved no checkpoint
      init_from.remove_record(workdir)
    return None, None
  step, source, source_layout = init_from.read_source(config.init_from)
  record = init_from.match(config, network.variables, step, source, source_layout)
  init_from.log_record(record, source)
  init_from.save_record(workdir, record)
  return record, source


def _input_state(config: ml_collections.ConfigDict, step: int) -> dict:
  """What decides the data order from `step` on (see `InputPipeline.train_dataset`)."""
  return {'step': step, 'seed': config.seed, 'batch_size': config.batch_size,
          'dataset': config.dataset, 'shuffle_buffer': config.shuffle_buffer,
          'process_count': jax.process_count(), 'label_noise': config.label_noise,
          'label_noise_seed': config.label_noise_seed}


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
             f'{_count(jax.device_count(), "device")}, {_count(jax.process_count(), "process")}; '
             f'starting at step {run.start_step}.')
  schedule = optim.describe_schedule(run.config, run.steps_per_epoch, run.num_train_steps)
  logging.info(message)
  logging.info('Schedule: %s', schedule)
  if run.config.get('ema_decay') is not None:
    logging.info('Keeping a moving average of the weights (decay %g), evaluated beside them.',
                 run.config.get('ema_decay'))
  run.writer.write_texts(run.start_step, {'model': message, 'schedule': schedule})
  run.writer.write_hparams({k: v for k, v in run.config.to_dict().items()
                            if isinstance(v, (int, float, str, bool))})


def _count(number: int, noun: str) -> str:
  return f'{number} {noun}' + ('' if number == 1 else 'es' if noun.endswith('s') else 's')


def evaluate(run: Run) -> dict[str, Any] | None:
  """Metrics over the whole eval split (each example exactly once); with a moving average of
  the weights (`config.ema_decay`), also its metrics, as ema_loss, ema_top1_accuracy, ...

  Returns None when a stop signal arrives during a one-process evaluation, so that the
  checkpoint is saved without waiting for the rest of it.
  """
  states = {'': run.state}
  if (average := run.state.averaged()) is not None:
    states['ema_'] = run.state.with_variables(average)  # the same compiled step evaluates it
  outputs = {prefix: [] for prefix in states}
  for batch in run.pipeline.eval_batches(mesh_lib.data_sharding(run.mesh)):
    if run.stop.pending_locally:
      logging.warning('Evaluation abandoned to stop sooner.')
      return None
    for prefix, state in states.items():
      outputs[prefix].append(run.eval_step(state, batch))
  values = total_eval_metrics(outputs.pop(''))
  for prefix, batches in outputs.items():
    values.update({prefix + key: value for key, value in total_eval_metrics(batches).items()
                   if key != 'num_examples'})
  return values


def _strict_json_value(value: Any) -> Any:
  """Non-finite floats become null: eval_results.json stays strict JSON."""
  return None if isinstance(value, float) and not math.isfinite(value) else value


def write_eval_results(run: Run, step: int, values: dict[str, Any]) -> dict[str, Any]:
  """Writes `workdir/eval_results.json` (process 0) and the eval metrics."""
  results = {'step': step, **values, 'dataset': run.config.dataset,
             'model': run.config.model.name, 'eval_image_size': run.config.eval_image_size}
  results = {k: _strict_json_value(v) for k, v in results.items()}
  run.writer.write_scalars(step, {f'eval/{k}': v for k, v in values.items()})
  if jax.process_index() == 0:
    path = epath.Path(run.workdir) / EVAL_RESULTS
    staging = path.with_name(EVAL_RESULTS + '.tmp')
    staging.write_text(json.dumps(results, indent=2, allow_nan=False))
    staging.replace(path)
  logging.info('Evaluation at step %d: %s', step, json.dumps(results, allow_nan=False))
  return results


def _report_evaluation(run: Run, step: int, values: dict[str, Any]) -> dict[str, Any]:
  """Writes the eval results, then the attention mask images if asked for."""
  results = write_eval_results(run, step, values)
  if run.attention is not None:
    # the variables inference uses: the moving average when the run keeps one
    run.attention.write(run.writer, step, run.state.averaged() or run.state.variables)
  return results


def _make_workdir(workdir: str) -> None:
  try:
    epath.Path(workdir).mkdir(parents=True, exist_ok=True)
  except OSError as error:
    raise WorkdirError(f'Cannot create the work directory {workdir}: '
                       f'{describe_os_error(error)}. Give a --workdir where you can write.'
                       ) from error


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains (resuming from `workdir` if it holds checkpoints) and evaluates.

  With `config.eval_only`, only evaluates the latest checkpoint. Returns the final
  evaluation results, also written to `workdir/eval_results.json`. Raises `Preempted` after
  saving a checkpoint when SIGTERM, SIGINT or a preemption notice stops the run.
  """
  config = checks.with_current_names(config)
  checks.validate(config, workdir)
  no_checkpoint = FileNotFoundError(f'eval_only needs a checkpoint in {workdir}/checkpoints; '
                                    'none was found.')
  if config.eval_only and not checkpoints.has_steps(workdir):  # before any data or model work
    raise no_checkpoint
  _make_workdir(workdir)
  with contextlib.ExitStack() as cleanup:  # unwinds: checkpoints, lock, signals
    stop = cleanup.enter_context(StopSignals())
    stop.release_on_exit(cleanup.enter_context(lock.hold(workdir)))
    run = run_interruptibly(lambda: _setup(config, workdir, stop, cleanup))
    _log_model(run)
    if config.eval_only:
      if run.start_step == 0:
        raise no_checkpoint
      with stop.phase('while evaluating'):
        values = evaluate(run)
      return _report_evaluation(run, run.start_step, values)
    stop.training_started()
    return _train(run)


def _train(run: Run) -> dict[str, Any]:
  config, step = run.config, run.start_step
  results = None
  train_batches = run.pipeline.train_batches(step, mesh_lib.data_sharding(run.mesh),
                                             config.prefetch_to_device)
  profile = _profiler(run)
  progress = Progress(run, step)
  while step < run.num_train_steps:
    with jax.profiler.StepTraceAnnotation('train', step_num=step + 1):
      batch = next(train_batches)
      run.state, metrics = run.train_step(run.state, batch)
    step += 1
    progress.report_late()  # the previous log step's metrics, now that this step is queued
    progress.add(metrics)
    if profile is not None:
      profile(step)
    last = step == run.num_train_steps
    stopping = run.stop.requested(step)  # every step: a sync point on several hosts
    save_now = stopping or last or step % config.checkpoint_every_steps == 0
    evaluate_now = (last or step % config.eval_every_steps == 0) and not stopping
    if save_now or evaluate_now:  # their results need the state: the metrics are checked first
      progress.report(step)
    elif step % config.log_every_steps == 0:
      progress.report_after_next_step(step)
    if evaluate_now:
      values = evaluate(run)
      if values is not None:
        results = _report_evaluation(run, step, values)
      stopping = stopping or run.stop.requested(step)
      progress.pause(step)
    if save_now or stopping:
      checkpoints.save(run.manager, step, run.state, _input_state(config, step))
      progress.pause(step)
    if stopping:
      checkpoints.wait_for_saves(run.manager)
      raise Preempted(f'Stopped by {run.stop.received} at step {step}; its checkpoint is '
                      f'saved in {run.manager.directory}. Run the same command to resume.')
  progress.report_late()
  if results is None:  # already trained to the end earlier: evaluate what was restored
    values = evaluate(run)
    if values is None:
      raise Preempted(f'Stopped by {run.stop.received} during evaluation; nothing was '
                      'written. Run the same command to evaluate again.')
    results = _report_evaluation(run, step, values)
  return results


def _profiler(run: Run) -> Callable[[int], None] | None:
  if not (run.config.profile and jax.process_index() == 0):
    return None
  return writers.profiler(run.workdir)


class Progress:
  """The log line and training metrics of each log step, and the run's speed.

  The metrics of a log step are fetched after the next step is queued, so the devices never
  wait for the host (`report_after_next_step`); before an evaluation or a save they are fetched
  at once (`report`), checked first. Images per second count only training steps: the time
  from one fetched log step to the next, leaving out evaluations and saves (`pause`); the
  steps were compiled before the loop started.
  """

  def __init__(self, run: Run, step: int):
    self.run = run
    self.pending: list[dict] = []  # the metrics of the steps not reported yet
    self.late: tuple[int, list[dict]] | None = None  # a log step to report after the next one
    self.pause(step)

  def pause(self, step: int) -> None:
    """Starts the next interval at `step`, now (after an evaluation or a save)."""
    self.since, self.since_step = time.perf_counter(), step

  def add(self, metrics: dict) -> None:
    self.pending.append(metrics)

  def report_after_next_step(self, step: int) -> None:
    self.late, self.pending = (step, self.pending), []

  def report_late(self) -> None:
    """Reports the log step left for after the next step, if any."""
    if self.late is not None:
      late, self.late = self.late, None
      self._write(*late)

  def report(self, step: int) -> None:
    """Reports the steps up to `step` now."""
    self.report_late()
    pending, self.pending = self.pending, []
    self._write(step, pending)

  def _write(self, step: int, pending: list[dict]) -> None:
    """Writes the metrics of the steps up to `step`; NonFiniteError if the loss diverged."""
    if not pending:
      return
    run = self.run
    means = mean_train_metrics(pending)  # waits for `step` to finish
    now = time.perf_counter()
    values = {f'train/{k}': v for k, v in means.items()}
    if not all(math.isfinite(v) for v in values.values()):
      first = step - len(pending) + 1
      latest = run.manager.latest_step()
      kept = ('no checkpoint was saved' if latest is None else
              f'the last good checkpoint (step {latest}) is kept')
      raise NonFiniteError(
          f'The training loss became non-finite at step {step} (mean loss of steps {first}-'
          f'{step}: {values["train/loss"]}); {kept}. Lower the learning rate or check the input '
          'data.')
    rate = (step - self.since_step) * run.config.batch_size / max(now - self.since, 1e-9)
    self.since, self.since_step = now, step
    values['train/images_per_second'] = rate
    run.writer.write_scalars(step, values)
    logging.info('%s', writers.progress_line(step, run.num_train_steps, means, rate,
                                              run.config.batch_size))
