"""StyleGAN3 generator (Karras et al. 2021, alias-free), configs T and R, as NVIDIA's
`training/networks_stylegan3.py`, so its weights map 1:1 (see `gan_jax.tools.nvlabs`).

Names (NVIDIA's, our layouts as in StyleGAN2: conv weights HWIO, dense weights (in, out)):

  mapping/{embed, fc0, fc1}, buffer mapping/w_avg       (StyleGAN2's MappingNetwork, 2 layers)
  synthesis/input/{weight (C, C), affine/{weight, bias}}, buffers transform (3, 3), freqs (C, 2),
      phases (C,)
  synthesis/L{i}_{out_size}_{out_channels}/{weight (k, k, in, out), bias, affine/{weight, bias}},
      buffer magnitude_ema ()                          (i = 0 ... num_layers; the last is toRGB)

Variable collections: 'params' (trained) and 'buffers': w_avg, the input layer's random
frequencies and phases and its user transform, and every layer's magnitude_ema (the running mean
of its input's square, whose rsqrt scales the layer's input). Inference reads the buffers; a
training step updates w_avg and the magnitude EMAs with `update_emas=True` and
`mutable=['buffers']`, as StyleGAN2's step updates w_avg. The up / down filters are not
variables: `sg3_filters.schedule` designs them from the constructor arguments (the importer checks
NVIDIA's stored taps against ours).

Which w feeds what: ws[:, 0] the input layer, ws[:, i + 1] layer L{i}; num_ws = num_layers + 2.
There is no noise input. The user transform (NVIDIA's `G.synthesis.input.transform`, which
gen_images.py sets to the inverse of a translate / rotate matrix) is the buffer, or a `transform`
argument of `synthesize` ((3, 3) or per sample (N, 3, 3)) that overrides it; `make_transform`
builds NVIDIA's matrix.
"""

import math
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gan_jax.models import conv
from gan_jax.models import layers
from gan_jax.models import sg3_filters
from gan_jax.models import stylegan2

Array = jax.Array


def make_transform(translate=(0.0, 0.0), angle: float = 0.0) -> np.ndarray:
  """NVIDIA's gen_images.py `make_transform`: rotate by `angle` degrees, translate (x, y) in image
  widths (float64 (3, 3)). The input layer's transform is its inverse (`user_transform`)."""
  s, c = math.sin(angle / 360 * math.pi * 2), math.cos(angle / 360 * math.pi * 2)
  return np.array([[c, s, translate[0]], [-s, c, translate[1]], [0, 0, 1]], np.float64)


def user_transform(translate=(0.0, 0.0), rotate: float = 0.0) -> np.ndarray:
  """The input-layer transform that translates / rotates the output image as gen_images.py's
  --translate X,Y --rotate DEG do: inv(make_transform(translate, rotate)), float32."""
  return np.linalg.inv(make_transform(translate, rotate)).astype(np.float32)


class _InputAffine(nn.Module):
  """w -> (r_c, r_s, t_x, t_y): NVIDIA's FullyConnectedLayer(weight_init=0, bias_init=[1,0,0,0])."""

  @nn.compact
  def __call__(self, w: Array) -> Array:
    fan_in = w.shape[-1]
    weight = self.param('weight', nn.initializers.zeros, (fan_in, 4))
    bias = self.param('bias', lambda key, shape: jnp.array([1., 0., 0., 0.]), (4,))
    return w @ (weight * np.float32(1 / math.sqrt(fan_in))) + bias


def _grid_coords(size: int, sampling_rate: float) -> np.ndarray:
  """Sample positions of torch's affine_grid(align_corners=False) scaled by 0.5 size / sr, in
  float32 as NVIDIA computes them: the central `sr` samples span [-0.5, 0.5]."""
  r = np.linspace(-1, 1, size).astype(np.float32)
  r = r * np.float32(size - 1) / np.float32(size)
  return r * np.float32(0.5 * size / sampling_rate)


