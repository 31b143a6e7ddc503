"""The soft mask's structure, Attention-56 on CIFAR-10.

Command (from the repository root), VARIANT from the table:
  python -m ran_jax.main --config=configs/cifar_mask_structure.py:local_conv --workdir=DIR

encoder_decoder (the method): the bottom-up top-down hourglass; local_conv (the ablation):
the same number of residual units at full resolution, with no pooling or up-sampling
(model.mask_structure; see ran_jax/models/attention.py for the reading of the paper).

| variant | model | paper's result |
|---|---|---|
| encoder_decoder | attention56_cifar | paper: 5.52% top-1 error |
| local_conv | attention56_cifar, mask_structure='local_conv' | paper: 6.48% top-1 error |

The local-convolution figure comes from secondary sources (unconfirmed); not reproduced here
yet. The default variant is encoder_decoder. Training and hardware: configs/cifar.py's.
"""

import ml_collections

from configs import base, cifar

VARIANTS = {
    'encoder_decoder': 'paper: 5.52% top-1 error',
    'local_conv': 'paper: 6.48% top-1 error',
}


def get_config(variant: str = 'encoder_decoder') -> ml_collections.ConfigDict:
  (structure,) = base.variant_parts(variant, VARIANTS, 'configs/cifar_mask_structure.py')
  config = cifar.paper_training('attention56_cifar')
  config.model.mask_structure = structure
  return config
