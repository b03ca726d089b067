"""StyleGAN3 generator: NVIDIA's own weights and outputs (configs T, R, conditional T), the layer
schedule and filter design, the filtered leaky ReLU against a loop-based NumPy reference, the
magnitude EMA, and the strict import."""

import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gan_jax import models
from gan_jax.models import sg3_filters
from gan_jax.models import stylegan3
from gan_jax.tools import nvlabs_sg3

FIXTURES = Path(__file__).resolve().parent / 'fixtures' / 'nvlabs_sg3'
ATOL = 1e-5  # absolute; NVIDIA's own batch-1 vs batch-8 images differ by up to 2.2e-6
TAGS = ('t', 'r', 't_cond')


def _load(tag):
  assert FIXTURES.is_dir(), f'NVIDIA fixtures not found at {FIXTURES}'
  sd = dict(np.load(FIXTURES / f'g_{tag}.npz', allow_pickle=False))
  io = dict(np.load(FIXTURES / f'io_{tag}.npz', allow_pickle=False))
  return sd, io


def _nchw(x):
  return np.transpose(np.asarray(x), (0, 3, 1, 2))


def _assert_close(ours, want, what):
  ours, want = np.asarray(ours), np.asarray(want)
  assert ours.shape == want.shape, (what, ours.shape, want.shape)
  err = float(np.abs(ours.astype(np.float64) - want).max())
  assert err <= ATOL, f'{what}: max abs error {err:.2e} > {ATOL:.0e}'


# --------------------------------------------------------------------------------------------
# NVIDIA's weights and outputs.


@pytest.fixture(scope='module', params=TAGS)
def nvidia_case(request):
  """(tag, inferred kwargs, NVIDIA's io arrays, our outputs for the same inputs)."""
  tag = request.param
  sd, io = _load(tag)
  kwargs = nvlabs_sg3.generator_kwargs_from_nvlabs(sd)
  G = stylegan3.Generator(**kwargs)
  variables = nvlabs_sg3.generator_variables_from_nvlabs(sd, G)
  c = io['c'] if tag == 't_cond' else None

  mapping = jax.jit(lambda z, c, psi: G.apply(variables, z, c, truncation_psi=psi, method='map'))

  @jax.jit
  def synth(ws, transform):  # one compile per config: every call is a batch of 8
    img, state = G.apply(variables, ws, transform, method='synthesize',
                         capture_intermediates=True)
    inter = state['intermediates']['synthesis']
    traces = {name: value['__call__'][0][0, :, :, :2] for name, value in inter.items()
              if name != '__call__'}
    return img, traces

  eye = np.broadcast_to(np.eye(3, dtype=np.float32), (8, 3, 3))
  ours = {'ws_psi1': mapping(io['z'], c, 1.0), 'ws_psi05': mapping(io['z'], c, 0.5)}
  ours['ws2_psi1'] = mapping(io['z2'], None if c is None else c[:4], 1.0)
  ours['synth_from_ws'], traces = synth(io['ws_psi1'], eye)
  ours.update({f'trace_{k}': np.transpose(v, (2, 0, 1)) for k, v in traces.items()})
  ours['img_psi05'], _ = synth(ours['ws_psi05'], eye)  # our own mapping feeds the synthesis
  user = np.broadcast_to(stylegan3.user_transform(io['transform_params'][:2],
                                                  io['transform_params'][2]), (8, 3, 3))
  ours['img_transform'], _ = synth(io['ws_psi1'], user)
  both, _ = synth(np.concatenate([io['ws_mixed'], io['ws_perlayer']]), eye)
  ours['img_mixed'], ours['img_perlayer'] = both[:4], both[4:]
  zoom = np.concatenate([np.broadcast_to(io['transform_zoom'], (4, 3, 3)), eye[:4]])
  zoomed, _ = synth(io['ws_psi1'], zoom)
  ours['img_transform_zoom'] = zoomed[:4]
  ours = {k: np.asarray(v) if k.startswith(('ws', 'trace')) else _nchw(v)
          for k, v in ours.items()}
  return tag, kwargs, io, ours


