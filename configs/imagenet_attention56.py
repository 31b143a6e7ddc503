"""Attention-56 on ImageNet (ILSVRC2012), 224x224 training and single centre-crop eval.

Command (from the repository root):
  python -m ran_jax.main --config=configs/imagenet_attention56.py --workdir=DIR

Hardware: 8 GPUs with 32 images each (the authors' setting) or a TPU v3-8 / v4-8; use
`--config.dtype=bfloat16` on TPUs and recent GPUs. Data: TFDS imagenet2012 prepared from
the manual download (see README, "ImageNet").
Expected result (the paper's number, not yet reproduced here): 21.76% top-1 error,
5.9% top-5 error (78.24% / 94.1% accuracy) on the validation set.
"""

from configs import base


def get_config():
  config = base.get_config()
  config.model.name = 'attention56'
  config.dataset = 'imagenet2012'
  config.image_size = 224
  config.eval_image_size = 224
  config.batch_size = 256
  config.eval_batch_size = 256
  config.learning_rate = 0.1  # at batch 256, scaled linearly with batch_size
  config.lr_reference_batch_size = 256
  config.schedule = 'piecewise'
  config.lr_boundaries = (200_000, 400_000, 500_000)
  config.num_train_steps = 530_000
  config.eval_every_steps = 10_000
  config.checkpoint_every_steps = 2_000
  return config
