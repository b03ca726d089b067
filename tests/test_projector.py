"""Projector: its schedules and regulariser against NVIDIA's formulas, recovery of a generated
image's w, inpainting that ignores the hole, super-resolution's loss, the command line, and the
Inception distance (the full-size Inception projection is marked slow)."""

import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import gan_jax
from gan_jax import images as images_lib
from gan_jax.metrics import fetch
from gan_jax.metrics import inception
from gan_jax.tools import generate
from gan_jax.tools import perceptual
from gan_jax.tools import projector
from tests import numerics
from tests import tiny_generator

RES = tiny_generator.KWARGS['img_resolution']
FAST = projector.ProjectorConfig(w_avg_samples=1000)


@pytest.fixture(scope='module')
def exports(tmp_path_factory):
  root = tmp_path_factory.mktemp('projector')
  return {'noiseless': tiny_generator.make_export(root / 'noiseless', noise_strength=0.0),
          'noisy': tiny_generator.make_export(root / 'noisy', noise_strength=0.02)}


@pytest.fixture(scope='module')
def pixel():
  """One distance object for the module: its compiled projector steps are reused."""
  return perceptual.Distance('pixel')


@pytest.fixture(scope='module')
def g0(exports):
  """Noise strength 0 (as a fresh init): the image is a function of w alone."""
  return gan_jax.load_generator(exports['noiseless'])


@pytest.fixture(scope='module')
def g(exports):
  return gan_jax.load_generator(exports['noisy'])


def _target(g, seed=7):
  return g.synthesis(g.mapping(generate.seed_latent(seed, g.z_dim)))


# --------------------------------------------------------------------------------------------
# The pieces against NVIDIA's projector.py, written out in plain Python / numpy.


def test_schedules_match_nvidias_formulas():
  cfg = projector.ProjectorConfig(num_steps=200)
  for step in (0, 3, 10, 50, 150, 170, 199):
    t = step / 200
    lr_ramp = min(1.0, (1.0 - t) / 0.25)
    lr_ramp = 0.5 - 0.5 * math.cos(lr_ramp * math.pi)
    lr_ramp = lr_ramp * min(1.0, t / 0.05)
    assert float(projector.learning_rate(step, cfg)) == pytest.approx(0.1 * lr_ramp, abs=1e-7)
    want = 2.5 * 0.05 * max(0.0, 1.0 - t / 0.75) ** 2
    assert float(projector.w_noise_scale(step, cfg, 2.5)) == pytest.approx(want, abs=1e-7)
  traced = projector._traced(cfg)  # pylint: disable=protected-access
  assert float(projector.learning_rate(jnp.float32(50), traced)) == pytest.approx(
      float(projector.learning_rate(50, cfg)), rel=1e-6)


def test_noise_regularization_and_normalization():
  rng = np.random.RandomState(0)
  noise = {'b4/conv1': rng.randn(4, 4), 'b32/conv0': rng.randn(32, 32) + 0.3}
  want = 0.0
  for v in noise.values():  # NVIDIA: roll along W and H, then 2x2 average pool, until <= 8
    v = v.astype(np.float64)
    while True:
      want += np.mean(v * np.roll(v, 1, axis=1)) ** 2 + np.mean(v * np.roll(v, 1, axis=0)) ** 2
      if v.shape[0] <= 8:
        break
      v = (v[0::2, 0::2] + v[1::2, 0::2] + v[0::2, 1::2] + v[1::2, 1::2]) / 4
  got = projector.noise_regularization({k: jnp.float32(v) for k, v in noise.items()})
  assert float(got) == pytest.approx(want, rel=1e-5)
  for v in projector.normalize_noise({k: jnp.float32(v) for k, v in noise.items()}).values():
    assert abs(float(v.mean())) < 1e-6 and float(jnp.mean(v ** 2)) == pytest.approx(1, rel=1e-5)


