"""Editing directions: PCA and the logistic boundary recover directions planted in synthetic ws,
orthogonalisation, the file, and the command line on tiny generators (unconditional and
conditional)."""

import numpy as np
import pytest

import gan_jax
from gan_jax import cli_errors
from gan_jax.tools import directions
from gan_jax.tools import edit
from tests import tiny_generator

D = 16


def _unit(v):
  return v / np.linalg.norm(v)


def _planted(seed=0):
  return _unit(np.random.RandomState(seed + 100).randn(D))


def test_pca_recovers_a_planted_direction():
  rng = np.random.RandomState(0)
  d = _planted()
  # Isotropic ws of std 0.5 plus a component of std 3 along d: d is the top principal axis.
  ws = 0.5 * rng.randn(4000, D) + 3.0 * rng.randn(4000, 1) * d + 7.0
  axes, shares = directions.pca_directions(ws, 3)
  assert abs(axes[0] @ d) > 0.99
  np.testing.assert_allclose(np.linalg.norm(axes, axis=1), 1, atol=1e-12)
  np.testing.assert_allclose(axes @ axes.T, np.eye(3), atol=1e-12)
  # Variance 9 along d of 9 + 16 * 0.25 in all: a share of 9 / 13 = 0.69.
  assert abs(shares[0] - 9 / 13) < 0.05 and shares[1] < 0.05 and shares[1] >= shares[2]
  # The sign rule: the largest-magnitude coordinate is positive.
  assert np.all(axes[np.arange(3), np.argmax(np.abs(axes), axis=1)] > 0)


def test_logistic_boundary_recovers_a_planted_normal_in_correlated_ws():
  rng = np.random.RandomState(1)
  d = _planted(1)
  mix = rng.randn(D, D) + 2 * np.eye(D)  # correlated coordinates
  x = rng.randn(6000, D) @ mix + 3.0
  y = ((x - 3.0) @ d + 0.1 * rng.randn(6000) > 0).astype(int)
  found, accuracy = directions.linear_direction(x, y)
  assert found @ d > 0.94  # points to the positive side (0.964 measured)
  assert accuracy > 0.9
  # The boundary normal is not the difference of the sides' means (which the correlation bends
  # away from d): the test would catch a classifier replaced by a mean difference.
  mean_diff = _unit(x[y == 1].mean(0) - x[y == 0].mean(0))
  assert mean_diff @ d < found @ d - 0.1  # 0.764 measured


def test_linear_direction_needs_both_sides():
  with pytest.raises(cli_errors.UserError, match='both sides'):
    directions.linear_direction(np.ones((10, 3)), np.ones(10))


def test_orthogonalise_removes_exactly_the_component():
  rng = np.random.RandomState(2)
  a, b = rng.randn(D), rng.randn(D)
  out = directions.orthogonalise(a, b)
  assert abs(out @ b) < 1e-12 and abs(np.linalg.norm(out) - 1) < 1e-12
  # In the plane of a and b, on a's side.
  residual = out - np.linalg.lstsq(np.stack([a, b], 1), out, rcond=None)[0] @ np.stack([a, b])
  assert np.abs(residual).max() < 1e-12 and out @ a > 0
  with pytest.raises(cli_errors.UserError, match='parallel'):
    directions.orthogonalise(2 * b, b)


# --------------------------------------------------------------------------------------------
# The command line on tiny generators.


def brightness(images):
  """A user classifier for the tests: the mean pixel value of each image."""
  return np.asarray(images).mean(axis=(1, 2, 3))


@pytest.fixture(scope='module')
def exports(tmp_path_factory):
  root = tmp_path_factory.mktemp('directions')
  return {'plain': tiny_generator.make_export(root / 'plain', noise_strength=0.0),
          'cond': tiny_generator.make_export(root / 'cond', noise_strength=0.0, c_dim=3)}


def _run(*argv):
  return directions.main([str(a) for a in argv])


