"""The device mesh and the shardings of a data-parallel run."""

import jax
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = 'data'


def make_mesh(devices: list | None = None) -> Mesh:
  """A 1-D mesh over `devices` (default: every device of every process).

  Its axis is of type `Auto`: the steps are jitted with explicit input and output shardings
  and XLA's partitioner decides the shardings inside them, as for any data-parallel program.
  JAX's default changed from `Auto` to `Explicit` (shardings in the arrays' types, checked op
  by op), so it is named here rather than left to the installed version.
  """
  devices = devices if devices is not None else jax.devices()
  return jax.make_mesh((len(devices),), (DATA_AXIS,), devices=devices,
                       axis_types=(AxisType.Auto,))


def data_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over the data axis."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())
