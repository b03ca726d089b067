"""StyleGAN2 (config F of Karras et al. 2020, as in StyleGAN2-ADA): skip generator, residual D.

Module and variable names mirror NVIDIA's StyleGAN2-ADA-PyTorch networks, so their weights map
1:1 (see `gan_jax.tools.nvlabs`):

  Generator: mapping/{embed, fc0..fc{L-1}} + buffer mapping/w_avg;
             synthesis/b{res}/{const (b4 only, stored (4, 4, C) HWC), conv0 (not in b4), conv1,
             torgb}; every conv layer has weight (3, 3, in, out), bias, noise_strength (scalar),
             affine/{weight, bias} and buffer noise_const (res, res).
  Discriminator: b{res}/{fromrgb (first block only), conv0, conv1, skip}, ...,
             b4/{conv, fc, out} (minibatch std has no variables), mapping/... when c_dim > 0.

Variable collections: 'params' (trained) and 'buffers' (w_avg, noise_const). Noise in
noise_mode='random' comes from the 'noise' rng stream.

Which w feeds which layer (neighbouring blocks share one w): b4.conv1 <- ws[0],
b4.torgb <- ws[1]; b8.conv0 <- ws[1], b8.conv1 <- ws[2], b8.torgb <- ws[3]; b16 uses ws[3..5], ...
so num_ws = 2 * log2(resolution) - 2.
"""

import math
from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gan_jax.models import layers

Array = jax.Array
NOISE_MODES = ('random', 'const', 'none')


