"""Checkpoint integrity: digests, damaged steps set aside, other-model checkpoints refused."""

import contextlib
import errno
import hashlib
import json
import os
import pathlib
import resource
import shutil
import signal
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import tensorstore as ts

from ran_jax.workdir import checkpoints, save_failures
from ran_jax.workdir import digest as digest_lib
from ran_jax.train import mesh as mesh_lib
from ran_jax.process.errors import (CheckpointError, CheckpointSaveError, NonFiniteError,
                                    os_error_in)
from ran_jax.train.state import TrainState


def make_state(seed: int, width: int = 64, step: int = 0) -> TrainState:
  kernel = jax.random.normal(jax.random.key(seed), (width, 32))
  params = {'dense': {'kernel': kernel, 'bias': jnp.full((32,), 0.5)}}
  state = TrainState.create(apply_fn=None, params=params, tx=optax.sgd(0.1, momentum=0.9),
                            batch_stats={'bn': {'mean': jnp.zeros(32)}})
  return state.replace(step=jnp.asarray(step, jnp.int32))


@pytest.fixture(scope='module')
def two_steps(tmp_path_factory) -> pathlib.Path:
  """A workdir with good checkpoints of steps 1 and 2 (different states)."""
  workdir = tmp_path_factory.mktemp('two_steps')
  manager = checkpoints.make_manager(str(workdir), keep=3)
  for step in (1, 2):
    checkpoints.save(manager, step, make_state(step, step=step), {'step': step})
  checkpoints.close_manager(manager)
  return workdir


def copy_of(workdir: pathlib.Path, tmp_path: pathlib.Path) -> pathlib.Path:
  shutil.copytree(workdir, tmp_path / 'run')
  return tmp_path / 'run'


def restore(workdir: pathlib.Path, width: int = 64, **options):
  manager = checkpoints.make_manager(str(workdir), keep=3)
  try:
    return checkpoints.restore_latest(manager, jax.eval_shape(lambda: make_state(0, width)),
                                     **options)
  finally:
    checkpoints.close_manager(manager)


def largest_data_file(step_dir: pathlib.Path) -> pathlib.Path:
  files = [p for p in (step_dir / 'state').rglob('*') if p.is_file() and p.parent.name == 'd']
  return max(files, key=lambda p: p.stat().st_size)


def overwrite_bytes(step_dir: pathlib.Path) -> None:
  """8 bytes inside the largest data file: TensorStore still decodes it (silent damage)."""
  path = largest_data_file(step_dir)
  data = bytearray(path.read_bytes())
  data[97:105] = b'\x5a\xa5\x13\x37\x42\x24\x99\x11'
  path.write_bytes(bytes(data))


def truncate(step_dir: pathlib.Path) -> None:
  path = largest_data_file(step_dir)
  path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def delete(step_dir: pathlib.Path) -> None:
  largest_data_file(step_dir).unlink()


def wrong_digest(step_dir: pathlib.Path) -> None:
  path = step_dir / 'input' / 'metadata'
  meta = json.loads(path.read_text())
  meta['state_digest'] = '0' * 32
  path.write_text(json.dumps(meta))


def garbage_metadata(step_dir: pathlib.Path) -> None:
  (step_dir / 'input' / 'metadata').write_text('{"step": 2, "state_dig')


def test_digest_covers_every_bit_and_ignores_placement():
  state = make_state(0)
  digest, finite = checkpoints.state_digest(state)
  assert finite and len(digest) == 32
  on_eight = jax.device_put(state, mesh_lib.replicated(mesh_lib.make_mesh(jax.devices()[:8])))
  assert checkpoints.state_digest(on_eight) == (digest, True)
  kernel = state.params['dense']['kernel']
  nudged = state.replace(params={'dense': {
      'kernel': kernel.at[5, 7].set(jnp.nextafter(kernel[5, 7], jnp.inf)),
      'bias': state.params['dense']['bias']}})
  assert checkpoints.state_digest(nudged)[0] != digest
  nan = state.replace(params={'dense': {'kernel': kernel.at[0, 0].set(jnp.nan),
                                        'bias': state.params['dense']['bias']}})
  assert checkpoints.state_digest(nan)[1] is False


