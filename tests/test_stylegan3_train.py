"""Training StyleGAN3 with NVIDIA's recipe: the blur of D's inputs (against a NumPy reference of
NVIDIA's filter, its fade-out schedule, the step with blur and ADA), the config checks and the
experiment's variants."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gan_jax import augment as augment_lib
from gan_jax import config_base
from gan_jax import config_check
from gan_jax import models
from gan_jax import state as state_lib
from gan_jax import stylegan2_phases
from gan_jax import train_step as ts
from gan_jax.models import stylegan3

EXPERIMENT = 'experiments/ffhq_stylegan3.py'


def _numpy_blur(img, sigma):
  """NVIDIA's run_D blur, written out: taps -floor(3 sigma)..floor(3 sigma) of 2^-(x/sigma)^2,
  normalised, a zero-padded 'same' convolution along H, then along W."""
  size = int(np.floor(sigma * 3))
  if size <= 0:
    return img
  x = np.arange(-size, size + 1)
  f = np.exp2(-np.square(x / sigma))
  f /= f.sum()
  out = np.zeros_like(img, dtype=np.float64)
  n, h, w, c = img.shape
  pad = np.pad(img.astype(np.float64), ((0, 0), (size, size), (size, size), (0, 0)))
  tmp = np.zeros((n, h, w + 2 * size, c))
  for k, fk in enumerate(f):
    tmp += fk * pad[:, k:k + h, :, :]
  for k, fk in enumerate(f):
    out += fk * tmp[:, :, k:k + w, :]
  return out


def test_blur_against_numpy_and_identity_at_zero():
  img = np.random.default_rng(0).standard_normal((2, 20, 17, 3)).astype(np.float32)
  for sigma in (0.0, 0.3):  # floor(3 sigma) == 0: NVIDIA skips the blur
    np.testing.assert_array_equal(np.asarray(stylegan2_phases.blur(img, sigma, 10.0)), img)
  for sigma in (0.5, 1.7, 4.0):  # laid out for sigma 10: the outer taps must be zero
    ours = np.asarray(stylegan2_phases.blur(img, jnp.float32(sigma), 10.0))
    np.testing.assert_allclose(ours, _numpy_blur(img, sigma), atol=2e-6)
  blurred = np.asarray(stylegan2_phases.blur(img, jnp.float32(3.0), 3.0))
  assert blurred.std() < 0.5 * img.std()


def test_blur_sigma_fades_linearly():
  cfg = ts.StepConfig(batch_size=4, c_dim=0, r1_gamma=1.0, r1_interval=1, pl_weight=0.0,
                      pl_interval=0, pl_decay=0.01, pl_batch_shrink=2, style_mixing_prob=0.0,
                      ema_kimg=1.0, ema_rampup=0.0, blur_init_sigma=10.0, blur_fade_kimg=2.0)
  values = [float(stylegan2_phases.blur_sigma(jnp.float32(n), cfg)) for n in (0, 500, 1000,
                                                                              2000, 5000)]
  np.testing.assert_allclose(values, [10.0, 7.5, 5.0, 0.0, 0.0], atol=1e-5)
  off = cfg._replace(blur_init_sigma=0.0)
  assert float(stylegan2_phases.blur_sigma(jnp.float32(0), off)) == 0.0


def _tiny_models():
  G = stylegan3.Generator(img_resolution=8, img_channels=1, z_dim=4, w_dim=4, channel_base=16,
                          channel_max=4, num_layers=3, num_critical=1, magnitude_ema_beta=0.5)
  D = stylegan3.Discriminator(img_resolution=8, img_channels=1, channel_base=16, channel_max=4,
                              mbstd_group_size=2)
  return G, D


def test_step_with_blur_and_ada():
  """One step (G main, D main + R1 fused) with the blur at sigma 2 and ADA's bgc pipe: finite and
  the blur reported; D's loss on the same inputs moves with the blur's sigma (the blur reaches
  D's fakes and reals) and is unchanged at sigma 0."""
  G, D = _tiny_models()
  cfg = ts.StepConfig(batch_size=2, c_dim=0, r1_gamma=0.5, r1_interval=1, pl_weight=0.0,
                      pl_interval=4, pl_decay=0.01, pl_batch_shrink=2, style_mixing_prob=0.0,
                      ema_kimg=10.0, ema_rampup=0.05, augment=augment_lib.preset('bgc'),
                      ada_target=0.6, blur_init_sigma=2.0, blur_fade_kimg=1.0)
  tx = optax.adam(1e-3)
  state = state_lib.create(G, D, tx, tx, 0, jax.random.PRNGKey(0))
  state = state.replace(ada_p=jnp.float32(0.5))
  batch = {'image': jax.random.normal(jax.random.PRNGKey(1), (2, 8, 8, 1)),
           'label': jnp.zeros((2,), jnp.int32)}
  step = jax.jit(ts.make_train_step(G, D, tx, tx, cfg), static_argnums=(2, 3))
  _, m = step(state, batch, True, False)
  assert float(m['blur_sigma']) == 2.0
  for key in ('loss/G', 'loss/D', 'loss/D_r1_penalty', 'aug/p'):
    assert np.isfinite(float(m[key])), key

  phases = stylegan2_phases.Phases(G, D, cfg._replace(augment=None, ada_target=None))
  draws = ts.draw(jax.random.PRNGKey(2), G, cfg, batch['label'], False)
  fakes, _ = phases.d_fakes(state.g_params, state.g_buffers, draws)
  c = jnp.zeros((2, 0))
  d_loss = jax.jit(lambda sigma: phases.d_loss(state.d_params, fakes, draws, batch['image'], c,
                                               0.0, main=True, r1=False, blur_sigma=sigma)[0])
  plain = stylegan2_phases.Phases(G, D, cfg._replace(augment=None, ada_target=None,
                                                     blur_init_sigma=0.0))
  unblurred = plain.d_loss(state.d_params, fakes, draws, batch['image'], c, 0.0, main=True,
                           r1=False)[0]
  np.testing.assert_allclose(float(d_loss(0.0)), float(unblurred), rtol=1e-6)
  assert abs(float(d_loss(2.0)) - float(unblurred)) > 1e-6


def test_w_avg_and_magnitude_emas_move_in_d_main_only():
  """NVIDIA's StyleGAN3 loss updates w_avg and the magnitude EMAs with D main's fakes only (G main
  runs run_G without update_emas): after a step, G's buffers are those of D main's fakes of the
  updated G applied to the buffers before the step; G main's batch leaves no trace in w_avg."""
  G, D = _tiny_models()
  G = G.clone(w_avg_beta=0.5)
  cfg = ts.StepConfig(batch_size=2, c_dim=0, r1_gamma=0.5, r1_interval=1, pl_weight=0.0,
                      pl_interval=4, pl_decay=0.01, pl_batch_shrink=2, style_mixing_prob=0.0,
                      ema_kimg=10.0, ema_rampup=0.05)
  tx = optax.adam(1e-3)
  state = state_lib.create(G, D, tx, tx, 0, jax.random.PRNGKey(0))
  batch = {'image': jax.random.normal(jax.random.PRNGKey(1), (2, 8, 8, 1)),
           'label': jnp.zeros((2,), jnp.int32)}
  draws = ts.draw(jax.random.PRNGKey(2), G, cfg, batch['label'], False)
  step = jax.jit(ts.make_train_step(G, D, tx, tx, cfg), static_argnums=(2, 3))
  new_state, _ = step(state, batch, True, False, draws)
  phases = stylegan2_phases.Phases(G, D, cfg)
  _, expected = phases.d_fakes(new_state.g_params, state.g_buffers, draws)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
               new_state.g_buffers, expected)
  jax.tree.map(np.testing.assert_array_equal, new_state.ema_buffers, new_state.g_buffers)
  moved = jax.tree_util.tree_leaves_with_path(jax.tree.map(
      lambda a, b: float(jnp.max(jnp.abs(a - b))), expected, state.g_buffers))
  emas = {jax.tree_util.keystr(p): d for p, d in moved if 'w_avg' in jax.tree_util.keystr(p)
          or 'magnitude_ema' in jax.tree_util.keystr(p)}
  assert len(emas) > 1 and min(emas.values()) > 1e-4, emas


