"""ProGAN: growing (alpha = 1 / alpha = 0 against the networks of the neighbouring stages), float64
numpy references of the layers and of a whole generator, the fade-in of the reals, WGAN-GP."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gan_jax import losses
from gan_jax.models import layers
from gan_jax.models import progan
from tests import numerics

TINY = dict(img_channels=3, channel_base=64, channel_max=8)
Z_DIM = 8
SQRT2 = math.sqrt(2.0)
# float32 against float64 numpy / against another float32 program: measured <= ~1e-6 of each
# tensor's largest element; a wrong gain (sqrt 2: 29%), blend weight or layer is >= 1e-2 off.
REL = 1e-5


def random_variables(module, *args, seed=0, **kwargs):
  """Variables of the right shapes filled with numpy normals (weights N(0, 1), others 0.3 N(0, 1),
  mapping weights of lr multiplier 0.01 N(0, 100^2)); no init compilation."""
  shapes = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), *args, **kwargs))
  rs = np.random.RandomState(seed)

  def fill(path, s):
    names = [getattr(k, 'key', '') for k in path]
    scale = 0.3
    if names[-1] == 'weight':
      scale = 100.0 if 'mapping' in names else 1.0
    if names[-1] == 'const':
      scale = 1.0
    return jnp.asarray(scale * rs.standard_normal(s.shape), jnp.float32)

  return jax.tree_util.tree_map_with_path(fill, shapes)


def subset(variables, keep):
  """The 'params' entries named in `keep` (the parameters of a smaller network)."""
  return {'params': {k: v for k, v in variables['params'].items() if k in keep}}


def names_up_to(res, prefix=None):
  """b4..b{res} (and {prefix}4..{prefix}{res})."""
  out = set()
  for log2 in range(2, int(math.log2(res)) + 1):
    out |= {f'b{2 ** log2}'} | ({f'{prefix}{2 ** log2}'} if prefix else set())
  return out


# --------------------------------------------------------------------------------------------
# float64 numpy references.


def np_pixel_norm(x):
  return x / np.sqrt(np.mean(x ** 2, axis=-1, keepdims=True) + 1e-8)


def np_up(x):
  n, h, w, c = x.shape
  out = np.zeros((n, 2 * h, 2 * w, c))
  for dy in range(2):
    for dx in range(2):
      out[:, dy::2, dx::2] = x
  return out


def np_pool(x, factor=2):
  n, h, w, c = x.shape
  out = np.zeros((n, h // factor, w // factor, c))
  for y in range(h // factor):
    for xx in range(w // factor):
      out[:, y, xx] = x[:, y * factor:(y + 1) * factor, xx * factor:(xx + 1) * factor].mean(
          axis=(1, 2))
  return out


def np_lrelu(x):
  return np.where(x >= 0, x, 0.2 * x) * SQRT2


def np_conv(x, w, b=None, act=False):
  """Equalized 'same' conv: the weight scaled by 1/sqrt(fan_in), bias, lrelu * sqrt(2)."""
  w = np.asarray(w, np.float64)
  k, _, cin, cout = w.shape
  w = w / math.sqrt(cin * k * k)
  p = k // 2
  n, h, wd, _ = x.shape
  xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
  out = np.zeros((n, h, wd, cout))
  for dy in range(k):
    for dx in range(k):
      out += xp[:, dy:dy + h, dx:dx + wd] @ w[dy, dx]
  if b is not None:
    out = out + np.asarray(b, np.float64)
  return np_lrelu(out) if act else out


def np_dense(x, p, act=False, lr=1.0):
  w = np.asarray(p['weight'], np.float64) * lr / math.sqrt(x.shape[-1])
  y = x @ w + np.asarray(p['bias'], np.float64) * lr
  return np_lrelu(y) if act else y


def np_progan_g(params, z, stage, alpha):
  """The ProGAN generator written out in numpy, with the fade-in."""
  x = np_pixel_norm(np.asarray(z, np.float64))
  imgs = []
  for log2 in range(2, int(math.log2(stage)) + 1):
    res = 2 ** log2
    p = params[f'b{res}']
    if res == 4:
      x = np_dense(x, p['dense'], act=True)
      x = np_pixel_norm(x.reshape(x.shape[0], 4, 4, -1))
      x = np_pixel_norm(np_conv(x, p['conv']['weight'], p['conv']['bias'], act=True))
    else:
      x = np_up(x)
      x = np_pixel_norm(np_conv(x, p['conv0']['weight'], p['conv0']['bias'], act=True))
      x = np_pixel_norm(np_conv(x, p['conv1']['weight'], p['conv1']['bias'], act=True))
    t = p['torgb']
    imgs.append(np_conv(x, t['weight'], t['bias']))
  if stage == 4:
    return imgs[-1]
  return (1 - alpha) * np_up(imgs[-2]) + alpha * imgs[-1]


def np_real_images_at(images, stage, alpha):
  x = np_pool(np.asarray(images, np.float64), images.shape[1] // stage)
  if stage == 4:
    return x
  return (1 - alpha) * np_up(np_pool(x)) + alpha * x


# --------------------------------------------------------------------------------------------
# Layers and the reals.


def test_pixel_norm_matches_numpy():
  x = np.random.RandomState(0).randn(3, 4, 4, 5).astype(np.float32) * 3
  numerics.assert_close(layers.pixel_norm(jnp.asarray(x)), np_pixel_norm(x.astype(np.float64)),
                        REL, 'pixel norm')


def test_resampling_matches_numpy():
  x = np.random.RandomState(1).randn(2, 4, 6, 3).astype(np.float32)
  np.testing.assert_array_equal(layers.upsample_nearest(jnp.asarray(x)), np_up(x))
  numerics.assert_close(layers.downsample_avg(jnp.asarray(x)), np_pool(x), REL, 'pool 2')
  y = np.random.RandomState(2).randn(2, 8, 8, 1).astype(np.float32)
  numerics.assert_close(layers.downsample_avg(jnp.asarray(y), 4), np_pool(y, 4), REL, 'pool 4')


@pytest.mark.parametrize('stage,alpha', [(4, 0.3), (8, 0.0), (8, 0.3), (16, 0.75), (32, 1.0)])
def test_real_images_at_matches_numpy(stage, alpha):
  images = np.random.RandomState(3).randn(2, 32, 32, 3).astype(np.float32)
  got = layers.real_images_at(jnp.asarray(images), stage, jnp.float32(alpha))
  assert got.shape == (2, stage, stage, 3)
  numerics.assert_close(got, np_real_images_at(images, stage, alpha), REL, 'reals at the stage')


def test_real_images_at_rejects_bad_sizes():
  with pytest.raises(ValueError, match='power of two'):
    layers.real_images_at(jnp.zeros((1, 32, 32, 3)), 12, 1.0)
  with pytest.raises(ValueError, match='divisible by the stage'):
    layers.real_images_at(jnp.zeros((1, 24, 24, 3)), 16, 1.0)


# --------------------------------------------------------------------------------------------
# Structure.


def test_channel_schedule_matches_the_paper():
  """Table 2 of the paper: 512 feature maps up to 32x32, then 256, 128, 64, 32, 16."""
  G = progan.Generator(img_resolution=1024, img_channels=3)
  D = progan.Discriminator(img_resolution=1024, img_channels=3)
  g = jax.eval_shape(lambda: G.init(jax.random.PRNGKey(0), jnp.zeros((1, 512))))['params']
  d = jax.eval_shape(lambda: D.init(jax.random.PRNGKey(0), jnp.zeros((1, 1024, 1024, 3))))
  d = d['params']
  want = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256, 128: 128, 256: 64, 512: 32, 1024: 16}
  assert {r: g[f'b{r}']['torgb']['weight'].shape[2] for r in want} == want
  assert {r: d[f'fromrgb{r}']['weight'].shape[3] for r in want} == want
  assert g['b4']['dense']['weight'].shape == (512, 16 * 512)
  assert d['b4']['conv']['weight'].shape == (3, 3, 513, 512)  # + the minibatch-std map
  assert d['b4']['fc']['weight'].shape == (16 * 512, 512)
  # The paper's parameter count of each network is 23.1M.
  count = lambda tree: sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))
  assert round(count(g) / 1e6, 1) == 23.1 and round(count(d) / 1e6, 1) == 23.1


def test_init_creates_every_stage_and_refuses_a_partial_init():
  G = progan.Generator(img_resolution=16, z_dim=Z_DIM, **TINY)
  D = progan.Discriminator(img_resolution=16, **TINY)
  g = jax.eval_shape(lambda: G.init(jax.random.PRNGKey(0), jnp.zeros((2, Z_DIM))))['params']
  d = jax.eval_shape(lambda: D.init(jax.random.PRNGKey(0), jnp.zeros((2, 16, 16, 3))))['params']
  assert set(g) == names_up_to(16) and set(d) == names_up_to(16, 'fromrgb')
  with pytest.raises(ValueError, match='init at the full resolution'):
    G.init(jax.random.PRNGKey(0), jnp.zeros((2, Z_DIM)), stage=8)


def test_bad_stages_and_shapes_are_refused():
  G = progan.Generator(img_resolution=16, z_dim=Z_DIM, **TINY)
  D = progan.Discriminator(img_resolution=16, **TINY)
  gv = random_variables(G, jnp.zeros((2, Z_DIM)))
  dv = random_variables(D, jnp.zeros((2, 16, 16, 3)))
  with pytest.raises(ValueError, match='above the network resolution'):
    G.apply(gv, jnp.zeros((2, Z_DIM)), stage=32)
  with pytest.raises(ValueError, match='power of two'):
    G.apply(gv, jnp.zeros((2, Z_DIM)), stage=6)
  with pytest.raises(TypeError, match='static Python int'):
    G.apply(gv, jnp.zeros((2, Z_DIM)), stage=jnp.int32(8))
  with pytest.raises(ValueError, match=r'expected \(N, 8, 8, 3\) images at stage 8'):
    D.apply(dv, jnp.zeros((2, 16, 16, 3)), stage=8)


# --------------------------------------------------------------------------------------------
# Growing: one compiled function per (network, stage), alpha traced.


@pytest.fixture(scope='module')
def nets():
  """A 16x16 G and D, the 8x8 G and D built directly, random variables, jitted runners."""
  z = jax.random.normal(jax.random.PRNGKey(1), (4, Z_DIM))
  G16 = progan.Generator(img_resolution=16, z_dim=Z_DIM, **TINY)
  G8 = progan.Generator(img_resolution=8, z_dim=Z_DIM, **TINY)
  D16 = progan.Discriminator(img_resolution=16, **TINY)
  D8 = progan.Discriminator(img_resolution=8, **TINY)
  gv = random_variables(G16, z)
  dv = random_variables(D16, jnp.zeros((4, 16, 16, 3)), seed=1)
  run = {}
  for name, module in [('G16', G16), ('G8', G8), ('D16', D16), ('D8', D8)]:
    run[name] = jax.jit(lambda v, x, alpha, stage, m=module: m.apply(v, x, stage=stage,
                                                                      alpha=alpha),
                        static_argnames='stage')
  images = jnp.asarray(np.random.RandomState(5).randn(4, 16, 16, 3).astype(np.float32))
  return dict(z=z, gv=gv, dv=dv, run=run, images=images)


def _a(alpha):
  return jnp.float32(alpha)  # one argument type for every call: one cache entry per stage


def test_generator_matches_numpy_during_the_fade(nets):
  got = nets['run']['G16'](nets['gv'], nets['z'], _a(0.3), stage=16)
  want = np_progan_g(nets['gv']['params'], nets['z'], 16, 0.3)
  numerics.assert_close(got, want, REL, 'G during the fade')


def test_generator_at_alpha_one_is_the_network_built_at_that_resolution(nets):
  run = nets['run']
  grown = run['G16'](nets['gv'], nets['z'], _a(1.0), stage=8)
  direct = run['G8'](subset(nets['gv'], names_up_to(8)), nets['z'], _a(1.0), stage=8)
  assert grown.shape == (4, 8, 8, 3)
  numerics.assert_close(grown, direct, REL, 'G grown to 8 vs built at 8')
  full = run['G16'](nets['gv'], nets['z'], _a(1.0), stage=16)
  assert full.shape == (4, 16, 16, 3) and float(jnp.std(full)) > 0


def test_generator_at_alpha_zero_is_the_previous_stage_upsampled(nets):
  run = nets['run']
  faded = run['G16'](nets['gv'], nets['z'], _a(0.0), stage=16)
  previous = run['G16'](nets['gv'], nets['z'], _a(1.0), stage=8)
  numerics.assert_close(faded, np_up(np.asarray(previous, np.float64)), REL, 'G at alpha 0')
  # In between, the output is the linear blend of the two ends.
  one = run['G16'](nets['gv'], nets['z'], _a(1.0), stage=16)
  quarter = run['G16'](nets['gv'], nets['z'], _a(0.25), stage=16)
  numerics.assert_close(quarter, 0.75 * np.asarray(faded) + 0.25 * np.asarray(one), REL,
                        'G at alpha 0.25')
  assert float(jnp.abs(one - faded).max()) > 1e-2


def test_discriminator_at_alpha_one_is_the_network_built_at_that_resolution(nets):
  run = nets['run']
  x8 = layers.downsample_avg(nets['images'])
  grown = run['D16'](nets['dv'], x8, _a(1.0), stage=8)
  direct = run['D8'](subset(nets['dv'], names_up_to(8, 'fromrgb')), x8, _a(1.0), stage=8)
  assert grown.shape == (4,) and float(jnp.std(grown)) > 0
  numerics.assert_close(grown, direct, REL, 'D grown to 8 vs built at 8')


def test_discriminator_at_alpha_zero_sees_the_pooled_image_through_the_previous_fromrgb(nets):
  run = nets['run']
  faded = run['D16'](nets['dv'], nets['images'], _a(0.0), stage=16)
  previous = run['D16'](nets['dv'], layers.downsample_avg(nets['images']), _a(1.0), stage=8)
  numerics.assert_close(faded, previous, REL, 'D at alpha 0')
  one = run['D16'](nets['dv'], nets['images'], _a(1.0), stage=16)
  assert float(jnp.abs(one - faded).max()) > 1e-3
  # The reals as blended for the fade-in look to D at alpha 0 like the pooled reals.
  reals = layers.real_images_at(nets['images'], 16, _a(0.0))
  numerics.assert_close(run['D16'](nets['dv'], reals, _a(0.0), stage=16), previous, REL,
                        'D on the blended reals')


def test_a_traced_alpha_compiles_once_per_stage(nets):
  run = nets['run']
  traces = []

  @jax.jit
  def g(v, z, alpha):
    traces.append(1)  # runs only while tracing
    return progan.Generator(img_resolution=16, z_dim=Z_DIM, **TINY).apply(v, z, stage=16,
                                                                          alpha=alpha)

  a = g(nets['gv'], nets['z'], _a(0.2))
  b = g(nets['gv'], nets['z'], _a(0.9))
  assert len(traces) == 1 and g._cache_size() == 1
  assert float(jnp.abs(a - b).max()) > 1e-3
  for alpha in (0.1, 0.6):
    run['D16'](nets['dv'], nets['images'], _a(alpha), stage=16)
  # Every call of the shared runner used alpha as a float32 array: one entry per stage (8, 16).
  assert run['D16']._cache_size() == 2


# --------------------------------------------------------------------------------------------
# WGAN-GP.


def test_wasserstein_losses_and_drift_match_numpy():
  real = np.array([1.0, -2.0, 0.5], np.float32)
  fake = np.array([0.25, 3.0, -1.0], np.float32)
  # Means of 3 values, at the scale of the inputs (a mean can cancel to ~0); a sign error is O(1).
  scale = float(np.abs(np.concatenate([real, fake])).max())
  numerics.assert_close(losses.g_wasserstein(jnp.asarray(fake)), -np.mean(fake), 1e-6,
                        'g_wasserstein', scale)
  numerics.assert_close(losses.d_wasserstein(jnp.asarray(real), jnp.asarray(fake)),
                        np.mean(fake) - np.mean(real), 1e-6, 'd_wasserstein', scale)
  np.testing.assert_allclose(losses.drift_penalty(jnp.asarray(real)), real.astype(np.float64) ** 2)
  penalty = np.array([0.5, 2.0, 0.0], np.float32)
  want = (np.mean(fake) - np.mean(real) + 10 * np.mean(penalty)
          + 0.001 * np.mean(real.astype(np.float64) ** 2))
  numerics.assert_close(losses.d_wgan_gp(jnp.asarray(real), jnp.asarray(fake),
                                         jnp.asarray(penalty)), want, 1e-6, 'd_wgan_gp', 10 * scale)


@pytest.mark.parametrize('target', [1.0, 750.0])
def test_gradient_penalty_of_a_linear_critic(target):
  # D(x) = <a, x>: the gradient is a everywhere, so the penalty is (|a| - target)^2 / target^2.
  a = np.random.RandomState(6).randn(4, 4, 3).astype(np.float32)
  d_fn = lambda x: jnp.sum(a * x, axis=(1, 2, 3))
  rs = np.random.RandomState(7)
  reals, fakes = (jnp.asarray(rs.randn(5, 4, 4, 3).astype(np.float32)) for _ in range(2))
  got = losses.gradient_penalty(d_fn, reals, fakes, jax.random.PRNGKey(0), target=target)
  norm = np.sqrt(np.sum(a.astype(np.float64) ** 2))
  np.testing.assert_allclose(got, np.full(5, (norm - target) ** 2 / target ** 2), rtol=1e-4)
  loss = losses.d_wgan_gp(jnp.zeros(5), jnp.zeros(5), got, wgan_lambda=10.0)
  np.testing.assert_allclose(loss, 10 * (norm - target) ** 2 / target ** 2, rtol=1e-4)


def test_gradient_penalty_of_a_quadratic_critic_is_taken_at_the_interpolates():
  # D(x) = sum(b * x^2): the gradient at x_hat is 2 b x_hat, x_hat = reals + u (fakes - reals).
  rs = np.random.RandomState(8)
  b = rs.randn(3, 3, 2)
  reals, fakes = rs.randn(6, 3, 3, 2), rs.randn(6, 3, 3, 2)
  key = jax.random.PRNGKey(4)
  d_fn = lambda x: jnp.sum(jnp.asarray(b, jnp.float32) * x ** 2, axis=(1, 2, 3))
  got = losses.gradient_penalty(d_fn, jnp.asarray(reals, jnp.float32),
                                jnp.asarray(fakes, jnp.float32), key)
  u = np.asarray(jax.random.uniform(key, (6, 1, 1, 1)), np.float64)
  assert 0 <= u.min() and u.max() < 1 and u.std() > 0.05
  x_hat = reals + u * (fakes - reals)
  norms = np.sqrt(np.sum((2 * b * x_hat) ** 2, axis=(1, 2, 3)))
  np.testing.assert_allclose(got, (norms - 1) ** 2, rtol=1e-4)
  with pytest.raises(ValueError, match='same shape'):
    losses.gradient_penalty(d_fn, jnp.zeros((2, 3, 3, 2)), jnp.zeros((3, 3, 3, 2)), key)


# --------------------------------------------------------------------------------------------
# Labels and bfloat16.


def test_labels_are_concatenated_to_z_and_switch_the_critic_output():
  G = progan.Generator(img_resolution=8, z_dim=Z_DIM, c_dim=3, **TINY)
  D = progan.Discriminator(img_resolution=8, c_dim=3, **TINY)
  z = np.random.RandomState(20).randn(4, Z_DIM).astype(np.float32)
  c = np.eye(3, dtype=np.float32)[[0, 2, 1, 2]]
  gv = random_variables(G, jnp.asarray(z), jnp.asarray(c), seed=21)
  dv = random_variables(D, jnp.zeros((4, 8, 8, 3)), jnp.asarray(c), seed=22)
  # D's head has one output per class; the label picks one: linear in c, so with one-hots the
  # score for labels 0 + 1 is the sum of the two scores.
  labels = [np.eye(3, dtype=np.float32)[[k] * 4] for k in range(3)]
  labels.append(labels[0] + labels[1])

  @jax.jit
  def run(gv, dv, z, c, labels):
    img = G.apply(gv, z, c, alpha=0.5)
    return img, [D.apply(dv, img, label) for label in labels]

  img, scores = run(gv, dv, jnp.asarray(z), jnp.asarray(c), labels)
  want = np_progan_g(gv['params'], np.concatenate([z, c], axis=1), 8, 0.5)
  numerics.assert_close(img, want, REL, 'conditional G')
  assert dv['params']['b4']['out']['weight'].shape == (8, 3)
  numerics.assert_close(scores[3], scores[0] + scores[1], REL, 'D linear in the label',
                        scale=float(np.abs(np.stack(scores[:2])).max()))
  assert float(jnp.abs(scores[0] - scores[2]).max()) > 1e-3
  with pytest.raises(ValueError, match=r'c must be \(N, 3\) labels'):
    G.apply(gv, jnp.asarray(z), None)


def test_bfloat16_resolutions_stay_close_to_float32(nets):
  G = progan.Generator(img_resolution=16, z_dim=Z_DIM, num_bf16_res=1, **TINY)
  D = progan.Discriminator(img_resolution=16, num_bf16_res=1, **TINY)
  run = jax.jit(lambda gv, dv, z, x: (G.apply(gv, z, alpha=0.5), D.apply(dv, x, alpha=0.5)))
  want_img = nets['run']['G16'](nets['gv'], nets['z'], _a(0.5), stage=16)
  want_score = nets['run']['D16'](nets['dv'], nets['images'], _a(0.5), stage=16)
  img, score = run(nets['gv'], nets['dv'], nets['z'], nets['images'])
  assert img.dtype == jnp.float32 and score.dtype == jnp.float32
  for got, want in [(img, want_img), (score, want_score)]:
    err = float(jnp.abs(got - want).max() / jnp.std(want))
    assert 0 < err < 0.1, err  # bfloat16 ran (not bit-equal) and stayed close
