"""The work-directory lock: refuses a second live run, never stays stuck after a dead one."""

import json
import socket
import subprocess
import sys
import time

import pytest

from ran_jax.workdir import lock
from ran_jax.process.errors import WorkdirBusyError


def write_lock(workdir, **holder):
  record = {'host': socket.gethostname(), 'pid': 1, 'started': time.time(),
            'heartbeat': time.time(), **holder}
  (workdir / lock.LOCK_NAME).write_text(json.dumps(record))


@pytest.fixture
def live_process():
  """A process that lives until the test ends (it waits for its stdin to close)."""
  process = subprocess.Popen([sys.executable, '-c', 'import sys; sys.stdin.read()'],
                             stdin=subprocess.PIPE)
  yield process
  process.stdin.close()
  process.wait()


def test_lock_is_held_during_the_run_and_released_after(tmp_path):
  path = tmp_path / lock.LOCK_NAME
  with lock.hold(str(tmp_path)):
    holder = json.loads(path.read_text())
    assert holder['host'] == socket.gethostname() and holder['pid'] > 0
  assert not path.exists()


def test_live_run_on_this_host_is_refused_until_it_dies(tmp_path, live_process):
  write_lock(tmp_path, pid=live_process.pid)
  with pytest.raises(WorkdirBusyError, match=rf'in use by another run \(host .*, pid '
                                             rf'{live_process.pid}, started .*\); stop it first'):
    with lock.hold(str(tmp_path)):
      pass
  live_process.kill()
  live_process.wait()
  with lock.hold(str(tmp_path)):  # its lock is stale now: taken over at once
    assert json.loads((tmp_path / lock.LOCK_NAME).read_text())['pid'] != live_process.pid


def test_other_host_holds_the_lock_while_its_heartbeat_is_fresh(tmp_path):
  write_lock(tmp_path, host='another-host', heartbeat=time.time() - 10)
  with pytest.raises(WorkdirBusyError, match='host another-host'):
    with lock.hold(str(tmp_path)):
      pass
  write_lock(tmp_path, host='another-host',
             heartbeat=time.time() - lock.STALE_AFTER_SECONDS - 1)
  with lock.hold(str(tmp_path)):
    pass


def test_unreadable_lock_is_taken_over(tmp_path):
  (tmp_path / lock.LOCK_NAME).write_text('{"host": "x", "pi')
  with lock.hold(str(tmp_path)):
    pass