def test_config_check_of_the_blur():
  config = config_base.load(f'{EXPERIMENT}:tiny')
  config_check.validate(config, 1)
  for key, value, match in (('loss.blur_init_sigma', -1.0, 'blur_init_sigma'),
                            ('loss.blur_fade_kimg', 0.0, 'blur_fade_kimg > 0')):
    bad = config_base.load(f'{EXPERIMENT}:tiny', {key: value})
    with pytest.raises(config_check.ConfigError, match=match):
      config_check.validate(bad, 1)


@pytest.mark.parametrize('variant', ['', 'r', '256', 'r256', 'tiny', 'fmnist', 'bench32'])
def test_variants(variant):
  """Every variant passes the config check and builds its networks (shapes only); R doubles
  G's channels and not D's, and blurs; T does not blur (NVIDIA's train.py)."""
  config = config_base.load(f'{EXPERIMENT}:{variant}' if variant else EXPERIMENT)
  config_check.validate(config, 1)
  res = {'': 1024, 'r': 1024, '256': 256, 'r256': 256}.get(variant, 32)
  G, D = models.build(config.model, res, 1 if variant in ('tiny', 'fmnist') else 3, 0)
  assert models.family_of(G).name == 'stylegan3' and G.mapping_layers == 2
  assert config.loss.pl_weight == 0 and config.loss.style_mixing_prob == 0
  if variant.startswith('r'):
    assert (G.conv_kernel, G.use_radial_filters) == (1, True)
    assert G.channel_base == 2 * D.channel_base and G.channel_max == 2 * D.channel_max
    assert config.loss.blur_init_sigma == 10.0
    assert config.loss.blur_fade_kimg == config.schedule.batch_size * 200 / 32
  elif variant in ('', '256'):
    assert G.conv_kernel == 3 and config.loss.blur_init_sigma == 0
    assert G.channel_base == D.channel_base
