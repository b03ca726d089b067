"""Edits along a direction: strength 0 is the identity (latent and image), only the chosen ws
move, and the command line on a tiny generator with seeds and a projected latent."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import gan_jax
from gan_jax import cli_errors
from gan_jax.images import to_uint8
from gan_jax.tools import directions
from gan_jax.tools import edit
from gan_jax.tools import generate
from gan_jax.tools import projector
from tests import tiny_generator

NUM_WS, W_DIM = 8, tiny_generator.KWARGS['w_dim']


def test_apply_edit_strength_zero_is_the_identity_and_only_the_layers_move():
  rng = np.random.RandomState(0)
  ws = rng.randn(2, NUM_WS, W_DIM).astype(np.float32)
  step = rng.randn(W_DIM).astype(np.float32)
  np.testing.assert_array_equal(edit.apply_edit(ws, step, 0.0, range(NUM_WS)), ws)
  out = edit.apply_edit(ws, step, 1.5, [1, 2, 5])
  np.testing.assert_array_equal(out[:, [0, 3, 4, 6, 7]], ws[:, [0, 3, 4, 6, 7]])
  np.testing.assert_allclose(out[:, [1, 2, 5]] - ws[:, [1, 2, 5]],
                             np.broadcast_to(1.5 * step, (2, 3, W_DIM)), atol=1e-5)
  assert edit.layer_indices('all', NUM_WS) == list(range(NUM_WS))
  assert edit.layer_indices('coarse', NUM_WS) == [0, 1, 2, 3]


def test_parse_strengths():
  np.testing.assert_array_equal(edit.parse_strengths('4', 5), [0, 1, 2, 3, 4])
  np.testing.assert_array_equal(edit.parse_strengths('-2:2', 3), [-2, 0, 2])
  with pytest.raises(cli_errors.UserError, match='bad --strength'):
    edit.parse_strengths('x', 3)


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
  root = tmp_path_factory.mktemp('edit')
  path = tiny_generator.make_export(root / 'g', noise_strength=0.1)
  dirs = root / 'dirs.npz'
  directions.main(['pca', '--checkpoint', path, '--out', str(dirs), '--components', '2',
                   '--samples', '300'])
  return path, dirs, gan_jax.load_generator(path)


def _png(path):
  return np.asarray(Image.open(path))


def test_command_line_on_seeds_strength_zero_column_is_the_seed_image(setup, tmp_path):
  path, dirs, g = setup
  written = edit.main(['--checkpoint', path, '--directions', str(dirs), '--direction', 'pc0',
                       '--strength=-3:3', '--steps', '3', '--seeds', '4,9', '--outdir',
                       str(tmp_path), '--video', 'e.gif', '--frames', '4'])
  assert [Path(p).name for p in written] == ['edit.png', 'e.gif']
  grid = _png(tmp_path / 'edit.png')
  assert grid.shape == (2 * 32, 3 * 32)  # rows = seeds, columns = strengths -3, 0, 3
  for row, seed in enumerate((4, 9)):
    ws = g.mapping(generate.seed_latent(seed, g.z_dim))
    np.testing.assert_array_equal(grid[32 * row:32 * (row + 1), 32:64],
                                  to_uint8(g.synthesis(ws))[0, ..., 0])
    # gan_jax.generate's PNG of the seed (one jitted mapping + synthesis): at most a rounding off.
    seed_png = generate.generate_images(g, [seed])[0, ..., 0].astype(int)
    assert np.abs(grid[32 * row:32 * (row + 1), 32:64].astype(int) - seed_png).max() <= 1
    assert np.abs(grid[32 * row:32 * (row + 1), :32].astype(int) - seed_png).max() > 10  # edited
  with Image.open(tmp_path / 'e.gif') as gif:
    assert gif.n_frames == 6 and gif.size == (2 * 32, 32)  # 4 there, 2 back; seeds side by side


def test_command_line_on_a_projected_latent_keeps_its_noise(setup, tmp_path):
  path, dirs, g = setup
  rng = np.random.RandomState(3)
  ws = np.array(g.mapping(generate.seed_latent(2, g.z_dim)))
  ws[:, 4:] += 0.3 * rng.randn(NUM_WS - 4, W_DIM).astype(np.float32)  # a W+ latent
  shapes = {n: np.asarray(g.variables['buffers']['synthesis'][n.split('/')[0]][n.split('/')[1]]
                          ['noise_const']).shape for n in projector.noise_names(g.variables)}
  noise = {n: rng.randn(*s).astype(np.float32) for n, s in shapes.items()}
  latent = tmp_path / 'projected_w.npz'
  projector.save_projection(str(latent), projector.Projection(ws, noise, np.zeros(1),
                                                              np.zeros(1)))
  edit.main(['--checkpoint', path, '--directions', str(dirs), '--direction', 'pc1',
             '--strength', '2', '--steps', '2', '--layers', 'middle', '--latent', str(latent),
             '--outdir', str(tmp_path / 'out'), '--no-video'])
  grid = _png(tmp_path / 'out/edit.png')
  assert grid.shape == (32, 2 * 32)
  projected = to_uint8(projector.synthesize_projection(g, str(latent)))[0, ..., 0]
  np.testing.assert_array_equal(grid[:, :32], projected)  # strength 0: the projection itself
  assert not np.array_equal(projected, to_uint8(g.synthesis(ws))[0, ..., 0])  # its noise counts
  # Only ws 4-7 (middle) moved: the edit equals rendering the hand-edited latent.
  table = directions.load(str(dirs))
  i = directions.lookup(table, 'pc1')
  edited = ws.copy()
  edited[:, 4:] += 2 * table['sigma'][i] * table['directions'][i]
  np.testing.assert_array_equal(grid[:, 32:], to_uint8(projector.render(g, edited, noise))[0,
                                                                                          ..., 0])


def test_user_errors(setup, tmp_path):
  path, dirs, _ = setup
  base = ['--checkpoint', path, '--directions', str(dirs), '--strength', '1', '--outdir',
          str(tmp_path), '--no-video']
  with pytest.raises(cli_errors.UserError, match='no direction .pc7.'):
    edit.main(base + ['--direction', 'pc7', '--seeds', '0'])
  bad = tmp_path / 'bad.npz'
  np.savez(bad, w=np.zeros((1, 3, W_DIM), np.float32))
  with pytest.raises(cli_errors.UserError, match='w must be'):
    edit.main(base + ['--direction', 'pc0', '--latent', str(bad)])
  with pytest.raises(SystemExit):
    edit.main(base + ['--direction', 'pc0'])  # no source


def test_python_m_entry_points_report_a_missing_file(tmp_path):
  """Both tools run through cli_errors: a user error is one line and exit status 2."""
  missing = str(tmp_path / 'missing.npz')
  for argv in (['gan_jax.tools.directions', 'show', '--out', missing],
               ['gan_jax.tools.edit', '--checkpoint', str(tmp_path), '--directions', missing,
                '--direction', 'pc0', '--strength', '1', '--seeds', '0', '--outdir',
                str(tmp_path)]):
    result = subprocess.run([sys.executable, '-m', *argv], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parents[1], check=False)
    assert result.returncode == 2, result.stderr
    assert 'error:' in result.stderr and 'no directions file' in result.stderr
