"""The attention grid: one row per image, the image with its top classes, then each attention
module's soft mask as a heat map over it.

Each mask (one value per position, its channels already reduced) is up-sampled bilinearly to
the displayed image and coloured from its own minimum (dark) to its own maximum (bright): the
colours compare positions within one map, not across maps; each map's title gives its value
range. Drawn with Pillow and its default font.
"""

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
from etils import epath
from PIL import Image, ImageDraw, ImageFont

MIN_SIDE = 128  # images are shown enlarged by a whole factor to at least this many pixels
PAD = 4
LINE = 13  # pixels per title line (Pillow's default font is 10 px, 13 px per line)
TITLE_LINES = 4
PREDICTIONS_SHOWN = 3
HEAT_WEIGHT = 0.65  # of the heat colour over the grey image
BACKGROUND = (255, 255, 255)
TEXT = (0, 0, 0)

# Dark to bright through purple, red and yellow (perceptually ordered), interpolated to 256.
_ANCHORS = np.array([(0, 0, 4), (40, 11, 84), (101, 21, 110), (159, 42, 99), (212, 72, 66),
                     (245, 125, 21), (250, 193, 39), (252, 255, 164)], np.float64)
COLOURS = np.stack([np.interp(np.linspace(0, 1, 256), np.linspace(0, 1, len(_ANCHORS)),
                              _ANCHORS[:, c]) for c in range(3)], axis=-1).round().astype(np.uint8)


@dataclasses.dataclass(frozen=True)
class Row:
  """One image: `pixels` (S, S, C) 0-255, a caption, its top (class name, probability) pairs,
  and (module name, mask (h, w)) pairs in the network's order."""
  pixels: np.ndarray
  caption: str
  predictions: Sequence[tuple[str, float]]
  masks: Sequence[tuple[str, np.ndarray]]


def display_side(image_size: int) -> int:
  """The displayed side of an image_size x image_size input: a whole multiple >= MIN_SIDE."""
  return image_size * max(1, math.ceil(MIN_SIDE / image_size))


def cell_shape(image_size: int) -> tuple[int, int]:
  """(height, width) of one cell of the grid: title lines, then the image."""
  side = display_side(image_size)
  return PAD + TITLE_LINES * LINE + side + PAD, PAD + side + PAD


def heat_colours(values: np.ndarray) -> np.ndarray:
  """Values in [0, 1] -> (..., 3) uint8 colours."""
  index = np.clip(np.rint(np.asarray(values) * 255), 0, 255).astype(np.int64)
  return COLOURS[index]


def _display_image(pixels: np.ndarray, side: int) -> np.ndarray:
  """The image enlarged to `side` (nearest neighbour, whole factor) as (side, side, 3) uint8."""
  pixels = np.clip(np.rint(np.asarray(pixels, np.float64)), 0, 255).astype(np.uint8)
  rgb = np.repeat(pixels, 3, axis=-1) if pixels.shape[-1] == 1 else pixels
  image = Image.fromarray(rgb).resize((side, side), Image.Resampling.NEAREST)
  return np.asarray(image)


def heat_map(mask: np.ndarray, image: np.ndarray) -> tuple[np.ndarray, float, float]:
  """`mask` over the displayed `image` (side, side, 3): the blend, and the mask's min, max."""
  mask = np.asarray(mask, np.float32)
  low, high = float(mask.min()), float(mask.max())
  side = image.shape[0]
  upsampled = np.asarray(Image.fromarray(mask).resize((side, side), Image.Resampling.BILINEAR))
  scaled = (upsampled - low) / (high - low) if high > low else np.zeros_like(upsampled)
  grey = image.astype(np.float32).mean(axis=-1, keepdims=True)
  blend = HEAT_WEIGHT * heat_colours(scaled) + (1 - HEAT_WEIGHT) * grey
  return np.clip(np.rint(blend), 0, 255).astype(np.uint8), low, high


def _fit(draw: ImageDraw.ImageDraw, text: str, width: int, font) -> str:
  """`text`, shortened with '..' until it fits in `width` pixels."""
  if draw.textlength(text, font=font) <= width:
    return text
  while text and draw.textlength(text + '..', font=font) > width:
    text = text[:-1]
  return text + '..'


def _draw_cell(canvas: Image.Image, draw: ImageDraw.ImageDraw, font, top: int, left: int,
               lines: Sequence[str], picture: np.ndarray) -> None:
  width = picture.shape[1]
  for i, line in enumerate(lines[:TITLE_LINES]):
    draw.text((left + PAD, top + PAD + i * LINE), _fit(draw, line, width, font), fill=TEXT,
              font=font)
  canvas.paste(Image.fromarray(picture), (left + PAD, top + PAD + TITLE_LINES * LINE))


def render(rows: Sequence[Row], image_size: int) -> np.ndarray:
  """The grid of `rows` as (height, width, 3) uint8: rows x (1 + masks) cells of
  `cell_shape(image_size)`."""
  if not rows:
    raise ValueError('No images to show.')
  columns = 1 + max(len(row.masks) for row in rows)
  cell_height, cell_width = cell_shape(image_size)
  canvas = Image.new('RGB', (columns * cell_width, len(rows) * cell_height), BACKGROUND)
  draw = ImageDraw.Draw(canvas)
  font = ImageFont.load_default()
  side = display_side(image_size)
  for r, row in enumerate(rows):
    top = r * cell_height
    image = _display_image(row.pixels, side)
    predictions = [f'{name} {probability:.1%}'
                   for name, probability in row.predictions[:PREDICTIONS_SHOWN]]
    _draw_cell(canvas, draw, font, top, 0, [row.caption, *predictions], image)
    for c, (name, mask) in enumerate(row.masks, start=1):
      picture, low, high = heat_map(mask, image)
      _draw_cell(canvas, draw, font, top, c * cell_width, [name, f'{low:.3g} .. {high:.3g}'],
                 picture)
  return np.asarray(canvas)


def save_png(grid: np.ndarray, path: str) -> None:
  """Writes `grid` (H, W, 3) uint8 as a PNG file (a local path or a bucket's)."""
  with epath.Path(path).open('wb') as file:
    Image.fromarray(grid).save(file, format='PNG')
