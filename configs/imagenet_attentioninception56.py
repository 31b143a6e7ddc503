"""AttentionInception-56 on ImageNet: Inception-ResNet-style units, 224x224 train and eval.

Command (from the repository root):
  python -m ran_jax.main --config=configs/imagenet_attentioninception56.py --workdir=DIR

Model: attentioninception56. The authors released no definition of it; the unit used here
and its parameter and multiply-add counts against the paper's 31.9M and 6.3G are documented
in ran_jax/models/units.py and ran_jax/models/presets.py. Hardware, data and training: those
of configs/imagenet_attention56.py. Memory: 4.79 GiB per chip for the train step at batch
256 on a v5p-8 (`python -m ran_jax.plan`, benchmarks/README.md "TPU plans").
Expected result (paper: 20.36% top-1, 5.29% top-5 error; not yet reproduced here): 79.64% /
94.71% accuracy on the validation set.
"""

from configs import imagenet_attention56

PAPER_RESULT = 'paper: 20.36% top-1, 5.29% top-5 error'


def get_config():
  config = imagenet_attention56.get_config()
  config.model.name = 'attentioninception56'
  return config
