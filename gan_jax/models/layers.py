"""Layers shared by the StyleGAN family: FIR resampling, equalized-lr dense/conv, modulated conv.

Layouts: activations NHWC, conv kernels HWIO `(kh, kw, in, out)`, dense weights `(in, out)`.
Numerics follow NVIDIA's StyleGAN2-ADA-PyTorch (upfirdn2d, bias_act, conv2d_resample,
modulated_conv2d, MinibatchStdLayer) so that its weights import 1:1:

* Equalized learning rate: dense `weight ~ N(0, 1) / lr_multiplier`, used as
  `weight * lr_multiplier / sqrt(in)`; dense `bias` starts at `bias_init` and is used as
  `bias * lr_multiplier`. Conv `weight ~ N(0, 1)`, used as `weight / sqrt(in * k * k)`; conv bias
  used as is.
* Resampling convolutions: `up=2` is a transposed convolution (the kernel as stored is scattered,
  i.e. a true convolution of the zero-stuffed input) followed by the FIR low-pass with gain 4;
  `down=2` is the FIR followed by a stride-2 convolution. Output sizes are exactly 2H and H/2.
* Resample filters are numpy constants, never variables.

Speed on CPU (XLA:CPU is slow on grouped, depthwise and input-dilated convolutions): modulated
convs scale activations instead of building per-sample kernels, so one shared-kernel conv serves
the batch; the transposed conv runs phase by phase as small stride-1 convs; FIR filters are sums
of shifted slices (separable filters one axis at a time); convolutions carry matmul-based
gradients on the CPU backend (`gan_jax.models.conv`).
"""

import math
from typing import Optional, Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gan_jax.models import conv

Array = jax.Array
Padding = Union[int, Sequence[int]]

# name -> (function, default gain). 'lrelu' is leaky ReLU with slope 0.2.
ACTIVATIONS = {
    'linear': (lambda x: x, 1.0),
    'relu': (jax.nn.relu, math.sqrt(2.0)),
    'lrelu': (lambda x: jax.nn.leaky_relu(x, 0.2), math.sqrt(2.0)),
}


# --------------------------------------------------------------------------------------------
# FIR filtering.


def setup_filter(f: Sequence[float] = (1, 3, 3, 1), normalize: bool = True) -> np.ndarray:
  """A 2-D FIR filter as float32 numpy: a 1-D `f` becomes its outer product; sums to 1."""
  f = np.asarray(f, dtype=np.float64)
  if f.ndim == 1:
    f = np.outer(f, f)
  if f.ndim != 2:
    raise ValueError(f'filter must be 1-D or 2-D, got shape {f.shape}')
  if normalize:
    f = f / f.sum()
  return f.astype(np.float32)


def _pair(v) -> tuple[int, int]:
  """(x, y) from an int or a pair."""
  if isinstance(v, (int, np.integer)):
    return int(v), int(v)
  vx, vy = v
  return int(vx), int(vy)


def _padding4(padding: Padding) -> tuple[int, int, int, int]:
  """(px0, px1, py0, py1) from an int, (px, py) or (px0, px1, py0, py1)."""
  if isinstance(padding, (int, np.integer)):
    return (int(padding),) * 4
  padding = tuple(int(p) for p in padding)
  if len(padding) == 2:
    px, py = padding
    return px, px, py, py
  if len(padding) == 4:
    return padding
  raise ValueError(f'padding must be an int or have 2 or 4 entries, got {padding}')


def _separable_taps(f: np.ndarray) -> Optional[tuple[np.ndarray, np.ndarray]]:
  """(fy, fx) with outer(fy, fx) == f when the 2-D filter is separable, else None."""
  total = f.sum()
  if total == 0:
    return None
  fy, fx = f.sum(axis=1) / total, f.sum(axis=0)
  if np.allclose(np.outer(fy, fx), f, rtol=1e-6, atol=1e-9 * np.abs(f).max()):
    return fy, fx
  return None


