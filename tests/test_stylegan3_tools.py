"""StyleGAN3 through the tools and the train step: NVIDIA's pickle read without running code,
convert_nvlabs, gan_jax.load_generator (with an input transform) reproducing NVIDIA's images,
generate / interpolate with --translate / --rotate, and a train step moving the magnitude EMAs."""

import argparse
import io
import pickle
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

import gan_jax
from gan_jax import models
from gan_jax import state as state_lib
from gan_jax import train_step as ts
from gan_jax.images import to_uint8
from gan_jax.models import stylegan3
from gan_jax.tools import cli
from gan_jax.tools import convert_nvlabs
from gan_jax.tools import export
from gan_jax.tools import generate
from gan_jax.tools import interpolate
from gan_jax.tools import nvlabs_pickle

FIXTURES = Path(__file__).resolve().parent / 'fixtures' / 'nvlabs_sg3'
PICKLE = FIXTURES / 'network-t-nosrc.pkl'
SG2_FIXTURES = Path(__file__).resolve().parent / 'fixtures' / 'nvlabs'
ATOL = 1e-5


def _fixture(name):
  assert FIXTURES.is_dir(), f'NVIDIA fixtures not found at {FIXTURES}'
  return dict(np.load(FIXTURES / name, allow_pickle=False))


def _close(ours, want_nchw, what):
  want = want_nchw.transpose(0, 2, 3, 1) if want_nchw.ndim == 4 else want_nchw
  assert ours.shape == want.shape and ours.dtype == np.float32, what
  err = float(np.abs(ours - want).max())
  assert err <= ATOL, f'{what}: max abs error {err:.2e}'


def test_network_pickle_holds_the_npz_weights_and_kwargs():
  network = nvlabs_pickle.load_network_pickle(PICKLE)
  want = _fixture('g_t.npz')
  for name in ('G', 'G_ema'):
    assert list(network[name]) == list(want)  # torch's order, the toRGB's None filters left out
    for key, value in want.items():
      np.testing.assert_array_equal(network[name][key], value, err_msg=key)
  kwargs = network['G_kwargs']
  assert (kwargs['channel_base'], kwargs['channel_max'], kwargs['mapping_kwargs']) == (
      512, 32, {'num_layers': 2})
  assert kwargs['magnitude_ema_beta'] == pytest.approx(0.5 ** (32 / 20e3))
  assert 'b4.conv.weight' in network['D']  # the StyleGAN2 residual D, read as before


def test_pickle_arrays_are_rebuilt_and_only_numeric_ones():
  """StyleGAN3 pickles hold numpy arrays (SynthesisLayer.in_size ...): the two extra globals
  rebuild numeric ones; an object array, or _reconstruct of anything but ndarray, is refused."""
  good = pickle.dumps({'size': np.array([36, 36], np.int64)}, protocol=4)
  loaded = nvlabs_pickle.torch_pickle.restricted_load(
      io.BytesIO(good), nvlabs_pickle._NETWORK_GLOBALS)
  np.testing.assert_array_equal(loaded['size'].array, [36, 36])
  with pytest.raises(pickle.UnpicklingError, match="numpy.dtype 'O8' is not a plain numeric"):
    nvlabs_pickle.torch_pickle.restricted_load(
        io.BytesIO(pickle.dumps(np.array([print], object), protocol=4)),
        nvlabs_pickle._NETWORK_GLOBALS)
  with pytest.raises(nvlabs_pickle.UnsafePickleError, match='numpy.matrix'):  # a subclass
    nvlabs_pickle.torch_pickle.restricted_load(
        io.BytesIO(pickle.dumps(np.matrix([[1.0]]), protocol=4)), nvlabs_pickle._NETWORK_GLOBALS)


def test_converted_pickle_reproduces_nvidia_images(tmp_path):
  io_ = _fixture('io_t.npz')
  convert_nvlabs.main([str(PICKLE), str(tmp_path / 'export')])
  g = gan_jax.load_generator(tmp_path / 'export')
  assert g.family.name == 'stylegan3' and g.family.input_transform
  assert (g.z_dim, g.c_dim, g.img_resolution, g.num_ws) == (64, 0, 32, 16)
  # The pickle's recorded magnitude_ema_beta (training only) travels into the export.
  assert g.kwargs['magnitude_ema_beta'] == pytest.approx(0.5 ** (32 / 20e3))
  _close(g.mapping(io_['z'], psi=0.5), io_['ws_psi05'], 'ws_psi05')
  # An explicit identity transform: the same compiled function as the next call's.
  _close(g(io_['z'], psi=0.5, transform=np.eye(3)), io_['img_psi05'], 'img_psi05')
  user = stylegan3.user_transform(io_['transform_params'][:2], io_['transform_params'][2])
  _close(g(io_['z'], transform=user), io_['img_transform'], 'img_transform')
  zoom = np.concatenate([np.broadcast_to(io_['transform_zoom'], (4, 3, 3)),
                         np.broadcast_to(np.eye(3), (4, 3, 3))])  # per-image transforms
  _close(g.synthesis(io_['ws_psi1'], transform=zoom)[:4], io_['img_transform_zoom'],
         'img_transform_zoom')
  _close(g.synthesis(io_['ws_psi1'], transform=zoom)[4:], io_['synth_from_ws'][4:],
         'identity rows')
  with pytest.raises(ValueError, match=r'transform must be \(3, 3\) or \(8, 3, 3\)'):
    g(io_['z'], transform=np.eye(2))


