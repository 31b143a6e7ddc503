"""Images/second of our train step and of a PyTorch build of the same official network,
measured alternately on the same machine, and their ratio.

    python benchmarks/versus_torch.py --torch-python ~/torch-venv/bin/python \\
        --torch-tool torch_from_prototxt.py --prototxt Attention-56.prototxt \\
        --model attention56 --batch 8 --image-size 224 --rounds 3

`--torch-tool` is a script that builds a PyTorch model from a Caffe prototxt and prints
`img_per_s X` for `FILE --batch B --size S --steps N [--device D --amp --channels-last]`;
it runs in its own environment (`--torch-python`), so this project never depends on PyTorch.
Each round runs our `train_step.py` and then the PyTorch tool, each as a fresh process, so
that machine load drifts hit both alike; the ratio is of the medians over rounds.
Extra arguments after `--` go to the PyTorch tool (e.g. `-- --device cuda --amp`).
"""

import argparse
import json
import os
import pathlib
import re
import statistics
import subprocess
import sys
import tempfile

from cli_args import positive_int

HERE = pathlib.Path(__file__).resolve().parent


def run(command: list[str], env: dict[str, str] | None = None) -> str:
  """The command's stdout; if it fails, stops with its stderr."""
  done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
  if done.returncode:
    raise SystemExit(f'error: {" ".join(command)} exited with {done.returncode}:\n'
                     f'{done.stderr[-3000:]}')
  return done.stdout


def jax_images_per_s(args: argparse.Namespace, env: dict[str, str]) -> float:
  command = [sys.executable, str(HERE / 'train_step.py'), '--model', args.model,
             '--batch', str(args.batch), '--image-size', str(args.image_size),
             '--dtype', args.dtype, '--repeats', str(args.steps)]
  out = run(command, env)
  return json.loads(out.strip().splitlines()[-1])['images_per_s']


def torch_images_per_s(args: argparse.Namespace, extra: list[str]) -> float:
  command = [args.torch_python, args.torch_tool, args.prototxt, '--batch', str(args.batch),
             '--size', str(args.image_size), '--steps', str(args.steps), *extra]
  out = run(command)
  match = re.search(r'img_per_s ([0-9.]+)', out)
  if not match:
    raise SystemExit(f'error: no "img_per_s" in the output of {" ".join(command)}:\n{out}')
  return float(match.group(1))


def main() -> None:
  argv = sys.argv[1:]
  extra = argv[argv.index('--') + 1:] if '--' in argv else []
  argv = argv[:argv.index('--')] if '--' in argv else argv
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--torch-python', required=True, help='a Python that has torch')
  parser.add_argument('--torch-tool', required=True)
  parser.add_argument('--prototxt', required=True)
  parser.add_argument('--model', default='attention56')
  parser.add_argument('--batch', type=positive_int, default=8)
  parser.add_argument('--image-size', type=positive_int, default=224)
  parser.add_argument('--dtype', default='float32', choices=('float32', 'bfloat16'))
  parser.add_argument('--steps', type=positive_int, default=3, help='timed steps per process')
  parser.add_argument('--rounds', type=positive_int, default=3)
  args = parser.parse_args(argv)
  for path in (args.torch_python, args.torch_tool, args.prototxt):
    if not os.path.exists(path):
      raise SystemExit(f'error: {path} does not exist.')

  with tempfile.TemporaryDirectory() as cache:  # later rounds reuse the first compilation
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=cache,
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0')
    ours, theirs = [], []
    for round_index in range(args.rounds):
      ours.append(jax_images_per_s(args, env))
      theirs.append(torch_images_per_s(args, extra))
      print(json.dumps({'round': round_index + 1, 'jax_images_per_s': ours[-1],
                        'torch_images_per_s': theirs[-1]}), flush=True)
  print(json.dumps({
      'model': args.model, 'batch': args.batch, 'image_size': args.image_size,
      'dtype': args.dtype, 'rounds': args.rounds, 'torch_args': extra,
      'jax_images_per_s_median': statistics.median(ours),
      'torch_images_per_s_median': statistics.median(theirs),
      'ratio_jax_over_torch': round(statistics.median(ours) / statistics.median(theirs), 3)}))


if __name__ == '__main__':
  main()
