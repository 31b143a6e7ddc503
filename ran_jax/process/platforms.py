"""Which JAX backends a tool starts on this host, and libtpu's settings for compiling ahead of
time for a TPU topology on a host without TPUs."""

import glob
import importlib.metadata
import importlib.util
import os
import re

GOOGLE_PCI_VENDOR = '0x1ae0'  # TPU chips are PCI devices of Google's vendor id
GPU_PLUGIN = re.compile(r'jax[-_](cuda|rocm)\d*[-_](plugin|pjrt)$', re.IGNORECASE)


def tpu_chips_present() -> bool:
  """Whether this host has TPU chips (PCI devices of Google's vendor id, as JAX finds them)."""
  for path in glob.glob('/sys/bus/pci/devices/*/vendor'):
    try:
      with open(path, encoding='ascii') as vendor:
        if vendor.read().strip() == GOOGLE_PCI_VENDOR:
          return True
    except OSError:
      continue
  return False


def gpu_plugin_installed() -> bool:
  """Whether a GPU plugin of JAX (CUDA or ROCm) is installed."""
  return any(GPU_PLUGIN.match(dist.metadata['Name'] or '')
             for dist in importlib.metadata.distributions())


def cpu_only_without_accelerators() -> None:
  """Starts JAX on its CPU backend alone where libtpu is installed (the `[tpu]` extra) on a host
  that has no TPU chips and no GPU plugin of JAX.

  JAX would otherwise load libtpu to find that there is no TPU, and libtpu prints errors to
  stderr while it looks ('Failed to find host bounds', 'unexpected worker hostname'). A set
  JAX_PLATFORMS is left as it is, and so are TPU VMs and hosts with a GPU plugin. Call it
  before JAX starts its backends.
  """
  if (os.environ.get('JAX_PLATFORMS') is not None or importlib.util.find_spec('libtpu') is None
      or tpu_chips_present() or gpu_plugin_installed()):
    return
  import jax  # pylint: disable=import-outside-toplevel
  jax.config.update('jax_platforms', 'cpu')


def libtpu_compile_environment(accelerator_name: str) -> None:
  """Environment that keeps libtpu from looking for TPU hardware and metadata servers when it
  compiles for `accelerator_name` on another host, and lets several compiling processes load it
  (a compile needs no TPU to itself)."""
  os.environ.setdefault('ALLOW_MULTIPLE_LIBTPU_LOAD', '1')
  os.environ.setdefault('TPU_SKIP_MDS_QUERY', '1')
  os.environ.setdefault('TPU_ACCELERATOR_TYPE', accelerator_name)
  os.environ.setdefault('TPU_WORKER_HOSTNAMES', 'localhost')
  os.environ.setdefault('TPU_WORKER_ID', '0')