def test_digest_on_the_devices_equals_the_host_computation():
  """Accelerators reduce the state where it lives, CPUs in NumPy: the same digest either way."""
  rng = np.random.default_rng(0)
  leaves = [jnp.asarray(rng.normal(size=(300, 7)), jnp.float32),
            jnp.asarray(rng.normal(size=(5, 3)), jnp.bfloat16),
            jnp.asarray(rng.integers(-9, 9, size=11), jnp.int32),
            jnp.asarray(rng.integers(0, 2, size=4), jnp.bool_), jnp.int32(7)]
  device_sums, device_finite = digest_lib.device_sums(leaves)
  host_sums, host_finite = digest_lib.host_sums(leaves)
  np.testing.assert_array_equal(device_sums, host_sums)
  assert device_finite and host_finite and len(set(host_sums.tolist())) == len(leaves)
  broken = [*leaves[:4], jnp.float32(np.inf)]
  assert digest_lib.device_sums(broken)[1] is False and digest_lib.host_sums(broken)[1] is False
  assert checkpoints.state_digest(leaves)[0] == hashlib.sha256(host_sums.tobytes()).hexdigest()[:32]


@pytest.mark.parametrize('damage', [overwrite_bytes, truncate, delete, wrong_digest,
                                    garbage_metadata])
def test_damaged_newest_step_is_set_aside_and_the_previous_restored(
    two_steps, tmp_path, damage, caplog):
  workdir = copy_of(two_steps, tmp_path)
  damage(workdir / 'checkpoints' / '2')
  state, input_state = restore(workdir)
  assert int(state.step) == 1 and input_state == {'step': 1}
  assert checkpoints.state_digest(state) == checkpoints.state_digest(make_state(1, step=1))
  assert os.listdir(workdir / 'checkpoints') == ['1']
  (moved,) = os.listdir(workdir / 'checkpoints_damaged')  # kept, not deleted
  assert moved.startswith('2-') and (workdir / 'checkpoints_damaged' / moved / 'state').is_dir()
  assert 'Checkpoint of step 2 is damaged' in caplog.text
  assert 'resuming from step 1' in caplog.text


def test_a_reader_skips_a_damaged_step_but_leaves_it_in_place(two_steps, tmp_path, caplog):
  workdir = copy_of(two_steps, tmp_path)
  truncate(workdir / 'checkpoints' / '2')
  state, _ = restore(workdir, set_aside=False)
  assert int(state.step) == 1
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['1', '2']
  assert not (workdir / 'checkpoints_damaged').exists()
  assert 'Checkpoint of step 2 is damaged' in caplog.text


def test_every_step_damaged_stops_and_moves_nothing(two_steps, tmp_path):
  workdir = copy_of(two_steps, tmp_path)
  for step in ('1', '2'):
    truncate(workdir / 'checkpoints' / step)
  with pytest.raises(CheckpointError, match=r'Every checkpoint .* is damaged .*step 2: .*step 1'):
    restore(workdir)
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['1', '2']
  assert not (workdir / 'checkpoints_damaged').exists()


def test_checkpoint_of_another_model_is_refused_not_set_aside(two_steps, tmp_path):
  workdir = copy_of(two_steps, tmp_path)
  with pytest.raises(CheckpointError, match=r'another model or optimizer \(2,080 parameters; '
                                            r'this config has 3,104\)'):
    restore(workdir, width=96)
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['1', '2']


def test_non_finite_state_is_not_saved(tmp_path):
  manager = checkpoints.make_manager(str(tmp_path), keep=3)
  checkpoints.save(manager, 1, make_state(1, step=1), {'step': 1})
  state = make_state(2, step=2)
  state = state.replace(params=jax.tree.map(lambda x: x * np.float32(np.inf), state.params))
  with pytest.raises(NonFiniteError, match=r'non-finite by step 2.*checkpoint \(step 1\) is kept'):
    checkpoints.save(manager, 2, state, {'step': 2})
  checkpoints.close_manager(manager)
  assert os.listdir(tmp_path / 'checkpoints') == ['1']


