"""`ran_jax.plan`: accelerator types, memory accounting, the fit decision, the batch search
and the remat suggestion, on this host's 8 CPU devices (the same code path as for a TPU
topology), and one compile for a real TPU topology when libtpu is installed."""

import dataclasses
import importlib.metadata
import importlib.util
import subprocess
import sys

import jax
import ml_collections
import pytest
from ml_collections import config_dict
from training_jobs import TINY_NETWORK

from configs import digits_attention56
from ran_jax import plan as plan_lib
from ran_jax.data import sources, synthetic
from ran_jax.data.source import batch_shapes
from ran_jax.planning import accelerators, memory_plan
from ran_jax.train import compiled
from ran_jax.planning.memory_plan import CompiledStep, StepMemory, search_largest_batch

GIB = 2**30


@pytest.mark.parametrize('name,chips,devices,topology,hosts', [
    ('v2-32', 16, 32, 'v2:4x4', 4),
    ('v3-8', 4, 8, 'v3:2x2', 1),
    ('v4-8', 4, 4, 'v4:2x2x1', 1),
    ('v4-256', 128, 128, 'v4:4x4x8', 32),
    ('v5litepod-8', 8, 8, 'v5e:2x4', 1),
    ('v5litepod-16', 16, 16, 'v5e:4x4', 4),
    ('v5p-128', 64, 64, 'v5p:4x4x4', 16),
    ('v5p-2048', 1024, 1024, 'v5p:8x8x16', 256),
    ('v6e-8', 8, 8, 'v6e:2x4', 1),
    ('v6e-256', 256, 256, 'v6e:16x16', 64),
])
def test_accelerator_types_map_to_chips_topologies_and_devices(name, chips, devices, topology,
                                                               hosts):
  accelerator = accelerators.parse(name)
  assert (accelerator.chips, accelerator.devices, accelerator.topology_name,
          accelerator.hosts) == (chips, devices, topology, hosts)
  megacore = name.startswith(('v4', 'v5p'))
  assert accelerator.chip_config_name == ('megacore' if megacore else 'default')


def test_hbm_per_device_of_each_generation():
  per_device = {g: accelerators.parse(f'{g}-8').hbm_bytes_per_device / GIB
                for g in ('v2', 'v3', 'v4', 'v5litepod', 'v5p', 'v6e')}
  assert per_device == {'v2': 8, 'v3': 16, 'v4': 32, 'v5litepod': 16, 'v5p': 95, 'v6e': 32}


@pytest.mark.parametrize('name', ['v5e-8', 'v4-12', 'v4-8x', 'tpu', 'v7-8'])
def test_unknown_accelerator_type_lists_the_known_ones(name):
  with pytest.raises(ValueError, match=rf"unknown accelerator type '{name}'; known types: "
                     r'v2-\{8,32,.*v5litepod-\{1,4,8,.*v6e-\{1,4,8,16'):
    accelerators.parse(name)


def test_chip_shapes_double_the_smallest_side():
  assert [accelerators.chip_shape(2**k, 3) for k in range(2, 8)] == [
      (2, 2, 1), (2, 2, 2), (2, 2, 4), (2, 4, 4), (4, 4, 4), (4, 4, 8)]
  assert [accelerators.chip_shape(2**k, 2) for k in range(0, 5)] == [
      (1, 1), (1, 2), (2, 2), (2, 4), (4, 4)]
  with pytest.raises(ValueError, match='12 chips is not a power of two'):
    accelerators.chip_shape(12, 3)


def test_memory_total_counts_donated_buffers_once():
  memory = StepMemory(arguments=100, outputs=90, aliased=80, temporaries=500, code=7)
  assert memory.total == 100 + 90 - 80 + 500 + 7


