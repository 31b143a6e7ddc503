"""Attention-56 on ImageNet (ILSVRC2012), 224x224 training and single centre-crop eval.

Command (from the repository root):
  python -m ran_jax.main --config=configs/imagenet_attention56.py --workdir=DIR

Hardware: 8 GPUs with 32 images each (the authors' setting) or a TPU v3-8 / v4-8. Computes
in bfloat16 with float32 parameters, BatchNorm statistics and logits (`--config.dtype=float32`
for full precision, e.g. on CPUs or GPUs older than Ampere). Data: TFDS imagenet2012 prepared from
the manual download (see README, "ImageNet"). Memory: the train step needs 3.91 GiB per
chip at batch 256 on a v5p-8 (64 per chip; XLA's analysis of the step compiled for the
topology: `python -m ran_jax.plan --config=configs/imagenet_attention56.py --topology=v5p-8`);
every ImageNet config on each TPU type is in benchmarks/README.md ("TPU plans"). Fewer or
smaller devices keep the paper's batch of 256 with `--config.grad_accum_steps=K`: each update
averages the gradients of K micro-batches of 256 / K, each normalised by its own BatchNorm
statistics, as the authors' GPUs each normalised their own 32 (K = 8 is their setting on one
device).
Training (the paper's): SGD, Nesterov 0.9, weight decay 1e-4, batch 256, lr 0.1 divided by 10
at 200k, 400k and 500k iterations, stop at 530k; in epochs of the 1,281,167 training images:
decays at 39.96, 79.93 and 99.91, stop at 105.9. Another batch size keeps these epochs and
scales the lr linearly (batch 1024: lr 0.4, 132,500 steps, decays at 50k, 100k, 125k).
Expected result (paper: 21.76% top-1, 5.9% top-5 error; not yet reproduced here): 78.24% /
94.1% accuracy on the validation set. Model: 31,810,728 parameters, 6.271 G multiply-adds
(the paper: 31.9M, 6.3G).
"""

from configs import base

PAPER_RESULT = 'paper: 21.76% top-1, 5.9% top-5 error'


def get_config():
  config = base.get_config()
  config.model.name = 'attention56'
  config.dataset = 'imagenet2012'
  config.image_size = 224
  config.eval_image_size = 224
  config.dtype = 'bfloat16'
  config.batch_size = 256
  config.eval_batch_size = 256
  config.learning_rate = 0.1  # at batch 256, scaled linearly with batch_size
  config.lr_reference_batch_size = 256
  config.schedule = 'piecewise'
  base.set_schedule_from_iterations(
      config, batch_size=256, decays=(200_000, 400_000, 500_000), stop=530_000,
      num_train_examples=base.IMAGENET_TRAIN_EXAMPLES)
  config.eval_every_steps = 10_000
  config.checkpoint_every_steps = 2_000
  return config
