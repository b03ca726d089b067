"""models/layers.py against direct float64 numpy re-implementations (NCHW-free, loop based)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gan_jax.models import layers
from tests import numerics

FIR = layers.setup_filter((1, 3, 3, 1))
# float32 layers against float64 numpy: measured <= ~6e-7 of each output's largest element; a wrong
# filter tap, pad, gain or flip is off by >= ~1e-1 of it.
REL = 1e-5


# --------------------------------------------------------------------------------------------
# Independent numpy references (float64, NHWC, written as plain loops / scatters).


def ref_upfirdn2d(x, f, up=(1, 1), down=(1, 1), pad=(0, 0, 0, 0), flip_filter=False, gain=1.0):
  """Zero insertion, pad/crop, true 2-D convolution with f (correlation if flipped), decimate."""
  x = np.asarray(x, np.float64)
  f = np.asarray(f, np.float64) * gain
  (upx, upy), (downx, downy) = up, down
  px0, px1, py0, py1 = pad
  n, h, w, c = x.shape
  u = np.zeros((n, h * upy, w * upx, c))
  u[:, ::upy, ::upx] = x
  u = np.pad(u, ((0, 0), (max(py0, 0), max(py1, 0)), (max(px0, 0), max(px1, 0)), (0, 0)))
  u = u[:, max(-py0, 0):u.shape[1] - max(-py1, 0), max(-px0, 0):u.shape[2] - max(-px1, 0)]
  fh, fw = f.shape
  out_h, out_w = u.shape[1] - fh + 1, u.shape[2] - fw + 1
  out = np.zeros((n, out_h, out_w, c))
  for oy in range(out_h):
    for ox in range(out_w):
      for ty in range(fh):
        for tx in range(fw):
          # convolution: out[o] = sum_t u[o + t] * f[K - 1 - t]
          coef = f[ty, tx] if flip_filter else f[fh - 1 - ty, fw - 1 - tx]
          out[:, oy, ox] += u[:, oy + ty, ox + tx] * coef
  return out[:, ::downy, ::downx]


def ref_conv(x, w, pad=0, stride=1):
  """Cross-correlation, NHWC x HWIO, symmetric zero padding."""
  x = np.pad(np.asarray(x, np.float64), ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  w = np.asarray(w, np.float64)
  kh, kw = w.shape[:2]
  out_h = (x.shape[1] - kh) // stride + 1
  out_w = (x.shape[2] - kw) // stride + 1
  out = np.zeros((x.shape[0], out_h, out_w, w.shape[3]))
  for oy in range(out_h):
    for ox in range(out_w):
      patch = x[:, oy * stride:oy * stride + kh, ox * stride:ox * stride + kw]
      out[:, oy, ox] = np.einsum('nhwi,hwio->no', patch, w)
  return out


def ref_conv_transpose(x, w, stride=2):
  """PyTorch conv_transpose2d (padding 0): each input pixel scatters x * kernel into the output."""
  x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
  n, h, wd, _ = x.shape
  kh, kw = w.shape[:2]
  out = np.zeros((n, (h - 1) * stride + kh, (wd - 1) * stride + kw, w.shape[3]))
  for iy in range(h):
    for ix in range(wd):
      for ky in range(kh):
        for kx in range(kw):
          out[:, iy * stride + ky, ix * stride + kx] += x[:, iy, ix] @ w[ky, kx]
  return out


def ref_up_conv(x, w):
  """NVIDIA's 3x3 up=2 conv: transposed conv, then the FIR (pad 1, 1, gain 4) -> exactly 2H."""
  y = ref_conv_transpose(x, w, 2)
  return ref_upfirdn2d(y, FIR, pad=(1, 1, 1, 1), gain=4.0)


def ref_down_conv(x, w):
  """NVIDIA's 3x3 down=2 conv: FIR with pad 2, then stride-2 valid conv -> exactly H/2."""
  y = ref_upfirdn2d(x, FIR, pad=(2, 2, 2, 2))
  return ref_conv(y, w, pad=0, stride=2)


