"""StyleGAN2 networks: NVIDIA's own weights and outputs, parameter counts, w_avg, noise, D."""

import math
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from gan_jax import models
from gan_jax.models import stylegan2
from gan_jax.tools import nvlabs
from tests import numerics

FIXTURES = Path(__file__).resolve().parent / 'fixtures' / 'nvlabs'

# The fixture generators (see FIXTURES / 'README.md').
FIXTURE_KWARGS = dict(z_dim=64, w_dim=64, img_resolution=32, img_channels=3, mapping_layers=2,
                      channel_base=2048, channel_max=64)

# A tiny configuration for the structural tests.
TINY = dict(z_dim=8, w_dim=8, img_channels=3, mapping_layers=2, channel_base=128, channel_max=16)


def _count(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))


def _nchw(x):
  return np.transpose(np.asarray(x), (0, 3, 1, 2))


# --------------------------------------------------------------------------------------------
# NVIDIA's weights and outputs.


def _load(tag):
  assert FIXTURES.is_dir(), f'NVIDIA fixtures not found at {FIXTURES}'
  sd = dict(np.load(FIXTURES / f'g_{tag}.npz', allow_pickle=False))
  io = dict(np.load(FIXTURES / f'io_{tag}.npz', allow_pickle=False))
  return sd, io


@pytest.fixture(scope='module', params=['uncond', 'cond'])
def nvidia_case(request):
  """(tag, inferred kwargs, NVIDIA's io arrays, our outputs for the same inputs)."""
  tag = request.param
  sd, io = _load(tag)
  kwargs = nvlabs.generator_kwargs_from_nvlabs(sd)
  G = stylegan2.Generator(**kwargs)
  variables = nvlabs.generator_variables_from_nvlabs(sd, G)
  c = io['c'] if tag == 'cond' else None  # uncond: NVIDIA ignores c; use our None path

  @jax.jit
  def outputs(z, c, z2, ws_psi1, ws_mixed, psi):  # psi traced: truncation must not branch on it
    run = lambda *a, **k: G.apply(variables, *a, **k)
    c4 = None if c is None else c[:4]
    return {
        'ws_psi1': run(z, c, method='map'),
        'ws_psi05': run(z, c, truncation_psi=psi, method='map'),
        'ws2_psi1': run(z2, c4, method='map'),
        'img_psi1_const': run(z, c, noise_mode='const'),
        'img_psi05_const': run(z, c, truncation_psi=psi, noise_mode='const'),
        'img_psi1_none': run(z, c, noise_mode='none'),
        'synth_from_ws': run(ws_psi1, noise_mode='const', method='synthesize'),
        'img_mixed': run(ws_mixed, noise_mode='const', method='synthesize'),
    }

  ours = outputs(io['z'], c, io['z2'], io['ws_psi1'], io['ws_mixed'], 0.5)
  ours = {k: np.asarray(v) if k.startswith('ws') else _nchw(v) for k, v in ours.items()}
  return tag, kwargs, io, ours


def test_kwargs_inferred_from_state_dict(nvidia_case):
  tag, kwargs, _, _ = nvidia_case
  assert kwargs == dict(FIXTURE_KWARGS, c_dim=5 if tag == 'cond' else 0)


@pytest.mark.parametrize('name', ['ws_psi1', 'ws_psi05', 'ws2_psi1'])
def test_mapping_matches_nvidia(nvidia_case, name):
  _, _, io, ours = nvidia_case
  assert ours[name].shape == io[name].shape
  numerics.assert_close(ours[name], io[name], numerics.NVIDIA_REL, name)


@pytest.mark.parametrize('name', ['img_psi1_const', 'img_psi05_const', 'img_psi1_none',
                                  'synth_from_ws', 'img_mixed'])
def test_images_match_nvidia(nvidia_case, name):
  _, _, io, ours = nvidia_case
  assert ours[name].shape == io[name].shape
  numerics.assert_close(ours[name], io[name], numerics.NVIDIA_REL, name)


def test_import_is_strict():
  sd, _ = _load('uncond')
  nvlabs.generator_variables_from_nvlabs(sd)  # the complete dict imports
  missing = {k: v for k, v in sd.items() if k != 'synthesis.b16.conv1.noise_strength'}
  with pytest.raises(ValueError, match='missing: params/synthesis/b16/conv1/noise_strength'):
    nvlabs.generator_variables_from_nvlabs(missing, stylegan2.Generator(**FIXTURE_KWARGS))
  extra = dict(sd, **{'synthesis.b8.conv1.extra': np.zeros(3, np.float32)})
  with pytest.raises(ValueError, match='unexpected NVIDIA tensor'):
    nvlabs.generator_variables_from_nvlabs(extra)
  bad_filter = dict(sd, **{'synthesis.b8.resample_filter': np.ones((4, 4), np.float32) / 16})
  with pytest.raises(ValueError, match='resample filter'):
    nvlabs.generator_variables_from_nvlabs(bad_filter)
  with pytest.raises(ValueError, match='shape mismatch'):
    nvlabs.generator_variables_from_nvlabs(sd, stylegan2.Generator(**dict(FIXTURE_KWARGS,
                                                                         channel_max=32)))


