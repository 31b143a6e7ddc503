"""One pinned pair of the trainer's own training steps on a tiny one-stage network: catches any
silent change of the numerics (the network, the loss, label smoothing, weight decay, Nesterov
momentum, the schedule, the input normalisation, the BatchNorm statistics)."""

import jax
import numpy as np

from configs import cifar
from ran_jax.data import datasets, normalize
from ran_jax.models import create_model
from ran_jax.train import optim, steps
from ran_jax.train import mesh as mesh_lib
from ran_jax.train.state import shardings_of, train_state_factory

# The network the values were pinned with (its mask branch pools twice).
PINNED_NETWORK = dict(stem_width=8, stage_widths=(16,), modules_per_stage=(1,),
                      mask_poolings=(2,), final_width=64)
# The losses of two steps of configs/cifar.py's recipe (its optimizer and schedule, with label
# smoothing 0.1 and weight decay 0.05) on uint8 images with their crops (offsets and flips),
# normalised as CIFAR batches are (pixels / 255 minus the mean image cropped and flipped as
# each example was), the first step's gradient norm, and the parameters' and BatchNorm
# statistics' norms after two steps, as computed when this test was written (float32, CPU,
# jit; the tolerance allows for reduction-order differences between XLA versions and CPUs, and
# is below the effect of momentum 0.8 instead of 0.9, of no Nesterov, or of no weight decay on
# BatchNorm and biases).
PINNED = {'loss_1': 2.276741, 'loss_2': 2.345234, 'grad_norm_1': 1.096116,
          'param_norm_2': 29.953802, 'stats_norm_2': 19.918232}


def two_steps() -> dict[str, float]:
  config = cifar.get_config('attention92,cifar10')  # the recipe; the network is tiny
  config.label_smoothing = 0.1
  config.weight_decay = 0.05  # large enough that a change in how it is applied shows
  model = create_model('attention56_cifar', num_classes=10, **PINNED_NETWORK)
  mesh = mesh_lib.make_mesh(jax.devices()[:1])
  schedule = optim.learning_rate_schedule(config, 12_500, 1_000)
  tx = optim.make_optimizer(config, schedule)
  init, target = train_state_factory(model, tx, mesh, (8, 8, 3), seed=0)
  rng = np.random.default_rng(0)
  spec = datasets.get_spec('cifar10')
  normalizer = normalize.for_dataset(spec, rng.uniform(0.3, 0.6, (8, 8, 3)).astype(np.float32))
  train_step, _ = steps.jit_steps(shardings_of(target), mesh_lib.data_sharding(mesh),
                                  mesh_lib.replicated(mesh), schedule, config.label_smoothing,
                                  input_fn=normalizer)
  state, values = init(), {}
  for step in (1, 2):
    batch = {'image': rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8),
             'crop': np.stack([rng.integers(0, 2 * spec.pad + 1, 4),
                               rng.integers(0, 2 * spec.pad + 1, 4),
                               rng.integers(0, 2, 4)], axis=1).astype(np.int32),
             'label': rng.integers(0, 10, 4).astype(np.int32)}
    state, metrics = train_step(state, batch)
    values[f'loss_{step}'] = float(metrics['loss'])
    values.setdefault('grad_norm_1', float(metrics['grad_norm']))
  values['param_norm_2'] = float(metrics['param_norm'])
  values['stats_norm_2'] = float(np.sqrt(sum(np.sum(np.square(leaf)) for leaf in
                                             jax.tree.leaves(jax.device_get(state.batch_stats)))))
  return values


def test_two_steps_of_the_trainer_are_pinned():
  values = two_steps()
  np.testing.assert_allclose([values[k] for k in PINNED], list(PINNED.values()), rtol=1e-3)
