"""An image encoder into a generator's W+ (pSp / e4e style), trained with the generator frozen.

A residual CNN reads the image down to 4x4 and keeps its feature maps at every resolution; as in
pSp (Richardson et al. 2021) the ws are read in three groups from three depths: the coarse ws
(the first third: G's lowest resolutions) from the deepest map, the middle ws from the map of
twice that size, the fine ws from the map of four times that size (pSp's 16x16 / 32x32 / 64x64
of a 256 input; here resolution/8, /4, /2, at least 4x4). Each group's map is reduced to 4x4 by
strided convolutions, flattened, and each ws has its own dense head ("map2style"). The output is
an offset from G's w_avg (e4e, Tov et al. 2021): ws = w_avg + E(x), so an untrained encoder with
small heads starts near the average image, and the W regulariser pulls the offsets toward 0.

The encoder takes D's place in a GANState (gan_jax.encoder_step), so it keeps D's call signature
`E(img, c)` (c is unused: the image says what it shows) and its `img_resolution` / `img_channels`.
"""

import math

import flax.linen as nn
import jax.numpy as jnp


def ws_groups(num_ws: int) -> list[range]:
  """The coarse / middle / fine ws indices (thirds, coarse rounded up, as pSp's 3 / 4 / 11 of 18
  are for their generator's layers)."""
  coarse = math.ceil(num_ws / 3)
  middle = coarse + math.ceil((num_ws - coarse) / 2)
  return [range(0, coarse), range(coarse, middle), range(middle, num_ws)]


class ResBlock(nn.Module):
  """Two 3x3 convs with GroupNorm and leaky ReLU, stride 2 in the first; a 1x1 strided skip."""
  features: int

  @nn.compact
  def __call__(self, x):
    groups = min(8, self.features)
    y = nn.Conv(self.features, (3, 3), strides=2, name='conv0')(x)
    y = nn.leaky_relu(nn.GroupNorm(groups, name='norm0')(y), 0.2)
    y = nn.Conv(self.features, (3, 3), name='conv1')(y)
    y = nn.GroupNorm(groups, name='norm1')(y)
    skip = nn.Conv(self.features, (1, 1), strides=2, use_bias=False, name='skip')(x)
    return nn.leaky_relu(y + skip, 0.2)


class Encoder(nn.Module):
  """img (N, R, R, C) in [-1, 1] -> W+ offsets from w_avg (N, num_ws, w_dim)."""
  img_resolution: int
  img_channels: int
  num_ws: int
  w_dim: int
  channels: int = 32  # at the input's resolution; doubled at every halving up to max_channels
  max_channels: int = 256
  head_scale: float = 0.1  # the heads' initial weights are scaled by this (start near w_avg)

  def _ch(self, res: int) -> int:
    return min(self.channels * (self.img_resolution // res), self.max_channels)

  @nn.compact
  def __call__(self, img, c=None):
    del c  # D's signature; an encoder reads only the image
    x = nn.leaky_relu(nn.Conv(self._ch(self.img_resolution), (3, 3), name='stem')(img), 0.2)
    maps, res = {self.img_resolution: x}, self.img_resolution
    while res > 4:
      res //= 2
      x = ResBlock(self._ch(res), name=f'b{res}')(x)
      maps[res] = x
    depths = [max(4, self.img_resolution // k) for k in (8, 4, 2)]
    head_init = nn.initializers.variance_scaling(self.head_scale ** 2, 'fan_in', 'normal')
    out = []
    for depth, group in zip(depths, ws_groups(self.num_ws)):
      if not group:
        continue
      y, r = maps[depth], depth
      while r > 4:
        r //= 2
        y = nn.leaky_relu(nn.Conv(self._ch(r), (3, 3), strides=2,
                                  name=f'g{group.start}_down{r}')(y), 0.2)
      y = y.reshape(y.shape[0], -1)
      for i in group:
        out.append(nn.Dense(self.w_dim, kernel_init=head_init, name=f'w{i}')(y))
    return jnp.stack(out, axis=1)


def build(encoder_config, G) -> Encoder:
  """The Encoder of config.encoder for generator G (its resolution, channels, num_ws, w_dim)."""
  from gan_jax import models  # pylint: disable=g-import-not-at-top
  info = models.describe(G)
  if not info.family.w_space:
    raise ValueError(f'an encoder maps images to W+: a {info.family.title} generator has none')
  return Encoder(img_resolution=info.img_resolution, img_channels=info.img_channels,
                 num_ws=info.num_ws, w_dim=info.w_dim, channels=encoder_config.channels,
                 max_channels=encoder_config.max_channels)