def test_kwargs_inferred_from_state_dict(nvidia_case):
  tag, kwargs, _, _ = nvidia_case
  r = tag == 'r'
  assert kwargs == dict(z_dim=64, c_dim=5 if tag == 't_cond' else 0, w_dim=64, mapping_layers=2,
                        img_resolution=32, img_channels=3, num_layers=14,
                        conv_kernel=1 if r else 3, use_radial_filters=r,
                        channel_base=1024 if r else 512, channel_max=64 if r else 32)


@pytest.mark.parametrize('name', ['ws_psi1', 'ws_psi05', 'ws2_psi1'])
def test_mapping_matches_nvidia(nvidia_case, name):
  _, _, io, ours = nvidia_case
  _assert_close(ours[name], io[name], name)


@pytest.mark.parametrize('name', ['synth_from_ws', 'img_psi05', 'img_mixed', 'img_perlayer',
                                  'img_transform', 'img_transform_zoom'])
def test_images_match_nvidia(nvidia_case, name):
  _, _, io, ours = nvidia_case
  _assert_close(ours[name], io[name], name)


def test_every_layer_matches_nvidia(nvidia_case):
  """The input layer and L0 ... L14 (before the output scale) for sample 0, channels 0 and 1."""
  _, _, io, ours = nvidia_case
  names = [k for k in io if k.startswith('trace_')]
  assert len(names) == 16 and set(names) <= set(ours)
  for name in names:
    want = io[name] * (0.25 if name.startswith('trace_L14') else 1)
    got = ours[name] * (0.25 if name.startswith('trace_L14') else 1)
    _assert_close(got, want, name)


def test_user_transform_is_gen_images_matrix():
  _, io = _load('t')
  ours = stylegan3.user_transform(io['transform_params'][:2], io['transform_params'][2])
  np.testing.assert_allclose(ours, io['transform'], rtol=0, atol=1e-7)


# --------------------------------------------------------------------------------------------
# Schedule and filter design.


def test_schedule_matches_nvidia_table():
  """Rows of the fixture README's schedule tables (NVIDIA's SynthesisNetwork)."""
  first, t = sg3_filters.schedule(32, 3, 512, 32)
  assert (first.channels, first.size, first.sampling_rate, first.bandwidth) == (32, 36, 16, 2)
  assert [s.name for s in t] == [
      'L0_36_32', 'L1_36_32', 'L2_36_32', 'L3_36_32', 'L4_36_32', 'L5_52_32', 'L6_52_32',
      'L7_52_32', 'L8_52_32', 'L9_52_27', 'L10_52_23', 'L11_52_19', 'L12_52_16', 'L13_32_16',
      'L14_32_3']
  row = lambda s: (s.in_size, s.out_size, s.in_sampling_rate, s.tmp_sampling_rate,
                   s.out_sampling_rate, s.up, s.down, s.up_taps, s.down_taps, s.padding,
                   s.is_critically_sampled)
  assert row(t[0]) == (36, 36, 16, 32, 16, 2, 2, 12, 12, (9, 8, 9, 8), False)
  assert row(t[5]) == (36, 52, 16, 64, 32, 4, 2, 24, 12, (-6, -9, -6, -9), False)
  assert row(t[12]) == (52, 52, 32, 64, 32, 2, 2, 12, 12, (9, 8, 9, 8), True)
  assert row(t[13]) == (52, 32, 32, 64, 32, 2, 2, 12, 12, (-11, -12, -11, -12), True)
  assert row(t[14]) == (32, 32, 32, 32, 32, 1, 1, 1, 1, (0, 0, 0, 0), True)
  np.testing.assert_allclose([t[11].out_cutoff, t[11].out_half_width], [13.4543, 3.8933],
                             atol=1e-4)
  _, r = sg3_filters.schedule(32, 3, 1024, 64, conv_kernel=1, use_radial_filters=True)
  assert [s.out_channels for s in r[8:]] == [64, 54, 45, 38, 32, 32, 3]
  assert r[5].padding == (-2, -5, -2, -5) and r[0].padding == (11, 10, 11, 10)
  assert [s.down_radial for s in r] == [True] * 12 + [False] * 3