class SynthesisInput(nn.Module):
  """Fourier features of random frequencies in a disc of radius `bandwidth`, rotated and
  translated per sample by affine(w) and by the user transform, mixed by a C x C matrix."""
  channels: int
  size: int
  sampling_rate: float
  bandwidth: float

  @nn.compact
  def __call__(self, w: Array, transform: Optional[Array] = None) -> Array:
    ch = self.channels

    def init_freqs():
      f = jax.random.normal(self.make_rng('params'), (ch, 2))
      radii = jnp.sqrt(jnp.sum(jnp.square(f), axis=1, keepdims=True))
      return f / (radii * jnp.exp(jnp.square(radii)) ** 0.25) * self.bandwidth

    freqs = self.variable('buffers', 'freqs', init_freqs).value
    phases = self.variable('buffers', 'phases',
                           lambda: jax.random.uniform(self.make_rng('params'), (ch,)) - 0.5).value
    stored = self.variable('buffers', 'transform', lambda: jnp.eye(3, dtype=jnp.float32)).value
    weight = self.param('weight', jax.random.normal, (ch, ch))

    n = w.shape[0]
    t = _InputAffine(name='affine')(w)  # (N, 4) = (r_c, r_s, t_x, t_y)
    t = t / jnp.sqrt(jnp.sum(jnp.square(t[:, :2]), axis=1, keepdims=True))
    one, zero = jnp.ones((n,)), jnp.zeros((n,))
    m_r = jnp.stack([jnp.stack([t[:, 0], -t[:, 1], zero], -1),
                     jnp.stack([t[:, 1], t[:, 0], zero], -1),
                     jnp.stack([zero, zero, one], -1)], axis=1)
    m_t = jnp.stack([jnp.stack([one, zero, -t[:, 2]], -1),
                     jnp.stack([zero, one, -t[:, 3]], -1),
                     jnp.stack([zero, zero, one], -1)], axis=1)
    user = stored if transform is None else jnp.asarray(transform, jnp.float32)
    user = jnp.broadcast_to(user, (n, 3, 3))
    transforms = jnp.einsum('nij,njk->nik', jnp.einsum('nij,njk->nik', m_r, m_t), user)
    phases = phases[None] + jnp.einsum('cj,nj->nc', freqs, transforms[:, :2, 2])
    freqs = jnp.einsum('cj,njk->nck', freqs, transforms[:, :2, :2])  # (N, C, 2) as (x, y)
    radius = jnp.sqrt(jnp.sum(jnp.square(freqs), axis=2))
    amplitudes = jnp.clip(1 - (radius - np.float32(self.bandwidth)) /
                          np.float32(self.sampling_rate / 2 - self.bandwidth), 0, 1)

    coords = _grid_coords(self.size, self.sampling_rate)
    x = (coords[None, None, :, None] * freqs[:, None, None, :, 0] +
         coords[None, :, None, None] * freqs[:, None, None, :, 1])  # (N, H, W, C)
    x = x + phases[:, None, None, :]
    x = jnp.sin(x * np.float32(np.pi * 2)) * amplitudes[:, None, None, :]
    return x @ (weight / np.float32(np.sqrt(ch)))


