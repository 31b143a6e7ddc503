"""Combining the steps' metrics on the host, after one transfer per log or evaluation."""

from collections.abc import Sequence

import jax
import numpy as np

LAST_VALUE = ('learning_rate', 'param_norm')  # reported as at the last step, not averaged


def mean_train_metrics(steps: Sequence[dict]) -> dict[str, float]:
  """The mean of each metric over `steps` (equal batches), or its last value (LAST_VALUE)."""
  values = jax.device_get(list(steps))
  return {key: float(values[-1][key] if key in LAST_VALUE else
                     np.mean([step[key] for step in values], dtype=np.float64))
          for key in values[0]}


def total_eval_metrics(batches: Sequence[dict]) -> dict[str, float | int]:
  """Loss and top-1/top-5 accuracy over every real example of `batches`, and their count."""
  values = jax.device_get(list(batches))
  total = {key: float(np.sum([batch[key] for batch in values], dtype=np.float64))
           for key in values[0]}
  count = total['count']
  return {'loss': total['loss'] / count, 'top1_accuracy': total['top1_correct'] / count,
          'top5_accuracy': total['top5_correct'] / count, 'num_examples': int(count)}
