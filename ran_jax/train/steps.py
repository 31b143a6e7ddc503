"""Loss, metrics and the jitted train and eval steps."""

import functools
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from clu import metrics
from jax.sharding import NamedSharding

from ran_jax.train.state import TrainState


@flax.struct.dataclass
class TrainMetrics(metrics.Collection):
  loss: metrics.Average.from_output('loss')
  top1_accuracy: metrics.Average.from_output('top1')
  top5_accuracy: metrics.Average.from_output('top5')
  learning_rate: metrics.LastValue.from_output('learning_rate')
  grad_norm: metrics.Average.from_output('grad_norm')
  param_norm: metrics.LastValue.from_output('param_norm')


@flax.struct.dataclass
class EvalMetrics(metrics.Collection):
  loss: metrics.Average.from_output('loss')
  top1_accuracy: metrics.Average.from_output('top1')
  top5_accuracy: metrics.Average.from_output('top5')


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


def train_step(state: TrainState, batch: dict[str, jax.Array], *, schedule: optax.Schedule,
               label_smoothing: float) -> tuple[TrainState, TrainMetrics]:
  """One SGD step on the global batch; BatchNorm statistics are over the global batch."""
  def loss_fn(params):
    logits, updates = state.apply_fn(
        {'params': params, 'batch_stats': state.batch_stats}, batch['image'], train=True,
        mutable=['batch_stats'])
    loss = cross_entropy(logits, batch['label'], label_smoothing)
    return loss.mean(), (loss, logits, updates['batch_stats'])

  grads, (loss, logits, batch_stats) = jax.grad(loss_fn, has_aux=True)(state.params)
  # Statistics keep their storage dtype whatever the compute dtype (one compilation).
  batch_stats = jax.tree.map(lambda new, old: new.astype(old.dtype), batch_stats,
                             state.batch_stats)
  new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
  step_metrics = TrainMetrics.single_from_model_output(
      loss=loss, top1=topk_correct(logits, batch['label'], 1),
      top5=topk_correct(logits, batch['label'], 5), learning_rate=schedule(state.step),
      grad_norm=optax.tree.norm(grads), param_norm=optax.tree.norm(new_state.params))
  return new_state, step_metrics


def eval_step(state: TrainState, batch: dict[str, jax.Array]) -> EvalMetrics:
  """Metrics of one padded eval batch; padding (mask False) is not counted."""
  logits = state.apply_fn({'params': state.params, 'batch_stats': state.batch_stats},
                          batch['image'], train=False)
  labels, mask = batch['label'], batch['mask']
  return EvalMetrics.single_from_model_output(
      loss=cross_entropy(logits, labels), top1=topk_correct(logits, labels, 1),
      top5=topk_correct(logits, labels, 5), mask=mask)


def jit_steps(state_shardings: Any, batch_sharding: NamedSharding, replicated: NamedSharding,
              schedule: optax.Schedule, label_smoothing: float = 0.0
              ) -> tuple[Callable, Callable]:
  """The train step (state donated) and eval step, jitted with explicit shardings."""
  train = jax.jit(
      functools.partial(train_step, schedule=schedule, label_smoothing=label_smoothing),
      in_shardings=(state_shardings, batch_sharding),
      out_shardings=(state_shardings, replicated), donate_argnums=0)
  evaluate = jax.jit(eval_step, in_shardings=(state_shardings, batch_sharding),
                     out_shardings=replicated)
  return train, evaluate