class SynthesisLayer(nn.Module):
  """Modulated conv (demodulated, styles normalised over the batch), then the filtered leaky
  ReLU; the toRGB layer instead scales styles by 1 / sqrt(in k^2) and only adds its bias."""
  spec: sg3_filters.LayerSpec
  conv_clamp: Optional[float] = None
  magnitude_ema_beta: float = 0.999

  def _resample(self) -> sg3_filters.FilteredLReLU:
    """The filtered leaky ReLU's resampling matrices (NumPy constants, built at trace time)."""
    s = self.spec
    hw = s.in_size + s.conv_kernel - 1
    return sg3_filters.FilteredLReLU.build(s.up_filter(), s.down_filter(), (hw, hw), s.up,
                                           s.down, s.padding)

  @nn.compact
  def __call__(self, x: Array, w: Array, update_emas: bool = False) -> Array:
    s = self.spec
    k, in_ch = s.conv_kernel, s.in_channels
    if x.shape[1:] != (s.in_size, s.in_size, in_ch):
      raise ValueError(f'{s.name}: expected (N, {s.in_size}, {s.in_size}, {in_ch}), got {x.shape}')
    ema = self.variable('buffers', 'magnitude_ema', lambda: jnp.ones((), jnp.float32))
    if update_emas and not self.is_initializing():
      current = jnp.mean(jnp.square(jax.lax.stop_gradient(x).astype(jnp.float32)))
      ema.value = ema.value - (ema.value - current) * np.float32(1 - self.magnitude_ema_beta)
    input_gain = jax.lax.rsqrt(ema.value)

    styles = layers.EqualizedDense(in_ch, bias_init=1.0, name='affine')(w)
    weight = self.param('weight', jax.random.normal, (k, k, in_ch, s.out_channels))
    bias = self.param('bias', nn.initializers.zeros, (s.out_channels,))
    if s.is_torgb:
      styles = styles * np.float32(1 / math.sqrt(in_ch * k * k))
    else:
      weight = weight * jax.lax.rsqrt(jnp.mean(jnp.square(weight), axis=(0, 1, 2)))
      styles = styles * jax.lax.rsqrt(jnp.mean(jnp.square(styles)))
    x = x * (styles * input_gain).astype(x.dtype)[:, None, None, :]
    x = conv.conv2d(x, weight, padding=((k - 1, k - 1), (k - 1, k - 1)))
    if not s.is_torgb:
      w_sq = jnp.sum(jnp.square(weight), axis=(0, 1))  # (in, out)
      dcoefs = jax.lax.rsqrt(jnp.square(styles) @ w_sq + 1e-8)  # (N, out)
      x = x * dcoefs.astype(x.dtype)[:, None, None, :]

    if s.is_torgb:
      x = x + bias.astype(x.dtype)
      if self.conv_clamp is not None:
        x = jnp.clip(x, -self.conv_clamp, self.conv_clamp)
    else:
      x = sg3_filters.filtered_lrelu(x, self._resample(), bias, gain=math.sqrt(2), slope=0.2,
                                     clamp=self.conv_clamp)
    if x.shape[1:] != (s.out_size, s.out_size, s.out_channels):
      raise AssertionError(f'{s.name}: output {x.shape}')
    return x


class SynthesisNetwork(nn.Module):
  """ws (N, num_layers + 2, w_dim) -> images (N, res, res, img_channels) times output_scale."""
  w_dim: int
  img_resolution: int
  img_channels: int
  channel_base: int = 32768
  channel_max: int = 512
  num_layers: int = 14
  num_critical: int = 2
  first_cutoff: float = 2
  first_stopband: float = 2 ** 2.1
  last_stopband_rel: float = 2 ** 0.3
  margin_size: int = 10
  output_scale: float = 0.25
  conv_kernel: int = 3
  filter_size: int = 6
  lrelu_upsampling: int = 2
  use_radial_filters: bool = False
  conv_clamp: Optional[float] = None
  magnitude_ema_beta: float = 0.999

  @property
  def num_ws(self) -> int:
    return self.num_layers + 2

  def layout(self) -> tuple[sg3_filters.InputSpec, list[sg3_filters.LayerSpec]]:
    """The input layer and the layer schedule (sizes, rates, cutoffs, filters) of this network."""
    return sg3_filters.schedule(
        self.img_resolution, self.img_channels, self.channel_base, self.channel_max,
        num_layers=self.num_layers, num_critical=self.num_critical,
        first_cutoff=self.first_cutoff, first_stopband=self.first_stopband,
        last_stopband_rel=self.last_stopband_rel, margin_size=self.margin_size,
        conv_kernel=self.conv_kernel, filter_size=self.filter_size,
        lrelu_upsampling=self.lrelu_upsampling, use_radial_filters=self.use_radial_filters)

  @nn.compact
  def __call__(self, ws: Array, transform: Optional[Array] = None,
               update_emas: bool = False) -> Array:
    if ws.shape[1:] != (self.num_ws, self.w_dim):
      raise ValueError(f'ws must be (N, {self.num_ws}, {self.w_dim}), got {ws.shape}')
    ws = ws.astype(jnp.float32)
    first, specs = self.layout()
    x = SynthesisInput(first.channels, first.size, first.sampling_rate, first.bandwidth,
                       name='input')(ws[:, 0], transform)
    for i, spec in enumerate(specs):
      x = SynthesisLayer(spec, conv_clamp=self.conv_clamp,
                         magnitude_ema_beta=self.magnitude_ema_beta, name=spec.name)(
                             x, ws[:, i + 1], update_emas)
    if self.output_scale != 1:
      x = x * np.float32(self.output_scale)
    return x.astype(jnp.float32)


