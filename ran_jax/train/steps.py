"""Loss, metrics and the jitted train and eval steps.

Imports only JAX, Flax and optax (with the package's own modules), so the steps also run
where TensorFlow and clu are not installed (see benchmarks/train_step.py). Each step returns
its metrics as a dict of scalars; `ran_jax.train.metrics` combines them on the host.
"""

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding

from ran_jax.train.compiler_options import step_compiler_options
from ran_jax.train.state import TrainState

# Maps a batch (uint8 or float pixels, plus whatever the pipeline sends) to the network input.
InputFn = Callable[[dict[str, jax.Array]], jax.Array]


def raw_images(batch: dict[str, jax.Array]) -> jax.Array:
  """The batch's images as they are (for data that needs no normalisation)."""
  return batch['image']


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
  """Per-example softmax cross-entropy (float32), with optional label smoothing."""
  targets = jax.nn.one_hot(labels, logits.shape[-1], dtype=jnp.float32)
  if label_smoothing:
    targets = optax.smooth_labels(targets, label_smoothing)
  return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def topk_correct(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
  """1.0 where the label is among the k highest logits, per example."""
  k = min(k, logits.shape[-1])
  _, top = jax.lax.top_k(logits, k)
  return jnp.any(top == labels[:, None], axis=-1).astype(jnp.float32)


def micro_batches(batch: dict[str, jax.Array], count: int) -> dict[str, jax.Array]:
  """The global batch as `count` micro-batches along a new leading axis: micro-batch j holds
  examples j, j + count, j + 2 count, ... so that each device holds its share of every
  micro-batch (the batch is split over the devices in contiguous blocks)."""
  return jax.tree.map(
      lambda x: jnp.swapaxes(x.reshape(x.shape[0] // count, count, *x.shape[1:]), 0, 1), batch)


def _gradients(state: TrainState, batch_stats: Any, batch: dict[str, jax.Array],
               label_smoothing: float, input_fn: InputFn
               ) -> tuple[Any, Any, dict[str, jax.Array]]:
  """(gradients of the mean loss, BatchNorm statistics updated by `batch`, its metrics)."""
  images = input_fn(batch)

  def loss_fn(params):
    logits, updates = state.apply_fn(
        {'params': params, 'batch_stats': batch_stats}, images, train=True,
        mutable=['batch_stats'])
    loss = cross_entropy(logits, batch['label'], label_smoothing)
    return loss.mean(), (loss, logits, updates['batch_stats'])

  grads, (loss, logits, new_stats) = jax.grad(loss_fn, has_aux=True)(state.params)
  # Statistics keep their storage dtype whatever the compute dtype (one compilation).
  new_stats = jax.tree.map(lambda new, old: new.astype(old.dtype), new_stats, batch_stats)
  labels = batch['label']
  return grads, new_stats, {'loss': loss.mean(),
                            'top1_accuracy': topk_correct(logits, labels, 1).mean(),
                            'top5_accuracy': topk_correct(logits, labels, 5).mean()}


def _accumulated_gradients(state: TrainState, batch: dict[str, jax.Array], count: int,
                           label_smoothing: float, input_fn: InputFn
                           ) -> tuple[Any, Any, dict[str, jax.Array]]:
  """`_gradients` of `count` micro-batches in a `lax.scan` (the memory of one): the mean of
  their gradients and metrics, the statistics updated by each in turn."""
  def accumulate(carry, micro_batch):
    grad_sum, batch_stats = carry
    grads, batch_stats, metrics = _gradients(state, batch_stats, micro_batch, label_smoothing,
                                             input_fn)
    return (jax.tree.map(jnp.add, grad_sum, grads), batch_stats), metrics

  zeros = jax.tree.map(jnp.zeros_like, state.params)
  (grad_sum, batch_stats), metrics = jax.lax.scan(
      accumulate, (zeros, state.batch_stats), micro_batches(batch, count))
  grads = jax.tree.map(lambda total: total / count, grad_sum)
  return grads, batch_stats, jax.tree.map(jnp.mean, metrics)


def train_step(state: TrainState, batch: dict[str, jax.Array], *, schedule: optax.Schedule,
               label_smoothing: float, input_fn: InputFn = raw_images,
               grad_accum_steps: int = 1, ema_decay: float | None = None
               ) -> tuple[TrainState, dict[str, jax.Array]]:
  """One SGD update on the global batch.

  With `grad_accum_steps` = 1, BatchNorm statistics are over the global batch; with k > 1,
  the update is the mean gradient of k micro-batches of batch/k (`micro_batches`), each
  normalised by its own statistics, which also update the running averages in turn. With
  `ema_decay` (an `AveragedTrainState`), the moving average of the variables is updated after
  the step: average = decay * average + (1 - decay) * variables.

  Returns the new state and the step's metrics: mean loss, top-1 and top-5 accuracy (over the
  whole batch), and the learning rate, gradient norm and parameter norm.
  """
  if grad_accum_steps == 1:
    grads, batch_stats, metrics = _gradients(state, state.batch_stats, batch, label_smoothing,
                                             input_fn)
  else:
    grads, batch_stats, metrics = _accumulated_gradients(state, batch, grad_accum_steps,
                                                         label_smoothing, input_fn)
  new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
  if ema_decay is not None:
    new_state = new_state.replace(ema=optax.incremental_update(
        new_state.variables, state.ema, step_size=1 - ema_decay))
  metrics.update({
      'learning_rate': jnp.asarray(schedule(state.step), jnp.float32),
      'grad_norm': optax.tree.norm(grads), 'param_norm': optax.tree.norm(new_state.params)})
  return new_state, metrics


def eval_step(state: TrainState, batch: dict[str, jax.Array], *,
              input_fn: InputFn = raw_images) -> dict[str, jax.Array]:
  """Sums over the real examples of one padded eval batch (padding has mask False)."""
  logits = state.apply_fn(state.variables, input_fn(batch), train=False)
  labels = batch['label']
  mask = batch['mask'].astype(jnp.float32)
  return {'loss': jnp.sum(cross_entropy(logits, labels) * mask),
          'top1_correct': jnp.sum(topk_correct(logits, labels, 1) * mask),
          'top5_correct': jnp.sum(topk_correct(logits, labels, 5) * mask),
          'count': jnp.sum(mask)}


def jit_steps(state_shardings: Any, batch_sharding: NamedSharding, replicated: NamedSharding,
              schedule: optax.Schedule, label_smoothing: float = 0.0,
              input_fn: InputFn = raw_images, *, grad_accum_steps: int = 1,
              ema_decay: float | None = None) -> tuple[Callable, Callable]:
  """The train step (state donated) and eval step, jitted with explicit shardings.

  `grad_accum_steps` and `ema_decay`: see `train_step`.

  `input_fn` runs inside both steps, on the devices: it turns the transferred batch (e.g.
  uint8 pixels) into the network's input. The batch is not donated: no output has its shape,
  so XLA could not write into its buffer (JAX would only warn that it went unused), and the
  synthetic input gives the same device batch at every step.
  """
  options = step_compiler_options(batch_sharding.mesh.devices.flat[0].platform)
  train = jax.jit(
      functools.partial(train_step, schedule=schedule, label_smoothing=label_smoothing,
                        input_fn=input_fn, grad_accum_steps=grad_accum_steps,
                        ema_decay=ema_decay),
      in_shardings=(state_shardings, batch_sharding),
      out_shardings=(state_shardings, replicated), donate_argnums=0, compiler_options=options)
  evaluate = jax.jit(functools.partial(eval_step, input_fn=input_fn),
                     in_shardings=(state_shardings, batch_sharding), out_shardings=replicated,
                     compiler_options=options)
  return train, evaluate
