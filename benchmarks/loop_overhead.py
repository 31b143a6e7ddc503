"""The training loop's speed against the bare jitted step, measured alternately.

    python benchmarks/loop_overhead.py --image-size 32 --rounds 2

Runs, one after the other and `--rounds` times each: the bare train step
(`benchmarks/train_step.py`: synchronised steps of the trainer's own step on a device-resident
batch) and the whole trainer on the same synthetic batch (`python -m ran_jax.main
--config=configs/fake_data_benchmark.py`) with a log line at every step and at every
`--log-every` steps. The bare step's images/second is that of its median step; the trainer's,
from the timestamps of its log lines (the images/s a line shows is rounded), that of its
median interval between log lines (comparable with the median step) and of all its steps
from the first line to the last (`overall`: its slow steps included). Prints one JSON line per
run, then the ratios of the medians over the rounds (trainer / bare step).
"""

import argparse
import json
import pathlib
import re
import statistics
import subprocess
import sys
import tempfile

from cli_args import positive_int

ROOT = pathlib.Path(__file__).resolve().parents[1]
# A progress line: its time of day and its step.
PROGRESS = re.compile(r'^I\d{4} (\d\d):(\d\d):(\d\d\.\d+) .*\] Step (\d+)/\d+ ', re.M)


def bare_step(args: argparse.Namespace) -> float:
  """Images/second of the bare step (its JSON line's median)."""
  done = subprocess.run(
      [sys.executable, str(ROOT / 'benchmarks' / 'train_step.py'), '--model', 'attention56',
       '--batch', str(args.batch), '--image-size', str(args.image_size), '--warmup', '5',
       '--repeats', str(args.steps)], capture_output=True, text=True, check=True, cwd=ROOT)
  return float(json.loads(done.stdout.strip().splitlines()[-1])['images_per_s'])


def trainer(args: argparse.Namespace, log_every: int) -> tuple[float, float]:
  """Images/second of the trainer's median interval between log lines, and overall."""
  with tempfile.TemporaryDirectory() as workdir:
    done = subprocess.run(
        [sys.executable, '-m', 'ran_jax.main', '--config=configs/fake_data_benchmark.py',
         f'--workdir={workdir}', f'--config.batch_size={args.batch}',
         f'--config.eval_batch_size={args.batch}', f'--config.image_size={args.image_size}',
         f'--config.eval_image_size={args.image_size}',
         f'--config.num_train_steps={args.steps}', f'--config.log_every_steps={log_every}'],
        capture_output=True, text=True, check=True, cwd=ROOT)
  lines = [(int(h) * 3600 + int(m) * 60 + float(s), int(step))
           for h, m, s, step in PROGRESS.findall(done.stderr)]
  intervals = [(step - before) * args.batch / (time - then)
               for (then, before), (time, step) in zip(lines, lines[1:])]
  (start, first), (end, last) = lines[0], lines[-1]
  return statistics.median(intervals), (last - first) * args.batch / (end - start)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--image-size', type=positive_int, default=32)
  parser.add_argument('--batch', type=positive_int, default=8)
  parser.add_argument('--steps', type=positive_int, default=200)
  parser.add_argument('--log-every', type=positive_int, default=5,
                      help='the log interval of the second trainer run (the config\'s default)')
  parser.add_argument('--rounds', type=positive_int, default=2)
  args = parser.parse_args()
  names = ('bare step', 'trainer, log every step', f'trainer, log every {args.log_every} steps',
           'trainer, log every step, overall',
           f'trainer, log every {args.log_every} steps, overall')
  runs = {name: [] for name in names}
  for round_ in range(args.rounds):
    runs[names[0]].append(bare_step(args))
    for log_every, median_name, overall_name in ((1, names[1], names[3]),
                                                  (args.log_every, names[2], names[4])):
      median, overall = trainer(args, log_every)
      runs[median_name].append(median)
      runs[overall_name].append(overall)
    print(json.dumps({'round': round_ + 1, **{name: round(rates[-1], 3)
                                               for name, rates in runs.items()}}), flush=True)
  bare = statistics.median(runs[names[0]])
  print(json.dumps({name: round(statistics.median(rates) / bare, 4)
                    for name, rates in runs.items() if name != names[0]}))


if __name__ == '__main__':
  main()