def channels_at(res: int, channel_base: int, channel_max: int) -> int:
  """Feature maps at a resolution: min(channel_base // res, channel_max)."""
  return min(channel_base // res, channel_max)


def compute_dtype(res: int, img_resolution: int, num_bf16_res: int):
  """bfloat16 for the `num_bf16_res` highest resolutions (never below 8x8), else float32.

  NVIDIA's num_fp16_res rule with bfloat16 in place of float16: bfloat16 has float32's exponent
  range, so it needs none of float16's overflow guards; what keeps it stable is the activation
  clamp (model.conv_clamp, 256 as NVIDIA) on every conv and, in G, the RGB skip sum, which stays
  float32.
  """
  if num_bf16_res <= 0:
    return jnp.float32
  threshold = max(2 ** (_log2_resolution(img_resolution) + 1 - num_bf16_res), 8)
  return jnp.bfloat16 if res >= threshold else jnp.float32


# Rematerialisation policies of the blocks (config.train.remat): 'none' keeps every activation for
# the backward pass; the others wrap each synthesis / discriminator block in `jax.checkpoint` with
# this policy, so only the block's inputs (and what the policy saves) are kept and the rest is
# recomputed when the gradient needs it. The train step uses it inside R1 and path length, whose
# double backward keeps both the forward and the backward activations of the whole network.
REMAT_POLICIES = {
    'none': None,
    'nothing_saveable': jax.checkpoint_policies.nothing_saveable,
    'dots_saveable': jax.checkpoint_policies.dots_saveable,  # convs and matmuls are kept
    'dots_with_no_batch_dims_saveable':
        jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def remat_block(cls, remat: str, static_argnums: tuple = ()):
  """`cls`, or `cls` with every call checkpointed under REMAT_POLICIES[remat] (`static_argnums`
  count `self` as 0). Parameter names do not change."""
  if remat not in REMAT_POLICIES:
    raise ValueError(f'remat={remat!r}; known: {sorted(REMAT_POLICIES)}')
  if remat == 'none':
    return cls
  return nn.remat(cls, policy=REMAT_POLICIES[remat], static_argnums=static_argnums)


def _log2_resolution(img_resolution: int) -> int:
  log2 = int(round(math.log2(img_resolution)))
  if img_resolution < 4 or 2 ** log2 != img_resolution:
    raise ValueError(f'resolution must be a power of two >= 4, got {img_resolution}')
  return log2


# --------------------------------------------------------------------------------------------
# Mapping network.


class MappingNetwork(nn.Module):
  """z (and label c) -> w, broadcast to `num_ws` copies; tracks w_avg for truncation.

  z and the embedded c are each normalized to unit second moment and concatenated; then
  `num_layers` lrelu equalized dense layers with lr multiplier `lr_multiplier` (the label
  embedding itself uses lr multiplier 1). `num_ws=None` returns (N, w_dim) without broadcast and
  `w_avg_beta=None` disables the w_avg buffer (as in D's label mapping).
  """
  z_dim: int
  c_dim: int
  w_dim: int
  num_ws: Optional[int]
  num_layers: int = 8
  lr_multiplier: float = 0.01
  w_avg_beta: Optional[float] = 0.995

  @nn.compact
  def __call__(self, z: Optional[Array], c: Optional[Array], truncation_psi=1.0,
               truncation_cutoff: Optional[int] = None, update_w_avg: bool = False) -> Array:
    parts = []
    if self.z_dim > 0:
      parts.append(layers.normalize_2nd_moment(z.astype(jnp.float32)))
    if self.c_dim > 0:
      y = layers.EqualizedDense(self.w_dim, name='embed')(c.astype(jnp.float32))
      parts.append(layers.normalize_2nd_moment(y))
    if not parts:
      raise ValueError('mapping network needs z_dim > 0 or c_dim > 0')
    x = parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=1)
    for i in range(self.num_layers):
      x = layers.EqualizedDense(self.w_dim, lr_multiplier=self.lr_multiplier,
                                activation='lrelu', name=f'fc{i}')(x)

    w_avg = None
    if self.w_avg_beta is not None:
      w_avg = self.variable('buffers', 'w_avg', jnp.zeros, (self.w_dim,), jnp.float32)
      if update_w_avg and not self.is_initializing():
        # w_avg <- lerp(batch mean, w_avg, beta); NVIDIA updates before truncating.
        mean = jax.lax.stop_gradient(x).mean(axis=0)
        w_avg.value = mean + (w_avg.value - mean) * self.w_avg_beta
    if self.num_ws is not None:
      x = jnp.broadcast_to(x[:, None, :], (x.shape[0], self.num_ws, self.w_dim))

    if isinstance(truncation_psi, (int, float)) and truncation_psi == 1:
      return x
    if w_avg is None:
      raise ValueError('truncation needs the w_avg buffer (w_avg_beta is None)')
    avg = w_avg.value
    truncated = avg + truncation_psi * (x - avg)
    if truncation_cutoff is None or self.num_ws is None:
      return truncated
    mask = (np.arange(self.num_ws) < truncation_cutoff)[None, :, None]
    return jnp.where(mask, truncated, x)


# --------------------------------------------------------------------------------------------
# Synthesis network.


class SynthesisLayer(nn.Module):
  """Modulated 3x3 conv (optionally up x2), per-pixel noise, bias, lrelu, optional clamp."""
  features: int
  resolution: int
  kernel_size: int = 3
  up: int = 1
  use_noise: bool = True
  activation: str = 'lrelu'
  conv_clamp: Optional[float] = None
  resample_filter: Sequence[float] = (1, 3, 3, 1)

  @nn.compact
  def __call__(self, x: Array, w: Array, noise_mode: str = 'random') -> Array:
    if noise_mode not in NOISE_MODES:
      raise ValueError(f'noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}')
    k, in_channels, n = self.kernel_size, x.shape[-1], x.shape[0]
    styles = layers.EqualizedDense(in_channels, bias_init=1.0, name='affine')(w)
    weight = self.param('weight', jax.random.normal, (k, k, in_channels, self.features))
    f = layers.setup_filter(self.resample_filter) if self.up > 1 else None
    x = layers.modulated_conv2d(x, weight, styles, demodulate=True, up=self.up, padding=k // 2,
                                resample_filter=f)
    if self.use_noise:
      res = self.resolution
      noise_const = self.variable(
          'buffers', 'noise_const', lambda: jax.random.normal(self.make_rng('params'), (res, res)))
      strength = self.param('noise_strength', nn.initializers.zeros, ())
      if noise_mode == 'random':
        # At init without a 'noise' stream, borrow 'params' (the values are thrown away anyway).
        stream = 'noise' if (self.has_rng('noise') or not self.is_initializing()) else 'params'
        noise = jax.random.normal(self.make_rng(stream), (n, res, res, 1), x.dtype)
        x = x + noise * strength.astype(x.dtype)
      elif noise_mode == 'const':
        x = x + (noise_const.value * strength)[None, :, :, None].astype(x.dtype)
    bias = self.param('bias', nn.initializers.zeros, (self.features,))
    return layers.bias_act(x, bias, self.activation, clamp=self.conv_clamp)


class ToRGBLayer(nn.Module):
  """Modulated 1x1 conv without demodulation (styles scaled by 1/sqrt(in)), bias, clamp."""
  features: int
  kernel_size: int = 1
  conv_clamp: Optional[float] = None

  @nn.compact
  def __call__(self, x: Array, w: Array) -> Array:
    k, in_channels = self.kernel_size, x.shape[-1]
    styles = layers.EqualizedDense(in_channels, bias_init=1.0, name='affine')(w)
    styles = styles * np.float32(1 / math.sqrt(in_channels * k * k))
    weight = self.param('weight', jax.random.normal, (k, k, in_channels, self.features))
    x = layers.modulated_conv2d(x, weight, styles, demodulate=False, padding=k // 2)
    bias = self.param('bias', nn.initializers.zeros, (self.features,))
    return layers.bias_act(x, bias, 'linear', clamp=self.conv_clamp)


class SynthesisBlock(nn.Module):
  """One resolution of the skip generator. The first block (x is None) starts from `const`.

  `ws` holds this block's ws: (N, num_conv + 1, w_dim), the last one for torgb.
  """
  features: int
  resolution: int
  img_channels: int
  conv_clamp: Optional[float] = None
  resample_filter: Sequence[float] = (1, 3, 3, 1)
  dtype: jnp.dtype = jnp.float32  # of the feature maps; the RGB skip image stays float32

  @nn.compact
  def __call__(self, x: Optional[Array], img: Optional[Array], ws: Array,
               noise_mode: str = 'random') -> tuple[Array, Array]:
    res = self.resolution
    conv_kwargs = dict(features=self.features, resolution=res, conv_clamp=self.conv_clamp,
                       resample_filter=self.resample_filter)
    if x is None:
      const = self.param('const', jax.random.normal, (res, res, self.features))
      x = jnp.broadcast_to(const[None].astype(self.dtype), (ws.shape[0], res, res, self.features))
      x = SynthesisLayer(**conv_kwargs, name='conv1')(x, ws[:, 0], noise_mode)
      i = 1
    else:
      x = x.astype(self.dtype)
      x = SynthesisLayer(**conv_kwargs, up=2, name='conv0')(x, ws[:, 0], noise_mode)
      x = SynthesisLayer(**conv_kwargs, name='conv1')(x, ws[:, 1], noise_mode)
      i = 2
    if img is not None:
      img = layers.upsample2d(img, layers.setup_filter(self.resample_filter))
    y = ToRGBLayer(self.img_channels, conv_clamp=self.conv_clamp, name='torgb')(x, ws[:, i])
    y = y.astype(jnp.float32)
    img = y if img is None else img + y
    return x, img


class SynthesisNetwork(nn.Module):
  """ws (N, num_ws, w_dim) -> images (N, res, res, img_channels); skip architecture."""
  w_dim: int
  img_resolution: int
  img_channels: int
  channel_base: int = 32768
  channel_max: int = 512
  conv_clamp: Optional[float] = None
  num_bf16_res: int = 0  # the highest resolutions computed in bfloat16 (0: all float32)
  remat: str = 'none'  # REMAT_POLICIES: checkpoint every block

  @property
  def num_ws(self) -> int:
    return 2 * _log2_resolution(self.img_resolution) - 2

  @nn.compact
  def __call__(self, ws: Array, noise_mode: str = 'random') -> Array:
    if ws.shape[1:] != (self.num_ws, self.w_dim):
      raise ValueError(f'ws must be (N, {self.num_ws}, {self.w_dim}), got {ws.shape}')
    ws = ws.astype(jnp.float32)
    x = img = None
    w_idx = 0
    for log2 in range(2, _log2_resolution(self.img_resolution) + 1):
      res = 2 ** log2
      num_conv = 1 if res == 4 else 2
      block = remat_block(SynthesisBlock, self.remat, static_argnums=(4,))(
          channels_at(res, self.channel_base, self.channel_max), res, self.img_channels,
          conv_clamp=self.conv_clamp,
          dtype=compute_dtype(res, self.img_resolution, self.num_bf16_res), name=f'b{res}')
      x, img = block(x, img, ws[:, w_idx:w_idx + num_conv + 1], noise_mode)
      w_idx += num_conv
    return img


class Generator(nn.Module):
  """Mapping + synthesis. Methods for `G.apply(..., method=...)`: __call__, map, synthesize.

  `c` may be None or an (N, 0) array when c_dim == 0. update_w_avg=True needs
  `mutable=['buffers']`.
  """
  img_resolution: int
  img_channels: int
  z_dim: int = 512
  c_dim: int = 0
  w_dim: int = 512
  mapping_layers: int = 8
  mapping_lr_multiplier: float = 0.01
  channel_base: int = 32768
  channel_max: int = 512
  conv_clamp: Optional[float] = None
  num_bf16_res: int = 0
  w_avg_beta: float = 0.995
  remat: str = 'none'  # REMAT_POLICIES, for the synthesis blocks

  @property
  def num_ws(self) -> int:
    return 2 * _log2_resolution(self.img_resolution) - 2

  def setup(self):
    self.mapping = MappingNetwork(self.z_dim, self.c_dim, self.w_dim, self.num_ws,
                                  num_layers=self.mapping_layers,
                                  lr_multiplier=self.mapping_lr_multiplier,
                                  w_avg_beta=self.w_avg_beta)
    self.synthesis = SynthesisNetwork(self.w_dim, self.img_resolution, self.img_channels,
                                      channel_base=self.channel_base,
                                      channel_max=self.channel_max, conv_clamp=self.conv_clamp,
                                      num_bf16_res=self.num_bf16_res, remat=self.remat)

  def map(self, z: Array, c: Optional[Array], truncation_psi=1.0,
          truncation_cutoff: Optional[int] = None, update_w_avg: bool = False) -> Array:
    """(N, z_dim), (N, c_dim) -> ws (N, num_ws, w_dim).

    truncation_psi may be traced (a Python 1 skips truncation exactly); truncation_cutoff is a
    static int (truncate ws[:, :cutoff]) or None (all).
    """
    return self.mapping(z, c, truncation_psi=truncation_psi,
                        truncation_cutoff=truncation_cutoff, update_w_avg=update_w_avg)

  def synthesize(self, ws: Array, noise_mode: str = 'random') -> Array:
    """ws (N, num_ws, w_dim) -> images (N, H, W, C)."""
    return self.synthesis(ws, noise_mode=noise_mode)

  def __call__(self, z: Array, c: Optional[Array], truncation_psi=1.0,
               truncation_cutoff: Optional[int] = None, noise_mode: str = 'random',
               update_w_avg: bool = False) -> Array:
    ws = self.map(z, c, truncation_psi, truncation_cutoff, update_w_avg)
    return self.synthesize(ws, noise_mode)


# --------------------------------------------------------------------------------------------
# Discriminator.


class DiscriminatorBlock(nn.Module):
  """Residual D block: [fromrgb], conv0 3x3, conv1 3x3 down 2 (gain sqrt .5) + skip 1x1 down 2."""
  tmp_channels: int
  out_channels: int
  first: bool
  conv_clamp: Optional[float] = None
  resample_filter: Sequence[float] = (1, 3, 3, 1)
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Optional[Array], img: Array) -> Array:
    conv = lambda *a, **k: layers.EqualizedConv2d(*a, conv_clamp=self.conv_clamp, **k)
    if self.first:
      x = conv(self.tmp_channels, 1, activation='lrelu', name='fromrgb')(img.astype(self.dtype))
    x = x.astype(self.dtype)
    s = math.sqrt(0.5)
    y = layers.EqualizedConv2d(self.out_channels, 1, down=2, use_bias=False, gain=s,
                               resample_filter=self.resample_filter, name='skip')(x)
    x = conv(self.tmp_channels, 3, activation='lrelu', name='conv0')(x)
    x = conv(self.out_channels, 3, down=2, activation='lrelu', gain=s,
             resample_filter=self.resample_filter, name='conv1')(x)
    return y + x


class DiscriminatorEpilogue(nn.Module):
  """4x4 head: minibatch std, conv 3x3, fc, out; projection onto cmap when conditional.

  The fc layer flattens in NVIDIA's (C, H, W) order, so imported weights need no permutation.
  `fromrgb` exists only for img_resolution 4 (no blocks before the head; not in NVIDIA's code).
  """
  channels: int
  cmap_dim: int
  mbstd_group_size: Optional[int] = 4
  mbstd_num_channels: int = 1
  conv_clamp: Optional[float] = None
  has_fromrgb: bool = False

  @nn.compact
  def __call__(self, x: Optional[Array], img: Array, cmap: Optional[Array]) -> Array:
    if self.has_fromrgb:
      x = layers.EqualizedConv2d(self.channels, 1, activation='lrelu', conv_clamp=self.conv_clamp,
                                 name='fromrgb')(img)
    if self.mbstd_num_channels > 0:
      x = layers.minibatch_std(x, self.mbstd_group_size, self.mbstd_num_channels)
    x = layers.EqualizedConv2d(self.channels, 3, activation='lrelu', conv_clamp=self.conv_clamp,
                               name='conv')(x)
    x = jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)
    x = layers.EqualizedDense(self.channels, activation='lrelu', name='fc')(x)
    x = layers.EqualizedDense(self.cmap_dim if self.cmap_dim > 0 else 1, name='out')(x)
    if self.cmap_dim > 0:
      x = jnp.sum(x * cmap, axis=1, keepdims=True) * np.float32(1 / math.sqrt(self.cmap_dim))
    return x