def test_out_of_memory_refusal_is_read_from_the_compiler_message():
  error = RuntimeError('RESOURCE_EXHAUSTED: XLA:TPU compile permanent error. Ran out of memory '
                       'in memory space hbm. Used 40.59G of 31.25G hbm. Exceeded hbm capacity '
                       'by 9.34G.')
  used, limit = compiled.out_of_memory(error)
  assert used == int(40.59 * GIB) and limit == int(31.25 * GIB)
  other = RuntimeError('RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required '
                       'for HLO temporaries (70.01G) exceeds available HBM (30.75G).')
  assert compiled.out_of_memory(other) == (int(70.01 * GIB), int(30.75 * GIB))
  assert compiled.out_of_memory(ValueError('shapes do not match')) is None


def fake_compile(fixed: int, per_image: int, calls: list, limit: int | None = None):
  """A compile whose memory is `fixed + per_image * batch`, a little convex; above `limit`
  it is refused as the TPU compiler refuses. The batch's share is in the temporaries."""
  def compile_at(batch: int) -> CompiledStep:
    calls.append(batch)
    total = int(fixed + per_image * batch * (1 + batch / 50_000))
    if limit is not None and total > limit:
      return CompiledStep('train', 'none', batch, batch, None, total, limit, None, None, 1.0)
    memory = StepMemory(fixed // 2, 0, 0, total - fixed // 2, 0)
    return CompiledStep('train', 'none', batch, batch, memory, memory.total, None, 1e9, None,
                        1.0)
  return compile_at


@pytest.mark.parametrize('capacity_gib', [4, 16, 95])
def test_search_finds_the_largest_fitting_multiple_in_few_compiles(capacity_gib):
  capacity, calls = capacity_gib * GIB, []
  compile_at = fake_compile(fixed=GIB // 2, per_image=60 * 2**20, calls=calls, limit=capacity)
  asked = compile_at(64)
  found = search_largest_batch(compile_at, capacity, [asked], multiple=8, max_compiles=5)
  fits = [b for b in range(8, 4000, 8) if fake_compile(GIB // 2, 60 * 2**20, [])(b).fits(
      capacity)]
  assert found.largest == max(fits) and found.confirmed_above
  assert len(calls) - 1 <= 3  # the second point, then the batch on the line and the next one
  assert [c.per_device_batch for c in found.compiles] == calls[1:]


def test_search_when_nothing_fits_and_when_compiles_run_out():
  calls = []
  compile_at = fake_compile(fixed=8 * GIB, per_image=GIB, calls=calls)
  found = search_largest_batch(compile_at, 4 * GIB, [compile_at(64)], multiple=8)
  assert found.largest is None and found.confirmed_above and min(calls) == 1
  calls = []
  compile_at = fake_compile(fixed=0, per_image=2**20, calls=calls)
  found = search_largest_batch(compile_at, 1000 * 2**20, [], multiple=8, max_compiles=1)
  assert calls == [8] and found.largest == 8 and not found.confirmed_above


def test_search_goes_on_down_until_a_batch_fits():
  """Refusals that give no byte count (halving) or one (a jump to where it would fit) are
  not counted against `max_compiles`: the search always reports a fitting batch, the
  smallest refused one above it, and "none" only when one image per device is refused."""
  for says_bytes in (False, True):
    calls = []
    compile_at = fake_compile(fixed=GIB // 2, per_image=40 * 2**20, calls=calls, limit=30 * GIB)
    refusing = compile_at if says_bytes else lambda batch: dataclasses.replace(
        compile_at(batch), total_bytes=None)
    found = search_largest_batch(refusing, 30 * GIB, [refusing(16384)], multiple=8,
                                 max_compiles=2)
    fits = [b for b in range(8, 16384, 8) if fake_compile(GIB // 2, 40 * 2**20, [])(b).fits(
        30 * GIB)]
    assert found.largest in fits and found.largest > max(fits) // 4, (says_bytes, calls)
    assert found.smallest_refused > found.largest and not refusing(
        found.smallest_refused).fits(30 * GIB)
  calls = []
  tiny = fake_compile(fixed=0, per_image=GIB, calls=calls, limit=4 * GIB)
  found = search_largest_batch(tiny, 4 * GIB, [tiny(64)], multiple=8)
  assert (found.largest, found.smallest_refused, found.confirmed_above) == (1, 8, True)


def digits_config(**fields):
  """The digits config with a tiny network (fast compiles), as --config.FIELD would set it."""
  config = digits_attention56.get_config()
  config.model.update(TINY_NETWORK)
  for key, value in fields.items():
    config[key] = value
  return config_dict.ConfigDict(config.to_dict(), type_safe=False)


def cpu_target(capacity: int | None) -> plan_lib.Target:
  devices = jax.devices()
  return plan_lib.Target('cpu', f'{len(devices)} CPU devices', devices, 1, capacity, 'test')


@pytest.fixture(scope='module')
def builder():
  return memory_plan.StepBuilder(digits_config(), jax.devices())


def test_train_step_compiles_for_every_device_with_the_trainers_parts(builder):
  compiled = builder.compile(step='train', per_device_batch=4)
  memory = compiled.memory
  assert compiled.global_batch == 4 * jax.device_count() == 32
  assert min(memory.arguments, memory.outputs, memory.temporaries) > 0
  # The state is donated: its outputs are written in place of its arguments.
  assert 0 < memory.aliased <= min(memory.outputs, memory.arguments)
  # Over all devices; a network this small adds BatchNorm and ReLU FLOPs of the same order.
  model_flops = 6 * builder.model_macs_per_image('train') * compiled.global_batch
  assert model_flops < compiled.flops < 4 * model_flops
  assert compiled.fits(memory.total) and not compiled.fits(memory.total - 1)


def test_eval_step_needs_less_than_the_train_step(builder):
  train = builder.compile(step='train', per_device_batch=4)
  evaluation = builder.compile(step='eval', per_device_batch=4)
  assert evaluation.memory.aliased == 0 and evaluation.memory.total < train.memory.total
  assert evaluation.memory.temporaries < train.memory.temporaries
  record = plan_lib._compiled_record(evaluation, None, builder.model_macs_per_image('eval'))
  assert record['memory'] == {**dataclasses.asdict(evaluation.memory),
                              'total': evaluation.memory.total}
  assert record['fits'] and record['global_batch'] == 32
  assert record['model_flops_per_image'] == 2 * builder.model_macs_per_image('eval')


@dataclasses.dataclass
class FakeBuilder:
  """Compiles as `fake_compile` does; remat='module' halves the bytes per image, k micro-batches
  divide the images by k."""
  calls: list = dataclasses.field(default_factory=list)

  def compile(self, *, step: str, per_device_batch: int, remat: str | None = None,
              grad_accum_steps: int | None = None):
    per_image = 60 * 2**20 // (2 if remat == 'module' else 1)
    count = grad_accum_steps or 1
    compiled = fake_compile(GIB // 2, per_image, self.calls, limit=4 * GIB)(
        per_device_batch // count)
    return dataclasses.replace(compiled, step=step, remat=remat or 'none',
                               per_device_batch=per_device_batch, grad_accum_steps=count,
                               global_batch=8 * per_device_batch)

  def model_macs_per_image(self, step: str) -> int:
    return 10**9


def test_plan_that_does_not_fit_finds_the_batch_and_tries_remat():
  config = digits_config(batch_size=8 * 80, eval_batch_size=64)  # 80 per device
  lines, fake = [], FakeBuilder()
  plan = plan_lib.make_plan(config, cpu_target(4 * GIB), multiple=8, max_compiles=4,
                            report=lines.append, builder=fake)
  assert not plan['fits'] and plan['train']['per_device_batch'] == 80
  assert plan['eval']['per_device_batch'] == 8 and plan['eval']['fits']
  assert plan['largest_per_device_batch'] == 56 and plan['largest_confirmed']
  assert plan['remat_that_fits'] == 'unit' or plan['remat_that_fits'] == 'module'
  assert [c['remat'] for c in plan['compiles']][-1] == plan['remat_that_fits']
  assert lines[0] == 'compiling the train step at 80 images per device ...'
  assert lines[-1] == f'compiling the train step at 80 images per device with remat=' \
                      f'{plan["remat_that_fits"]} ...'
  text = plan_lib.format_plan(plan)
  assert 'train step at batch 640: does not fit' in text
  assert 'largest per-device batch that fits: 56 (global 448; the next multiple does not fit)' \
      in text
  assert f'--config.model.remat={plan["remat_that_fits"]} makes the asked batch fit' in text
  assert 'does not fit: the compiler refused it for memory (needs 5.' in text
  # 80 per device in 2 micro-batches of 40 (the search found 56 to fit)
  assert plan['grad_accum_that_fits'] == 2
  assert 'compiling the train step at 80 images per device in 2 micro-batches ...' in lines
  assert ('train step, batch 640 (80 per device, 2 micro-batches of 40), remat none: compiled'
          in text)
  assert ('--config.grad_accum_steps=2 keeps the asked batch in micro-batches of 40 per device, '
          'and fits') in text


def test_plan_that_fits_searches_only_when_asked():
  config = digits_config(batch_size=8 * 16, eval_batch_size=64)
  plan = plan_lib.make_plan(config, cpu_target(4 * GIB), builder=FakeBuilder())
  assert plan['fits'] and 'largest_per_device_batch' not in plan and len(plan['compiles']) == 2
  plan = plan_lib.make_plan(config, cpu_target(4 * GIB), builder=FakeBuilder(), search=True,
                            with_eval=False)
  assert plan['largest_per_device_batch'] == 56 and 'remat_that_fits' not in plan


def test_plan_rejects_a_batch_that_does_not_split_over_the_devices():
  with pytest.raises(ValueError, match=r"batch_size=12 is not allowed: it must be divisible by "
                     r'the number of devices \(8\), e.g. --config.batch_size=16'):
    plan_lib.make_plan(digits_config(batch_size=12), cpu_target(GIB))


def test_tpu_type_without_libtpu_names_the_install_command(monkeypatch):
  real = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, 'find_spec',
                      lambda name, *a: None if name == 'libtpu' else real(name, *a))
  with pytest.raises(RuntimeError, match=r'compiling for v5p-8 needs libtpu, which is not '
                     r'installed; install it with: python3 -m pip install -e "\.\[tpu\]"'):
    plan_lib.tpu_target('v5p-8')


def test_cli_names_an_unknown_type_in_one_line():
  done = subprocess.run([sys.executable, '-m', 'ran_jax.plan',
                         '--config=configs/digits_attention56.py', '--topology=v5e-8'],
                        capture_output=True, text=True, timeout=120, check=False)
  assert done.returncode == 2
  last = done.stderr.strip().splitlines()[-1]
  assert last.startswith("error: unknown accelerator type 'v5e-8'; known types: v2-{8,")
  assert 'Traceback' not in done.stderr


def test_synthetic_batches_are_the_batch_shapes():
  data = synthetic.SyntheticInput(8, 8, 16, 16)
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  for train, batch in ((True, next(data.train_batches(0, sharding))),
                       (False, next(data.eval_batches(sharding)))):
    source = sources.source_of(ml_collections.ConfigDict(
        {'dataset': synthetic.NAME, 'image_size': 16, 'eval_image_size': 16}))
    shapes = batch_shapes(source.planning_facts(), 8, 16, train=train)
    assert {k: (v.shape, v.dtype) for k, v in batch.items()} == {
        k: (s.shape, s.dtype) for k, s in shapes.items()}


@pytest.mark.skipif(importlib.util.find_spec('libtpu') is None,
                    reason='libtpu is not installed (pip install -e ".[tpu]")')
def test_compiles_for_a_real_tpu_topology():
  target = plan_lib.tpu_target('v5litepod-4')
  assert [d.device_kind for d in target.devices] == ['TPU v5 lite'] * 4
  assert target.compiler == (f'jax {jax.__version__}, '
                             f'libtpu {importlib.metadata.version("libtpu")}')
  plan = plan_lib.make_plan(digits_config(batch_size=32, eval_batch_size=32), target,
                            with_eval=False)
  assert plan['fits'] and plan['train']['per_device_batch'] == 8
  memory = plan['train']['memory']
  assert 0 < memory['aliased'] <= memory['arguments'] and memory['total'] < 16 * GIB
  assert 1 < plan['train']['xla_over_model_flops'] < 4  # BatchNorm and ReLU count here

