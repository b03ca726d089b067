"""The style-based generator (StyleGAN, Karras et al. 2019), growable like ProGAN.

As in the paper (its Fig. 1 and Sec. 2-3), with the official code's defaults:

* Mapping network: z pixel-normalised, 8 lrelu dense layers of width w_dim with learning-rate
  multiplier 0.01 (StyleGAN2's `MappingNetwork`, shared; labels are embedded and concatenated).
  It tracks w_avg (buffer, w_avg <- lerp(batch mean of w, w_avg, 0.995)) for the truncation
  trick w' = w_avg + psi * (w - w_avg), applied to the first `truncation_cutoff` ws only (8 by
  default as in the official code, i.e. the layers of resolutions 4..32).
* Synthesis network: a learned constant 4x4 input (initialised to ones); per resolution r > 4
  nearest-neighbour upsampling, a 3x3 conv and the binomial [1, 2, 1] blur, then a second 3x3
  conv (the 4x4 block has one conv after the constant). After the constant and after every conv
  comes the layer epilogue: per-pixel noise times a learned per-channel strength (init 0), bias,
  lrelu 0.2, instance normalisation, then AdaIN's style: y = x * scale(w) + bias(w), where
  scale and bias are equalized dense layers of w (`affine_scale` with bias init 1,
  `affine_bias` with bias init 0). Each epilogue has its own w: num_ws = 2 * log2(R) - 2 and
  layer i (b4: 0, 1; b8: 2, 3; ...) reads ws[:, i], so style mixing is `mix_styles` at a
  crossover layer.
* `b{res}/torgb`: linear 1x1 conv per resolution; with `stage`/`alpha` the output fades in exactly
  like the ProGAN generator (`gan_jax.models.progan`), and stage None / alpha 1 is the fixed-
  resolution network.
* Discriminator: the ProGAN discriminator with the [1, 2, 1] blur before each downsampling conv.
  (The official code pools right after that conv, before bias and lrelu; here, as in ProGAN's
  Table 2, lrelu comes first.)
* Feature maps as ProGAN: channels at r = min(channel_base // r, channel_max), channel_base 16384
  being the official fmap_base 8192 (512 channels up to 32x32, 16 at 1024).

Noise: noise_mode 'random' draws from the 'noise' rng stream, 'const' uses the buffer
noise_const (res, res) of each layer, 'none' adds nothing (as `stylegan2`). Collections:
'params' and 'buffers' (w_avg, noise_const). Init at the full resolution (stage None).
"""

from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from gan_jax.models import layers
from gan_jax.models import progan
from gan_jax.models.stylegan2 import NOISE_MODES, MappingNetwork, channels_at, compute_dtype

Array = jax.Array
BLUR = (1, 2, 1)


def instance_norm(x: Array, eps: float = 1e-8) -> Array:
  """Per sample and channel: subtract the spatial mean, divide by the spatial RMS (+ eps);
  computed in float32, returned in x's dtype."""
  y = x.astype(jnp.float32)
  y = y - jnp.mean(y, axis=(1, 2), keepdims=True)
  y = y * jax.lax.rsqrt(jnp.mean(jnp.square(y), axis=(1, 2), keepdims=True) + eps)
  return y.astype(x.dtype)


def mix_styles(ws: Array, ws2: Array, crossover) -> Array:
  """Style mixing: layers [0, crossover) read ws, layers [crossover, num_ws) read ws2.

  `crossover` may be traced; crossover >= num_ws leaves ws unchanged.
  """
  if ws.shape != ws2.shape:
    raise ValueError(f'ws and ws2 must have the same shape, got {ws.shape} and {ws2.shape}')
  mix = (jnp.arange(ws.shape[1]) >= crossover)[None, :, None]
  return jnp.where(mix, ws2, ws)


class LayerEpilogue(nn.Module):
  """noise * strength, bias, lrelu, [clamp], instance norm, AdaIN style from w."""
  resolution: int
  conv_clamp: Optional[float] = None

  @nn.compact
  def __call__(self, x: Array, w: Array, noise_mode: str) -> Array:
    if noise_mode not in NOISE_MODES:
      raise ValueError(f'noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}')
    n, res, ch = x.shape[0], self.resolution, x.shape[-1]
    noise_const = self.variable(
        'buffers', 'noise_const', lambda: jax.random.normal(self.make_rng('params'), (res, res)))
    strength = self.param('noise_strength', nn.initializers.zeros, (ch,))
    if noise_mode == 'random':
      # At init without a 'noise' stream, borrow 'params' (the values are thrown away anyway).
      stream = 'noise' if (self.has_rng('noise') or not self.is_initializing()) else 'params'
      noise = jax.random.normal(self.make_rng(stream), (n, res, res, 1), x.dtype)
      x = x + noise * strength.astype(x.dtype)
    elif noise_mode == 'const':
      x = x + (noise_const.value[None, :, :, None] * strength).astype(x.dtype)
    bias = self.param('bias', nn.initializers.zeros, (ch,))
    x = instance_norm(layers.bias_act(x, bias, 'lrelu', clamp=self.conv_clamp))
    scale = layers.EqualizedDense(ch, bias_init=1.0, name='affine_scale')(w)
    shift = layers.EqualizedDense(ch, name='affine_bias')(w)
    return x * scale.astype(x.dtype)[:, None, None, :] + shift.astype(x.dtype)[:, None, None, :]