class Discriminator(nn.Module):
  """Residual StyleGAN2 discriminator; (img (N, H, W, C), c (N, c_dim)) -> logits (N,).

  Conditioning is the projection discriminator of StyleGAN2-ADA: a label mapping network
  (z_dim 0, `mapping_layers` lrelu layers with lr multiplier `mapping_lr_multiplier`, which are
  NVIDIA's MappingNetwork defaults 8 and 0.01; no w_avg) gives cmap of width cmap_dim (default:
  channels at 4x4), and the logit is sum(out * cmap) / sqrt(cmap_dim).
  """
  img_resolution: int
  img_channels: int
  c_dim: int = 0
  channel_base: int = 32768
  channel_max: int = 512
  conv_clamp: Optional[float] = None
  num_bf16_res: int = 0  # the highest resolutions computed in bfloat16 (0: all float32)
  mbstd_group_size: Optional[int] = 4
  mbstd_num_channels: int = 1
  cmap_dim: Optional[int] = None
  mapping_layers: int = 8
  mapping_lr_multiplier: float = 0.01
  remat: str = 'none'  # REMAT_POLICIES, for the blocks above 4x4

  @nn.compact
  def __call__(self, img: Array, c: Optional[Array] = None) -> Array:
    log2 = _log2_resolution(self.img_resolution)
    ch = lambda res: channels_at(res, self.channel_base, self.channel_max)
    if img.shape[1:] != (self.img_resolution, self.img_resolution, self.img_channels):
      raise ValueError(f'expected (N, {self.img_resolution}, {self.img_resolution}, '
                       f'{self.img_channels}) images, got {img.shape}')
    img = img.astype(jnp.float32)
    x = None
    for res in [2 ** i for i in range(log2, 2, -1)]:
      x = remat_block(DiscriminatorBlock, self.remat)(
          ch(res), ch(res // 2), first=res == self.img_resolution,
          conv_clamp=self.conv_clamp,
          dtype=compute_dtype(res, self.img_resolution, self.num_bf16_res), name=f'b{res}')(x, img)
    if x is not None:
      x = x.astype(jnp.float32)  # the 4x4 epilogue (minibatch std, fc, out) runs in float32
    cmap_dim = 0
    cmap = None
    if self.c_dim > 0:
      cmap_dim = ch(4) if self.cmap_dim is None else self.cmap_dim
      cmap = MappingNetwork(0, self.c_dim, cmap_dim, num_ws=None, num_layers=self.mapping_layers,
                            lr_multiplier=self.mapping_lr_multiplier, w_avg_beta=None,
                            name='mapping')(None, c)
    x = DiscriminatorEpilogue(ch(4), cmap_dim, self.mbstd_group_size, self.mbstd_num_channels,
                              conv_clamp=self.conv_clamp, has_fromrgb=x is None, name='b4')(
                                  x, img, cmap)
    return x[:, 0]