class Generator(nn.Module):
  """Mapping + synthesis. Methods for `G.apply(..., method=...)`: __call__, map, synthesize.

  Config T: the defaults (conv_kernel 3). Config R: conv_kernel=1, use_radial_filters=True and,
  as NVIDIA's train.py does, channel_base and channel_max doubled. `c` may be None or (N, 0)
  when c_dim == 0. Updating the EMAs (w_avg, magnitude_ema) needs `mutable=['buffers']`.
  """
  img_resolution: int
  img_channels: int
  z_dim: int = 512
  c_dim: int = 0
  w_dim: int = 512
  mapping_layers: int = 2
  mapping_lr_multiplier: float = 0.01
  w_avg_beta: float = 0.998
  channel_base: int = 32768
  channel_max: int = 512
  conv_kernel: int = 3
  use_radial_filters: bool = False
  conv_clamp: Optional[float] = None
  magnitude_ema_beta: float = 0.999
  num_layers: int = 14
  num_critical: int = 2
  first_cutoff: float = 2
  first_stopband: float = 2 ** 2.1
  last_stopband_rel: float = 2 ** 0.3
  margin_size: int = 10
  output_scale: float = 0.25
  filter_size: int = 6
  lrelu_upsampling: int = 2

  @property
  def num_ws(self) -> int:
    return self.num_layers + 2

  def setup(self):
    self.mapping = stylegan2.MappingNetwork(
        self.z_dim, self.c_dim, self.w_dim, self.num_ws, num_layers=self.mapping_layers,
        lr_multiplier=self.mapping_lr_multiplier, w_avg_beta=self.w_avg_beta)
    self.synthesis = SynthesisNetwork(
        self.w_dim, self.img_resolution, self.img_channels, channel_base=self.channel_base,
        channel_max=self.channel_max, num_layers=self.num_layers, num_critical=self.num_critical,
        first_cutoff=self.first_cutoff, first_stopband=self.first_stopband,
        last_stopband_rel=self.last_stopband_rel, margin_size=self.margin_size,
        output_scale=self.output_scale, conv_kernel=self.conv_kernel,
        filter_size=self.filter_size, lrelu_upsampling=self.lrelu_upsampling,
        use_radial_filters=self.use_radial_filters, conv_clamp=self.conv_clamp,
        magnitude_ema_beta=self.magnitude_ema_beta)

  def map(self, z: Array, c: Optional[Array], truncation_psi=1.0,
          truncation_cutoff: Optional[int] = None, update_w_avg: bool = False) -> Array:
    """(N, z_dim), (N, c_dim) -> ws (N, num_ws, w_dim); truncation as StyleGAN2's."""
    return self.mapping(z, c, truncation_psi=truncation_psi,
                        truncation_cutoff=truncation_cutoff, update_w_avg=update_w_avg)

  def synthesize(self, ws: Array, transform: Optional[Array] = None,
                 update_emas: bool = False) -> Array:
    """ws (N, num_ws, w_dim) -> images (N, H, W, C); `transform` overrides the stored one."""
    return self.synthesis(ws, transform=transform, update_emas=update_emas)

  def __call__(self, z: Array, c: Optional[Array], truncation_psi=1.0,
               truncation_cutoff: Optional[int] = None, update_w_avg: bool = False,
               transform: Optional[Array] = None, update_emas: bool = False) -> Array:
    ws = self.map(z, c, truncation_psi, truncation_cutoff, update_w_avg or update_emas)
    return self.synthesize(ws, transform=transform, update_emas=update_emas)


class Discriminator(stylegan2.Discriminator):
  """StyleGAN2's residual discriminator, which NVIDIA's StyleGAN3 trains with unchanged (a
  subclass only so that `models.family_of(D)` names the stylegan3 family)."""