def test_w_statistics_are_nvidias(g):
  w_avg, w_std = projector.w_statistics(g, None, 300, chunk=128)  # 3 chunks, the last padded
  z = np.random.RandomState(123).randn(300, g.z_dim)
  w = g.mapping(z)[:, 0].astype(np.float64)
  # A float32 mean of 300 ws can cancel to ~0 in some channels: compared at the scale of the ws
  # (measured < 1e-6 of it); leaving out the padded chunk's rows or counting them is >= 1e-2.
  numerics.assert_close(w_avg, w.mean(0), 1e-5, 'w_avg', scale=float(np.abs(w).max()))
  assert w_std == pytest.approx(np.sqrt(np.sum((w - w.mean(0)) ** 2) / 300), rel=1e-5)


def test_box_downscale_and_pixel_distance():
  rng = np.random.RandomState(0)
  x, y = rng.randn(2, 1, 8, 8, 3)
  want = np.zeros((1, 4, 4, 3))
  for i in range(4):
    for j in range(4):
      want[:, i, j] = x[:, 2 * i:2 * i + 2, 2 * j:2 * j + 2].mean(axis=(1, 2))
  numerics.assert_close(perceptual.box_downscale(jnp.float32(x), 2), want, 1e-6, 'box downscale',
                        scale=float(np.abs(x).max()))  # a wrong box is O(1e-1)
  mask = (rng.rand(1, 8, 8, 1) > 0.5).astype(np.float32)
  want = np.sum(mask * (x - y) ** 2) / (mask.sum() * 3)
  got = perceptual.pixel_distance(jnp.float32(x), jnp.float32(y), jnp.float32(mask))
  assert float(got[0]) == pytest.approx(want, rel=1e-5)
  assert float(perceptual.pixel_distance(jnp.float32(x), jnp.float32(y))[0]) == pytest.approx(
      np.mean((x - y) ** 2), rel=1e-5)


# --------------------------------------------------------------------------------------------
# Projection.


def test_projection_recovers_a_generated_w(g0, pixel):
  w_known = g0.mapping(generate.seed_latent(7, g0.z_dim))
  target = g0.synthesis(w_known)
  w_avg, _ = projector.w_statistics(g0, None, FAST.w_avg_samples)
  start_mse = np.mean((g0.synthesis(np.broadcast_to(w_avg, w_known.shape)) - target) ** 2)
  result = projector.project(g0, target, cfg=FAST.replace(num_steps=100), distance=pixel)
  assert result.ws.shape == (100, g0.num_ws, g0.w_dim) and result.dist.shape == (100,)
  final_mse = np.mean((projector.render(g0, result.ws[-1:], result.noise) - target) ** 2)
  assert final_mse < start_mse / 20, (start_mse, final_mse)
  assert result.dist[-1] == pytest.approx(final_mse, rel=0.05)  # no w noise at the end
  w_err, start_err = (np.linalg.norm(result.ws[-1, 0] - w_known[0, 0]),
                      np.linalg.norm(w_avg - w_known[0, 0]))
  # w is only partly identifiable from a 32x32 image of a tiny generator: 100 steps bring it
  # 2.9x closer than w_avg on this fixture (the image MSE above is the main check).
  assert w_err < start_err / 2.5, (start_err, w_err)
  for v in result.noise.values():  # renormalised after every step
    assert abs(v.mean()) < 1e-5 and np.mean(v ** 2) == pytest.approx(1, rel=1e-4)


def test_masked_projection_ignores_the_hole(g, pixel):
  target = _target(g)
  mask = np.ones((1, RES, RES, 1), np.float32)
  mask[:, 8:20, 10:26] = 0
  changed = np.where(mask > 0, target, np.random.RandomState(1).randn(*target.shape) * 3)
  cfg = FAST.replace(num_steps=4)
  a = projector.project(g, target, mask, cfg, pixel)
  b = projector.project(g, changed.astype(np.float32), mask, cfg, pixel)
  np.testing.assert_array_equal(a.ws, b.ws)
  np.testing.assert_array_equal(a.dist, b.dist)
  for name in a.noise:
    np.testing.assert_array_equal(a.noise[name], b.noise[name])
  known = np.where(mask > 0, -target, target).astype(np.float32)  # the known pixels matter
  c = projector.project(g, known, mask, cfg, pixel)
  assert np.abs(c.ws - a.ws).max() > 1e-4


