"""The paper's CIFAR training, and its CIFAR-10 / CIFAR-100 comparison (one row per variant).

Command (from the repository root), VARIANT = MODEL,DATASET from the table:
  python -m ran_jax.main --config=configs/cifar.py:attention92,cifar10 --workdir=DIR

| variant | model (params, 10 / 100 classes) | paper's result |
|---|---|---|
| resnet164,cifar10 | resnet164_cifar (no masks; 1,703,258) | paper: 5.46% top-1 error |
| resnet164,cifar100 | resnet164_cifar (1,726,388) | paper: 24.33% top-1 error |
| attention92,cifar10 | attention92_cifar (1,841,242) | paper: 4.99% top-1 error |
| attention92,cifar100 | attention92_cifar (1,864,372) | paper: 21.71% top-1 error |
| attention236,cifar10 | attention236_cifar (5,084,762) | paper: 4.14% top-1 error |
| attention236,cifar100 | attention236_cifar (5,107,892) | paper: 21.16% top-1 error |
| attention452,cifar10 | attention452_cifar (10,181,210) | paper: 3.90% top-1 error |
| attention452,cifar100 | attention452_cifar (10,204,340) | paper: 20.45% top-1 error |

The paper lists 1.7M, 1.9M, 5.1M and 8.6M parameters (attention452_cifar is built with the
paper's p=2, t=4, r=3 and m=6; see ran_jax/models/presets.py for why it has more). None of
these results is reproduced here yet. The default variant is attention92,cifar10.

Hardware: one GPU (160k steps at batch 64). Data: TFDS cifar10 / cifar100 (downloaded by
TFDS on a machine with internet, or prepared in --config.data_dir).
Training (the paper's): SGD, Nesterov 0.9, weight decay 1e-4, batch 64, lr 0.1 divided by 10
at 64k and 96k iterations, stop at 160k; in epochs of the 50,000 training images: decays at
81.92 and 122.88, stop at 204.8. Input: the small recipe (4-pixel zero padding, random 32x32
crop, flip, per-pixel mean subtraction). The other CIFAR configs (cifar_*.py) train the same
way (`paper_training`).
Layout: unrolled (`model.scan=False`, the base default). `--config.model.scan=True` compiles
the deep presets' train steps in a fraction of the time (attention452_cifar 35 s against more
than 15 minutes, attention236_cifar 22 s against 93 s on 2 CPU cores), but its step ran 7.6-9x
slower than the unrolled one on a CPU (attention92_cifar; XLA:CPU's kernel gradients of
convolutions in a loop are 68x slower, benchmarks/README.md "Compile times"), and its step
time on GPUs and TPUs is not measured, so it is not the default.
"""

import ml_collections

from configs import base

CIFAR_TRAIN_EXAMPLES = 50_000

VARIANTS = {
    'resnet164,cifar10': 'paper: 5.46% top-1 error',
    'resnet164,cifar100': 'paper: 24.33% top-1 error',
    'attention92,cifar10': 'paper: 4.99% top-1 error',
    'attention92,cifar100': 'paper: 21.71% top-1 error',
    'attention236,cifar10': 'paper: 4.14% top-1 error',
    'attention236,cifar100': 'paper: 21.16% top-1 error',
    'attention452,cifar10': 'paper: 3.90% top-1 error',
    'attention452,cifar100': 'paper: 20.45% top-1 error',
}


def paper_training(model: str, dataset: str = 'cifar10') -> ml_collections.ConfigDict:
  """The paper's CIFAR training settings for preset `model` on `dataset`."""
  config = base.get_config()
  config.model.name = model
  config.dataset = dataset
  config.image_size = 32
  config.eval_image_size = 32
  config.batch_size = 64
  config.eval_batch_size = 400  # divides over 1, 2, 4, 8 or 16 devices
  config.learning_rate = 0.1
  config.lr_reference_batch_size = 64
  config.schedule = 'piecewise'
  base.set_schedule_from_iterations(
      config, batch_size=64, decays=(64_000, 96_000), stop=160_000,
      num_train_examples=CIFAR_TRAIN_EXAMPLES)
  config.shuffle_buffer = 50_000
  config.log_every_steps = 200
  config.eval_every_steps = 4_000
  config.checkpoint_every_steps = 4_000
  return config


def get_config(variant: str = 'attention92,cifar10') -> ml_collections.ConfigDict:
  depth, dataset = base.variant_parts(variant, VARIANTS, 'configs/cifar.py')
  return paper_training(f'{depth}_cifar', dataset)
