"""XLA compiler options of the jitted steps, per backend.

On CPUs, XLA (jaxlib 0.10) hands matrix products, convolutions and reductions to YNNPACK by
default. In the Attention-56 train step XLA's own (Eigen) convolutions are much faster (see
benchmarks/README.md), so the steps keep YNNPACK for matrix products and reductions only
(the same as XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=-individual_convolution).
Setting `xla_cpu_experimental_ynn_fusion_type` in XLA_FLAGS leaves the choice to you.
"""

import functools
import logging
import os

import jax
import jax.numpy as jnp

# For functions run once (the initialisation of the train state): their compile time
# matters, their speed does not.
QUICK_COMPILE = {'xla_backend_optimization_level': 0}

CPU_OPTIONS = {'xla_cpu_experimental_ynn_fusion_type':
               'LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE'}


@functools.cache
def step_compiler_options(platform: str) -> dict[str, str]:
  """Options for `jax.jit(..., compiler_options=...)` of the steps on `platform`."""
  if platform != 'cpu' or 'ynn_fusion_type' in os.environ.get('XLA_FLAGS', ''):
    return {}
  try:  # an XLA without the option refuses it here, not in the middle of a run
    probe = jax.device_put(jnp.zeros(()), jax.devices('cpu')[0])
    jax.jit(lambda x: x + 1, compiler_options=CPU_OPTIONS).lower(probe).compile()
  except Exception as error:  # any refusal means: run without the option
    logging.info('XLA CPU option %s not available (%s); using XLA defaults.', CPU_OPTIONS,
                 str(error).splitlines()[0])
    return {}
  return dict(CPU_OPTIONS)
