"""Progressive growing of GANs (ProGAN, Karras et al. 2018), with a traced fade-in factor.

The paper's networks (its Table 2), as built here:

* Generator: z (pixel-normalised) -> dense to 4x4 -> conv 3x3; then per resolution 8..R:
  nearest-neighbour upsampling x2, two 3x3 convs. Every conv is followed by leaky ReLU (0.2) and
  pixelwise feature normalisation (`layers.pixel_norm`, eps 1e-8). `b{res}/torgb` is a linear
  1x1 conv.
* Discriminator: `fromrgb{res}` 1x1 conv + lrelu; per resolution R..8 two 3x3 convs with lrelu
  and 2x2 average pooling; the 4x4 head takes the minibatch standard deviation (one feature map
  averaged over channels and pixels, group size 4: `layers.minibatch_std` with one channel),
  a 3x3 conv, a dense layer and a linear dense output.
* Equalized learning rate everywhere (`layers.EqualizedDense` / `layers.EqualizedConv2d`: N(0, 1)
  weights scaled at run time by 1/sqrt(fan_in), the activation gain sqrt(2) after lrelu).
* Feature maps: channels at resolution r = min(channel_base // r, channel_max). The official
  code's nf(stage) = min(fmap_base / 2**stage, fmap_max) with fmap_base 8192, fmap_decay 1 and
  stage = log2(r) - 1 is the same schedule with channel_base 16384 (the default here): 512 up to
  32x32, then 256, 128, 64, 32, 16 at 64..1024.
* Labels (c_dim > 0): concatenated to z before the pixel norm, as the official code does; D
  answers with one output per class and picks the label's (StyleGAN's "label switch").

Differences from the official TensorFlow code, none of which changes what the networks can
represent: the official 4x4 dense carries an extra gain of 1/4 and wscale multiplies the weights
before the bias instead of scaling the activation after it (both only rescale the biases'
effective learning rate, and a pixel norm follows); the official D fuses conv + pooling from
128x128 up (lrelu after pooling); D's head flattens NHWC, not NCHW.

Growing. `stage` is the current output resolution, a static Python int (one compiled function
per stage); `alpha` in [0, 1] is a traced scalar (no recompilation while it moves). At stage r:

  G: img = lerp(upsample_nearest(b{r/2}.torgb(x_{r/2})), b{r}.torgb(x_r), alpha)
  D: x   = lerp(fromrgb{r/2}(avg_pool(img)), block_r(fromrgb{r}(img)), alpha), then blocks r/2..8

so alpha = 1 is exactly the network built for resolution r (with the parameter subset named
b4..b{r}, and in D fromrgb4..fromrgb{r}), and alpha = 0 is the stage-r/2 network seen
through nearest upsampling (G) or 2x2 pooling (D); `lerp`, `upsample_nearest` and the reals'
`real_images_at` are in `gan_jax.models.layers`, shared with `stylegan`. The parameters of every
stage exist from init: `init` must run at the full resolution (stage None), so the
parameter tree and its checkpoint paths never change while the network grows.
"""

from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from gan_jax.models import layers
from gan_jax.models.stylegan2 import channels_at, compute_dtype

Array = jax.Array


# --------------------------------------------------------------------------------------------
# Generator.


class GeneratorBlock(nn.Module):
  """One resolution: (4x4) dense from the latent + conv, or (r > 4) upsample + conv0 + conv1;
  each conv followed by lrelu and pixel norm. Returns (features, torgb(features) in float32)."""
  features: int
  resolution: int
  img_channels: int
  dtype: jnp.dtype = jnp.float32  # of the feature maps

  @nn.compact
  def __call__(self, x: Array) -> tuple[Array, Array]:
    conv = lambda name: layers.EqualizedConv2d(self.features, 3, activation='lrelu', name=name)
    x = x.astype(self.dtype)
    if self.resolution == 4:
      x = layers.EqualizedDense(16 * self.features, activation='lrelu', name='dense')(x)
      x = layers.pixel_norm(x.reshape(x.shape[0], 4, 4, self.features))
      x = layers.pixel_norm(conv('conv')(x))
    else:
      x = layers.upsample_nearest(x)
      x = layers.pixel_norm(conv('conv0')(x))
      x = layers.pixel_norm(conv('conv1')(x))
    return x, layers.EqualizedConv2d(self.img_channels, 1, name='torgb')(x).astype(jnp.float32)


class Generator(nn.Module):
  """ProGAN generator: (z (N, z_dim), c (N, c_dim) or None) -> images (N, stage, stage, C).

  `stage` (static int resolution, None: img_resolution) and `alpha` (traced) as in the module
  docstring. `num_bf16_res`: the highest resolutions computed in bfloat16 (`stylegan2`'s rule;
  the images stay float32).
  """
  img_resolution: int
  img_channels: int
  z_dim: int = 512
  c_dim: int = 0
  channel_base: int = 16384
  channel_max: int = 512
  num_bf16_res: int = 0

  @nn.compact
  def __call__(self, z: Array, c: Optional[Array] = None, stage: Optional[int] = None,
               alpha=1.0) -> Array:
    stage = layers.check_stage(stage, self.img_resolution, self.is_initializing())
    if z.shape[1:] != (self.z_dim,):
      raise ValueError(f'z must be (N, {self.z_dim}), got {z.shape}')
    x = z.astype(jnp.float32)
    if self.c_dim > 0:
      if c is None or c.shape != (z.shape[0], self.c_dim):
        raise ValueError(f'c must be (N, {self.c_dim}) labels, got '
                         f'{None if c is None else c.shape}')
      x = jnp.concatenate([x, c.astype(jnp.float32)], axis=1)
    x = layers.pixel_norm(x)
    img = prev = None
    for log2 in range(2, layers.log2_resolution(stage) + 1):
      res = 2 ** log2
      x, rgb = GeneratorBlock(channels_at(res, self.channel_base, self.channel_max), res,
                              self.img_channels,
                              dtype=compute_dtype(res, self.img_resolution, self.num_bf16_res),
                              name=f'b{res}')(x)
      prev, img = img, rgb  # only the last two are used; XLA drops the other torgb convs
    if stage == 4:
      return img
    return layers.lerp(layers.upsample_nearest(prev), img, alpha)


