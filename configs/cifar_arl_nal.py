"""Attention residual learning (ARL) against naive attention learning (NAL), CIFAR-10.

Command (from the repository root), VARIANT = MODEL,KIND from the table:
  python -m ran_jax.main --config=configs/cifar_arl_nal.py:attention164,nal --workdir=DIR

ARL fuses trunk and mask as (1 + M) * T, the method; NAL as M * T, the ablation. The paper
finds NAL degrading as modules are stacked, ARL improving.

| variant | model | paper's result |
|---|---|---|
| attention56,arl | attention56_cifar | paper: 5.52% top-1 error |
| attention56,nal | attention56_cifar, attention='nal' | paper: 5.89% top-1 error |
| attention92,arl | attention92_cifar | paper: 4.99% top-1 error |
| attention92,nal | attention92_cifar, attention='nal' | paper: 5.35% top-1 error |
| attention128,arl | attention128_cifar | paper: 4.44% top-1 error |
| attention128,nal | attention128_cifar, attention='nal' | paper: 5.57% top-1 error |
| attention164,arl | attention164_cifar | paper: 4.31% top-1 error |
| attention164,nal | attention164_cifar, attention='nal' | paper: 7.18% top-1 error |

Not reproduced here yet. The default variant is attention56,arl. Training and hardware: the
paper's CIFAR training of configs/cifar.py (one GPU, 160k steps at batch 64).
"""

import ml_collections

from configs import base, cifar

VARIANTS = {
    'attention56,arl': 'paper: 5.52% top-1 error',
    'attention56,nal': 'paper: 5.89% top-1 error',
    'attention92,arl': 'paper: 4.99% top-1 error',
    'attention92,nal': 'paper: 5.35% top-1 error',
    'attention128,arl': 'paper: 4.44% top-1 error',
    'attention128,nal': 'paper: 5.57% top-1 error',
    'attention164,arl': 'paper: 4.31% top-1 error',
    'attention164,nal': 'paper: 7.18% top-1 error',
}


def get_config(variant: str = 'attention56,arl') -> ml_collections.ConfigDict:
  depth, kind = base.variant_parts(variant, VARIANTS, 'configs/cifar_arl_nal.py')
  config = cifar.paper_training(f'{depth}_cifar')
  config.model.attention = kind
  return config