def test_filter_design_matches_scipy_and_nvidia_taps():
  scipy_signal = pytest.importorskip('scipy.signal')
  scipy_special = pytest.importorskip('scipy.special')
  for numtaps, cutoff, width, fs in [(12, 2.0, 12.0, 32), (24, 4.0, 8.0, 64), (12, 16, 7.4, 64)]:
    np.testing.assert_allclose(
        sg3_filters.lowpass_filter(numtaps, cutoff, width, fs),
        scipy_signal.firwin(numtaps, cutoff=cutoff, width=width, fs=fs), rtol=0, atol=1e-7)
  x = np.linspace(0.01, 100, 500)
  np.testing.assert_allclose(sg3_filters._bessel_j1(x), scipy_special.j1(x), rtol=0, atol=1e-12)
  # Every stored NVIDIA filter (separable and radial) equals our design bit for bit.
  for tag in ('t', 'r'):
    sd, _ = _load(tag)
    G = stylegan3.Generator(**nvlabs_sg3.generator_kwargs_from_nvlabs(sd))
    _, specs = sg3_filters.schedule(32, 3, G.channel_base, G.channel_max,
                                    conv_kernel=G.conv_kernel,
                                    use_radial_filters=G.use_radial_filters)
    checked = 0
    for s in specs:
      for name, ours in (('up_filter', s.up_filter()), ('down_filter', s.down_filter())):
        key = f'synthesis.{s.name}.{name}'
        assert (key in sd) == (ours is not None), key
        if ours is not None:
          np.testing.assert_array_equal(ours, sd[key], err_msg=key)
          checked += 1
    assert checked == 28


# --------------------------------------------------------------------------------------------
# Filtered leaky ReLU against a direct NumPy reference (written from the definition).


def _reference_filtered_lrelu(x, fu, fd, b, up, down, padding, gain, slope, clamp):
  """NCHW float64, loops over taps: bias; zero-insert; pad / crop; convolve with fu (x up^2);
  lrelu * gain; clamp; convolve with fd; keep every down-th sample."""
  x = x + b[None, :, None, None]
  n, c, h, w = x.shape
  z = np.zeros((n, c, h * up, w * up))
  z[:, :, ::up, ::up] = x
  px0, px1, py0, py1 = padding
  z = np.pad(z, ((0, 0), (0, 0), (max(py0, 0), max(py1, 0)), (max(px0, 0), max(px1, 0))))
  z = z[:, :, max(-py0, 0):z.shape[2] - max(-py1, 0), max(-px0, 0):z.shape[3] - max(-px1, 0)]

  def conv(a, f2):  # true 2-D convolution, valid
    kh, kw = f2.shape
    out = np.zeros((n, c, a.shape[2] - kh + 1, a.shape[3] - kw + 1))
    for i in range(kh):
      for j in range(kw):
        out += f2[kh - 1 - i, kw - 1 - j] * a[:, :, i:i + out.shape[2], j:j + out.shape[3]]
    return out

  as2d = lambda f: np.outer(f, f) if f.ndim == 1 else f
  y = conv(z, as2d(np.asarray(fu, np.float64)) * up * up)
  y = np.where(y >= 0, y, y * slope) * gain
  if clamp is not None:
    y = np.clip(y, -clamp, clamp)
  y = conv(y, as2d(np.asarray(fd, np.float64)))
  return y[:, :, ::down, ::down]


@pytest.mark.parametrize('dense_max', [sg3_filters.DENSE_MAX, 0], ids=['dense', 'blocked'])
@pytest.mark.parametrize('layer, radial, clamp', [(0, False, None), (5, False, None),
                                                  (13, False, 0.5), (5, True, None),
                                                  (9, True, 1.0)])
def test_filtered_lrelu_matches_numpy_reference(layer, radial, clamp, dense_max):
  """Both forms: dense matrices (the fixture's sizes) and block-banded ones (longer axes)."""
  _, specs = sg3_filters.schedule(32, 3, 512, 32, conv_kernel=1 if radial else 3,
                                  use_radial_filters=radial)
  s = specs[layer]
  hw = s.in_size + s.conv_kernel - 1
  fu, fd = s.up_filter(), s.down_filter()
  assert (fd.ndim == 2) == radial
  rng = np.random.RandomState(layer)
  x = rng.randn(2, 3, hw, hw).astype(np.float32)
  b = rng.randn(3).astype(np.float32)
  want = _reference_filtered_lrelu(x.astype(np.float64), fu, fd, b, s.up, s.down, s.padding,
                                   math.sqrt(2), 0.2, clamp)
  assert want.shape[2:] == (s.out_size, s.out_size)
  ops = sg3_filters.FilteredLReLU.build(fu, fd, (hw, hw), s.up, s.down, s.padding, dense_max)
  assert (ops.blocked is None) == (dense_max > 0)
  got = jax.jit(lambda x, b: sg3_filters.filtered_lrelu(x, ops, b, clamp=clamp))(
      x.transpose(0, 2, 3, 1), b)
  np.testing.assert_allclose(_nchw(got), want, rtol=0, atol=2e-5 * np.abs(want).max())