def test_conditional_from_npz_on_the_fly():
  io_ = _fixture('io_t_cond.npz')
  g = gan_jax.load_generator(FIXTURES / 'g_t_cond.npz')
  _close(g(io_['z'][:4], np.array([0, 1, 2, 3])), io_['img_psi1'][:4], 'class indices')


def test_stylegan2_generator_refuses_a_transform():
  g = gan_jax.load_generator(SG2_FIXTURES / 'g_uncond.npz')
  with pytest.raises(ValueError, match='takes no input transform'):
    g(np.zeros((1, g.z_dim)), transform=np.eye(3))


# --------------------------------------------------------------------------------------------
# The tools' --translate / --rotate.


@pytest.fixture(scope='module')
def g_t():
  return gan_jax.load_generator(FIXTURES / 'g_t.npz')


def test_generate_translate_rotate(g_t):
  args = argparse.Namespace(translate='0.2,-0.1', rotate=25.0)
  transform = cli.input_transform(args)
  np.testing.assert_allclose(transform, _fixture('io_t.npz')['transform'], rtol=0, atol=1e-7)
  moved = generate.generate_images(g_t, [3], transform=transform)
  z = generate.seed_latent(3, g_t.z_dim)
  np.testing.assert_array_equal(moved[0], to_uint8(g_t(z, transform=transform))[0])
  assert not np.array_equal(moved, generate.generate_images(g_t, [3]))
  with pytest.raises(ValueError, match='--translate takes X,Y'):
    generate.main(['--checkpoint', str(FIXTURES / 'g_t.npz'), '--seeds', '0',
                   '--translate', '0.2', '--outdir', '/nonexistent'])


def test_interpolation_video_ramps_the_transform(g_t):
  full = stylegan3.user_transform((0.5, 0.0), 90.0)
  seen = []

  def transform_at(fraction):
    seen.append(fraction)
    return stylegan3.user_transform((0.5 * fraction, 0.0), 90.0 * fraction)

  frames = interpolate.interpolation_frames(g_t, [0, 1], space='w', frames=2,
                                            transform_at=transform_at)
  assert seen == [0.0, 0.5, 1.0] and frames.shape == (3, 32, 32, 3)
  ws = g_t.mapping(generate.seed_latent(1, g_t.z_dim))
  np.testing.assert_array_equal(frames[-1], to_uint8(g_t.synthesis(ws, transform=full))[0])
  np.testing.assert_array_equal(frames[0], to_uint8(g_t.synthesis(
      g_t.mapping(generate.seed_latent(0, g_t.z_dim)), transform=np.eye(3)))[0])


# --------------------------------------------------------------------------------------------
# The train step moves the magnitude EMAs.


def test_train_step_updates_the_magnitude_emas():
  """One StyleGAN2-loss step (G main, D main + R1) of a tiny StyleGAN3 G: the magnitude EMAs
  and w_avg move (with D main's fakes, NVIDIA's run_G(update_emas=True)) and G_ema gets them."""
  G = stylegan3.Generator(img_resolution=8, img_channels=1, z_dim=4, w_dim=4, channel_base=16,
                          channel_max=4, num_layers=3, num_critical=1, magnitude_ema_beta=0.5)
  D = stylegan3.Discriminator(img_resolution=8, img_channels=1, channel_base=16, channel_max=4,
                              mbstd_group_size=2)
  cfg = ts.StepConfig(batch_size=2, c_dim=0, r1_gamma=0.5, r1_interval=1, pl_weight=0.0,
                      pl_interval=4, pl_decay=0.01, pl_batch_shrink=2, style_mixing_prob=0.0,
                      ema_kimg=10.0, ema_rampup=0.05)
  tx = optax.adam(1e-3)
  state = state_lib.create(G, D, tx, tx, 0, jax.random.PRNGKey(0))
  step = jax.jit(ts.make_train_step(G, D, tx, tx, cfg), static_argnums=(2, 3))
  batch = {'image': jax.random.normal(jax.random.PRNGKey(1), (2, 8, 8, 1)),
           'label': jnp.zeros((2,), jnp.int32)}
  new, metrics = step(state, batch, True, False)
  assert np.isfinite(float(metrics['loss/G'])) and np.isfinite(float(metrics['loss/D']))
  old_b, new_b = state.g_buffers['synthesis'], new.g_buffers['synthesis']
  layers = [k for k in old_b if k != 'input']
  assert len(layers) == 4
  for name in layers:
    assert float(old_b[name]['magnitude_ema']) == 1.0
    assert float(new_b[name]['magnitude_ema']) != 1.0, name
  assert not np.allclose(new.g_buffers['mapping']['w_avg'], state.g_buffers['mapping']['w_avg'])
  jax.tree_util.tree_map(np.testing.assert_array_equal, new.ema_buffers, new.g_buffers)


def test_export_reads_a_stylegan3_workdirs_shapes():
  """tools.export rebuilds a workdir's G from config.model and the checkpoint's own shapes."""
  config = ml_collections.ConfigDict(dict(
      name='stylegan3', z_dim=8, w_dim=8, mapping_layers=2, channel_base=1024, channel_max=64,
      conv_clamp=0, num_bf16_res=0, mbstd_group_size=4, mbstd_num_channels=1, w_avg_beta=0.998,
      conv_kernel=1, use_radial_filters=True, magnitude_ema_beta=0.99))
  G, D = models.build(config, 32, 3, 5)
  assert (G.conv_kernel, G.use_radial_filters, G.magnitude_ema_beta) == (1, True, 0.99)
  assert models.family_of(D).name == 'stylegan3'
  shapes = export.abstract_variables(G)
  assert export._data_shapes_from_params(shapes['params'], 8) == dict(
      img_resolution=32, img_channels=3, c_dim=5)
