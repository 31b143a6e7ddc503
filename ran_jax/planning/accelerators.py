"""Cloud TPU accelerator types (`v4-8`, `v5p-128`, ...) as the devices JAX sees on them.

Maps the names users give `gcloud --accelerator-type` (and `launch/tpu_vm.sh`) to chips, the
topology libtpu compiles for, and the JAX devices a VM of that type shows: one device per
chip on v4 and v5p (their two TensorCores run as one "megacore" device), on v5e and v6e
(one TensorCore per chip), and one device per TensorCore on v2 and v3. Pure Python: nothing
here needs libtpu.

HBM per device, from the Cloud TPU documentation's system architecture pages (the TPU
versions' specifications): v2 8 GiB per TensorCore (16 GiB per chip), v3 16 GiB per
TensorCore (32 GiB per chip), v4 32 GiB per chip, v5e 16 GiB per chip, v5p 95 GiB per chip,
v6e 32 GiB per chip. The compiler keeps a little of it for itself: its own limit is what
decides whether a program fits (`ran_jax.planning.memory_plan`).
"""

import dataclasses
import math

GIB = 2**30


@dataclasses.dataclass(frozen=True)
class Generation:
  """One TPU generation.

  Attributes:
    prefix: the accelerator type's prefix (`v5p` in `v5p-128`).
    topology_prefix: libtpu's name of the generation (`v5e` for `v5litepod`).
    counts: 'cores' when the type's number counts TensorCores, 'chips' when it counts chips.
    cores_per_chip: TensorCores per chip.
    megacore: the chip's TensorCores run as one device (chip config 'megacore').
    dims: 2 or 3, the topology's dimensions.
    hbm_gib: HBM per device (a chip, or a TensorCore on v2 and v3).
    device_kind: jax's `device_kind` of its devices.
    sizes: the type's numbers (`v5p-8`, `v5p-16`, ...) this module knows.
  """
  prefix: str
  topology_prefix: str
  counts: str
  cores_per_chip: int
  megacore: bool
  dims: int
  hbm_gib: float
  device_kind: str
  sizes: tuple[int, ...]


GENERATIONS = {
    g.prefix: g for g in (
        Generation('v2', 'v2', 'cores', 2, False, 2, 8, 'TPU v2', (8, 32, 128, 256, 512)),
        Generation('v3', 'v3', 'cores', 2, False, 2, 16, 'TPU v3',
                   (8, 32, 64, 128, 256, 512, 1024, 2048)),
        Generation('v4', 'v4', 'cores', 2, True, 3, 32, 'TPU v4',
                   (8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)),
        Generation('v5litepod', 'v5e', 'chips', 1, False, 2, 16, 'TPU v5 lite',
                   (1, 4, 8, 16, 32, 64, 128, 256)),
        Generation('v5p', 'v5p', 'cores', 2, True, 3, 95, 'TPU v5',
                   (8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)),
        Generation('v6e', 'v6e', 'chips', 1, False, 2, 32, 'TPU v6 lite',
                   (1, 4, 8, 16, 32, 64, 128, 256)),
    )
}


@dataclasses.dataclass(frozen=True)
class Accelerator:
  """An accelerator type: its chips, topology and devices.

  Attributes:
    name: as given (`v4-8`).
    generation: its `Generation`.
    chips: number of chips; devices: number of JAX devices (chips, or TensorCores on v2/v3).
    shape: the chips' arrangement (`(2, 2, 1)`), as in libtpu's topology name.
  """
  name: str
  generation: Generation
  chips: int
  devices: int
  shape: tuple[int, ...]

  @property
  def topology_name(self) -> str:
    """libtpu's topology name, e.g. `v4:2x2x1`."""
    return f'{self.generation.topology_prefix}:{"x".join(map(str, self.shape))}'

  @property
  def chip_config_name(self) -> str:
    """libtpu's chip configuration: 'megacore' (one device per chip) or 'default'."""
    return 'megacore' if self.generation.megacore else 'default'

  @property
  def hbm_bytes_per_device(self) -> int:
    return int(self.generation.hbm_gib * GIB)

  @property
  def chips_per_host_bounds(self) -> tuple[int, int, int]:
    """The chips of one VM host: 2x2x1 (4 chips), except the single-host v5e and v6e
    types of 1, 4 and 8 chips, whose one host holds them all."""
    if self.generation.counts == 'chips' and self.chips <= 8:
      return (*self.shape, 1)
    return (2, 2, 1)

  @property
  def hosts(self) -> int:
    return self.chips // math.prod(self.chips_per_host_bounds)

  def describe(self) -> str:
    g = self.generation
    per_device = ('one device per chip (its 2 TensorCores as one megacore device)'
                  if g.megacore else 'one device per TensorCore' if g.cores_per_chip > 1
                  else 'one device per chip (1 TensorCore)')
    chips = f'{self.chips} {g.device_kind} chip{"s" if self.chips > 1 else ""}'
    hosts = f'{self.hosts} host{"s" if self.hosts > 1 else ""}'
    devices = f'{self.devices} device{"s" if self.devices > 1 else ""}'
    return (f'{self.name}: {chips} ({self.topology_name}, {hosts}), {devices}, {per_device}; '
            f'{g.hbm_gib:g} GiB HBM per device')


def chip_shape(chips: int, dims: int) -> tuple[int, ...]:
  """The arrangement of `chips` (a power of two) in a slice: 2x2x1, 2x2x2, 2x2x4, 2x4x4, ...

  3-D (v4, v5p) from 2x2x1, 2-D (v2, v3, v5e, v6e) from 1x1; each doubling doubles the
  smallest side, the last of equal sides first.
  """
  shape = [2, 2, 1] if dims == 3 else [1, 1]
  if dims == 3 and chips < 4:
    raise ValueError(f'{chips} chips: a 3-D slice has at least 4')
  while math.prod(shape) < chips:
    smallest = min(shape)
    last = max(i for i, side in enumerate(shape) if side == smallest)
    shape[last] *= 2
  if math.prod(shape) != chips:
    raise ValueError(f'{chips} chips is not a power of two')
  if dims == 2:
    shape.sort()
  return tuple(shape)


def known_types() -> list[str]:
  """Every accelerator type this module knows, e.g. `v4-8`."""
  return [f'{g.prefix}-{size}' for g in GENERATIONS.values() for size in g.sizes]


def parse(name: str) -> Accelerator:
  """The accelerator type `name` (`v4-8`, `v5litepod-16`, ...); a ValueError lists the known
  types when it is not one of them."""
  prefix, _, size = name.strip().lower().rpartition('-')
  generation = GENERATIONS.get(prefix)
  if generation is None or not size.isdigit() or int(size) not in generation.sizes:
    by_generation = '; '.join(f'{g.prefix}-{{{",".join(map(str, g.sizes))}}}'
                              for g in GENERATIONS.values())
    raise ValueError(f'unknown accelerator type {name!r}; known types: {by_generation}')
  count = int(size)
  chips = count // generation.cores_per_chip if generation.counts == 'cores' else count
  devices = chips if generation.megacore or generation.cores_per_chip == 1 else count
  return Accelerator(name, generation, chips, devices, chip_shape(chips, generation.dims))