# --------------------------------------------------------------------------------------------
# Parameter counts (NVIDIA's numbers for G; D counted from its layer list).


@pytest.mark.parametrize('c_dim,want', [(0, 314_387), (5, 318_867)])
def test_generator_param_count_matches_nvidia(c_dim, want):
  G = stylegan2.Generator(c_dim=c_dim, **FIXTURE_KWARGS)
  shapes = jax.eval_shape(lambda: G.init(jax.random.PRNGKey(0), jnp.zeros((1, 64)),
                                         jnp.zeros((1, c_dim))))
  assert _count(shapes['params']) == want
  # Buffers: w_avg (64) + one noise map per conv layer: 4^2 + 2 * (8^2 + 16^2 + 32^2).
  assert _count(shapes['buffers']) == 64 + 16 + 2 * (64 + 256 + 1024)


@pytest.mark.parametrize('c_dim', [0, 5])
def test_discriminator_param_count(c_dim):
  D = stylegan2.Discriminator(img_resolution=32, img_channels=3, c_dim=c_dim, channel_base=2048,
                              channel_max=64)
  shapes = jax.eval_shape(lambda: D.init(jax.random.PRNGKey(0), jnp.zeros((4, 32, 32, 3)),
                                         jnp.zeros((4, c_dim))))
  ch = 64
  conv = lambda k, i, o, bias=True: k * k * i * o + (o if bias else 0)
  dense = lambda i, o: i * o + o
  block = conv(3, ch, ch) + conv(3, ch, ch) + conv(1, ch, ch, bias=False)
  want = conv(1, 3, ch) + 3 * block  # b32 (with fromrgb), b16, b8
  cmap_dim = ch if c_dim else 0
  want += conv(3, ch + 1, ch) + dense(ch * 16, ch) + dense(ch, cmap_dim or 1)  # b4
  if c_dim:
    want += dense(c_dim, cmap_dim) + 8 * dense(cmap_dim, cmap_dim)  # embed, fc0..fc7
  assert _count(shapes['params']) == want
  assert set(shapes) == {'params'}


# --------------------------------------------------------------------------------------------
# Structure and behaviour.


def _random_variables(module, *args, seed=0, **kwargs):
  """Variables of the right shapes filled with numpy normals: no init compilation (fast).

  Like the real init, weights are N(0, 1), or N(0, 1) / 0.01 in the lr-0.01 mapping layers;
  everything else gets 0.3 * N(0, 1).
  """
  shapes = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), *args, **kwargs))
  rs = np.random.RandomState(seed)

  def fill(path, s):
    names = [getattr(k, 'key', '') for k in path]
    scale = 0.3
    if names[-1] == 'weight':
      scale = 100.0 if 'mapping' in names and names[-2].startswith('fc') else 1.0
    return jnp.asarray(scale * rs.standard_normal(s.shape), jnp.float32)

  return jax.tree_util.tree_map_with_path(fill, shapes)


@pytest.fixture(scope='module')
def tiny_g():
  """A really initialised 8x8 generator, shared by the behaviour tests."""
  G = stylegan2.Generator(img_resolution=8, w_avg_beta=0.9, **TINY)
  init = jax.jit(lambda key: G.init({'params': key}, jnp.zeros((2, G.z_dim)), None,
                                    noise_mode='const'))
  return G, init(jax.random.PRNGKey(0))


@pytest.mark.parametrize('res', [4, 8, 16, 32, 64])
def test_every_resolution_builds_and_runs(res):
  G = stylegan2.Generator(img_resolution=res, **TINY)
  D = stylegan2.Discriminator(img_resolution=res, img_channels=3, channel_base=128,
                              channel_max=16)
  assert G.num_ws == 2 * int(math.log2(res)) - 2
  z = jax.random.normal(jax.random.PRNGKey(2), (4, G.z_dim))
  g_vars = _random_variables(G, z, None, noise_mode='const')
  d_vars = _random_variables(D, jnp.zeros((4, res, res, 3)), seed=1)
  assert set(g_vars['params']['synthesis']) == {f'b{2 ** i}'
                                                for i in range(2, int(math.log2(res)) + 1)}
  assert set(d_vars['params']) == {f'b{2 ** i}' for i in range(2, int(math.log2(res)) + 1)}

  @jax.jit
  def run(g_vars, d_vars, z):
    img = G.apply(g_vars, z, None, noise_mode='const')
    return img, D.apply(d_vars, img)

  img, logits = run(g_vars, d_vars, z)
  assert img.shape == (4, res, res, 3) and np.all(np.isfinite(img)) and np.std(img) > 0
  assert logits.shape == (4,) and np.all(np.isfinite(logits)) and np.std(logits) > 0