class SynthesisBlock(nn.Module):
  """One resolution; ws (N, 2, w_dim) for its two epilogues. Returns (features, torgb(features)
  in float32)."""
  features: int
  resolution: int
  img_channels: int
  conv_clamp: Optional[float] = None
  blur_filter: Sequence[float] = BLUR
  dtype: jnp.dtype = jnp.float32  # of the feature maps

  @nn.compact
  def __call__(self, x: Optional[Array], ws: Array, noise_mode: str) -> tuple[Array, Array]:
    res = self.resolution
    conv = lambda name: layers.EqualizedConv2d(self.features, 3, use_bias=False, name=name)
    epilogue = lambda name: LayerEpilogue(res, self.conv_clamp, name=name)
    if x is None:
      const = self.param('const', nn.initializers.ones, (res, res, self.features))
      x = jnp.broadcast_to(const[None].astype(self.dtype), (ws.shape[0], res, res, self.features))
      x = epilogue('epilogue0')(x, ws[:, 0], noise_mode)
      x = conv('conv')(x)
    else:
      x = conv('conv0')(layers.upsample_nearest(x.astype(self.dtype)))
      f = layers.setup_filter(self.blur_filter)
      x = layers.upfirdn2d(x, f, padding=(f.shape[0] - 1) // 2)
      x = epilogue('epilogue0')(x, ws[:, 0], noise_mode)
      x = conv('conv1')(x)
    x = epilogue('epilogue1')(x, ws[:, 1], noise_mode)
    rgb = layers.EqualizedConv2d(self.img_channels, 1, conv_clamp=self.conv_clamp, name='torgb')(x)
    return x, rgb.astype(jnp.float32)


class SynthesisNetwork(nn.Module):
  """ws (N, num_ws, w_dim) -> images (N, stage, stage, img_channels)."""
  w_dim: int
  img_resolution: int
  img_channels: int
  channel_base: int = 16384
  channel_max: int = 512
  conv_clamp: Optional[float] = None
  num_bf16_res: int = 0  # the highest resolutions computed in bfloat16 (images stay float32)

  @property
  def num_ws(self) -> int:
    return 2 * layers.log2_resolution(self.img_resolution) - 2

  @nn.compact
  def __call__(self, ws: Array, noise_mode: str = 'random', stage: Optional[int] = None,
               alpha=1.0) -> Array:
    stage = layers.check_stage(stage, self.img_resolution, self.is_initializing())
    if ws.shape[1:] != (self.num_ws, self.w_dim):
      raise ValueError(f'ws must be (N, {self.num_ws}, {self.w_dim}), got {ws.shape}')
    ws = ws.astype(jnp.float32)
    x = img = prev = None
    for log2 in range(2, layers.log2_resolution(stage) + 1):
      res = 2 ** log2
      i = 2 * log2 - 4
      x, rgb = SynthesisBlock(channels_at(res, self.channel_base, self.channel_max), res,
                              self.img_channels, conv_clamp=self.conv_clamp,
                              dtype=compute_dtype(res, self.img_resolution, self.num_bf16_res),
                              name=f'b{res}')(x, ws[:, i:i + 2], noise_mode)
      prev, img = img, rgb  # only the last two are used; XLA drops the other torgb convs
    if stage == 4:
      return img
    return layers.lerp(layers.upsample_nearest(prev), img, alpha)


class Generator(nn.Module):
  """Mapping + synthesis. Methods for `G.apply(..., method=...)`: __call__, map, synthesize
  (the same signatures as `stylegan2.Generator`, plus `stage` and `alpha` for growing).

  update_w_avg=True needs `mutable=['buffers']`.
  """
  img_resolution: int
  img_channels: int
  z_dim: int = 512
  c_dim: int = 0
  w_dim: int = 512
  mapping_layers: int = 8
  mapping_lr_multiplier: float = 0.01
  channel_base: int = 16384
  channel_max: int = 512
  conv_clamp: Optional[float] = None
  num_bf16_res: int = 0
  w_avg_beta: float = 0.995

  @property
  def num_ws(self) -> int:
    return 2 * layers.log2_resolution(self.img_resolution) - 2

  def setup(self):
    self.mapping = MappingNetwork(self.z_dim, self.c_dim, self.w_dim, self.num_ws,
                                  num_layers=self.mapping_layers,
                                  lr_multiplier=self.mapping_lr_multiplier,
                                  w_avg_beta=self.w_avg_beta)
    self.synthesis = SynthesisNetwork(self.w_dim, self.img_resolution, self.img_channels,
                                      channel_base=self.channel_base,
                                      channel_max=self.channel_max, conv_clamp=self.conv_clamp,
                                      num_bf16_res=self.num_bf16_res)

  def map(self, z: Array, c: Optional[Array], truncation_psi=1.0,
          truncation_cutoff: Optional[int] = 8, update_w_avg: bool = False) -> Array:
    """(N, z_dim), (N, c_dim) -> ws (N, num_ws, w_dim); psi may be traced, the cutoff is a
    static int (truncate ws[:, :cutoff]) or None (all)."""
    return self.mapping(z, c, truncation_psi=truncation_psi,
                        truncation_cutoff=truncation_cutoff, update_w_avg=update_w_avg)

  def synthesize(self, ws: Array, noise_mode: str = 'random', stage: Optional[int] = None,
                 alpha=1.0) -> Array:
    """ws (N, num_ws, w_dim) -> images (N, stage, stage, C); stage static, alpha traced."""
    return self.synthesis(ws, noise_mode=noise_mode, stage=stage, alpha=alpha)

  def __call__(self, z: Array, c: Optional[Array], truncation_psi=1.0,
               truncation_cutoff: Optional[int] = 8, noise_mode: str = 'random',
               update_w_avg: bool = False, stage: Optional[int] = None, alpha=1.0) -> Array:
    ws = self.map(z, c, truncation_psi, truncation_cutoff, update_w_avg)
    return self.synthesize(ws, noise_mode, stage, alpha)


class Discriminator(progan.Discriminator):
  """The ProGAN discriminator with the binomial blur before each downsampling conv."""
  blur_filter: Optional[Sequence[float]] = BLUR