def _correlate_axis(x: Array, taps: np.ndarray, axis: int, down: int) -> Array:
  """Valid 1-D correlation along `axis` with constant taps, keeping every `down`-th output."""
  size = x.shape[axis]
  n_out = (size - len(taps)) // down + 1
  if n_out <= 0:
    raise ValueError(f'filter of {len(taps)} taps does not fit an axis of {size}')
  out = None
  for t, c in enumerate(taps):
    if c == 0:
      continue
    term = jax.lax.slice_in_dim(x, t, t + down * (n_out - 1) + 1, stride=down, axis=axis)
    term = term * float(c)  # a weak-typed constant keeps x's dtype (bfloat16 stays bfloat16)
    out = term if out is None else out + term
  if out is None:  # an all-zero filter
    out = jnp.zeros_like(jax.lax.slice_in_dim(x, 0, down * (n_out - 1) + 1, stride=down, axis=axis))
  return out


def upfirdn2d(x: Array, f, up=1, down=1, padding: Padding = 0, flip_filter: bool = False,
              gain: float = 1.0) -> Array:
  """Upsample (zero insertion), pad, FIR-filter, downsample an NHWC batch, like NVIDIA's upfirdn2d.

  Args:
    x: (N, H, W, C).
    f: a numpy filter, 2-D (fh, fw) or 1-D (applied to both axes). None: identity.
    up, down: ints or (x, y) pairs.
    padding: int, (px, py) or (px0, px1, py0, py1); negative values crop.
    flip_filter: False (NVIDIA's default) applies a true convolution, True a correlation.
    gain: overall multiplier of the filter.
  Returns:
    (N, (H * up_y + py0 + py1 - fh) // down_y + 1, ..., C).
  """
  if f is None:
    f = np.ones((1, 1), np.float32)
  f = np.asarray(f, dtype=np.float64)
  if f.ndim == 1:
    fy = fx = f * math.sqrt(gain)
    f2d = None
  else:
    f = f * gain
    taps = _separable_taps(f)
    fy, fx = taps if taps is not None else (None, None)
    f2d = f if taps is None else None
  upx, upy = _pair(up)
  downx, downy = _pair(down)
  px0, px1, py0, py1 = _padding4(padding)

  # Zero insertion (up - 1 zeros after every sample, as NVIDIA) and padding / cropping in one pad.
  zero = jnp.zeros((), x.dtype)
  x = jax.lax.pad(x, zero, ((0, 0, 0), (py0, py1 + upy - 1, upy - 1),
                            (px0, px1 + upx - 1, upx - 1), (0, 0, 0)))
  if f2d is None:
    if not flip_filter:
      fy, fx = fy[::-1], fx[::-1]
    x = _correlate_axis(x, fy, axis=1, down=downy)
    return _correlate_axis(x, fx, axis=2, down=downx)

  if not flip_filter:
    f2d = f2d[::-1, ::-1]
  fh, fw = f2d.shape
  n_h = (x.shape[1] - fh) // downy + 1
  n_w = (x.shape[2] - fw) // downx + 1
  out = None
  for ty in range(fh):
    for tx in range(fw):
      if f2d[ty, tx] == 0:
        continue
      term = x[:, ty:ty + downy * (n_h - 1) + 1:downy, tx:tx + downx * (n_w - 1) + 1:downx]
      term = term * float(f2d[ty, tx])
      out = term if out is None else out + term
  return out