def test_block_layout_and_ws_assignment(tiny_g):
  G, g_vars = tiny_g
  syn = g_vars['params']['synthesis']
  assert set(syn['b4']) == {'const', 'conv1', 'torgb'}
  assert set(syn['b8']) == {'conv0', 'conv1', 'torgb'}
  assert set(syn['b8']['conv0']) == {'weight', 'bias', 'noise_strength', 'affine'}
  assert syn['b4']['const'].shape == (4, 4, 16)
  assert syn['b8']['conv0']['weight'].shape == (3, 3, 16, 16)
  assert syn['b8']['torgb']['weight'].shape == (1, 1, 16, 3)
  assert g_vars['buffers']['synthesis']['b8']['conv0']['noise_const'].shape == (8, 8)
  assert set(g_vars['buffers']['mapping']) == {'w_avg'}
  np.testing.assert_allclose(syn['b8']['conv0']['affine']['bias'], 1.0)
  np.testing.assert_allclose(syn['b8']['conv0']['bias'], 0.0)
  np.testing.assert_allclose(syn['b8']['conv0']['noise_strength'], 0.0)
  # Every w slot reaches the image: b4.conv1, b4.torgb/b8.conv0, b8.conv1, b8.torgb.
  ws = jax.random.normal(jax.random.PRNGKey(0), (1, G.num_ws, G.w_dim))
  synth = jax.jit(lambda ws: G.apply(g_vars, ws, noise_mode='none', method='synthesize'))
  base = synth(ws)
  for k in range(G.num_ws):
    assert np.abs(synth(ws.at[:, k].add(1.0)) - base).max() > 1e-4, k
  with pytest.raises(ValueError, match='ws must be'):
    G.apply(g_vars, ws[:, :-1], noise_mode='none', method='synthesize')


def test_update_w_avg_follows_formula(tiny_g):
  G, g_vars = tiny_g  # w_avg_beta = 0.9
  w_avg0 = jax.random.normal(jax.random.PRNGKey(5), (G.w_dim,))
  g_vars = {'params': g_vars['params'],
            'buffers': dict(g_vars['buffers'], mapping={'w_avg': w_avg0})}
  z = jax.random.normal(jax.random.PRNGKey(6), (6, G.z_dim))
  ws = G.apply(g_vars, z, None, method='map')
  ws_upd, mutated = G.apply(g_vars, z, None, update_w_avg=True, method='map',
                            mutable=['buffers'])
  mean = np.asarray(ws[:, 0], np.float64).mean(axis=0)
  want = mean + (np.asarray(w_avg0) - mean) * 0.9
  # float32 mean of 6 ws: measured < 1e-6 of max|w_avg|; beta 0.99 instead of 0.9 is O(1e-1) off.
  numerics.assert_close(mutated['buffers']['mapping']['w_avg'], want, 1e-5, 'w_avg update')
  np.testing.assert_allclose(ws_upd, ws, atol=0)  # psi = 1: ws untouched
  # Without update_w_avg the buffer stays.
  _, same = G.apply(g_vars, z, None, method='map', mutable=['buffers'])
  np.testing.assert_array_equal(same['buffers']['mapping']['w_avg'], w_avg0)
  # Truncation uses w_avg: psi = 0 gives w_avg everywhere; a cutoff leaves later layers alone.
  ws0 = G.apply(g_vars, z, None, truncation_psi=0.0, method='map')
  numerics.assert_close(ws0, np.broadcast_to(w_avg0, ws0.shape), 1e-6, 'psi 0')
  ws_cut = G.apply(g_vars, z, None, truncation_psi=0.5, truncation_cutoff=2, method='map')
  np.testing.assert_allclose(ws_cut[:, 2:], ws[:, 2:], atol=0)
  numerics.assert_close(ws_cut[:, :2], w_avg0 + 0.5 * (ws[:, :2] - w_avg0), 1e-6, 'psi 0.5')