# --------------------------------------------------------------------------------------------
# Discriminator.


class DiscriminatorBlock(nn.Module):
  """One resolution r > 4: conv0 3x3 (channels at r), [blur], conv1 3x3 (channels at r / 2), each
  with lrelu, then 2x2 average pooling."""
  tmp_channels: int
  out_channels: int
  conv_clamp: Optional[float] = None
  blur_filter: Optional[Sequence[float]] = None
  dtype: jnp.dtype = jnp.float32  # of the feature maps; the output is float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    conv = lambda ch, name: layers.EqualizedConv2d(ch, 3, activation='lrelu',
                                                   conv_clamp=self.conv_clamp, name=name)
    x = conv(self.tmp_channels, 'conv0')(x.astype(self.dtype))
    if self.blur_filter is not None:
      f = layers.setup_filter(self.blur_filter)
      x = layers.upfirdn2d(x, f, padding=(f.shape[0] - 1) // 2)
    x = conv(self.out_channels, 'conv1')(x)
    return layers.downsample_avg(x).astype(jnp.float32)


class DiscriminatorHead(nn.Module):
  """4x4: minibatch std, conv 3x3, dense, linear output (one per class when conditional)."""
  channels: int
  fc_channels: int
  c_dim: int = 0
  mbstd_group_size: Optional[int] = 4
  mbstd_num_channels: int = 1
  conv_clamp: Optional[float] = None

  @nn.compact
  def __call__(self, x: Array, c: Optional[Array]) -> Array:
    if self.mbstd_num_channels > 0:
      x = layers.minibatch_std(x, self.mbstd_group_size, self.mbstd_num_channels)
    x = layers.EqualizedConv2d(self.channels, 3, activation='lrelu', conv_clamp=self.conv_clamp,
                               name='conv')(x)
    x = layers.EqualizedDense(self.fc_channels, activation='lrelu', name='fc')(
        x.reshape(x.shape[0], -1))
    x = layers.EqualizedDense(max(self.c_dim, 1), name='out')(x)
    if self.c_dim > 0:
      x = jnp.sum(x * c.astype(x.dtype), axis=1, keepdims=True)
    return x[:, 0]


class Discriminator(nn.Module):
  """ProGAN discriminator: (img (N, stage, stage, C), c) -> scores (N,).

  `blur_filter` (None here) adds a FIR blur before the downsampling conv, StyleGAN's variant.
  `num_bf16_res`: the highest resolutions computed in bfloat16 (`stylegan2`'s rule).
  """
  img_resolution: int
  img_channels: int
  c_dim: int = 0
  channel_base: int = 16384
  channel_max: int = 512
  conv_clamp: Optional[float] = None
  mbstd_group_size: Optional[int] = 4
  mbstd_num_channels: int = 1
  blur_filter: Optional[Sequence[float]] = None
  num_bf16_res: int = 0

  @nn.compact
  def __call__(self, img: Array, c: Optional[Array] = None, stage: Optional[int] = None,
               alpha=1.0) -> Array:
    initializing = self.is_initializing()
    stage = layers.check_stage(stage, self.img_resolution, initializing)
    if img.shape[1:] != (stage, stage, self.img_channels):
      raise ValueError(f'expected (N, {stage}, {stage}, {self.img_channels}) images at stage '
                       f'{stage}, got {img.shape}')
    if self.c_dim > 0 and (c is None or c.shape != (img.shape[0], self.c_dim)):
      raise ValueError(f'c must be (N, {self.c_dim}) labels, got {None if c is None else c.shape}')
    ch = lambda res: channels_at(res, self.channel_base, self.channel_max)
    img = img.astype(jnp.float32)
    dtype = lambda res: compute_dtype(res, self.img_resolution, self.num_bf16_res)
    fromrgb = lambda res, image: layers.EqualizedConv2d(
        ch(res), 1, activation='lrelu', conv_clamp=self.conv_clamp, name=f'fromrgb{res}')(
            image.astype(dtype(res))).astype(jnp.float32)
    if initializing:  # create every stage's fromrgb (only the current one and the one below run)
      for log2 in range(2, layers.log2_resolution(stage) - 1):
        fromrgb(2 ** log2, layers.downsample_avg(img, stage // 2 ** log2))
    x = fromrgb(stage, img)
    for log2 in range(layers.log2_resolution(stage), 2, -1):
      res = 2 ** log2
      x = DiscriminatorBlock(ch(res), ch(res // 2), conv_clamp=self.conv_clamp,
                             blur_filter=self.blur_filter, dtype=dtype(res), name=f'b{res}')(x)
      if res == stage:
        x = layers.lerp(fromrgb(res // 2, layers.downsample_avg(img)), x, alpha)
    return DiscriminatorHead(ch(4), ch(2), self.c_dim, self.mbstd_group_size,
                             self.mbstd_num_channels, conv_clamp=self.conv_clamp,
                             name='b4')(x, c)