def test_a_damaged_step_is_reported_with_the_store_error_not_orbax_wrapper(two_steps, tmp_path,
                                                                          caplog):
  """Orbax raises a plain Exception (naming only the array's index and the store's long spec)
  from TensorStore's error; the warning gives TensorStore's error, which says what is wrong."""
  workdir = copy_of(two_steps, tmp_path)
  truncate(workdir / 'checkpoints' / '2')
  restore(workdir, set_aside=False)
  assert 'Checkpoint of step 2 is damaged: its state could not be read (ValueError: ' \
      in caplog.text, caplog.text


@contextlib.contextmanager
def file_size_limit(limit: int):
  """Writes past `limit` bytes of a file fail with EFBIG (SIGXFSZ ignored) while inside."""
  handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
  soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
  resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
  try:
    yield
  finally:
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    signal.signal(signal.SIGXFSZ, handler)


def test_tensorstore_names_the_os_error_of_a_failed_write(tmp_path):
  """TensorStore gives its errors no type or errno, only a message; a failed save is told
  apart (a full disk, a read-only one, ...) by the OS error code that message names. Fails
  when TensorStore stops naming it."""
  store = ts.open({'driver': 'zarr', 'kvstore': {'driver': 'file', 'path': str(tmp_path)}},
                  create=True, dtype=ts.float32, shape=[100_000]).result()
  values = np.random.default_rng(0).normal(size=100_000).astype(np.float32)
  with pytest.raises(Exception) as raised, file_size_limit(4096):
    store.write(values).result()
  assert os_error_in(raised.value) is None  # no OSError to read the errno from
  assert save_failures.tensorstore_os_error(raised.value) == (errno.EFBIG, raised.value)
  manager = checkpoints.make_manager(str(tmp_path / 'run'), keep=3)
  try:
    try:
      raise RuntimeError('save failed') from raised.value  # as wrapped by a caller
    except RuntimeError as wrapped:
      error = save_failures.save_failed(manager, 3, wrapped)
  finally:
    checkpoints.close_manager(manager)
  assert str(error).startswith(f'Could not save the checkpoint of step 3 in {tmp_path}/run/'
                               'checkpoints: file too large (ValueError: '), error
  assert 'Then make it writable' in str(error), error


# Orbax's abandoned write tasks may call into their closed event loop once the save failed.
@pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')
def test_a_disk_that_fills_during_the_save_is_named_full(tmp_path):
  """A save that the disk has no room for (the first, so not refused up front) fails with
  TensorStore's ENOSPC: reported as a full disk. Mounts a tmpfs of 256 KiB, so needs root."""
  small = tmp_path / 'small'
  small.mkdir()
  if os.geteuid() != 0:
    pytest.skip('mounting a small file system needs root')
  mount = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=256k', 'tmpfs', str(small)],
                         capture_output=True, text=True, check=False)
  if mount.returncode:
    pytest.skip(f'mounting a tmpfs is not allowed here: {mount.stderr.strip()}')
  try:
    manager = checkpoints.make_manager(str(small), keep=3)
    with pytest.raises(CheckpointSaveError) as raised:
      try:
        checkpoints.save(manager, 1, make_state(1, width=8192, step=1), {'step': 1})
      finally:
        checkpoints.close_manager(manager)
  finally:
    subprocess.run(['umount', '-l', str(small)], check=False)
  message = str(raised.value)
  assert message.startswith(f'Could not save the checkpoint of step 1 in {small}/checkpoints: '
                            'no space left on device'), message
  assert 'no checkpoint was saved before it. Then free space there' in message, message
  if os_error_in(raised.value.__cause__) is None:  # TensorStore's error, not Python's
    assert save_failures.tensorstore_os_error(raised.value.__cause__)[0] == errno.ENOSPC