def ref_modulated(x, weight, styles, demodulate, up):
  outs = []
  for n in range(x.shape[0]):
    w = np.asarray(weight, np.float64) * np.asarray(styles[n], np.float64)[None, None, :, None]
    if demodulate:
      w = w / np.sqrt(np.sum(w ** 2, axis=(0, 1, 2), keepdims=True) + 1e-8)
    xn = x[n:n + 1]
    if up == 1:
      outs.append(ref_conv(xn, w, pad=w.shape[0] // 2))
    else:
      outs.append(ref_up_conv(xn, w))
  return np.concatenate(outs)


def ref_minibatch_std(x, group_size, num_channels):
  x = np.asarray(x, np.float64)
  n, h, w, c = x.shape
  g = min(group_size, n)
  m = n // g
  f = num_channels
  out = np.zeros((n, h, w, f))
  for j in range(m):
    members = [j + k * m for k in range(g)]  # NVIDIA's reshape(G, -1): stride m
    grp = x[members]  # (G, h, w, c)
    std = np.sqrt(grp.var(axis=0) + 1e-8)  # (h, w, c)
    for fi in range(f):
      val = std[..., fi * (c // f):(fi + 1) * (c // f)].mean()
      out[members, :, :, fi] = val
  return np.concatenate([x, out], axis=-1)


def _rand(*shape, seed=0):
  return np.random.RandomState(seed).randn(*shape).astype(np.float32)


# --------------------------------------------------------------------------------------------
# FIR resampling.


def test_setup_filter_is_normalized_outer_product():
  f = layers.setup_filter((1, 3, 3, 1))
  np.testing.assert_allclose(f, np.outer([1, 3, 3, 1], [1, 3, 3, 1]) / 64.0, rtol=0, atol=0)
  assert f.dtype == np.float32 and abs(f.sum() - 1) < 1e-7


@pytest.mark.parametrize('up,down,pad,flip', [
    ((1, 1), (1, 1), (0, 0, 0, 0), False),
    ((2, 2), (1, 1), (2, 1, 2, 1), False),
    ((1, 1), (2, 2), (1, 1, 1, 1), False),
    ((2, 1), (1, 2), (3, -1, 0, 2), False),
    ((3, 3), (2, 2), (-2, 1, 1, -1), True),
])
@pytest.mark.parametrize('separable', [True, False])
def test_upfirdn2d_matches_numpy(up, down, pad, flip, separable):
  x = _rand(2, 5, 7, 3)  # non-square
  if separable:
    f = np.outer([1.0, 2.0, 4.0], [1.0, 3.0, 3.0, 1.0]).astype(np.float32)
  else:
    f = _rand(3, 4, seed=1)
  got = layers.upfirdn2d(jnp.asarray(x), f, up=up, down=down, padding=pad, flip_filter=flip,
                         gain=1.5)
  want = ref_upfirdn2d(x, f, up, down, pad, flip, gain=1.5)
  assert got.shape == want.shape
  numerics.assert_close(got, want, REL, 'upfirdn2d')


@pytest.mark.parametrize('h,w', [(4, 4), (6, 10)])
def test_up_and_downsample_sizes_and_values(h, w):
  x = _rand(2, h, w, 3)
  up = layers.upsample2d(jnp.asarray(x), FIR)
  down = layers.downsample2d(jnp.asarray(x), FIR)
  assert up.shape == (2, 2 * h, 2 * w, 3)
  assert down.shape == (2, h // 2, w // 2, 3)
  numerics.assert_close(up, ref_upfirdn2d(x, FIR, (2, 2), (1, 1), (2, 1, 2, 1), gain=4), REL, 'up')
  numerics.assert_close(down, ref_upfirdn2d(x, FIR, (1, 1), (2, 2), (1, 1, 1, 1)), REL, 'down')
  # A constant image stays constant in the interior (the filter is normalized, gain = up^2).
  ones = layers.upsample2d(jnp.ones((1, h, w, 1)), FIR)
  numerics.assert_close(ones[0, 2:-2, 2:-2], 1.0, REL, 'ones')  # gain 1 instead of 4: 0.75 off


@pytest.mark.parametrize('k,pad', [(3, 1), (5, 0), (4, 2), (1, 0), (2, 1)])
def test_conv2d_resample_up_matches_scatter_then_fir(k, pad):
  # NVIDIA: full transposed conv (scatter), then the FIR with padding
  # (p + (4 + 1) // 2 - (k - 1), p + (4 - 2) // 2 - (k - 2)) and gain 4; negative pads crop.
  x, w = _rand(2, 5, 4, 3), _rand(k, k, 3, 2, seed=1)
  p0, p1 = pad + 2 - (k - 1), pad + 1 - (k - 2)
  want = ref_upfirdn2d(ref_conv_transpose(x, w), FIR, pad=(p0, p1, p0, p1), gain=4.0)
  got = layers.conv2d_resample(jnp.asarray(x), jnp.asarray(w), FIR, up=2, padding=pad)
  assert got.shape == want.shape
  numerics.assert_close(got, want, REL, 'conv2d_resample up')


@pytest.mark.parametrize('k,pad', [(3, 1), (1, 0), (4, 1), (3, 0)])
def test_conv2d_resample_down_matches_fir_then_strided_conv(k, pad):
  x, w = _rand(2, 8, 10, 3), _rand(k, k, 3, 2, seed=1)
  p0, p1 = pad + 3 // 2, pad + 1
  want = ref_conv(ref_upfirdn2d(x, FIR, pad=(p0, p1, p0, p1)), w, stride=2)
  got = layers.conv2d_resample(jnp.asarray(x), jnp.asarray(w), FIR, down=2, padding=pad)
  assert got.shape == want.shape
  numerics.assert_close(got, want, REL, 'conv2d_resample down')


# --------------------------------------------------------------------------------------------
# Modulated convolution.


@pytest.mark.parametrize('demodulate', [True, False])
@pytest.mark.parametrize('up', [1, 2])
def test_modulated_conv2d_matches_numpy(demodulate, up):
  x = _rand(3, 5, 6, 4, seed=2)
  weight = _rand(3, 3, 4, 5, seed=3)
  styles = 1 + 0.5 * _rand(3, 4, seed=4)
  got = layers.modulated_conv2d(jnp.asarray(x), jnp.asarray(weight), jnp.asarray(styles),
                                demodulate=demodulate, up=up, padding=1, resample_filter=FIR)
  want = ref_modulated(x, weight, styles, demodulate, up)
  assert got.shape == (3, 5 * up, 6 * up, 5)
  numerics.assert_close(got, want, REL, 'modulated conv')


def test_modulated_conv2d_1x1_no_demod():
  x, weight, styles = _rand(2, 4, 4, 6), _rand(1, 1, 6, 3, seed=1), _rand(2, 6, seed=2)
  got = layers.modulated_conv2d(jnp.asarray(x), jnp.asarray(weight), jnp.asarray(styles),
                                demodulate=False)
  numerics.assert_close(got, ref_modulated(x, weight, styles, False, 1), REL, '1x1 modulated conv')


def test_demodulated_kernels_have_unit_norm():
  # Recover each sample's effective kernel from impulse responses: one sample per input channel,
  # an impulse in the centre of a 5x5 map; the 3x3 response around it is the flipped kernel.
  cin, cout = 4, 3
  weight = jnp.asarray(_rand(3, 3, cin, cout, seed=5) * 7.0)
  style = 0.1 + np.abs(_rand(cin, seed=6))
  x = np.zeros((cin, 5, 5, cin), np.float32)
  for i in range(cin):
    x[i, 2, 2, i] = 1.0
  styles = jnp.asarray(np.tile(style, (cin, 1)))
  y = layers.modulated_conv2d(jnp.asarray(x), weight, styles, demodulate=True, padding=1)
  kernel = np.asarray(y)[:, 1:4, 1:4, :]  # (in, 3, 3, out)
  norms = np.sqrt(np.sum(kernel.astype(np.float64) ** 2, axis=(0, 1, 2)))
  numerics.assert_close(norms, 1.0, REL, 'demodulated kernel norms')
  # Without demodulation the norm is far from one for this weight.
  y = layers.modulated_conv2d(jnp.asarray(x), weight, styles, demodulate=False, padding=1)
  assert np.all(np.abs(np.sqrt(np.sum(np.asarray(y) ** 2, axis=(0, 1, 2))) - 1) > 0.5)


# --------------------------------------------------------------------------------------------
# Equalized-lr layers, bias_act.


def test_bias_act_lrelu_gain_and_clamp():
  x = jnp.asarray([[-1.0, 2.0, 300.0]])
  b = jnp.asarray([0.5, -0.5, 0.0])
  s2 = math.sqrt(2)
  # Element by element (no sums): rtol holds on any CPU; a missing sqrt(2) gain is 29% off.
  np.testing.assert_allclose(layers.bias_act(x, b, 'lrelu'),
                             [[-0.5 * 0.2 * s2, 1.5 * s2, 300 * s2]], rtol=1e-6)
  np.testing.assert_allclose(layers.bias_act(x, b, 'lrelu', clamp=256),
                             [[-0.5 * 0.2 * s2, 1.5 * s2, 256.0]], rtol=1e-6)
  np.testing.assert_allclose(layers.bias_act(x, b, 'linear', clamp=1.0), [[-0.5, 1.0, 1.0]])


@pytest.mark.parametrize('lr', [0.01, 1.0])
def test_equalized_dense_runtime_scaling(lr):
  layer = layers.EqualizedDense(5, lr_multiplier=lr, bias_init=0.3, activation='lrelu')
  x = _rand(4, 7)
  params = layer.init(jax.random.PRNGKey(0), x)['params']
  assert params['weight'].shape == (7, 5) and params['bias'].shape == (5,)
  np.testing.assert_allclose(params['bias'], 0.3)
  w, b = np.asarray(params['weight'], np.float64), np.asarray(params['bias'], np.float64)
  pre = x @ (w * lr / math.sqrt(7)) + b * lr
  want = np.where(pre >= 0, pre, 0.2 * pre) * math.sqrt(2)
  numerics.assert_close(layer.apply({'params': params}, x), want, REL, 'equalized dense')


@pytest.mark.parametrize('lr', [0.01, 1.0])
def test_equalized_dense_init_std(lr):
  layer = layers.EqualizedDense(256, lr_multiplier=lr)
  params = layer.init(jax.random.PRNGKey(1), jnp.zeros((1, 256)))['params']
  std = float(np.std(params['weight']))
  assert abs(std * lr - 1.0) < 0.02  # stored N(0, 1) / lr
  np.testing.assert_allclose(params['bias'], 0.0)


def _conv_params(layer, x, seed=0):
  params = layer.init(jax.random.PRNGKey(seed), x)['params']
  # Give the bias a non-zero value so that its use is checked too.
  if 'bias' in params:
    params = dict(params, bias=jnp.asarray(_rand(*params['bias'].shape, seed=9)))
  return params


@pytest.mark.parametrize('up,down', [(1, 1), (2, 1), (1, 2)])
def test_equalized_conv2d_matches_numpy(up, down):
  cin, cout = 3, 4
  x = _rand(2, 6, 8, cin) * 3
  layer = layers.EqualizedConv2d(cout, 3, up=up, down=down, activation='lrelu', gain=0.7,
                                 conv_clamp=1.5)
  params = _conv_params(layer, x)
  w = np.asarray(params['weight'], np.float64) / math.sqrt(cin * 9)  # runtime weight
  if up == 2:
    y = ref_up_conv(x, w)
  elif down == 2:
    y = ref_down_conv(x, w)
  else:
    y = ref_conv(x, w, pad=1)
  y = y + np.asarray(params['bias'])
  y = np.where(y >= 0, y, 0.2 * y) * math.sqrt(2) * 0.7
  y = np.clip(y, -1.5 * 0.7, 1.5 * 0.7)
  got = layer.apply({'params': params}, x)
  assert got.shape == (2, 6 * up // down, 8 * up // down, cout)
  assert np.mean(np.isclose(np.abs(y), 1.05)) > 0.02  # the clamp is exercised
  numerics.assert_close(got, y, REL, 'equalized conv')


def test_equalized_conv2d_1x1_down_skip():
  x = _rand(2, 8, 8, 3)
  layer = layers.EqualizedConv2d(5, 1, down=2, use_bias=False, gain=math.sqrt(0.5))
  params = layer.init(jax.random.PRNGKey(0), x)['params']
  assert set(params) == {'weight'}
  w = np.asarray(params['weight'], np.float64) / math.sqrt(3)
  want = ref_conv(ref_upfirdn2d(x, FIR, down=(2, 2), pad=(1, 1, 1, 1)), w) * math.sqrt(0.5)
  numerics.assert_close(layer.apply({'params': params}, x), want, REL, '1x1 down skip')


# --------------------------------------------------------------------------------------------
# Minibatch standard deviation.


@pytest.mark.parametrize('n,group,f', [(8, 4, 1), (8, 2, 2), (3, 4, 1)])
def test_minibatch_std_matches_numpy(n, group, f):
  x = _rand(n, 3, 5, 4) * np.arange(1, n + 1, dtype=np.float32)[:, None, None, None]
  got = layers.minibatch_std(jnp.asarray(x), group_size=group, num_channels=f)
  assert got.shape == (n, 3, 5, 4 + f)
  numerics.assert_close(got, ref_minibatch_std(x, group, f), REL, 'minibatch std')


def test_minibatch_std_rejects_indivisible_batch():
  with pytest.raises(ValueError):
    layers.minibatch_std(jnp.zeros((6, 2, 2, 2)), group_size=4)
