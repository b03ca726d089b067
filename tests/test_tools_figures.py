"""Style-mixing figure and interpolation video on a tiny exported generator."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import gan_jax
from gan_jax import images as images_lib
from gan_jax.tools import generate
from gan_jax.tools import interpolate
from gan_jax.tools import style_mixing
from gan_jax.tools import video
from tests import tiny_generator

RES = tiny_generator.KWARGS['img_resolution']


@pytest.fixture(scope='module')
def export_dir(tmp_path_factory):
  return tiny_generator.make_export(tmp_path_factory.mktemp('figures') / 'export',
                                    noise_strength=0.02)


@pytest.fixture(scope='module')
def g(export_dir):
  return gan_jax.load_generator(export_dir)


@pytest.fixture(scope='module')
def seed_pngs(export_dir, tmp_path_factory):
  """generate's PNGs of seeds 0-5 at psi 0.7 (the reference for every tool's seed images)."""
  out = tmp_path_factory.mktemp('seeds')
  generate.main(['--checkpoint', export_dir, '--seeds', '0-5', '--trunc', '0.7',
                 '--outdir', str(out)])
  return {s: _png(out / f'seed{s:04d}.png') for s in range(6)}


def _png(path):
  return np.asarray(Image.open(path))


def _tile(grid, row, col):
  return grid[row * RES:(row + 1) * RES, col * RES:(col + 1) * RES]


# --------------------------------------------------------------------------------------------
# Style mixing.


def test_style_indices():
  # 1024x1024 (18 ws) as in the StyleGAN paper; then the small generators.
  assert style_mixing.style_indices('coarse', 18) == [0, 1, 2, 3]
  assert style_mixing.style_indices('middle', 18) == [4, 5, 6, 7]
  assert style_mixing.style_indices('fine', 18) == list(range(8, 18))
  assert style_mixing.style_indices('middle', 6) == [4, 5]        # 16x16
  assert style_mixing.style_indices('coarse', 2) == [0, 1]        # 4x4
  assert style_mixing.style_indices('fine', 10) == [8, 9]         # 64x64
  with pytest.raises(ValueError, match='no fine range.*coarse \\(ws 0-3\\), middle \\(ws 4-7\\)'):
    style_mixing.style_indices('fine', 8)                         # 32x32
  with pytest.raises(ValueError, match='no middle range'):
    style_mixing.style_indices('middle', 4)                       # 8x8
  assert style_mixing.style_indices('0-1, 6', 8) == [0, 1, 6]
  assert style_mixing.style_indices('5', 8) == [5]
  with pytest.raises(ValueError, match='below num_ws = 8'):
    style_mixing.style_indices('6-8', 8)
  with pytest.raises(ValueError, match='bad --styles part'):
    style_mixing.style_indices('3-1', 8)


def test_style_mixing_grid_and_cells(export_dir, g, seed_pngs, tmp_path):
  rows, cols = [1, 2], [3, 4, 5]
  written = style_mixing.main(['--checkpoint', export_dir, '--rows', '1,2', '--cols', '3-5',
                               '--styles', '0-1,6', '--trunc', '0.7', '--outdir',
                               str(tmp_path), '--cells'])
  assert [Path(p).name for p in written] == ['grid.png'] + [f'{r}-{c}.png' for r in rows
                                                             for c in cols]
  grid = _png(tmp_path / 'grid.png')
  assert grid.shape == (3 * RES, 4 * RES) and grid.dtype == np.uint8
  assert _tile(grid, 0, 0).max() == 0  # black corner
  for j, c in enumerate(cols):  # headers: exactly generate's images of the same seeds
    np.testing.assert_array_equal(_tile(grid, 0, j + 1), seed_pngs[c])
  for i, r in enumerate(rows):
    np.testing.assert_array_equal(_tile(grid, i + 1, 0), seed_pngs[r])
  mapped = {s: g.mapping(generate.seed_latent(s, g.z_dim), psi=0.7) for s in rows + cols}
  taken = np.isin(np.arange(g.num_ws), [0, 1, 6])[None, :, None]
  for i, r in enumerate(rows):
    for j, c in enumerate(cols):
      cell = _png(tmp_path / f'{r}-{c}.png')
      np.testing.assert_array_equal(_tile(grid, i + 1, j + 1), cell)
      want = images_lib.to_uint8(g.synthesis(np.where(taken, mapped[c], mapped[r])))[0, ..., 0]
      np.testing.assert_array_equal(cell, want)
      assert np.abs(cell.astype(int) - seed_pngs[r]).max() > 0  # mixing changed the image
      assert np.abs(cell.astype(int) - seed_pngs[c]).max() > 0


def test_style_mixing_all_ws_gives_the_column_and_psi_zero_the_average(g):
  rows, cols, cells = style_mixing.style_mixing_images(g, [1], [3, 4], range(g.num_ws), psi=0.7)
  for j in range(2):  # every w from the column: the column's image (to a rounding step)
    assert np.abs(cells[0, j].astype(int) - cols[j]).max() <= 1
  rows, cols, cells = style_mixing.style_mixing_images(g, [1, 2], [3], [0, 1, 2, 3], psi=0.0)
  average = images_lib.to_uint8(g.synthesis(np.broadcast_to(g.w_avg, (1, g.num_ws, g.w_dim))))
  for image in list(rows) + list(cols) + list(cells.reshape((-1,) + cells.shape[2:])):
    assert np.abs(image.astype(int) - average[0]).max() <= 1
  assert average.std() > 0
  # The same seed pair gives the same cell whatever else is in the figure.
  _, _, again = style_mixing.style_mixing_images(g, [2], [3], [0, 1, 2, 3], psi=0.0)
  np.testing.assert_array_equal(again[0, 0], cells[1, 0])


# --------------------------------------------------------------------------------------------
# Interpolation.


def test_lerp_and_slerp_against_closed_forms():
  rng = np.random.RandomState(0)
  a, b = rng.randn(2, 5, 7)
  for t in (0.0, 0.3, 1.0):
    np.testing.assert_allclose(interpolate.lerp(a, b, t), (1 - t) * a + t * b, atol=1e-12)
  ua = a / np.linalg.norm(a, axis=-1, keepdims=True)
  ub = b / np.linalg.norm(b, axis=-1, keepdims=True)
  omega = np.arccos(np.sum(ua * ub, axis=-1, keepdims=True))
  ortho = ub - np.sum(ua * ub, axis=-1, keepdims=True) * ua  # rotate ua towards ub in their plane
  ortho /= np.linalg.norm(ortho, axis=-1, keepdims=True)
  for t in (0.0, 0.25, 0.5, 0.9, 1.0):
    got = interpolate.slerp(ua, ub, t)
    np.testing.assert_allclose(got, np.cos(t * omega) * ua + np.sin(t * omega) * ortho,
                               atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(got, axis=-1), 1.0, atol=1e-12)  # keeps the norm
  np.testing.assert_array_equal(interpolate.slerp(a, b, 0.0), a)  # endpoints exact
  np.testing.assert_array_equal(interpolate.slerp(a, b, 1.0), b)
  # Parallel vectors fall back to lerp (no 0 / 0).
  np.testing.assert_allclose(interpolate.slerp(a, 2 * a, 0.5), 1.5 * a, atol=1e-12)


def test_latent_path_frames_endpoints_and_loop():
  keys = np.random.RandomState(1).randn(3, 4)
  path = interpolate.latent_path(keys, 5, 'lerp')
  assert path.shape == (2 * 5 + 1, 4)
  np.testing.assert_array_equal(path[[0, 5, 10]], keys)  # keyframes exact, ends on the last
  np.testing.assert_allclose(path[7], keys[1] + 0.4 * (keys[2] - keys[1]), atol=1e-12)
  looped = interpolate.latent_path(keys, 5, 'slerp', loop=True)
  assert looped.shape == (3 * 5, 4)
  # A loop is the open path through keys + [keys[0]] without its last frame (= the first).
  closed = interpolate.latent_path(np.concatenate([keys, keys[:1]]), 5, 'slerp')
  np.testing.assert_array_equal(looped, closed[:-1])
  np.testing.assert_array_equal(closed[-1], looped[0])
  with pytest.raises(ValueError, match='at least 2 keyframes'):
    interpolate.latent_path(keys[:1], 5)
  with pytest.raises(ValueError, match='method'):
    interpolate.latent_path(keys, 5, 'cubic')


def test_interpolation_gif_starts_and_ends_on_the_seeds(export_dir, g, seed_pngs, tmp_path):
  out = interpolate.main(['--checkpoint', export_dir, '--seeds', '0,1,2', '--frames', '3',
                          '--trunc', '0.7', '--out', str(tmp_path / 'z.gif')])
  with Image.open(out) as gif:
    frames = []
    for i in range(gif.n_frames):
      gif.seek(i)
      frames.append(np.asarray(gif.convert('L')))
  assert len(frames) == 2 * 3 + 1 and frames[0].shape == (RES, RES)
  np.testing.assert_array_equal(frames[0], seed_pngs[0])   # Z: frame 0 is seed 0's image
  np.testing.assert_array_equal(frames[3], seed_pngs[1])
  np.testing.assert_array_equal(frames[-1], seed_pngs[2])
  assert np.abs(frames[1].astype(int) - frames[0]).max() > 0
  # The middle frames are the slerped zs, mapped with truncation.
  z = np.concatenate([generate.seed_latent(s, g.z_dim) for s in (0, 1)])
  want = images_lib.to_uint8(g(interpolate.slerp(z[:1], z[1:], 1 / 3).astype(np.float32),
                               psi=0.7))[0, ..., 0]
  np.testing.assert_array_equal(frames[1], want)
  # W space: the frames are lerps of the mapped ws.
  frames_w = interpolate.interpolation_frames(g, [0, 1], space='w', frames=2, psi=0.7)
  ws = np.concatenate([g.mapping(generate.seed_latent(s, g.z_dim), psi=0.7) for s in (0, 1)])
  want = images_lib.to_uint8(g.synthesis(((ws[:1] + ws[1:]) / 2).astype(np.float32)))
  assert np.abs(frames_w[1].astype(int) - want[0]).max() <= 1
  assert np.abs(frames_w[0].astype(int) - seed_pngs[0][..., None]).max() <= 1


@pytest.mark.filterwarnings('ignore:os.fork:RuntimeWarning')  # imageio's ffmpeg reader
def test_interpolation_mp4_grid_loop(export_dir, g, tmp_path):
  imageio = pytest.importorskip('imageio.v2')
  pytest.importorskip('imageio_ffmpeg')
  out = interpolate.main(['--checkpoint', export_dir, '--seeds', '0-3', '--grid', '2x1',
                          '--frames', '2', '--loop', '--out', str(tmp_path / 'v.mp4')])
  with imageio.get_reader(out) as reader:
    frames = np.stack([f for f in reader])
  assert frames.shape == (2 * 2, RES, 2 * RES, 3)  # 2 keyframes per cell, looped
  want = interpolate.interpolation_frames(g, [0, 1, 2, 3], frames=2, loop=True, grid=(2, 1))
  # H.264 is lossy: close on average, not equal.
  assert np.abs(frames[..., 0].astype(float) - want[..., 0]).mean() < 6
  # Cell 0 runs seeds 0 -> 1 -> 0, cell 1 seeds 2 -> 3 -> 2.
  first = images_lib.to_uint8(g(np.concatenate([generate.seed_latent(s, g.z_dim)
                                                for s in (0, 2)])))
  np.testing.assert_array_equal(want[0], images_lib.make_grid(first, cols=2))
  with pytest.raises(ValueError, match='multiple of 2 seeds'):
    interpolate.interpolation_frames(g, [0, 1, 2], grid=(2, 1))
  with pytest.raises(ValueError, match='.mp4 or .gif'):
    interpolate.main(['--checkpoint', export_dir, '--seeds', '0,1', '--out', 'v.avi'])
  with pytest.raises(ValueError, match='bad --grid'):
    interpolate.parse_grid('2by2')


def test_write_video_rejects_bad_frames(tmp_path):
  with pytest.raises(ValueError, match='uint8'):
    video.write_video(tmp_path / 'a.gif', np.zeros((2, 4, 4, 1), np.float32))
  with pytest.raises(ValueError, match='even frame sizes'):
    video.write_video(tmp_path / 'a.mp4', np.zeros((2, 5, 4, 1), np.uint8))
