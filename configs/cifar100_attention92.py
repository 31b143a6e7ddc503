"""Attention-92 (CIFAR layout) on CIFAR-100: the CIFAR-10 recipe with 100 classes.

Command (from the repository root):
  python -m ran_jax.main --config=configs/cifar100_attention92.py --workdir=DIR

Hardware: one GPU (160k steps at batch 64).
Expected result (the paper's number, not yet reproduced here): 21.71% top-1 error (78.29%).
"""

from configs import cifar10_attention92


def get_config():
  config = cifar10_attention92.get_config()
  config.dataset = 'cifar100'
  return config
