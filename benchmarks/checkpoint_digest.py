"""What the digest of a checkpoint costs (`digest.state_digest`, at every save and
restore): reduced on the devices against fetched to the host and summed in NumPy, alternately,
on a full-size train state.

    python benchmarks/checkpoint_digest.py --model attention92 --rounds 3

Prints one JSON line: the state's bytes, the device reduction's first call (compilation
included: one small program per leaf shape), the median of its later calls, and the host
computation's median. On a CPU the state is in host memory already, so only the arithmetic
differs (and the digest uses the host there); on a GPU or TPU the host computation also
copies the whole state to the host at every save and restore.
"""

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import optax
from cli_args import positive_int

from ran_jax.models import create_model, list_models
from ran_jax.workdir import digest
from ran_jax.train import mesh as mesh_lib
from ran_jax.train.state import train_state_factory


def timed(fn) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--model', default='attention92', choices=list_models())
  parser.add_argument('--image-size', type=positive_int, default=224)
  parser.add_argument('--rounds', type=positive_int, default=3)
  args = parser.parse_args()
  model = create_model(args.model, num_classes=1000)
  tx = optax.sgd(0.1, momentum=0.9, nesterov=True)
  init, _ = train_state_factory(model, tx, mesh_lib.make_mesh(),
                                (args.image_size, args.image_size, 3), seed=0)
  state = jax.block_until_ready(init())
  state_bytes = sum(leaf.nbytes for leaf in jax.tree.leaves(state))
  leaves = jax.tree.leaves(state)
  device_sums, host_sums = digest.device_sums, digest.host_sums
  first = timed(lambda: device_sums(leaves))
  device, host = [], []
  for _ in range(args.rounds):
    device.append(timed(lambda: device_sums(leaves)))
    host.append(timed(lambda: host_sums(leaves)))
  print(json.dumps({
      'model': args.model, 'state_mb': round(state_bytes / 1e6, 1),
      'devices': jax.device_count(), 'device_kind': jax.devices()[0].device_kind,
      'device_digest_first_s': round(first, 3),
      'device_digest_s': round(statistics.median(device), 3),
      'host_digest_s': round(statistics.median(host), 3)}))


if __name__ == '__main__':
  jnp.zeros(())  # start the backend before timing
  main()