def upsample2d(x: Array, f, up=2, padding: Padding = 0, flip_filter: bool = False,
               gain: float = 1.0) -> Array:
  """Upsamples by `up` with FIR `f`; with padding 0 the output is exactly (H * up, W * up)."""
  upx, upy = _pair(up)
  px0, px1, py0, py1 = _padding4(padding)
  fh, fw = _filter_size(f)
  pad = (px0 + (fw + upx - 1) // 2, px1 + (fw - upx) // 2,
         py0 + (fh + upy - 1) // 2, py1 + (fh - upy) // 2)
  return upfirdn2d(x, f, up=up, padding=pad, flip_filter=flip_filter, gain=gain * upx * upy)


def downsample2d(x: Array, f, down=2, padding: Padding = 0, flip_filter: bool = False,
                 gain: float = 1.0) -> Array:
  """Downsamples by `down` with FIR `f`; with padding 0 the output is exactly H / down."""
  downx, downy = _pair(down)
  px0, px1, py0, py1 = _padding4(padding)
  fh, fw = _filter_size(f)
  pad = (px0 + (fw - downx + 1) // 2, px1 + (fw - downx) // 2,
         py0 + (fh - downy + 1) // 2, py1 + (fh - downy) // 2)
  return upfirdn2d(x, f, down=down, padding=pad, flip_filter=flip_filter, gain=gain)


def _filter_size(f) -> tuple[int, int]:
  """(fh, fw) of a 1-D or 2-D filter; (1, 1) for None."""
  if f is None:
    return 1, 1
  f = np.asarray(f)
  return (f.shape[0], f.shape[0]) if f.ndim == 1 else f.shape


# --------------------------------------------------------------------------------------------
# Bias + activation, convolution with resampling.


def bias_act(x: Array, b: Optional[Array] = None, act: str = 'linear',
             gain: Optional[float] = None, clamp: Optional[float] = None) -> Array:
  """x + b (along the last axis), activation, times `gain` (default: the activation's), clamp."""
  fn, default_gain = ACTIVATIONS[act]
  if b is not None:
    x = x + b.astype(x.dtype)
  x = fn(x)
  gain = default_gain if gain is None else gain
  if gain != 1:
    x = x * float(gain)
  if clamp is not None and clamp >= 0:
    x = jnp.clip(x, -clamp, clamp)
  return x


def _conv(x: Array, w: Array, stride: int = 1, padding=((0, 0), (0, 0))) -> Array:
  return conv.conv2d(x, w, stride, padding)


def conv2d_resample(x: Array, w: Array, f=None, up: int = 1, down: int = 1,
                    padding: Padding = 0) -> Array:
  """2-D convolution (HWIO kernel) with optional FIR up/downsampling, as NVIDIA's conv2d_resample.

  With `padding = k // 2` the output is (H * up / down, W * up / down). `up > 1` uses the
  transposed convolution (NVIDIA's flip_weight=False, which all its upsampling layers use).
  """
  if up > 1 and down > 1:
    raise ValueError('conv2d_resample resamples one way: pass up > 1 or down > 1, not both')
  kh, kw = w.shape[:2]
  fh, fw = _filter_size(f)
  px0, px1, py0, py1 = _padding4(padding)
  if up > 1:
    px0, px1 = px0 + (fw + up - 1) // 2, px1 + (fw - up) // 2
    py0, py1 = py0 + (fh + up - 1) // 2, py1 + (fh - up) // 2
  if down > 1:
    px0, px1 = px0 + (fw - down + 1) // 2, px1 + (fw - down) // 2
    py0, py1 = py0 + (fh - down + 1) // 2, py1 + (fh - down) // 2

  if down > 1:
    if kh == 1 and kw == 1:
      x = upfirdn2d(x, f, down=down, padding=(px0, px1, py0, py1))
      return _conv(x, w)
    x = upfirdn2d(x, f, padding=(px0, px1, py0, py1))
    # Valid strided conv. Trailing zero rows/columns that no window reaches leave the result
    # unchanged but put XLA:CPU on its faster padded-convolution path (~25% on the gradient).
    ey = (down - 1 - (x.shape[1] - kh) % down)
    ex = (down - 1 - (x.shape[2] - kw) % down)
    return _conv(x, w, stride=down, padding=((0, ey), (0, ex)))

  if up > 1:
    if kh == 1 and kw == 1:
      x = _conv(x, w)
      return upfirdn2d(x, f, up=up, padding=(px0, px1, py0, py1), gain=up * up)
    px0, px1 = px0 - (kw - 1), px1 - (kw - up)
    py0, py1 = py0 - (kh - 1), py1 - (kh - up)
    pxt = max(min(-px0, -px1), 0)
    pyt = max(min(-py0, -py1), 0)
    x = conv.conv_transpose2d(x, w, up, pyt, pxt)
    return upfirdn2d(x, f, padding=(px0 + pxt, px1 + pxt, py0 + pyt, py1 + pyt), gain=up * up)

  if min(px0, px1, py0, py1) >= 0:
    return _conv(x, w, padding=((py0, py1), (px0, px1)))
  x = upfirdn2d(x, None, padding=(px0, px1, py0, py1))
  return _conv(x, w)


# --------------------------------------------------------------------------------------------
# Modulated convolution, minibatch standard deviation.


def modulated_conv2d(x: Array, weight: Array, styles: Array, demodulate: bool = True, up: int = 1,
                     padding: Padding = 0, resample_filter=None) -> Array:
  """StyleGAN2 modulated convolution: per-sample kernel `weight[..., i, o] * styles[n, i]`,
  optionally demodulated to unit L2 norm per output channel (eps 1e-8 inside the rsqrt).

  Computed by scaling activations instead of building per-sample kernels: the inputs are
  multiplied by the styles, one ordinary (shared-kernel) convolution runs on the whole batch, and
  the outputs are multiplied by the demodulation coefficients. This is exactly the same linear map
  and needs no grouped convolution.

  Args:
    x: (N, H, W, in). weight: (k, k, in, out), used as is (no equalized-lr scale).
    styles: (N, in). up: 1 or 2 (transposed conv + FIR, output 2H).
  """
  x = x * styles.astype(x.dtype)[:, None, None, :]
  x = conv2d_resample(x, weight, f=resample_filter, up=up, padding=padding)
  if demodulate:
    w_sq = jnp.sum(jnp.square(weight), axis=(0, 1))  # (in, out)
    dcoefs = jax.lax.rsqrt(jnp.square(styles) @ w_sq + 1e-8)  # (N, out)
    x = x * dcoefs.astype(x.dtype)[:, None, None, :]
  return x


def minibatch_std(x: Array, group_size: Optional[int] = 4, num_channels: int = 1) -> Array:
  """Appends `num_channels` feature maps holding the per-group standard deviation (NVIDIA's layer).

  Sample i belongs to group i % (N // G) (NVIDIA's reshape(G, -1, ...)); the std over each group
  is taken in float32 with eps 1e-8, averaged over the channels of each of the `num_channels`
  channel groups and over pixels, and broadcast back to every sample of the group.
  """
  n, h, w, c = x.shape
  g = n if group_size is None else min(group_size, n)
  if n % g:
    raise ValueError(f'batch {n} is not divisible by the minibatch-std group size {g}')
  f = num_channels
  y = x.astype(jnp.float32).reshape(g, n // g, h, w, f, c // f)
  y = y - y.mean(axis=0)
  y = jnp.sqrt(jnp.square(y).mean(axis=0) + 1e-8)  # (n/G, h, w, F, c/F)
  y = y.mean(axis=(1, 2, 4))  # (n/G, F)
  y = jnp.tile(y, (g, 1)).astype(x.dtype)  # (N, F): row i is group i % (n/G)
  y = jnp.broadcast_to(y[:, None, None, :], (n, h, w, f))
  return jnp.concatenate([x, y], axis=-1)


def normalize_2nd_moment(x: Array, axis: int = -1, eps: float = 1e-8) -> Array:
  return x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=axis, keepdims=True) + eps)


# --------------------------------------------------------------------------------------------
# Equalized learning-rate layers.


class EqualizedDense(nn.Module):
  """Fully connected layer with equalized learning rate (NVIDIA's FullyConnectedLayer)."""
  features: int
  lr_multiplier: float = 1.0
  bias_init: float = 0.0
  activation: str = 'linear'
  use_bias: bool = True

  @nn.compact
  def __call__(self, x: Array) -> Array:
    fan_in = x.shape[-1]
    weight = self.param(
        'weight', lambda key, shape: jax.random.normal(key, shape) / self.lr_multiplier,
        (fan_in, self.features))
    x = x @ (weight * np.float32(self.lr_multiplier / math.sqrt(fan_in))).astype(x.dtype)
    b = None
    if self.use_bias:
      b = self.param('bias', lambda key, shape: jnp.full(shape, self.bias_init, jnp.float32),
                     (self.features,))
      if self.lr_multiplier != 1:
        b = b * np.float32(self.lr_multiplier)
    return bias_act(x, b, self.activation)


class EqualizedConv2d(nn.Module):
  """Conv layer with equalized learning rate and FIR resampling (NVIDIA's Conv2dLayer).

  `gain` multiplies the activation's own gain and the clamp (the residual D uses sqrt(0.5)).
  """
  features: int
  kernel_size: int
  up: int = 1
  down: int = 1
  use_bias: bool = True
  activation: str = 'linear'
  conv_clamp: Optional[float] = None
  gain: float = 1.0
  resample_filter: Sequence[float] = (1, 3, 3, 1)

  @nn.compact
  def __call__(self, x: Array) -> Array:
    k, fan_in = self.kernel_size, x.shape[-1]
    weight = self.param('weight', jax.random.normal, (k, k, fan_in, self.features))
    weight = weight * np.float32(1 / math.sqrt(fan_in * k * k))
    f = setup_filter(self.resample_filter) if (self.up > 1 or self.down > 1) else None
    x = conv2d_resample(x, weight, f=f, up=self.up, down=self.down, padding=k // 2)
    b = self.param('bias', nn.initializers.zeros, (self.features,)) if self.use_bias else None
    act_gain = ACTIVATIONS[self.activation][1] * self.gain
    clamp = None if self.conv_clamp is None else self.conv_clamp * self.gain
    return bias_act(x, b, self.activation, gain=act_gain, clamp=clamp)


# --------------------------------------------------------------------------------------------
# Growing (ProGAN, StyleGAN): resampling, pixel normalisation, the fade-in and the stage checks.
# A stage is the current output resolution (a static int); alpha the fade-in (traced).


def log2_resolution(resolution: int, what: str = 'resolution') -> int:
  log2 = int(round(math.log2(resolution))) if resolution > 0 else 0
  if resolution < 4 or 2 ** log2 != resolution:
    raise ValueError(f'{what} must be a power of two >= 4, got {resolution}')
  return log2


def check_stage(stage: Optional[int], img_resolution: int, initializing: bool) -> int:
  """The stage resolution (None: the full one); an error for a bad one or a partial init."""
  if stage is None:
    return img_resolution
  if not isinstance(stage, (int, np.integer)):
    raise TypeError(f'stage must be a static Python int (a resolution), got {type(stage)}; '
                    'mark it static in jax.jit (static_argnames) and trace alpha instead')
  log2_resolution(stage, 'stage')
  if stage > img_resolution:
    raise ValueError(f'stage {stage} is above the network resolution {img_resolution}')
  if initializing and stage != img_resolution:
    raise ValueError(f'init at the full resolution (stage None or {img_resolution}), not '
                     f'{stage}, so that the parameters of every stage exist from the start')
  return int(stage)


def pixel_norm(x: Array, eps: float = 1e-8) -> Array:
  """ProGAN's pixelwise feature vector normalisation: x / sqrt(mean over channels of x^2 + eps),
  computed in float32 and returned in x's dtype."""
  return normalize_2nd_moment(x.astype(jnp.float32), axis=-1, eps=eps).astype(x.dtype)


def upsample_nearest(x: Array, factor: int = 2) -> Array:
  """(N, H, W, C) -> (N, H * factor, W * factor, C), each pixel repeated."""
  if factor == 1:
    return x
  return jnp.repeat(jnp.repeat(x, factor, axis=1), factor, axis=2)


def downsample_avg(x: Array, factor: int = 2) -> Array:
  """(N, H, W, C) -> (N, H / factor, W / factor, C), the mean of each factor x factor box."""
  if factor == 1:
    return x
  n, h, w, c = x.shape
  if h % factor or w % factor:
    raise ValueError(f'image size {h}x{w} is not divisible by the pooling factor {factor}')
  return x.reshape(n, h // factor, factor, w // factor, factor, c).mean(axis=(2, 4))


def lerp(a: Array, b: Array, t) -> Array:
  """a + (b - a) * t: a at t = 0, b at t = 1."""
  return a + (b - a) * jnp.asarray(t, a.dtype)


def real_images_at(images: Array, stage: int, alpha) -> Array:
  """Reals as D sees them at `stage` (a resolution): pooled to it, and during the fade-in blended
  with their own lower-resolution version, so that they match what G produces.

  x = avg_pool(images) to stage x stage; returns lerp(upsample_nearest(avg_pool(x)), x, alpha).
  This is the official code's `lod` blending of the reals (there done at full size, here at the
  stage's size). At stage 4 there is no previous stage and alpha is ignored.
  """
  n, h, w, c = images.shape
  log2_resolution(stage, 'stage')
  if h != w or h % stage:
    raise ValueError(f'images must be square with a size divisible by the stage {stage}, '
                     f'got {h}x{w}')
  x = downsample_avg(images, h // stage)
  if stage == 4:
    return x
  return lerp(upsample_nearest(downsample_avg(x)), x, alpha)
