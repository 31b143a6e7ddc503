"""Writes scikit-learn's handwritten digits as a folder of PNG images, one subfolder per class.

    python3 examples/digits_folder.py DIR [--per_class=50]

DIR/zero/0003.png, DIR/one/0001.png, ...: the first `per_class` 8x8 grey images of each digit
(in `load_digits` order), rescaled to 0-255. A small real folder of images to try
configs/image_folder.py on.
"""

import argparse
import os

import numpy as np
from PIL import Image

NAMES = ('zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine')


def write_digits(directory: str, per_class: int, digits: tuple[int, ...] = tuple(range(10))
                 ) -> int:
  """Writes the PNG files of `digits`; returns how many."""
  from sklearn.datasets import load_digits
  data = load_digits()
  pixels = np.rint(data.images * 255.0 / 16).astype(np.uint8)
  written = {name: 0 for name in NAMES}
  for index, (image, label) in enumerate(zip(pixels, data.target, strict=True)):
    name = NAMES[label]
    if label not in digits or written[name] == per_class:
      continue
    os.makedirs(os.path.join(directory, name), exist_ok=True)
    Image.fromarray(image, mode='L').save(os.path.join(directory, name, f'{index:04d}.png'))
    written[name] += 1
  return sum(written.values())


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('directory')
  parser.add_argument('--per_class', type=int, default=50, help='images per digit (at most 180)')
  args = parser.parse_args()
  count = write_digits(args.directory, args.per_class)
  print(f'Wrote {count} images of 10 classes to {args.directory}')


if __name__ == '__main__':
  main()
