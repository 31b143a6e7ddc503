"""Any `create_model` preset as a Flax NNX module, through `flax.nnx.bridge.ToNNX`.

The linen collections become NNX variable types: 'params' -> `nnx.Param`, 'batch_stats' ->
`nnx.BatchStat` and the sown 'intermediates' -> `nnx.Intermediate`. Calling the wrapped
module with `train=True, mutable=['batch_stats']` updates the BatchNorm statistics in place.

  python3 examples/nnx_bridge.py --model attention56_cifar --steps 5
"""

import argparse
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from ran_jax.models import count_params, create_model
from ran_jax.train.compiler_options import QUICK_COMPILE


def nnx_model(name: str, num_classes: int, input_shape: Sequence[int], *, seed: int = 0,
              **overrides: Any) -> nnx.bridge.ToNNX:
  """Preset `name` wrapped with `ToNNX` and initialised from a batch of `input_shape` (NHWC).

  `overrides` go to `create_model`. The lazy initialisation runs once under `jax.jit`
  (op by op it takes far longer); its variables are merged into the abstract module.
  """
  linen_model = create_model(name, num_classes=num_classes, **overrides)
  linen_model.check_input(tuple(input_shape))
  sample = jnp.zeros(tuple(input_shape), jnp.float32)

  def build() -> nnx.bridge.ToNNX:
    model = nnx.bridge.ToNNX(linen_model, rngs=nnx.Rngs(seed))
    return nnx.bridge.lazy_init(model, sample, train=False)

  graphdef, _ = nnx.split(nnx.eval_shape(build))
  state = jax.jit(lambda: nnx.state(build()), compiler_options=QUICK_COMPILE)()
  return nnx.merge(graphdef, state)


def make_optimizer(model: nnx.Module, learning_rate: float = 0.1,
                   momentum: float = 0.9) -> nnx.Optimizer:
  """SGD with momentum over the parameters (not the BatchNorm statistics) of `model`."""
  return nnx.Optimizer(model, optax.sgd(learning_rate, momentum=momentum), wrt=nnx.Param)


def loss_fn(model: nnx.Module, images: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean softmax cross-entropy in training mode; updates the BatchNorm statistics."""
  logits = model(images, train=True, mutable=['batch_stats'])
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


@nnx.jit
def train_step(model: nnx.Module, optimizer: nnx.Optimizer, images: jax.Array,
               labels: jax.Array) -> jax.Array:
  """One SGD step on (`images`, integer `labels`); returns the loss before the update."""
  loss, grads = nnx.value_and_grad(loss_fn)(model, images, labels)
  optimizer.update(model, grads)
  return loss


@nnx.jit
def predict(model: nnx.Module, images: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Eval-mode logits and the soft masks sown by the attention modules, keyed by path.

  The sown values are popped again, so the module keeps only its params and statistics.
  """
  logits = model(images, train=False, mutable=['intermediates'])
  sown = nnx.pop(model, nnx.Intermediate)  # leave the module as it was
  masks = {}
  for path, value in nnx.to_flat_state(sown):
    if path[-1] == 'soft_mask':
      masks['/'.join(map(str, path[:-1]))] = value.get_value()[0]
  return logits, masks


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  """The command-line flags of `main`."""
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--model', default='attention56_cifar', help='a create_model preset')
  parser.add_argument('--steps', type=int, default=5, help='train steps')
  parser.add_argument('--batch', type=int, default=8, help='images per step')
  parser.add_argument('--image-size', type=int, default=32,
                      help='image side (ImageNet presets: e.g. 224)')
  parser.add_argument('--num-classes', type=int, default=10)
  parser.add_argument('--learning-rate', type=float, default=0.1)
  parser.add_argument('--seed', type=int, default=0)
  return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
  """Trains `--model` for `--steps` steps on random images and prints the losses."""
  args = parse_args(argv)
  shape = (args.batch, args.image_size, args.image_size, 3)
  model = nnx_model(args.model, args.num_classes, shape, seed=args.seed)
  optimizer = make_optimizer(model, args.learning_rate)
  count = count_params(nnx.state(model, nnx.Param))
  print(f'{args.model}: {count:,} parameters, images {shape}')

  image_key, label_key = jax.random.split(jax.random.key(args.seed + 1))
  images = jax.random.normal(image_key, shape)
  labels = jax.random.randint(label_key, (args.batch,), 0, args.num_classes)
  for step in range(1, args.steps + 1):
    start = time.perf_counter()
    loss = float(train_step(model, optimizer, images, labels))
    print(f'step {step}: loss {loss:.4f} ({time.perf_counter() - start:.2f} s)')

  _, masks = predict(model, images)
  for path, mask in masks.items():
    print(f'soft mask {path}: shape {tuple(mask.shape)}, mean {float(mask.mean()):.3f}')


if __name__ == '__main__':
  main()
