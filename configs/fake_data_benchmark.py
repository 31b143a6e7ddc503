"""Attention-56 at 224 on synthetic device-resident data: the trainer's own speed.

Command (from the repository root):
  python -m ran_jax.main --config=configs/fake_data_benchmark.py --workdir=/tmp/ran_fake

One random batch of uint8 images is made once and kept on the devices, so there is no input
pipeline; everything else is the real run (the steps compiled before the loop, metrics,
logging, progress, the final checkpoint and evaluation). Compare the logged
`train/images_per_second` (training steps only) with
  python benchmarks/train_step.py --model attention56 --batch 8 --image-size 224
at the same batch and dtype, or run both alternately with `benchmarks/loop_overhead.py`. On a
GPU or TPU use e.g. `--config.batch_size=256 --config.dtype=bfloat16
--config.num_train_steps=200 --config.log_every_steps=20`, and the same --batch and --dtype
for train_step.py.
Expected result: at least 98% of the bare step's images/second (measured figures in
benchmarks/README.md).
"""

from configs import imagenet_attention56

PAPER_RESULT = 'not in the paper (>= 98% of the bare step\'s images/s)'


def get_config():
  config = imagenet_attention56.get_config()
  config.dataset = 'fake'
  config.dtype = 'float32'
  config.batch_size = 8
  config.eval_batch_size = 8
  config.num_train_steps = 30
  config.log_every_steps = 5
  config.eval_every_steps = 1_000_000  # evaluated once, at the end
  config.checkpoint_every_steps = 1_000_000  # saved once, at the end
  return config
