"""Tools on a real (tiny, one-step) training run: generate, export, load_generator."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import gan_jax
from gan_jax import config_base
from gan_jax import images as images_lib
from gan_jax import train
from gan_jax.tools import export
from gan_jax.tools import generate
from tests.fake_data import write_fake_fashion_mnist
from tests.test_train import PLAIN

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
  """A finished one-step run of experiments/fashion_mnist.py:tiny (32x32 grayscale, z_dim 16).

  The settings match tests/test_guard.py's runs (no lazy regulariser), so the session's
  compilation cache shares the step.
  """
  root = tmp_path_factory.mktemp('tools')
  write_fake_fashion_mnist(root / 'src', n_train=48, n_test=8)
  config = config_base.load(str(REPO / 'experiments/fashion_mnist.py') + ':tiny', {
      'data.source_dir': str(root / 'src'), 'data.data_dir': str(root / 'tfds'),
      'schedule.max_steps': 1, 'loss.style_mixing_prob': 0.5, 'ema.rampup': 0.0,
      'ema.kimg': 0.02, 'mesh.data': 1, **PLAIN})
  train.train_and_evaluate(config, str(root / 'run'))
  return root / 'run'


@pytest.fixture(scope='module')
def g(workdir):
  return gan_jax.load_generator(workdir)


def _png(path):
  return np.asarray(Image.open(path))


def _generate(workdir, outdir, *flags):
  return generate.main(['--workdir', str(workdir), '--outdir', str(outdir), *flags])


def test_loaded_generator_from_workdir(g):
  assert (g.z_dim, g.c_dim, g.w_dim, g.img_resolution, g.img_channels, g.num_ws) == (
      16, 0, 16, 32, 1, 8)
  z = np.random.RandomState(0).randn(4, 16)
  images = g(z, psi=0.7)
  assert images.shape == (4, 32, 32, 1) and images.dtype == np.float32
  assert np.all(np.isfinite(images)) and images.std() > 0
  np.testing.assert_allclose(g.synthesis(g.mapping(z, psi=0.7)), images, rtol=0, atol=1e-6)
  # psi is traced, not baked in: another psi gives other images from the same executable.
  assert np.abs(g(z, psi=0.3) - images).max() > 1e-3


def test_generate_writes_a_png_per_seed_and_a_grid(workdir, tmp_path):
  written = _generate(workdir, tmp_path, '--seeds', '0-4', '--trunc', '0.7', '--grid')
  names = [Path(p).name for p in written]
  assert names == [f'seed{s:04d}.png' for s in range(5)] + ['grid.png']
  tiles = [_png(tmp_path / n) for n in names[:5]]
  for tile in tiles:
    assert tile.shape == (32, 32) and tile.dtype == np.uint8  # grayscale PNG
  grid = _png(tmp_path / 'grid.png')
  assert grid.shape == (2 * 32, 3 * 32)  # 5 seeds: ceil(sqrt(5)) = 3 columns, 2 rows
  np.testing.assert_array_equal(grid[:32, 32:64], tiles[1])
  np.testing.assert_array_equal(grid[32:, 32:64], tiles[4])
  assert grid[32:, 64:].max() == 0  # the missing sixth tile is black


def test_same_seed_same_image_and_different_seeds_differ(workdir, tmp_path):
  _generate(workdir, tmp_path / 'a', '--seeds', '0-3', '--trunc', '0.7')
  _generate(workdir, tmp_path / 'b', '--seeds', '3,1', '--trunc', '0.7')
  for seed in (1, 3):
    np.testing.assert_array_equal(_png(tmp_path / 'a' / f'seed{seed:04d}.png'),
                                  _png(tmp_path / 'b' / f'seed{seed:04d}.png'))
  images = [_png(tmp_path / 'a' / f'seed{s:04d}.png').astype(int) for s in range(4)]
  for i in range(4):
    for j in range(i):
      assert np.abs(images[i] - images[j]).max() > 0, (i, j)


def test_seed_is_nvidias_latent(g, tmp_path):
  z = np.random.RandomState(7).randn(1, g.z_dim)
  np.testing.assert_array_equal(generate.seed_latent(7, g.z_dim), z.astype(np.float32))
  image = generate.generate_images(g, [7], psi=0.5)
  np.testing.assert_array_equal(image, images_lib.to_uint8(g(z, psi=0.5)))


def test_psi_zero_gives_the_average_image_for_every_seed(workdir, g, tmp_path):
  _generate(workdir, tmp_path, '--seeds', '0-3', '--trunc', '0')
  images = [_png(tmp_path / f'seed{s:04d}.png') for s in range(4)]
  for image in images[1:]:
    np.testing.assert_array_equal(image, images[0])
  # ... and that image is the synthesis of the tracked average w.
  w_avg = np.broadcast_to(g.w_avg, (1, g.num_ws, g.w_dim))
  # Another program (synthesis alone): a pixel whose float value sits on a uint8 level boundary
  # may round to the level below on another CPU, so one level is allowed, and nothing more.
  direct = images_lib.to_uint8(g.synthesis(w_avg))[0, ..., 0].astype(np.int32)
  assert np.abs(direct - images[0]).max() <= 1
  assert images[0].std() > 0
  z = np.random.RandomState(0).randn(4, g.z_dim)
  np.testing.assert_allclose(g(z, psi=0.0), np.repeat(g.synthesis(w_avg), 4, axis=0), rtol=0,
                             atol=1e-5)


def test_random_noise_is_reproducible_per_seed(workdir, g, tmp_path):
  _generate(workdir, tmp_path / 'a', '--seeds', '0-1', '--noise', 'random')
  _generate(workdir, tmp_path / 'b', '--seeds', '1', '--noise', 'random')
  np.testing.assert_array_equal(_png(tmp_path / 'a' / 'seed0001.png'),
                                _png(tmp_path / 'b' / 'seed0001.png'))
  z = np.random.RandomState(0).randn(1, g.z_dim)  # batch 1: the executable generate compiled
  np.testing.assert_array_equal(g(z, noise='random', rng=1), g(z, noise='random', rng=1))
  assert np.abs(g(z, noise='random', rng=1) - g(z, noise='random', rng=2)).max() > 0


def test_export_from_workdir_gives_the_same_images(workdir, g, tmp_path):
  dest = export.export_from_workdir(workdir, tmp_path / 'export')
  config = json.loads((tmp_path / 'export' / 'generator.json').read_text())
  assert config['format'] == 'gan_jax.generator' and config['model'] == 'stylegan2'
  assert config['kwargs']['img_resolution'] == 32 and config['kwargs']['img_channels'] == 1
  assert config['kwargs']['c_dim'] == 0 and config['kwargs']['z_dim'] == 16
  assert 'step 1' in config['source']
  exported = gan_jax.load_generator(dest)
  from_step_dir = gan_jax.load_generator(workdir / 'checkpoints' / '1')
  z = np.random.RandomState(3).randn(4, g.z_dim)
  want = g(z, psi=0.7)
  np.testing.assert_array_equal(exported(z, psi=0.7), want)
  np.testing.assert_array_equal(from_step_dir(z, psi=0.7), want)
  with pytest.raises(FileExistsError, match='already holds an export'):
    export.export_from_workdir(workdir, tmp_path / 'export')
  export.export_from_workdir(workdir, tmp_path / 'export', overwrite=True)

  # The command line on the export (`python -m gan_jax.generate`) writes the workdir's PNGs.
  _generate(workdir, tmp_path / 'from_workdir', '--seeds', '5-6', '--trunc', '0.7')
  result = subprocess.run(
      [sys.executable, '-m', 'gan_jax.generate', '--checkpoint', dest, '--seeds', '5-6',
       '--trunc', '0.7', '--outdir', str(tmp_path / 'from_export')],
      capture_output=True, text=True, cwd=REPO, check=False)
  assert result.returncode == 0, result.stderr
  for seed in (5, 6):
    np.testing.assert_array_equal(_png(tmp_path / 'from_export' / f'seed{seed:04d}.png'),
                                  _png(tmp_path / 'from_workdir' / f'seed{seed:04d}.png'))


def test_load_generator_rejects_what_it_cannot_read(workdir, tmp_path):
  with pytest.raises(FileNotFoundError):
    gan_jax.load_generator(tmp_path / 'nothing')
  (tmp_path / 'empty').mkdir()
  with pytest.raises(ValueError, match='neither an export'):
    gan_jax.load_generator(tmp_path / 'empty')
  with pytest.raises(FileNotFoundError, match='no step 7'):
    gan_jax.load_generator(workdir, step=7)
  with pytest.raises(SystemExit):  # --step goes with --workdir
    generate.main(['--checkpoint', str(workdir), '--step', '1', '--seeds', '0',
                   '--outdir', str(tmp_path)])


def test_helpers():
  assert generate.parse_seeds('0-3,7, 10-11') == [0, 1, 2, 3, 7, 10, 11]
  with pytest.raises(ValueError, match='bad seed range'):
    generate.parse_seeds('3-x')
  # NVIDIA's convention x * 127.5 + 128, clipped.
  np.testing.assert_array_equal(images_lib.to_uint8(np.array([-1.5, -1.0, 0.0, 0.5, 1.0, 2.0])),
                                [0, 0, 128, 191, 255, 255])
  tiles = np.arange(3, dtype=np.uint8)[:, None, None, None] * np.ones((3, 2, 2, 1), np.uint8) + 1
  grid = images_lib.make_grid(tiles, cols=2)  # 2 rows: tiles 1, 2 / 3, black
  np.testing.assert_array_equal(grid[..., 0], [[1, 1, 2, 2], [1, 1, 2, 2],
                                               [3, 3, 0, 0], [3, 3, 0, 0]])


def test_import_gan_jax_is_cheap():
  code = ('import sys, gan_jax; assert "jax" not in sys.modules, "import gan_jax pulled in jax"; '
          'from gan_jax.tools.loading import load_generator; '
          'assert gan_jax.load_generator is load_generator')
  result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          cwd=REPO, check=False)
  assert result.returncode == 0, result.stderr
