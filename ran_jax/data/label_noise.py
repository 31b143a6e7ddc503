"""Symmetric label noise: a fixed fraction of the training labels moved to another class.

Of N examples, exactly round(rate * N) (chosen by a seeded permutation) get a shift drawn
uniformly from 1..K-1 and the noisy label (label + shift) % K; the others keep their label. So
every wrong class is equally likely, whatever the true class (a symmetric confusion matrix).
The shifts depend only on (N, K, rate, seed), so every process, and a resumed run, computes
the same ones; examples are addressed by their index in the whole train split.
"""

import numpy as np

_PURPOSE = 0x1AB31  # keeps these draws apart from any other use of the same seed


def noise_count(num_examples: int, rate: float) -> int:
  """How many of `num_examples` labels a noise `rate` replaces: round(rate * num_examples)."""
  return round(rate * num_examples)


def label_shifts(num_examples: int, num_classes: int, rate: float, seed: int) -> np.ndarray:
  """Per-example shifts (int32, 0 for clean labels) of symmetric noise at `rate`."""
  if not 0 <= rate < 1:
    raise ValueError(f'The label noise rate must be in [0, 1), got {rate}.')
  count = noise_count(num_examples, rate)
  if count and num_classes < 2:
    raise ValueError(f'Label noise needs at least 2 classes, got {num_classes}.')
  shifts = np.zeros(num_examples, np.int32)
  if not count:
    return shifts
  rng = np.random.default_rng([seed, _PURPOSE])
  noisy = rng.permutation(num_examples)[:count]
  shifts[noisy] = rng.integers(1, num_classes, size=count, dtype=np.int32)
  return shifts
