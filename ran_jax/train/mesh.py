"""The device mesh and the shardings of a data-parallel run."""

import jax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = 'data'


def make_mesh(devices: list | None = None) -> Mesh:
  """A 1-D mesh over `devices` (default: every device of every process)."""
  devices = devices if devices is not None else jax.devices()
  return jax.make_mesh((len(devices),), (DATA_AXIS,), devices=devices)


def data_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over the data axis."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def check_batch_size(global_batch: int, mesh: Mesh, field: str = 'batch_size') -> None:
  """A clear error when a global batch can't be split evenly over the devices."""
  devices = mesh.devices.size
  if global_batch <= 0 or global_batch % devices:
    raise ValueError(
        f'{field}={global_batch} must be a positive multiple of the number of devices '
        f'({devices}); for example '
        f'--config.{field}={max(1, global_batch // devices) * devices}.')
