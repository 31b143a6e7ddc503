"""The soft mask's activation, Attention-56 on CIFAR-10.

Command (from the repository root), VARIANT from the table:
  python -m ran_jax.main --config=configs/cifar_mask_activation.py:channel --workdir=DIR

mixed (f1, the method): sigmoid of every value; channel (f2): L2 normalisation over the
channels at each position; spatial (f3): sigmoid of each channel standardised over its
spatial map (model.mask_activation 'sigmoid', 'channel', 'spatial').

| variant | model | paper's result |
|---|---|---|
| mixed | attention56_cifar | paper: 5.52% top-1 error |
| channel | attention56_cifar, mask_activation='channel' | paper: 6.24% top-1 error |
| spatial | attention56_cifar, mask_activation='spatial' | paper: 6.33% top-1 error |

The channel and spatial figures come from secondary sources (unconfirmed); not reproduced
here yet. The default variant is mixed. Training and hardware: configs/cifar.py's.
"""

import ml_collections

from configs import base, cifar

VARIANTS = {
    'mixed': 'paper: 5.52% top-1 error',
    'channel': 'paper: 6.24% top-1 error',
    'spatial': 'paper: 6.33% top-1 error',
}
ACTIVATIONS = {'mixed': 'sigmoid', 'channel': 'channel', 'spatial': 'spatial'}


def get_config(variant: str = 'mixed') -> ml_collections.ConfigDict:
  (name,) = base.variant_parts(variant, VARIANTS, 'configs/cifar_mask_activation.py')
  config = cifar.paper_training('attention56_cifar')
  config.model.mask_activation = ACTIVATIONS[name]
  return config
