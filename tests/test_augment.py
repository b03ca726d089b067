"""ADA: the augmentations vs numpy and closed forms, the p controller, one train step with ADA."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gan_jax import augment
from gan_jax import augment_geometry as geometry
from gan_jax import config_base
from gan_jax import config_check
from gan_jax import optim
from gan_jax import state as state_lib
from gan_jax import train
from gan_jax import train_step as train_step_lib
from gan_jax.data import pipeline
from tests.test_train import fake_source, tiny_config  # pylint: disable=unused-import


def _smooth(n=2, size=16, channels=3):
  """Smooth test images (a few low frequencies), float32 in about [-1, 1]."""
  yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
  out = []
  for i in range(n):
    chans = [np.sin(2 * np.pi * (0.6 * xx + 0.3 * yy) + i + c) * np.cos(2 * np.pi * 0.4 * yy - c)
             for c in range(channels)]
    out.append(np.stack(chans, -1))
  return np.asarray(out, np.float32)


def _noise(shape, seed=0):
  return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


@pytest.fixture(scope='module')
def aug_all():
  """The superset pipeline bgcfnc, jitted once (p traced): (images, d sum(images**2) / d input)."""
  def fn(key, x, p):
    y, vjp = jax.vjp(lambda x: augment.augment(key, x, p, augment.PRESETS['bgcfnc']), x)
    return y, vjp(2 * y)[0]
  return jax.jit(fn)


@pytest.fixture(scope='module')
def warp():
  return jax.jit(geometry.warp)


# --- The whole pipeline.


def test_p0_is_exactly_the_identity(aug_all):
  x = _noise((4, 32, 32, 3))
  for seed in range(3):
    y, grad = aug_all(jax.random.PRNGKey(seed), x, jnp.float32(0))
    np.testing.assert_array_equal(np.asarray(y), x)
    np.testing.assert_array_equal(np.asarray(grad), 2 * x)


def test_shape_dtype_determinism_and_p1_changes_every_image(aug_all):
  x = _noise((4, 32, 32, 3))
  a, _ = aug_all(jax.random.PRNGKey(7), x, jnp.float32(1))
  b, _ = aug_all(jax.random.PRNGKey(7), x, jnp.float32(1))
  c, _ = aug_all(jax.random.PRNGKey(8), x, jnp.float32(1))
  assert a.shape == x.shape and a.dtype == x.dtype
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert not np.allclose(np.asarray(a), np.asarray(c))
  # With p = 1 the additive noise alone is drawn for every image, so every image changes.
  assert all(not np.allclose(np.asarray(a[i]), x[i]) for i in range(4))
  assert np.all(np.isfinite(np.asarray(a)))


def test_gradients_flow_to_the_input(aug_all):
  x = _noise((4, 32, 32, 3))
  _, g = aug_all(jax.random.PRNGKey(3), x, jnp.float32(1))
  g = np.asarray(g)
  assert g.shape == x.shape and np.all(np.isfinite(g))
  assert np.count_nonzero(g) > g.size // 4
  assert not np.allclose(g, 2 * x, atol=1e-3)  # it went through the augmentations


def test_brightness_adds_a_constant_per_image():
  x = _noise((4, 16, 16, 3))
  y = np.asarray(augment.augment(jax.random.PRNGKey(0), x, 1.0,
                                 augment.AugmentConfig(brightness=1)))
  d = y - x
  for i in range(4):
    np.testing.assert_allclose(d[i], d[i].mean(), atol=1e-6)
  assert np.std(d.reshape(4, -1).mean(axis=1)) > 0.01  # a different constant per image


@pytest.mark.slow
@pytest.mark.parametrize('name', sorted(augment.PRESETS))
@pytest.mark.parametrize('channels', [1, 3])
def test_every_preset_p0_identity_and_p1_changes(name, channels):
  x = _noise((4, 32, 32, channels))
  f = jax.jit(functools.partial(augment.augment, cfg=augment.PRESETS[name]))
  np.testing.assert_array_equal(np.asarray(f(jax.random.PRNGKey(0), x, 0.0)), x)
  y = np.asarray(f(jax.random.PRNGKey(0), x, 1.0))
  assert y.shape == x.shape and np.all(np.isfinite(y)) and not np.allclose(y, x)


# --- Pixel blitting: exact.


def test_blit_flip_rotations_and_integer_translation():
  x = _noise((3, 8, 8, 2))
  zeros = jnp.zeros((3,), jnp.int32)
  blit = lambda img, f=zeros, r=zeros, tx=zeros, ty=zeros: np.asarray(
      geometry.blit(img, jnp.asarray(f), jnp.asarray(r), jnp.asarray(tx), jnp.asarray(ty), 3))
  flip = np.array([1, 0, 1])
  once = blit(x, f=flip)
  np.testing.assert_array_equal(once[0], x[0, :, ::-1])
  np.testing.assert_array_equal(once[1], x[1])
  np.testing.assert_array_equal(blit(once, f=flip), x)
  rot = np.array([1, 2, 3])
  turned = blit(x, r=rot)
  for i, k in enumerate(rot):
    np.testing.assert_array_equal(turned[i], np.rot90(x[i], k, axes=(0, 1)))
  y = x
  for _ in range(4):
    y = blit(y, r=np.ones(3, np.int32))
  np.testing.assert_array_equal(y, x)
  tx, ty = np.array([2, -3, 0]), np.array([-1, 3, 0])
  shifted = blit(x, tx=tx, ty=ty)
  padded = np.pad(x, ((0, 0), (3, 3), (3, 3), (0, 0)), mode='reflect')
  for i in range(3):
    np.testing.assert_array_equal(
        shifted[i], padded[i, 3 - ty[i]:3 - ty[i] + 8, 3 - tx[i]:3 - tx[i] + 8])
  # A shift that stays inside the image is np.roll there.
  np.testing.assert_array_equal(shifted[0][:7, 2:], np.roll(x[0], (-1, 2), axis=(0, 1))[:7, 2:])


# --- The general warp.


def test_warp_identity_is_the_identity_up_to_the_filter(warp):
  for x in (_smooth(), _noise((2, 16, 16, 3))):
    y = np.asarray(warp(x, jnp.broadcast_to(jnp.eye(3), (2, 3, 3))))
    # sym6 is orthogonal: up- then down-sampling with it is an exact identity (float rounding).
    np.testing.assert_allclose(y, x, atol=2e-5)


def test_warp_integer_translation_matches_reflection_padding(warp):
  x = _noise((2, 16, 16, 3))
  y = np.asarray(warp(x, geometry.translate2d_inv(jnp.array([2., -3.]), jnp.array([1., 4.]), 2)))
  padded = np.pad(x, ((0, 0), (15, 15), (15, 15), (0, 0)), mode='reflect')
  for i, (tx, ty) in enumerate([(2, 1), (-3, 4)]):
    np.testing.assert_allclose(y[i], padded[i, 15 - ty:31 - ty, 15 - tx:31 - tx], atol=2e-5)


def test_warp_conventions_match_the_blits_on_smooth_images(warp):
  x = _smooth()
  flipped = np.asarray(warp(x, geometry.scale2d_inv(-1.0, 1.0, 2)))
  turned = np.asarray(warp(x, geometry.rotate2d_inv(-np.pi / 2, 2)))
  # Not exact: the sym6 filter is not symmetric (which is why the blits are done exactly).
  np.testing.assert_allclose(flipped, x[:, :, ::-1], atol=0.05)
  np.testing.assert_allclose(turned, np.rot90(x, 1, axes=(1, 2)), atol=0.05)
  # A half-pixel shift of a smooth image is a linear interpolation of it, nearly.
  half = np.asarray(warp(x, geometry.translate2d_inv(0.5, 0.0, 2)))
  np.testing.assert_allclose(half[:, :, 4:-4], (x[:, :, 3:-5] + x[:, :, 4:-4]) / 2, atol=0.05)


def test_geometric_matrices():
  t = np.asarray(geometry.translate2d_inv(2.0, 3.0, 1)[0] @ geometry.translate2d(2.0, 3.0, 1)[0])
  np.testing.assert_allclose(t, np.eye(3), atol=1e-6)
  r = np.asarray(geometry.rotate2d(np.pi / 2, 1)[0])
  np.testing.assert_allclose(r @ [1, 0, 1], [0, 1, 1], atol=1e-6)
  s = np.asarray(geometry.scale2d_inv(2.0, 4.0, 1)[0])
  np.testing.assert_allclose(s, np.diag([0.5, 0.25, 1]))


# --- Colour.


def test_color_matrices_against_closed_forms():
  x = _noise((2, 4, 4, 3))
  ones = jnp.ones((2,))
  b = np.asarray(augment.color_transform(x, augment.translate3d(jnp.array([0.25, -0.5]))))
  np.testing.assert_allclose(b - x, np.array([0.25, -0.5])[:, None, None, None] + 0 * x, atol=1e-6)
  c = np.asarray(augment.color_transform(x, augment.scale3d(jnp.array([2.0, 0.5]))))
  np.testing.assert_allclose(c, x * np.array([2.0, 0.5])[:, None, None, None], atol=1e-6)
  flip = augment.lumaflip3d(ones)
  np.testing.assert_allclose(np.asarray(flip @ flip), np.broadcast_to(np.eye(4), (2, 4, 4)),
                             atol=1e-6)
  once = np.asarray(augment.color_transform(x, flip))
  np.testing.assert_allclose(np.asarray(augment.color_transform(once, flip)), x, atol=1e-5)
  # The reflection negates the luma (the channel mean) and keeps the chroma.
  np.testing.assert_allclose(once.mean(-1), -x.mean(-1), atol=1e-6)
  np.testing.assert_allclose(once - once.mean(-1, keepdims=True),
                             x - x.mean(-1, keepdims=True), atol=1e-6)
  # A third of a turn around the luma axis permutes the channels (r, g, b) -> (b, r, g).
  hue = np.asarray(augment.color_transform(x, augment.rotate3d(2 * np.pi / 3 * ones)))
  np.testing.assert_allclose(hue, x[..., [2, 0, 1]], atol=1e-5)
  gray = np.asarray(augment.color_transform(x, augment.saturate3d(0 * ones)))
  np.testing.assert_allclose(gray, np.repeat(x.mean(-1, keepdims=True), 3, -1), atol=1e-6)
  # Grayscale images use the mean of the RGB rows: brightness and contrast act as on RGB.
  g = x[..., :1]
  mat = augment.scale3d(jnp.array([2.0, 0.5])) @ augment.translate3d(jnp.array([0.25, -0.5]))
  np.testing.assert_allclose(np.asarray(augment.color_transform(g, mat)),
                             (g + np.array([0.25, -0.5])[:, None, None, None]) *
                             np.array([2.0, 0.5])[:, None, None, None], atol=1e-6)


# --- Image-space filtering.


def _band_filter_numpy(x, gains):
  bank = augment.filter_bank().astype(np.float64)
  pad = bank.shape[1] // 2
  out = np.empty_like(x, dtype=np.float64)
  for i in range(x.shape[0]):
    h = gains[i] @ bank
    img = np.pad(x[i].astype(np.float64), ((pad, pad), (pad, pad), (0, 0)), mode='reflect')
    img = np.apply_along_axis(lambda v: np.convolve(v, h, mode='valid'), 1, img)
    out[i] = np.apply_along_axis(lambda v: np.convolve(v, h, mode='valid'), 0, img)
  return out


def test_filter_bank_and_band_filter_against_numpy():
  bank = augment.filter_bank()
  assert bank.shape == (4, 43)
  np.testing.assert_allclose(bank, bank[:, ::-1], atol=1e-7)  # symmetric bands
  delta = np.zeros(43)
  delta[21] = 1
  np.testing.assert_allclose(bank.sum(axis=0), delta, atol=1e-6)  # the bands add up to a delta
  np.testing.assert_allclose(bank.sum(axis=1), [1, 0, 0, 0], atol=1e-6)  # low-pass, then bands
  x = _noise((2, 24, 24, 3))
  gains = np.array([[1.0, 1.0, 1.0, 1.0], [0.7, 2.0, 0.5, 1.3]], np.float32)
  y = np.asarray(augment.band_filter(x, jnp.asarray(gains)))
  np.testing.assert_allclose(y[0], x[0], atol=1e-5)
  np.testing.assert_allclose(y, _band_filter_numpy(x, gains), atol=1e-5)


def test_cutout_zeroes_one_square():
  x = np.ones((4, 16, 16, 1), np.float32)
  y = np.asarray(augment.augment(jax.random.PRNGKey(0), x, 1.0, augment.AugmentConfig(cutout=1)))
  for img in y[..., 0]:
    rows, cols = np.nonzero(img == 0)
    assert len(rows) > 0 and set(np.unique(img)) <= {0.0, 1.0}
    # An axis-aligned rectangle of at most half the size on each side (clipped at the border).
    h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
    assert len(rows) == h * w and h <= 8 and w <= 8


# --- The p controller.


def test_ada_controller_moves_p_by_the_right_amount():
  update = jax.jit(augment.ada_update, static_argnums=(4, 5, 6, 7))
  batch, interval, kimg, target = 8, 4, 0.1, 0.6
  rate = batch * interval / (kimg * 1000)  # 0.32
  for logits, direction in ((np.ones(batch), 1), (-np.ones(batch), -1)):
    p, stats = jnp.float32(0.5), jnp.zeros((2,), jnp.float32)
    for step in range(interval):
      p, stats, r_t = update(p, stats, jnp.asarray(logits, jnp.float32), step, target, interval,
                             kimg, batch)
      if step < interval - 1:  # accumulates, does not move yet
        assert float(p) == 0.5
        np.testing.assert_allclose(np.asarray(stats), [direction * batch * (step + 1),
                                                       batch * (step + 1)])
    assert float(r_t) == direction
    np.testing.assert_allclose(float(p), max(0.5 + direction * rate, 0.0), rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(stats), [0, 0])
  # r_t = 0.5 < 0.6 moves down, and p never goes below 0; r_t = 1 moves up.
  logits = jnp.asarray([1, 1, 1, -1, 1, 1, 1, -1], jnp.float32)
  p, _, r_t = update(jnp.float32(0.1), jnp.zeros(2), logits, 3, target, interval, kimg, batch)
  assert float(r_t) == pytest.approx(0.5) and float(p) == 0.0
  p, _, r_t = update(jnp.float32(0.1), jnp.zeros(2), jnp.abs(logits), 3, target, interval, kimg,
                     batch)
  assert float(r_t) == 1.0 and float(p) == pytest.approx(0.1 + rate)


# --- Config.


@pytest.mark.parametrize('key,value,match', [
    ('pipe', 'bgcx', 'augment.pipe'), ('target', 1.5, 'augment.target'),
    ('interval', 0, 'augment.interval'), ('p', -0.1, 'augment.p')])
def test_config_validation(key, value, match):
  config = config_base.get_base_config()
  config.augment.pipe = 'bgc'
  config.augment[key] = value
  with pytest.raises(config_check.ConfigError, match=match):
    config_check.validate(config, 1)


def test_config_fixed_p_zero_is_refused_and_defaults_pass():
  config = config_base.get_base_config()
  config_check.validate(config, 1)  # pipe 'none'
  config.augment.pipe = 'bgc'
  config_check.validate(config, 1)  # ADA from p = 0
  config.augment.target = None
  with pytest.raises(config_check.ConfigError, match='never augments'):
    config_check.validate(config, 1)
  config.augment.p = 0.3
  config_check.validate(config, 1)


# --- One train step with ADA.


def test_train_step_with_ada_updates_p(fake_source):  # pylint: disable=redefined-outer-name
  config = tiny_config(fake_source, **{
      'augment.pipe': 'bgc', 'augment.p': 0.5, 'augment.interval': 1, 'augment.ada_kimg': 0.1})
  info = pipeline.dataset_info(config.data)
  G, D, c_dim = train.build(config, info)
  g_tx, d_tx = optim.make_optimizers(config)
  state = jax.jit(lambda k: state_lib.create(G, D, g_tx, d_tx, c_dim, k, config.augment.p))(
      jax.random.PRNGKey(0))
  cfg = train_step_lib.StepConfig.from_config(config, c_dim)
  assert cfg.augment == augment.PRESETS['bgc'] and cfg.ada_target == 0.6
  step_fn = jax.jit(train_step_lib.make_train_step(G, D, g_tx, d_tx, cfg), static_argnums=(2, 3))
  with pipeline.InputPipeline(config.data, config.schedule.batch_size, 0, 0, 1) as data:
    batch = next(data)
  new, metrics = step_fn(state, batch, True, False)  # R1 through the augmentation
  rate = 8 * 1 / (0.1 * 1000)
  r_t = float(metrics['aug/rt'])
  np.testing.assert_allclose(float(new.ada_p), 0.5 + np.sign(r_t - 0.6) * rate, rtol=1e-6)
  assert float(metrics['aug/p']) == float(new.ada_p)
  np.testing.assert_allclose(r_t, float(metrics['scores/real_sign']), rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(new.ada_stats), [0, 0])  # reset after adjusting
  assert int(metrics['nonfinite']) == 0 and float(metrics['loss/D_r1_penalty']) > 0