def test_pca_classifier_orthogonalise_and_show(exports, tmp_path, capsys):
  out = tmp_path / 'dirs.npz'
  _run('pca', '--checkpoint', exports['plain'], '--out', out, '--components', 3,
       '--samples', 500, '--layers', '0-3')
  table = _run('classifier', '--checkpoint', exports['plain'], '--out', out, '--samples', 400,
               '--classifier', 'tests.test_directions:brightness', '--name', 'bright')
  assert list(table['names']) == ['pc0', 'pc1', 'pc2', 'bright']
  assert list(table['method']) == ['pca', 'pca', 'pca', 'classifier']
  assert list(table['layers']) == ['0-3', '0-3', '0-3', 'all']
  np.testing.assert_allclose(np.linalg.norm(table['directions'], axis=1), 1, atol=1e-5)
  assert np.all(table['sigma'] > 0) and table['accuracy'][3] > 0.75
  assert np.isnan(table['accuracy'][0]) and np.isnan(table['span'][0])
  assert table['span'][3] > 0  # the bright side's mean is on the positive side
  g = gan_jax.load_generator(exports['plain'])
  np.testing.assert_array_equal(table['w_avg'], g.w_avg)
  # sigma of pc0 from the stored statistics is the std of fresh samples along it.
  ws = directions.sample_ws(g, 2000, seed=5)
  assert abs(np.std(ws @ table['directions'][0]) / table['sigma'][0] - 1) < 0.1

  # The found direction does what the classifier measured: editing along it brightens.
  step, _ = edit.direction_step(g, table, 'bright')
  seeds = edit.seed_sources(g, range(8), 1.0, None)
  darker = np.stack([s.render(g, edit.apply_edit(s.ws[None], step, -2, range(8))) for s in seeds])
  lighter = np.stack([s.render(g, edit.apply_edit(s.ws[None], step, 2, range(8))) for s in seeds])
  assert np.mean(lighter.astype(float).mean(axis=(1, 2, 3, 4)) >
                 darker.astype(float).mean(axis=(1, 2, 3, 4))) >= 7 / 8

  table = _run('orthogonalise', '--out', out, '--direction', 'bright', '--against', 'pc0,pc1')
  assert table['names'][-1] == 'bright|pc0,pc1'
  new = table['directions'][-1]
  assert abs(new @ table['directions'][0]) < 1e-5 and abs(new @ table['directions'][1]) < 1e-5
  assert table['method'][-1] == 'orthogonalised' and table['sigma'][-1] > 0
  capsys.readouterr()
  _run('show', '--out', out)
  shown = capsys.readouterr().out
  assert '5 directions' in shown and 'bright|pc0,pc1: orthogonalised' in shown

  # A second pca replaces its names instead of adding copies.
  table = _run('pca', '--checkpoint', exports['plain'], '--out', out, '--components', 2,
               '--samples', 500, '--seed', 1)
  assert list(table['names']) == ['pc2', 'bright', 'bright|pc0,pc1', 'pc0', 'pc1']
  # Its sigmas come from the file's statistics (the first command's samples), not seed 1's.
  d = table['directions'][3].astype(np.float64)
  np.testing.assert_allclose(table['sigma'][3], np.sqrt(d @ table['w_cov'] @ d), rtol=1e-5)


def test_class_directions_of_a_conditional_generator(exports, tmp_path):
  out = tmp_path / 'cond.npz'
  table = _run('class', '--checkpoint', exports['cond'], '--out', out, '--samples', 300,
               '--pair', '0,2', '--name', 'zero-to-two')
  assert list(table['names']) == ['zero-to-two']
  # The same zs under class 0 and class 2: their mean w difference lies along the direction.
  g = gan_jax.load_generator(exports['cond'])
  w0 = directions.sample_ws(g, 300, 9, classes=np.zeros(300, int))
  w2 = directions.sample_ws(g, 300, 9, classes=np.full(300, 2))
  assert table['accuracy'][0] > 0.9 and table['span'][0] > 0
  assert (w2 - w0).mean(0) @ table['directions'][0] > 0
  table = _run('class', '--checkpoint', exports['cond'], '--out', out, '--samples', 300)
  assert list(table['names']) == ['zero-to-two', 'not-0->0', 'not-1->1', 'not-2->2']
  assert np.all(table['accuracy'] > 0.8)


def test_user_errors(exports, tmp_path):
  out = tmp_path / 'd.npz'
  with pytest.raises(cli_errors.UserError, match='conditional generator'):
    _run('class', '--checkpoint', exports['plain'], '--out', out, '--samples', 10)
  with pytest.raises(cli_errors.UserError, match='module:function'):
    _run('classifier', '--checkpoint', exports['plain'], '--out', out, '--samples', 10,
         '--classifier', 'nocolon', '--name', 'x')
  with pytest.raises(cli_errors.UserError, match='--pair'):
    _run('class', '--checkpoint', exports['cond'], '--out', out, '--samples', 10, '--pair', '1,1')
  with pytest.raises(FileNotFoundError, match='no directions file'):
    _run('show', '--out', out)
  _run('pca', '--checkpoint', exports['plain'], '--out', out, '--components', 1, '--samples', 50)
  with pytest.raises(cli_errors.UserError, match='no direction .nope.'):
    _run('orthogonalise', '--out', out, '--direction', 'pc0', '--against', 'nope')