def test_random_noise_uses_noise_rng(tiny_g):
  G, g_vars = tiny_g
  # Non-zero noise strengths so that the noise shows.
  params = jax.tree_util.tree_map_with_path(
      lambda p, x: x + 0.5 if getattr(p[-1], 'key', None) == 'noise_strength' else x,
      g_vars['params'])
  variables = {'params': params, 'buffers': g_vars['buffers']}
  z = jax.random.normal(jax.random.PRNGKey(7), (2, G.z_dim))
  gen = jax.jit(lambda key: G.apply(variables, z, None, rngs={'noise': key}))
  a, a2, b = gen(jax.random.PRNGKey(0)), gen(jax.random.PRNGKey(0)), gen(jax.random.PRNGKey(1))
  np.testing.assert_array_equal(a, a2)
  assert np.abs(a - b).max() > 1e-3
  gen_mode = jax.jit(lambda mode: G.apply(variables, z, None, noise_mode=mode),
                     static_argnums=0)
  const, none = gen_mode('const'), gen_mode('none')
  assert np.abs(const - none).max() > 1e-3 and np.abs(a - const).max() > 1e-3
  # Zero strengths: random noise has no effect at all.
  quiet = jax.jit(lambda key: G.apply(g_vars, z, None, rngs={'noise': key}))
  np.testing.assert_allclose(quiet(jax.random.PRNGKey(0)), quiet(jax.random.PRNGKey(1)), atol=0)
  with pytest.raises(Exception, match='noise'):
    jax.eval_shape(lambda: G.apply(variables, z, None))  # no 'noise' stream


def test_conditional_discriminator_uses_labels():
  D = stylegan2.Discriminator(img_resolution=8, img_channels=3, c_dim=4, channel_base=64,
                              channel_max=16, mapping_layers=2)
  img = jax.random.normal(jax.random.PRNGKey(0), (4, 8, 8, 3))
  c = jax.nn.one_hot(jnp.array([0, 1, 2, 3]), 4)
  d_vars = _random_variables(D, img, c)
  assert set(d_vars['params']) == {'b8', 'b4', 'mapping'}
  assert set(d_vars['params']['mapping']) == {'embed', 'fc0', 'fc1'}
  assert d_vars['params']['b4']['out']['weight'].shape == (16, 16)  # cmap_dim = channels at 4
  run = jax.jit(D.apply)
  a, b = run(d_vars, img, c), run(d_vars, img, c[::-1])
  assert a.shape == (4,)
  assert np.abs(a - b).min() > 1e-6
  # Unconditional D: no label mapping, and c (None or (N, 0)) is ignored.
  uncond = stylegan2.Discriminator(img_resolution=8, img_channels=3, channel_base=64,
                                   channel_max=16)
  u_vars = _random_variables(uncond, img)
  assert 'mapping' not in u_vars['params']
  run = jax.jit(uncond.apply)
  np.testing.assert_array_equal(run(u_vars, img, jnp.zeros((4, 0))), run(u_vars, img))


def test_gradients_are_finite_under_jit(tiny_g):
  G, g_vars = tiny_g
  D = stylegan2.Discriminator(img_resolution=8, img_channels=3, channel_base=128, channel_max=16)
  z = jax.random.normal(jax.random.PRNGKey(0), (4, G.z_dim))
  d_vars = _random_variables(D, jnp.zeros((4, 8, 8, 3)))

  @jax.jit
  def grads(g_params, d_params):
    def loss(g_params, d_params):
      img = G.apply({'params': g_params, 'buffers': g_vars['buffers']}, z, None,
                    rngs={'noise': jax.random.PRNGKey(2)})
      return jnp.mean(jax.nn.softplus(-D.apply({'params': d_params}, img)))
    return jax.grad(loss, argnums=(0, 1))(g_params, d_params)

  for tree in grads(g_vars['params'], d_vars['params']):
    leaves = jax.tree_util.tree_leaves(tree)
    assert all(np.all(np.isfinite(x)) for x in leaves)
    assert sum(float(np.abs(x).sum()) for x in leaves) > 0


def test_build_from_config():
  cfg = ml_collections.ConfigDict(dict(
      name='stylegan2', z_dim=8, w_dim=8, mapping_layers=2, channel_base=128, channel_max=16,
      conv_clamp=0, mbstd_group_size=2, mbstd_num_channels=1))
  G, D = models.build(cfg, img_resolution=8, img_channels=1, c_dim=3)
  assert isinstance(G, stylegan2.Generator) and isinstance(D, stylegan2.Discriminator)
  assert G.conv_clamp is None and D.conv_clamp is None
  assert (G.c_dim, D.c_dim, G.img_channels, D.mbstd_group_size) == (3, 3, 1, 2)
  cfg.conv_clamp = 256
  assert models.build(cfg, 8, 1, 0)[0].conv_clamp == 256
  cfg.name = 'nope'
  with pytest.raises(ValueError):
    models.build(cfg, 8, 1, 0)
