"""AttentionNeXt-56 on ImageNet: ResNeXt units (32 groups), 224x224 train and eval.

Command (from the repository root):
  python -m ran_jax.main --config=configs/imagenet_attentionnext56.py --workdir=DIR

Model: attentionnext56, the authors' released definition (31,318,824 parameters, 6.419 G
multiply-adds at 224; the paper lists 31.9M and 6.3G). Hardware, data and training: those of
configs/imagenet_attention56.py (the paper trains its ImageNet models the same way).
Memory: 6.95 GiB per chip for the train step at batch 256 on a v5p-8 (`python -m
ran_jax.plan`, benchmarks/README.md "TPU plans"; the grouped convolutions need more
temporaries than Attention-56's).
Expected result (paper: 21.2% top-1, 5.6% top-5 error; not yet reproduced here): 78.8% /
94.4% accuracy on the validation set.
"""

from configs import imagenet_attention56

PAPER_RESULT = 'paper: 21.2% top-1, 5.6% top-5 error'


def get_config():
  config = imagenet_attention56.get_config()
  config.model.name = 'attentionnext56'
  return config
