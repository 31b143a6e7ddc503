"""Host batches onto the devices: each process's part of the global batch, a few ahead."""

import collections
from collections.abc import Iterable, Iterator

import jax
import numpy as np
from jax.sharding import NamedSharding


def to_global(batch: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
  """Assembles the global batch from every process's local part."""
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)


def prefetch_to_device(batches: Iterable[dict[str, np.ndarray]], sharding: NamedSharding,
                       size: int = 2) -> Iterator[dict[str, jax.Array]]:
  """Keeps `size` batches in flight to the devices ahead of the consumer."""
  queue = collections.deque()
  for batch in batches:
    queue.append(to_global(batch, sharding))
    if len(queue) >= size:
      yield queue.popleft()
  while queue:
    yield queue.popleft()
