"""Attention-92 on ImageNet: 224x224 training, single centre-crop eval at 320x320.

Command (from the repository root):
  python -m ran_jax.main --config=configs/imagenet_attention92.py --workdir=DIR

Hardware: 8 GPUs with 32 images each (the authors' setting; Attention-92 needs more memory
than ResNet-101; `--config.model.remat=unit` lowers it) or a TPU v3-8 / v4-8; bfloat16
compute as in configs/imagenet_attention56.py. Memory: the train step needs 5.38 GiB per chip
at batch 256 on a v4-8 (64 per chip, of 32 GiB) and 5.42 GiB on a v5p-8; the eval step at
320 needs 0.96 GiB; on a v5p-128 pod, 1.59 GiB (4 per chip) (`python -m ran_jax.plan`,
benchmarks/README.md "TPU plans").
Expected result (paper: 19.5% top-1, 4.8% top-5 error; not yet reproduced here): 80.5% /
95.2% accuracy with the 320 crop. Model: 52,466,344 parameters, 10.534 G multiply-adds at
224 (the paper: 51.3M, 10.4G).
"""

from configs import imagenet_attention56

PAPER_RESULT = 'paper: 19.5% top-1, 4.8% top-5 error'


def get_config():
  config = imagenet_attention56.get_config()
  config.model.name = 'attention92'
  config.eval_image_size = 320
  return config
