"""The TPU memory table of benchmarks/README.md: `ran_jax.plan` for every ImageNet config.

    python benchmarks/tpu_plans.py            # every plan, into benchmarks/results/tpu_plans.jsonl
    python benchmarks/tpu_plans.py --table    # the README tables, from that file
    python benchmarks/tpu_plans.py --only='v5p-128|search remat=none'   # some rows only

Runs `python -m ran_jax.plan --json` once per row (each in a fresh process, so each compile
time is a cold one) and appends its JSON to --out; a row already in --out is skipped, so an
interrupted run continues where it stopped. Rows, in this order:
  * every ImageNet config at its own batch on v4-8, v5litepod-8, v5p-8 and v6e-8 (train
    and eval steps);
  * Attention-92 on a pod slice (--pod, v5p-128 by default), train step only;
  * the largest per-chip batch of Attention-56 and Attention-92 (224, bfloat16) on each of
    the four types, without remat and with `model.remat=module`.
Needs libtpu (`pip install -e ".[tpu]"`). A TPU compile of a full model takes minutes on a
small CPU host: about 5 minutes for Attention-56 on 2 cores.
"""

import argparse
import json
import pathlib
import re
import subprocess
import sys

CONFIGS = ('imagenet_attention56', 'imagenet_attentionnext56', 'imagenet_attentioninception56',
           'imagenet_attention92')
TYPES = ('v5p-8', 'v4-8', 'v5litepod-8', 'v6e-8')
HERE = pathlib.Path(__file__).resolve().parent
SEARCHED = ('imagenet_attention56', 'imagenet_attention92')
REMATS = ('none', 'module')
MULTIPLE = 8  # the searched per-chip batches are multiples of this


def rows(pod: str, done: dict[str, dict]) -> list[dict]:
  """Every plan of the table still to make, as {key, args}; `done` maps keys to plans.

  The table rows come first, then the pod row, then the searches.
  """
  out = []
  for t in TYPES:
    for c in CONFIGS:
      out.append({'key': f'{c} {t}', 'args': [f'--config=configs/{c}.py', f'--topology={t}']})
  out.append({'key': f'imagenet_attention92 {pod}',
              'args': ['--config=configs/imagenet_attention92.py', f'--topology={pod}',
                       '--eval=false']})
  for t in TYPES:
    for c in SEARCHED:
      for remat in REMATS:
        out.append({'key': f'{c} {t} search remat={remat}',
                    'args': [f'--config=configs/{c}.py', f'--topology={t}', '--search',
                             f'--batch_multiple={MULTIPLE}', '--eval=false', '--try_remat=false',
                             f'--config.model.remat={remat}']})
  return [row for row in out if row['key'] not in done]


def load(path: pathlib.Path) -> dict[str, dict]:
  """The plans in `path` by key (empty when it does not exist)."""
  if not path.exists():
    return {}
  entries = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
  return {entry['key']: entry['plan'] for entry in entries}


def run(path: pathlib.Path, pod: str, only: str | None = None) -> None:
  """Makes every row not yet in `path` (those whose key matches the regular expression
  `only`, when given); a row whose compile fails (or crashes) is reported and skipped, and
  made again by the next run."""
  for row in rows(pod, load(path)):
    if only and not re.search(only, row['key']):
      continue
    print(f'{row["key"]} ...', file=sys.stderr, flush=True)
    result = subprocess.run([sys.executable, '-X', 'faulthandler', '-m', 'ran_jax.plan',
                             '--json', *row['args']], capture_output=True, text=True,
                            check=False)
    if result.returncode not in (0, 3):
      print(f'{row["key"]}: failed ({result.returncode}): {result.stderr.strip()[-2000:]}',
            file=sys.stderr, flush=True)
      continue
    plan = json.loads(result.stdout.strip().splitlines()[-1])
    with path.open('a') as f:
      f.write(json.dumps({'key': row['key'], 'plan': plan}) + '\n')


def _gib(value: float | None) -> str:
  return '-' if value is None else f'{value / 2**30:.2f}'


def tables(path: pathlib.Path) -> str:
  """The README tables from the plans in `path`: configs at their batch, largest batches."""
  plans = load(path)
  lines = ['| config | type | batch (per chip) | train GiB per chip | fits | train compile s | '
           'eval batch (per chip) | eval GiB per chip | eval compile s |',
           '|---|---|---|---|---|---|---|---|---|']
  for key, plan in plans.items():
    if 'search' in key:
      continue
    train, evaluation = plan['train'], plan.get('eval')
    eval_cells = (f'{evaluation["global_batch"]} ({evaluation["per_device_batch"]}) | '
                  f'{_gib(evaluation["total_bytes"])} | {evaluation["compile_seconds"]:.0f}'
                  if evaluation else '- | - | -')
    lines.append(f'| {key.split()[0]} | {plan["topology"]} | {train["global_batch"]} '
                 f'({train["per_device_batch"]}) | {_gib(train["total_bytes"])} of '
                 f'{_gib(plan["capacity_bytes_per_device"])} | '
                 f'{"yes" if plan["fits"] else "**no**"} | {train["compile_seconds"]:.0f} | '
                 f'{eval_cells} |')
  lines += ['', '| model | type | remat | largest batch per chip | GiB per chip there | '
            'batches compiled (s) |', '|---|---|---|---|---|---|']
  for plan in plans.values():
    if 'largest_per_device_batch' not in plan:
      continue
    largest = plan['largest_per_device_batch']
    train = [c for c in plan['compiles'] if c['step'] == 'train']
    at = [c for c in train if c['per_device_batch'] == largest]
    tried = ', '.join(f'{c["per_device_batch"]} ({c["compile_seconds"]:.0f})' for c in train)
    refused = [c['per_device_batch'] for c in train if not c['fits']]
    if plan.get('largest_confirmed') or largest is None:
      found = f'{largest}'
    elif refused:
      found = f'{largest} to {min(refused) - MULTIPLE} ({min(refused)} does not fit)'
    else:
      found = f'{largest} or more (no larger batch compiled)'
    lines.append(f'| {plan["config_model"]} | {plan["topology"]} | {train[0]["remat"]} | '
                 f'{found} | {_gib(at[0]["total_bytes"]) if at else "-"} | {tried} |')
  return '\n'.join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--out', type=pathlib.Path, default=HERE / 'results' / 'tpu_plans.jsonl',
                      help='JSON lines file (default: %(default)s)')
  parser.add_argument('--pod', default='v5p-128', help='pod slice type of the pod row')
  parser.add_argument('--only', metavar='REGEX',
                      help="make only the rows whose key matches, e.g. 'v5p-128|search'")
  parser.add_argument('--table', action='store_true', help='print the tables from --out')
  args = parser.parse_args()
  if args.table:
    print(tables(args.out))
  else:
    run(args.out, args.pod, args.only)


if __name__ == '__main__':
  main()
