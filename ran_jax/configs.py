"""Lists the experiment configs in `configs/`: every row of the paper's tables they reproduce.

    python -m ran_jax.configs --list             # config, variant, model, dataset, paper's result
    python -m ran_jax.configs --list --params    # and each model's parameter count (slower)

A config file either has one experiment (its `PAPER_RESULT`) or several, chosen with a
variant argument: `--config=configs/cifar_arl_nal.py:attention92,nal` calls
`get_config('attention92,nal')`; its `VARIANTS` maps each variant to the paper's result.
"""

import argparse
import pathlib
import sys

from ran_jax.experiments.catalogue import describe_data, describe_model, experiments, param_count


def format_table(rows: list[list[str]], header: list[str]) -> str:
  """Left-aligned columns separated by two spaces."""
  widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
  lines = ['  '.join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
           for row in [header, *rows]]
  return '\n'.join(line.rstrip() for line in lines)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog='python -m ran_jax.configs', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--list', action='store_true', help='print the table (the default)')
  parser.add_argument('--params', action='store_true',
                      help='add each model\'s parameter count (traced with jax.eval_shape)')
  parser.add_argument('--configs_dir', type=pathlib.Path, default=None,
                      help='the configs directory (default: ./configs, or the checkout\'s)')
  args = parser.parse_args(argv)
  header = ['config', 'variant', 'model', 'dataset', 'paper\'s result']
  if args.params:
    header.insert(3, 'params')
  rows = []
  try:
    for experiment in experiments(args.configs_dir):
      config = experiment.config
      row = [experiment.file, experiment.variant or '-', describe_model(config),
             describe_data(config), experiment.paper_result]
      if args.params:
        count = param_count(config)
        row.insert(3, '-' if count is None else f'{count:,}')
      rows.append(row)
  except (FileNotFoundError, ImportError, ValueError) as error:
    print(f'error: {error}', file=sys.stderr)
    return 1
  print(format_table(rows, header))
  return 0


if __name__ == '__main__':
  sys.exit(main())
