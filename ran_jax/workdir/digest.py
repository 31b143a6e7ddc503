"""The digest of a train state (every bit of it, the same on any device count or placement)
and the signature of its structure, stored with each checkpoint and checked on restore."""

import hashlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def _as_uint32(x: jax.Array) -> jax.Array:
  """The bits of `x` as uint32 words, flattened (narrower types widened, 64-bit types split
  low word first)."""
  if x.dtype == jnp.bool_:
    return x.astype(jnp.uint32).reshape(-1)
  width = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}.get(x.dtype.itemsize, jnp.uint32)
  return jax.lax.bitcast_convert_type(x, width).astype(jnp.uint32).reshape(-1)


def _leaf_sum(leaf: jax.Array) -> tuple[jax.Array, jax.Array]:
  """The sum of `leaf`'s words times 1, 3, 5, ... (mod 2**32; integer sums wrap exactly, in
  any order of reduction), and whether its values are finite."""
  words = _as_uint32(leaf)
  weights = jnp.arange(words.size, dtype=jnp.uint32) * 2 + 1
  finite = (jnp.all(jnp.isfinite(leaf)) if jnp.issubdtype(leaf.dtype, jnp.inexact) else
            jnp.bool_(True))
  return jnp.sum(words * weights, dtype=jnp.uint32), finite


@jax.jit
def _state_sums(leaves: list[jax.Array]) -> tuple[jax.Array, jax.Array]:
  """`_leaf_sum` of every leaf, as one program: (sums, all finite)."""
  parts = [_leaf_sum(leaf) for leaf in leaves]
  return (jnp.stack([part[0] for part in parts]),
          jnp.all(jnp.stack([part[1] for part in parts])))


def device_sums(leaves: list[jax.Array]) -> tuple[np.ndarray, bool]:
  """`_leaf_sum` of each leaf, computed where the leaves live: one program for the whole state
  (compiled once per state structure), one dispatch, one small transfer."""
  sums, finite = jax.device_get(_state_sums(leaves))
  return np.asarray(sums, np.uint32), bool(finite)


def host_sums(leaves: list[Any]) -> tuple[np.ndarray, bool]:
  """The same sums computed in NumPy on the host."""
  sums, finite = [], True
  for leaf in jax.device_get(leaves):
    leaf = np.ascontiguousarray(leaf)
    words = (leaf.astype(np.uint32) if leaf.dtype == np.bool_ else leaf.view(
        {1: np.uint8, 2: np.uint16}.get(leaf.dtype.itemsize, np.uint32)).astype(np.uint32))
    weights = np.arange(words.size, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    sums.append(np.sum(words.reshape(-1) * weights, dtype=np.uint32))
    if np.issubdtype(leaf.dtype, np.inexact):
      finite = finite and bool(np.isfinite(leaf).all())
  return np.asarray(sums, np.uint32), finite


def _on_accelerators(leaves: list[Any]) -> bool:
  return any(device.platform != 'cpu' for leaf in leaves if isinstance(leaf, jax.Array)
             for device in leaf.devices())


def state_digest(state: Any) -> tuple[str, bool]:
  """(digest of every bit of `state`, whether all its floating-point values are finite).

  Per leaf, the sum of its uint32 words times 1, 3, 5, ... (mod 2**32), hashed; integer sums
  are exact, so the digest is the same whatever the device count or placement. A state on
  GPUs or TPUs is reduced there (only a word per leaf comes to the host, where fetching it
  all would copy the whole state at every save); on CPUs, where the state is in host memory
  already, NumPy does it without compiling anything (`benchmarks/checkpoint_digest.py`).
  """
  leaves = jax.tree.leaves(state)
  sums, finite = device_sums(leaves) if _on_accelerators(leaves) else host_sums(leaves)
  return hashlib.sha256(sums.tobytes()).hexdigest()[:32], finite


def structure_signature(state: Any) -> str:
  """A hash of the state's paths, shapes and dtypes (works on abstract states too)."""
  leaves = jax.tree_util.tree_flatten_with_path(state)[0]
  entries = [f'{jax.tree_util.keystr(path)} {np.shape(leaf)} {jnp.result_type(leaf).name}'
             for path, leaf in leaves]
  return hashlib.sha256('\n'.join(entries).encode()).hexdigest()[:16]
