"""`python -m ran_jax.visualize` and the mask images written at evaluation, on a tiny trained
digits network (one attention module: stage1/module1)."""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from trained_digits import ATTENTION_IMAGES, error_line, run_tool, trained, write_png

from ran_jax import visualize
from ran_jax.masks import forward as forward_lib
from ran_jax.masks import grid as grid_lib
from ran_jax.reporting.attention_images import IMAGE_KEY

MODULES = 1
CELL_HEIGHT, CELL_WIDTH = grid_lib.cell_shape(8)


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  return trained(tmp_path_factory)


def cells(grid: np.ndarray) -> list[list[np.ndarray]]:
  """The grid's cells, row by row."""
  rows, columns = grid.shape[0] // CELL_HEIGHT, grid.shape[1] // CELL_WIDTH
  return [[grid[r * CELL_HEIGHT:(r + 1) * CELL_HEIGHT, c * CELL_WIDTH:(c + 1) * CELL_WIDTH]
           for c in range(columns)] for r in range(rows)]


def picture(cell: np.ndarray) -> np.ndarray:
  """The image part of a cell (below its title)."""
  top = grid_lib.PAD + grid_lib.TITLE_LINES * grid_lib.LINE
  return cell[top:-grid_lib.PAD, grid_lib.PAD:-grid_lib.PAD]


def test_grid_of_image_files(run, tmp_path, capsys):
  """A grey 8x8 digit and a 20x13 RGB image: two rows of the image and one heat map per
  attention module."""
  files = [write_png(tmp_path / 'digit.png', np.kron(np.eye(4), np.ones((2, 2))) * 255),
           write_png(tmp_path / 'rgb.png', np.random.default_rng(0).integers(0, 256, (13, 20, 3)))]
  out = tmp_path / 'grid.png'
  args = [*run.tool_flags(), *[f'--image={f}' for f in files], f'--out={out}']
  status, stdout, err = run_tool(visualize, args, capsys)
  assert status == 0, err
  assert f'Wrote {out}: 2 rows' in stdout and f'{MODULES} attention masks' in stdout
  with Image.open(out) as image:
    assert image.format == 'PNG' and image.mode == 'RGB'
    grid = np.asarray(image)
  assert grid.shape == (2 * CELL_HEIGHT, (1 + MODULES) * CELL_WIDTH, 3)
  for row in cells(grid):
    for heat_map in row[1:]:
      assert np.ptp(picture(heat_map)) > 50  # scaled to its own range: not one colour


def test_reduce_max_differs_from_mean_and_default_out(run, capsys):
  grids = {}
  for reduce in ('mean', 'max'):
    status, _, err = run_tool(visualize, [*run.tool_flags(), '--num_examples=2',
                                          f'--reduce={reduce}'], capsys)
    assert status == 0, err
    with Image.open(run.workdir / 'attention.png') as image:
      grids[reduce] = np.asarray(image)
  assert grids['mean'].shape == grids['max'].shape == (2 * CELL_HEIGHT,
                                                       (1 + MODULES) * CELL_WIDTH, 3)
  first = [cells(grids[reduce])[0] for reduce in ('mean', 'max')]
  np.testing.assert_array_equal(picture(first[0][0]), picture(first[1][0]))  # the image
  assert not np.array_equal(picture(first[0][1]), picture(first[1][1]))


def test_mask_images_are_written_at_evaluation(run):
  found = []
  for path in run.workdir.glob('events.out.tfevents*'):
    for event in tf.compat.v1.train.summary_iterator(str(path)):
      for value in event.summary.value:
        if value.tag == IMAGE_KEY:
          width, height, png = tf.make_ndarray(value.tensor)[:3]
          found.append((event.step, int(width), int(height), tf.io.decode_png(png).shape))
  assert found == [(6, (1 + MODULES) * CELL_WIDTH, ATTENTION_IMAGES * CELL_HEIGHT,
                    (ATTENTION_IMAGES * CELL_HEIGHT, (1 + MODULES) * CELL_WIDTH, 3))]


def test_network_without_masks_shows_the_images_only(run, tmp_path, capsys, monkeypatch):
  """As for attention='none', which sows no soft masks: one column and a note."""
  monkeypatch.setattr(forward_lib, 'soft_masks', lambda intermediates: {})
  out = tmp_path / 'plain.png'
  status, stdout, err = run_tool(visualize, [*run.tool_flags(), '--num_examples=3',
                                             f'--out={out}'], capsys)
  assert status == 0, err
  assert stdout.startswith('note: this network has no attention masks')
  with Image.open(out) as image:
    assert image.size == (CELL_WIDTH, 3 * CELL_HEIGHT)


@pytest.mark.parametrize('case', ['no checkpoint', 'too many examples', 'both inputs'])
def test_errors(case, run, tmp_path, capsys):
  args = [*run.tool_flags(), '--num_examples=1']
  if case == 'no checkpoint':
    status, _, err = run_tool(visualize, [*run.tool_flags(tmp_path), '--num_examples=1'],
                              capsys)
    assert f'no checkpoint in {tmp_path}' in error_line(status, err)
  elif case == 'too many examples':
    status, _, err = run_tool(visualize, [*run.tool_flags(), '--num_examples=361'], capsys)
    assert 'has only 360 examples' in error_line(status, err)
  else:
    status, _, err = run_tool(visualize, [*args, f'--image={tmp_path / "x.png"}'], capsys)
    assert status == 2 and err.startswith('error: give either --image=FILE')
