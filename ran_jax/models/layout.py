"""The two variable layouts of a network, and exact conversion between them.

Unrolled (the default, `scan=False`): every block of a run of identical blocks has its own
variables: `stage2/module1`, `stage2/module2`, `trunk/unit1`, `trunk/unit2`, ... Scanned
(`scan=True`): each run of two or more identical blocks is one `nn.scan` loop, and its
variables are one entry named by the range it replaces (`stage2/module1-2`, `trunk/unit1-2`)
whose leaves are the blocks' leaves stacked along a new leading axis, in order. Runs nest (a
scanned module holds scanned trunk units), and so do their axes.

`convert` moves values only (no arithmetic), so it is exact both ways. It works on any tree
that holds variables (a {'params', 'batch_stats'} dict, a train state, an optimizer state that
mirrors the parameters), guided by a tree of the other layout (`like`, abstract is enough).
"""

import re
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

UNROLLED = 'unrolled'
SCANNED = 'scanned'
LAYOUTS = (UNROLLED, SCANNED)

_RANGE = re.compile(r'(.*?)(\d+)-(\d+)')


def scanned_name(prefix: str, first: int, last: int) -> str:
  """The name of the scanned run of blocks `prefix{first}` ... `prefix{last}`."""
  return f'{prefix}{first}-{last}'


def expand_name(name: str) -> list[str] | None:
  """The unrolled names a scanned run's name stands for ('unit1-3' -> unit1, unit2, unit3);
  None for any other name."""
  match = _RANGE.fullmatch(name)
  if not match:
    return None
  prefix, first, last = match.group(1), int(match.group(2)), int(match.group(3))
  return [f'{prefix}{i}' for i in range(first, last + 1)] if last > first else None


def _apply(block: nn.Module, x: jax.Array, _: None) -> tuple[jax.Array, None]:
  return block(x), None


# Scanning pays for runs of residual units from three units on: with two, the loop and its
# backward pass cost XLA more to compile than the unit it saves (benchmarks/README.md).
SHORTEST_UNIT_RUN = 3

def repeat(make: Callable[[str], nn.Module], x: jax.Array, count: int, prefix: str, *,
           scan: bool, first: int = 1, shortest: int = 2) -> jax.Array:
  """Applies `count` identical blocks in a row, `make(name)` building each.

  Unrolled: blocks `prefix{first}`, `prefix{first + 1}`, ... With `scan` and at least
  `shortest` blocks: one `nn.scan` over a block named `scanned_name(prefix, first, last)`, whose
  variables (every collection, sown values included) are stacked along a leading axis.
  """
  if scan and count >= shortest:
    block = make(scanned_name(prefix, first, first + count - 1))
    x, _ = nn.scan(_apply, variable_axes={True: 0}, split_rngs={'params': True},
                   length=count)(block, x, None)
    return x
  for i in range(first, first + count):
    x = make(f'{prefix}{i}')(x)
  return x


def layout_of(tree: Any) -> str:
  """SCANNED when any mapping in `tree` has a scanned run's name as a key, else UNROLLED."""
  nodes = jax.tree.leaves(tree, is_leaf=lambda node: isinstance(node, Mapping))

  def scanned(node: Any) -> bool:
    return isinstance(node, Mapping) and any(
        (isinstance(key, str) and expand_name(key)) or scanned(value)
        for key, value in node.items())

  return SCANNED if any(scanned(node) for node in nodes) else UNROLLED


def _convert_mapping(source: Mapping, like: Mapping, path: str) -> dict:
  """`source`'s values under `like`'s keys, stacking or splitting scanned runs."""
  ranges = {name: key for key in source if isinstance(key, str)
            for name in (expand_name(key) or ())}
  out, used = {}, set()
  for key, ref in like.items():
    where = f'{path}/{key}'
    if key in source:
      out[key] = _convert_value(source[key], ref, where)
      used.add(key)
    elif (names := expand_name(key)) and all(name in source for name in names):
      members = [_convert_value(source[name], ref, f'{path}/{name}') for name in names]
      out[key] = jax.tree.map(lambda *leaves: jnp.stack(leaves), *members)
      used.update(names)
    elif key in ranges:
      run = ranges[key]
      index = expand_name(run).index(key)
      member = jax.tree.map(lambda leaf, i=index: leaf[i], source[run])
      out[key] = _convert_value(member, ref, where)
      used.add(run)
    else:
      raise ValueError(f'Cannot convert the variables: {where.lstrip("/")} has no counterpart '
                       'in the other layout (a different model?).')
  extra = sorted(str(key) for key in source if key not in used)
  if extra:
    raise ValueError(f'Cannot convert the variables: {path.lstrip("/") or "the top level"} '
                     f'has {", ".join(extra)}, which the other layout does not.')
  return out


def _convert_value(source: Any, like: Any, path: str) -> Any:
  if isinstance(like, Mapping) and isinstance(source, Mapping):
    return _convert_mapping(source, like, path)
  return source


def _is_mapping(node: Any) -> bool:
  return isinstance(node, Mapping)


def convert(tree: Any, like: Any) -> Any:
  """`tree`'s values in the layout of `like` (the same kind of tree, in either layout); the
  result takes its containers from `like` (a train state's model and optimizer, for one).

  Raises a ValueError naming the first variable that has no counterpart in `like`.
  """
  sources = jax.tree.leaves(tree, is_leaf=_is_mapping)
  refs, structure = jax.tree.flatten(like, is_leaf=_is_mapping)
  if len(sources) != len(refs):
    raise ValueError(f'Cannot convert the variables: the tree has {len(sources)} parts and '
                     f'the other layout {len(refs)} (a different kind of state?).')
  return structure.unflatten([_convert_value(source, ref, '')
                              for source, ref in zip(sources, refs, strict=True)])


def split_sown(name: str, value: Any) -> dict[str, Any]:
  """{unrolled name: value} of a value sown by block `name`; a scanned run's stacked value
  is split into one value per block (its leading axis)."""
  names = expand_name(name.rsplit('/', 1)[-1])
  if not names:
    return {name: value}
  parent = name.rsplit('/', 1)[0] + '/' if '/' in name else ''
  return {parent + block: value[i] for i, block in enumerate(names)}