# --------------------------------------------------------------------------------------------
# Magnitude EMA, w_avg, registry.


def test_update_emas_moves_magnitude_and_w_avg_only():
  G = stylegan3.Generator(img_resolution=16, img_channels=3, z_dim=8, w_dim=8, channel_base=64,
                          channel_max=8, num_layers=4, num_critical=1, magnitude_ema_beta=0.9)
  z = jax.random.normal(jax.random.PRNGKey(1), (4, 8))
  variables = jax.jit(G.init)(jax.random.PRNGKey(0), z, None)
  assert models.family_of(G).name == 'stylegan3' and G.num_ws == 6
  names = [k for k in variables['buffers']['synthesis'] if k != 'input']
  assert names == ['L0_36_8', 'L1_36_8', 'L2_36_6', 'L3_16_4', 'L4_16_3']
  before = variables['buffers']

  @jax.jit
  def run(params, buffers):
    """(images, input layer output) with the given buffers, and the buffers after an update."""
    v = {'params': params, 'buffers': buffers}
    img, inter = G.apply(v, z, None, capture_intermediates=True)
    _, state = G.apply(v, z, None, update_emas=True, mutable=['buffers'])
    return img, inter['intermediates']['synthesis']['input']['__call__'][0], state['buffers']

  img, x0, after = run(variables['params'], before)
  assert img.shape == (4, 16, 16, 3)
  for name in names:
    assert float(before['synthesis'][name]['magnitude_ema']) == 1.0
    assert float(after['synthesis'][name]['magnitude_ema']) != 1.0
  # The first layer's input is the input layer's output: new = lerp(mean(x^2), old, beta).
  want = float(jnp.mean(jnp.square(x0))) * 0.1 + 1.0 * 0.9
  np.testing.assert_allclose(float(after['synthesis'][names[0]]['magnitude_ema']), want,
                             rtol=1e-5)
  assert not np.allclose(after['mapping']['w_avg'], before['mapping']['w_avg'])
  for key in ('freqs', 'phases', 'transform'):
    np.testing.assert_array_equal(after['synthesis']['input'][key],
                                  before['synthesis']['input'][key])
  # The update changes the images that follow: the input gain is rsqrt(magnitude_ema).
  img2, _, _ = run(variables['params'], after)
  assert not np.allclose(img, img2)


# --------------------------------------------------------------------------------------------
# Strict import.


def test_import_is_strict():
  sd, _ = _load('t')
  kwargs = nvlabs_sg3.generator_kwargs_from_nvlabs(sd)
  G = stylegan3.Generator(**kwargs)
  missing = {k: v for k, v in sd.items() if k != 'synthesis.L3_36_32.magnitude_ema'}
  with pytest.raises(ValueError, match='missing: buffers/synthesis/L3_36_32/magnitude_ema'):
    nvlabs_sg3.generator_variables_from_nvlabs(missing, G)
  extra = dict(sd, **{'synthesis.L3_36_32.extra': np.zeros(3, np.float32)})
  with pytest.raises(ValueError, match='unexpected NVIDIA tensor'):
    nvlabs_sg3.generator_variables_from_nvlabs(extra, G)
  bad = dict(sd)
  bad['synthesis.L7_52_32.down_filter'] = sd['synthesis.L6_52_32.down_filter']
  with pytest.raises(ValueError, match='L7_52_32.down_filter: taps differ'):
    nvlabs_sg3.generator_variables_from_nvlabs(bad, G)
  with pytest.raises(ValueError, match='L0_36_32.up_filter'):  # other schedule arguments
    nvlabs_sg3.generator_variables_from_nvlabs(
        sd, stylegan3.Generator(**dict(kwargs, first_cutoff=3)))
  with pytest.raises(ValueError, match='shape mismatch'):
    nvlabs_sg3.generator_variables_from_nvlabs(sd, stylegan3.Generator(**dict(kwargs,
                                                                             conv_kernel=1)))