def test_downsample_loss_is_the_distance_of_box_downscaled_images(g):
  """Step 0 without w noise: w is the mean w and the noise maps their initial draw."""
  cfg = FAST.replace(num_steps=3, downsample=4, w_plus=True, initial_noise_factor=0.0)
  low = np.random.RandomState(2).uniform(-1, 1, (1, RES // 4, RES // 4, 1)).astype(np.float32)
  mask = np.ones_like(low)
  mask[:, :2] = 0
  result = projector.project(g, low, mask, cfg, seed=5)
  w_std, start = projector.initial_state(g, cfg, seed=5)
  assert start['w'].shape == (1, g.num_ws, g.w_dim) and w_std > 0
  image = projector.render(g, np.asarray(start['w']), start['noise']).astype(np.float64)
  small = image.reshape(1, RES // 4, 4, RES // 4, 4, 1).mean(axis=(2, 4))
  want = np.sum(mask * (small - low) ** 2) / mask.sum()
  assert result.dist[0] == pytest.approx(want, rel=1e-4)
  reg = float(projector.noise_regularization(start['noise']))
  assert result.loss[0] == pytest.approx(want + 1e5 * reg, rel=1e-4)
  assert np.abs(result.ws[-1, 0] - result.ws[-1, 5]).max() > 0  # W+: the ws move apart
  with pytest.raises(ValueError, match='target must be'):
    projector.project(g, low[:, :4], None, cfg)


def test_projector_command_line(exports, g, tmp_path):
  target = images_lib.to_uint8(_target(g))[0, ..., 0]
  Image.fromarray(target).save(tmp_path / 'target.png')
  mask = np.full((RES, RES), 255, np.uint8)
  mask[:16] = 0
  Image.fromarray(mask).save(tmp_path / 'mask.png')
  written = projector.main(['--checkpoint', exports['noisy'], '--target',
                            str(tmp_path / 'target.png'), '--outdir', str(tmp_path / 'out'),
                            '--steps', '3', '--distance', 'pixel', '--mask',
                            str(tmp_path / 'mask.png'), '--downsample', '4', '--w_plus',
                            '--w-avg-samples', '1000', '--video', 'proj.gif'])
  assert [Path(p).name for p in written] == ['target.png', 'proj.png', 'projected_w.npz',
                                             'proj.gif']
  out = tmp_path / 'out'
  # The full-size target was box-downscaled 4x; the hole (the top half) shows grey.
  shown = np.asarray(Image.open(out / 'target.png')).astype(np.float64)
  assert shown.shape == (RES // 4, RES // 4)
  low = ((target.astype(np.float64) - 128) / 127.5).reshape(8, 4, 8, 4).mean(axis=(1, 3))
  # to_uint8 truncates: up to one level below, and a value that lands on a whole level can drop
  # one more ulp below it in float32 (the old atol=1 sat on that edge); a wrong box is levels off.
  np.testing.assert_allclose(shown[4:], np.clip(low[4:] * 127.5 + 128, 0, 255), rtol=0,
                             atol=1 + 1e-3)
  assert np.all(shown[:4] == 128)
  proj = np.asarray(Image.open(out / 'proj.png'))
  assert proj.shape == (RES, RES)
  with np.load(out / 'projected_w.npz') as data:
    assert data['w'].shape == (1, g.num_ws, g.w_dim) and data['dist'].shape == (3,)
    assert sorted(k for k in data.files if k.startswith('noise/')) == sorted(
        f'noise/{n}' for n in projector.noise_names(g.variables))
  np.testing.assert_array_equal(
      images_lib.to_uint8(projector.synthesize_projection(g, out / 'projected_w.npz'))[0, ..., 0],
      proj)
  with Image.open(out / 'proj.gif') as gif:
    assert gif.n_frames == 3 and gif.size == (2 * RES, RES)  # target (upscaled) | projection
  with pytest.raises(SystemExit):
    projector.main(['--checkpoint', exports['noisy'], '--target', str(tmp_path / 'target.png'),
                    '--outdir', str(out), '--downsample', '3'])


# --------------------------------------------------------------------------------------------
# The Inception distance.


@pytest.fixture(scope='module')
def inception_params():
  try:
    path = fetch.weights_path()
  except FileNotFoundError:
    path = fetch.fetch()
  return inception.load_params(path)


def test_inception_input_is_the_fid_pipeline(inception_params):
  del inception_params  # (only the resize and scaling are compared)
  u8 = np.random.RandomState(0).randint(0, 256, (1, 16, 16, 1)).astype(np.uint8)
  x = (u8.astype(np.float32) - 128) / 127.5  # generator range, as load_target makes it
  numerics.assert_close(perceptual.inception_input(jnp.asarray(x)),
                        inception.preprocess(jnp.asarray(u8)), 1e-5, 'inception input')


def test_inception_distance_against_numpy(inception_params):
  rng = np.random.RandomState(0)
  x, y = rng.uniform(-1, 1, (2, 1, 16, 16, 1)).astype(np.float32)
  dist = perceptual.Distance('inception', inception_params)
  prepared = dist.prepare(y, None)  # y's taps, jitted
  taps = jax.jit(perceptual.inception_taps, static_argnums=2)
  fx = taps(inception_params, jnp.asarray(x), perceptual.INCEPTION_TAPS)  # the same executable
  assert [f.shape for f in fx] == [(1, 147, 147, 64), (1, 71, 71, 192), (1, 35, 35, 288),
                                   (1, 17, 17, 768)]
  want = 0.0
  for a, b in zip(fx, prepared['features']):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    na = a / np.sqrt(np.sum(a ** 2, axis=-1, keepdims=True) + 1e-10)
    nb = b / np.sqrt(np.sum(b ** 2, axis=-1, keepdims=True) + 1e-10)
    want += np.mean(np.sum((na - nb) ** 2, axis=-1))
  fn = jax.jit(dist.__call__)
  got = float(fn(jnp.asarray(x), prepared)[0])
  assert got == pytest.approx(want, rel=1e-4)
  assert 0 < got < 16
  assert float(fn(jnp.asarray(y), prepared)[0]) == pytest.approx(0, abs=1e-6)


def test_inception_distance_with_a_mask_ignores_the_hole(g, inception_params):
  """On the stem's first conv alone (the same code path as the four default taps)."""
  x, target = _target(g, seed=3), _target(g)
  mask = np.ones((1, RES, RES, 1), np.float32)
  mask[:, 4:12] = 0
  changed = np.where(mask > 0, target, -target).astype(np.float32)
  dist = perceptual.Distance('inception', inception_params, taps=('conv',))
  fn = jax.jit(jax.value_and_grad(lambda x, p: dist(x, p)[0]))
  value, grad = fn(jnp.asarray(x), dist.prepare(target, mask))
  value_changed, grad_changed = fn(jnp.asarray(x), dist.prepare(changed, mask))
  assert float(value) == float(value_changed) and float(value) > 0
  np.testing.assert_array_equal(grad, grad_changed)
  value_unmasked, _ = fn(jnp.asarray(x), dist.prepare(changed, np.ones_like(mask)))
  assert float(value_unmasked) > float(value)  # the hole's content counts without the mask


@pytest.mark.slow
def test_inception_projection_command_line(exports, g, tmp_path):
  target = images_lib.to_uint8(_target(g))[0, ..., 0]
  Image.fromarray(target).save(tmp_path / 'target.png')
  projector.main(['--checkpoint', exports['noisy'], '--target', str(tmp_path / 'target.png'),
                  '--outdir', str(tmp_path), '--steps', '30', '--w-avg-samples', '1000',
                  '--no-video'])
  with np.load(tmp_path / 'projected_w.npz') as data:
    assert data['dist'][-1] < data['dist'][0] * 0.8


@pytest.mark.slow
def test_inception_masked_projection_ignores_the_hole(g, inception_params):
  target = _target(g)
  mask = np.ones((1, RES, RES, 1), np.float32)
  mask[:, 4:12] = 0
  changed = np.where(mask > 0, target, -target).astype(np.float32)
  dist = perceptual.Distance('inception', inception_params)
  cfg = FAST.replace(num_steps=2)
  a = projector.project(g, target, mask, cfg, dist)
  b = projector.project(g, changed, mask, cfg, dist)
  np.testing.assert_array_equal(a.ws, b.ws)
  np.testing.assert_array_equal(a.dist, b.dist)
  assert np.all(np.isfinite(a.loss)) and np.abs(a.ws[-1] - a.ws[0]).max() > 0
