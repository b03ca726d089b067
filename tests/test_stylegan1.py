"""StyleGAN (2019): AdaIN epilogue, synthesis block with blur and the blurred D block against
float64 numpy, the lr-0.01 mapping network, truncation with a cutoff, w_avg, style mixing,
growing with a traced alpha, the registry entry."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from gan_jax import models
from gan_jax.models import progan, stylegan
from test_progan import np_conv, np_dense, np_lrelu, np_pixel_norm, np_pool, np_up, random_variables
from tests import numerics

TINY = dict(img_channels=3, z_dim=8, w_dim=8, mapping_layers=2, channel_base=64, channel_max=8)
# float32 against float64 numpy / another float32 program: measured <= ~1e-6 of each tensor's
# largest element; a wrong style, noise, blur or blend is >= 1e-2 off.
REL = 1e-5


def np_instance_norm(x):
  x = x - x.mean(axis=(1, 2), keepdims=True)
  return x / np.sqrt(np.mean(x ** 2, axis=(1, 2), keepdims=True) + 1e-8)


def np_blur(x):
  f = np.outer([1, 2, 1], [1, 2, 1]) / 16.0
  n, h, w, c = x.shape
  xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  out = np.zeros_like(x)
  for dy in range(3):
    for dx in range(3):
      out += f[dy, dx] * xp[:, dy:dy + h, dx:dx + w]
  return out


def np_epilogue(x, w, p, noise=None):
  if noise is not None:
    x = x + noise[None, :, :, None] * np.asarray(p['noise_strength'], np.float64)
  x = np_instance_norm(np_lrelu(x + np.asarray(p['bias'], np.float64)))
  scale = np_dense(w, p['affine_scale'])
  shift = np_dense(w, p['affine_bias'])
  return x * scale[:, None, None, :] + shift[:, None, None, :]


def _f64(tree):
  return jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), tree)


# --------------------------------------------------------------------------------------------
# Layers against numpy.


def test_instance_norm_matches_numpy():
  x = np.random.RandomState(0).randn(3, 4, 4, 5).astype(np.float32) * 2 + 1
  numerics.assert_close(stylegan.instance_norm(jnp.asarray(x)),
                        np_instance_norm(x.astype(np.float64)), REL, 'instance norm')


def test_adain_epilogue_with_const_noise_matches_numpy():
  x = np.random.RandomState(1).randn(2, 8, 8, 4).astype(np.float32)
  w = np.random.RandomState(2).randn(2, 6).astype(np.float32)
  layer = stylegan.LayerEpilogue(resolution=8)
  v = random_variables(layer, jnp.asarray(x), jnp.asarray(w), 'const', seed=3)
  v['buffers'] = {'noise_const': jnp.asarray(np.random.RandomState(4).randn(8, 8), jnp.float32)}
  got = layer.apply(v, jnp.asarray(x), jnp.asarray(w), 'const')
  p = _f64(v['params'])
  want = np_epilogue(x.astype(np.float64), w.astype(np.float64), p,
                     noise=np.asarray(v['buffers']['noise_const'], np.float64))
  numerics.assert_close(got, want, REL, 'epilogue, const noise')
  none = layer.apply(v, jnp.asarray(x), jnp.asarray(w), 'none')
  numerics.assert_close(none, np_epilogue(x.astype(np.float64), w.astype(np.float64), p), REL,
                        'epilogue, no noise')
  with pytest.raises(ValueError, match='noise_mode must be one of'):
    layer.apply(v, jnp.asarray(x), jnp.asarray(w), 'fixed')


def test_random_noise_comes_from_the_noise_stream():
  x = np.random.RandomState(16).randn(2, 4, 4, 3).astype(np.float32)
  w = np.random.RandomState(17).randn(2, 5).astype(np.float32)
  layer = stylegan.LayerEpilogue(resolution=4)
  v = random_variables(layer, jnp.asarray(x), jnp.asarray(w), 'none', seed=18)

  @jax.jit
  def run(v, key):
    return layer.apply(v, jnp.asarray(x), jnp.asarray(w), 'random', rngs={'noise': key})

  a, b = run(v, jax.random.PRNGKey(0)), run(v, jax.random.PRNGKey(1))
  np.testing.assert_array_equal(a, run(v, jax.random.PRNGKey(0)))
  assert float(jnp.abs(a - b).max()) > 1e-3
  # With zero strength the noise vanishes: 'random' equals 'none'.
  zero = jax.tree_util.tree_map(lambda t: t, v)
  zero['params']['noise_strength'] = jnp.zeros(3)
  numerics.assert_close(run(zero, jax.random.PRNGKey(0)),
                        layer.apply(zero, jnp.asarray(x), jnp.asarray(w), 'none'), REL,
                        'zero-strength noise')


def test_affine_style_starts_at_scale_one_bias_zero():
  layer = stylegan.LayerEpilogue(resolution=4)
  x, w = jnp.ones((1, 4, 4, 2)), jnp.ones((1, 3))
  v = jax.jit(lambda k: layer.init({'params': k}, x, w, 'none'))(jax.random.PRNGKey(0))
  np.testing.assert_array_equal(v['params']['affine_scale']['bias'], np.ones(2))
  np.testing.assert_array_equal(v['params']['affine_bias']['bias'], np.zeros(2))
  np.testing.assert_array_equal(v['params']['noise_strength'], np.zeros(2))


def test_synthesis_block_with_blur_matches_numpy():
  rs = np.random.RandomState(5)
  x = rs.randn(2, 4, 4, 6).astype(np.float32)
  ws = rs.randn(2, 2, 5).astype(np.float32)
  block = stylegan.SynthesisBlock(features=3, resolution=8, img_channels=2)
  v = random_variables(block, jnp.asarray(x), jnp.asarray(ws), 'none', seed=6)
  got, rgb = block.apply(v, jnp.asarray(x), jnp.asarray(ws), 'none')
  p, x64, w64 = _f64(v['params']), x.astype(np.float64), ws.astype(np.float64)
  y = np_blur(np_conv(np_up(x64), p['conv0']['weight']))
  y = np_epilogue(y, w64[:, 0], p['epilogue0'])
  want = np_epilogue(np_conv(y, p['conv1']['weight']), w64[:, 1], p['epilogue1'])
  assert got.shape == (2, 8, 8, 3)
  numerics.assert_close(got, want, REL, 'synthesis block')
  want_rgb = np_conv(want, p['torgb']['weight'], p['torgb']['bias'])
  numerics.assert_close(rgb, want_rgb, REL, 'torgb')


@pytest.mark.parametrize('blur', [None, stylegan.BLUR])
def test_discriminator_block_matches_numpy(blur):
  x = np.random.RandomState(7).randn(2, 8, 8, 3).astype(np.float32)
  block = progan.DiscriminatorBlock(tmp_channels=4, out_channels=5, blur_filter=blur)
  v = random_variables(block, jnp.asarray(x), seed=8)
  p = _f64(v['params'])
  y = np_conv(x.astype(np.float64), p['conv0']['weight'], p['conv0']['bias'], act=True)
  if blur is not None:
    y = np_blur(y)
  want = np_pool(np_conv(y, p['conv1']['weight'], p['conv1']['bias'], act=True))
  numerics.assert_close(block.apply(v, jnp.asarray(x)), want, REL, 'D block')
  assert stylegan.Discriminator(img_resolution=8, img_channels=3).blur_filter == stylegan.BLUR


# --------------------------------------------------------------------------------------------
# Mapping, truncation, w_avg, mixing.


def test_mapping_uses_lr_multiplier_001():
  G = stylegan.Generator(img_resolution=8, **TINY)
  mapping = stylegan.MappingNetwork(64, 0, 64, num_ws=None, num_layers=1)
  init = jax.jit(lambda k: mapping.init(k, jnp.zeros((1, 64)), None))(jax.random.PRNGKey(0))
  stored = np.asarray(init['params']['fc0']['weight'])
  assert 90 < stored.std() < 110  # N(0, 1) / 0.01, used as weight * 0.01 / sqrt(in)
  z = np.random.RandomState(9).randn(3, 8).astype(np.float32) * 3
  v = random_variables(G, jnp.asarray(z), None, noise_mode='const')
  ws = G.apply(v, jnp.asarray(z), None, method='map')
  x = np_pixel_norm(z.astype(np.float64))
  for i in range(2):
    x = np_dense(x, _f64(v['params']['mapping'][f'fc{i}']), act=True, lr=0.01)
  assert ws.shape == (3, G.num_ws, 8)
  numerics.assert_close(ws, np.broadcast_to(x[:, None], ws.shape), REL, 'mapping')


@pytest.fixture(scope='module')
def g64():
  """A 64x64 generator (num_ws 10) with random variables and a known w_avg."""
  G = stylegan.Generator(img_resolution=64, **TINY)
  z = jnp.asarray(np.random.RandomState(10).randn(4, 8).astype(np.float32))
  v = random_variables(G, z, None, noise_mode='const')
  v['buffers']['mapping']['w_avg'] = jnp.asarray(np.random.RandomState(11).randn(8), jnp.float32)
  return G, v, z


def test_truncation_cutoff_defaults_to_8_and_leaves_later_ws_untouched(g64):
  G, v, z = g64
  w = np.asarray(G.apply(v, z, None, method='map'))
  avg = np.asarray(v['buffers']['mapping']['w_avg'])
  assert G.num_ws == 10
  psi0 = np.asarray(G.apply(v, z, None, truncation_psi=0.0, method='map'))
  numerics.assert_close(psi0[:, :8], np.broadcast_to(avg, (4, 8, 8)), REL, 'psi 0')
  np.testing.assert_array_equal(psi0[:, 8:], w[:, 8:])
  half = np.asarray(G.apply(v, z, None, truncation_psi=0.5, truncation_cutoff=3, method='map'))
  numerics.assert_close(half[:, :3], avg + 0.5 * (w[:, :3] - avg), REL, 'psi 0.5')
  np.testing.assert_array_equal(half[:, 3:], w[:, 3:])


def test_w_avg_tracks_the_batch_mean_with_beta_0995(g64):
  G, v, z = g64
  w = np.asarray(G.apply(v, z, None, method='map'))[:, 0].astype(np.float64)
  _, mutated = G.apply(v, z, None, update_w_avg=True, method='map', mutable=['buffers'])
  old = np.asarray(v['buffers']['mapping']['w_avg'], np.float64)
  want = w.mean(axis=0) + 0.995 * (old - w.mean(axis=0))
  numerics.assert_close(mutated['buffers']['mapping']['w_avg'], want, REL, 'w_avg update')


def test_mix_styles_switches_at_the_crossover():
  rs = np.random.RandomState(12)
  ws, ws2 = rs.randn(3, 6, 4).astype(np.float32), rs.randn(3, 6, 4).astype(np.float32)
  mix = jax.jit(stylegan.mix_styles)
  for k in range(7):
    want = np.concatenate([ws[:, :k], ws2[:, k:]], axis=1)
    np.testing.assert_array_equal(mix(ws, ws2, k), want)
  assert mix._cache_size() == 1  # the crossover is traced
  with pytest.raises(ValueError, match='same shape'):
    stylegan.mix_styles(ws, ws2[:, :5], 2)


# --------------------------------------------------------------------------------------------
# Synthesis: which layer reads which w, growing.


@pytest.fixture(scope='module')
def synth():
  """16x16 and 8x8 generators, variables, a jitted synthesize(variables, ws, alpha, stage)."""
  G16 = stylegan.Generator(img_resolution=16, **TINY)
  G8 = stylegan.Generator(img_resolution=8, **TINY)
  z = jnp.asarray(np.random.RandomState(13).randn(4, 8).astype(np.float32))
  v = random_variables(G16, z, None, noise_mode='const', seed=14)
  run = {name: jax.jit(lambda v, ws, alpha, stage, g=g: g.apply(
      v, ws, noise_mode='const', stage=stage, alpha=alpha, method='synthesize'),
                       static_argnames='stage') for name, g in [('G16', G16), ('G8', G8)]}
  ws = jnp.asarray(np.random.RandomState(15).randn(4, 6, 8).astype(np.float32))
  return dict(v=v, run=run, ws=ws)


def test_each_layer_reads_its_own_w(synth):
  run, v, ws = synth['run']['G16'], synth['v'], synth['ws']
  at8 = run(v, ws, jnp.float32(1.0), stage=8)
  later = ws.at[:, 4:].add(1.0)  # the b16 layers' ws
  np.testing.assert_array_equal(run(v, later, jnp.float32(1.0), stage=8), at8)
  for i in range(4):
    changed = run(v, ws.at[:, i].add(1.0), jnp.float32(1.0), stage=8)
    assert float(jnp.abs(changed - at8).max()) > 1e-3, f'layer {i} ignores ws[:, {i}]'


def test_synthesis_at_alpha_one_is_the_network_built_at_that_resolution(synth):
  v, ws = synth['v'], synth['ws']
  keep = {'b4', 'b8'}
  small = {coll: {'mapping': v[coll]['mapping'],
                  'synthesis': {k: x for k, x in v[coll]['synthesis'].items() if k in keep}}
           for coll in ('params', 'buffers')}
  grown = synth['run']['G16'](v, ws, jnp.float32(1.0), stage=8)
  direct = synth['run']['G8'](small, ws[:, :4], jnp.float32(1.0), stage=8)
  assert grown.shape == (4, 8, 8, 3) and float(jnp.std(grown)) > 0
  numerics.assert_close(grown, direct, REL, 'grown to 8 vs built at 8')


def test_synthesis_at_alpha_zero_is_the_previous_stage_upsampled(synth):
  run, v, ws = synth['run']['G16'], synth['v'], synth['ws']
  faded = run(v, ws, jnp.float32(0.0), stage=16)
  previous = run(v, ws, jnp.float32(1.0), stage=8)
  numerics.assert_close(faded, np_up(np.asarray(previous, np.float64)), REL, 'alpha 0')
  one = run(v, ws, jnp.float32(1.0), stage=16)
  assert float(jnp.abs(one - faded).max()) > 1e-2
  run(v, ws, jnp.float32(0.6), stage=16)
  assert run._cache_size() == 2  # stages 8 and 16; alpha traced


# --------------------------------------------------------------------------------------------
# Registry.


def test_registry_builds_stylegan():
  cfg = ml_collections.ConfigDict(dict(
      name='stylegan', z_dim=8, w_dim=8, mapping_layers=2, channel_base=64, channel_max=8,
      conv_clamp=0, mbstd_group_size=4, mbstd_num_channels=1))
  G, D = models.build(cfg, img_resolution=16, img_channels=3, c_dim=0)
  assert isinstance(G, stylegan.Generator) and isinstance(D, stylegan.Discriminator)
  assert (G.img_resolution, G.z_dim, G.mapping_layers, G.conv_clamp) == (16, 8, 2, None)
  assert (D.channel_base, D.mbstd_group_size, D.blur_filter) == (64, 4, stylegan.BLUR)
  assert math.log2(G.img_resolution) * 2 - 2 == G.num_ws


def test_bfloat16_synthesis_stays_close_to_float32(synth):
  G = stylegan.Generator(img_resolution=16, num_bf16_res=1, **TINY)
  got = jax.jit(lambda v, ws: G.apply(v, ws, noise_mode='const', alpha=0.5, method='synthesize'))(
      synth['v'], synth['ws'])
  want = synth['run']['G16'](synth['v'], synth['ws'], jnp.float32(0.5), stage=16)
  assert got.dtype == jnp.float32
  err = float(jnp.abs(got - want).max() / jnp.std(want))
  assert 0 < err < 0.1, err  # bfloat16 ran (not bit-equal) and stayed close


@pytest.mark.slow
def test_stylegan_trains_in_the_fixed_resolution_train_step(tmp_path):
  """'stylegan' through the registry and the existing train step (R1, path length, mixing)."""
  from tests.fake_data import write_fake_fashion_mnist  # pylint: disable=g-import-not-at-top
  from tests.test_train import _run_steps, tiny_config  # pylint: disable=g-import-not-at-top
  write_fake_fashion_mnist(tmp_path / 'src', n_train=48, n_test=8)
  config = tiny_config(tmp_path, **{'model.name': 'stylegan', 'model.channel_base': 256})
  state, metrics = _run_steps(config, jax.devices()[:1], 3)
  assert 'loss/D_r1_penalty' in metrics[0] and 'loss/G_pl_penalty' in metrics[2]
  for m in metrics:
    assert all(np.isfinite(float(v)) for v in m.values()), m
  assert int(state.step) == 3
