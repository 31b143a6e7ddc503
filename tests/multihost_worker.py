"""One process of a two-process CPU training job (run by test_multihost.py).

    python tests/multihost_worker.py PROCESS_ID PORT WORKDIR DATA_DIR
"""

import json
import sys

import jax


def main(process_id: int, port: str, workdir: str, data_dir: str) -> None:
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.config.update('jax_num_cpu_devices', 2)
  jax.distributed.initialize(f'localhost:{port}', num_processes=2, process_id=process_id)
  from configs import digits_attention56
  from ran_jax.train import loop
  from test_train import shrink
  config = shrink(digits_attention56.get_config(), data_dir=data_dir, batch_size=32,
                  eval_batch_size=64, num_train_steps=4, log_every_steps=2,
                  eval_every_steps=100, checkpoint_every_steps=2)
  results = loop.train_and_evaluate(config, workdir)
  print('RESULT', json.dumps({'process_count': jax.process_count(),
                              'device_count': jax.device_count(), **results}), flush=True)


if __name__ == '__main__':
  main(int(sys.argv[1]), *sys.argv[2:5])
