"""Model summaries from the command line.

  python -m ran_jax.models --list
  python -m ran_jax.models --summary attention92 --image-size 320
"""

import argparse
import sys

from ran_jax.models.presets import create_model, list_models
from ran_jax.models.summary import format_costs, model_costs


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog='python -m ran_jax.models', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--summary', metavar='NAME', help='print the per-stage table of NAME')
  parser.add_argument('--list', action='store_true', help='list the model names')
  parser.add_argument('--image-size', type=int, default=None,
                      help='image side (default: 224, or 32 for *_cifar models)')
  parser.add_argument('--num-classes', type=int, default=None,
                      help='classifier outputs (default: 1000, or 10 for *_cifar models)')
  args = parser.parse_args(argv)
  if args.list or not args.summary:
    print('\n'.join(list_models()))
    return 0
  cifar = args.summary.endswith('_cifar')
  size = args.image_size or (32 if cifar else 224)
  classes = args.num_classes or (10 if cifar else 1000)
  try:
    model = create_model(args.summary, num_classes=classes)
    print(format_costs(model_costs(model, size), f'{args.summary}, {classes} classes,'))
  except ValueError as error:
    print(f'error: {error}', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  sys.exit(main())
