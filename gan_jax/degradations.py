"""Degradations of an encoder's input (pSp's image-to-image tasks): config.encoder.degradations.

A comma-separated list, applied in order to the encoder's input only; the loss compares the
generator's output with the clean image, so the encoder learns to undo them:

  downK       super-resolution: K x K box average (K a power of two), then nearest-upsampled back
              to full size (the encoder always reads full-size images; pSp upsamples too)
  mask        inpainting: a random square of half the image side set to 0 (mid-grey) per image
  edges       sketch -> image: Sobel gradient magnitude of the grey image, clipped to [0, 1] and
              mapped to [-1, 1] (black background, white edges)
  class:A>B   class-conditional translation (garment A -> garment B) with a conditional generator:
              the training pairs are G's own samples, G(z, A) as input and G(z, B) as target
              (same z, so the same "style"); not combinable with the others

'' is plain inversion. Images are NHWC in the generator's range [-1, 1]; all are jnp, pure.
"""

import dataclasses
import re
from typing import Optional

import jax
import jax.numpy as jnp

from gan_jax.models import layers

NAMES = ('downK (K = 2, 4, 8, ...)', 'mask', 'edges', 'class:A>B')
MASK_VALUE = 0.0


@dataclasses.dataclass(frozen=True)
class Degradation:
  kind: str  # 'down', 'mask', 'edges', 'class'
  factor: int = 1  # down's K
  source: int = -1  # class's A
  target: int = -1  # class's B

  @property
  def name(self) -> str:
    return {'down': f'down{self.factor}', 'class': f'class:{self.source}>{self.target}'}.get(
        self.kind, self.kind)


def parse(spec: str, resolution: Optional[int] = None,
          c_dim: Optional[int] = None) -> tuple[Degradation, ...]:
  """The degradations of a config string; ValueError naming the bad entry and the known ones.
  With `resolution` / `c_dim` the factors and classes are checked against the generator too."""
  out = []
  for item in (s.strip() for s in spec.split(',')):
    if not item:
      continue
    if m := re.fullmatch(r'down(\d+)', item):
      k = int(m.group(1))
      if k < 2 or k & (k - 1):
        raise ValueError(f'degradation {item!r}: K must be a power of two >= 2')
      if resolution is not None and k >= resolution:
        raise ValueError(f'degradation {item!r}: K must be below the resolution {resolution}')
      out.append(Degradation('down', factor=k))
    elif item in ('mask', 'edges'):
      out.append(Degradation(item))
    elif m := re.fullmatch(r'class:(\d+)>(\d+)', item):
      a, b = int(m.group(1)), int(m.group(2))
      if c_dim is not None and not (c_dim and a < c_dim and b < c_dim):
        raise ValueError(f'degradation {item!r} needs a conditional generator with classes A and '
                         f'B below its label count (this one has {c_dim})')
      out.append(Degradation('class', source=a, target=b))
    else:
      raise ValueError(f'unknown degradation {item!r} in {spec!r}; known: {", ".join(NAMES)}')
  if any(d.kind == 'class' for d in out) and len(out) > 1:
    raise ValueError(f'{spec!r}: class:A>B translates G\'s own samples and combines with no other '
                     'degradation')
  return tuple(out)


def class_pair(degradations) -> Optional[Degradation]:
  """The class:A>B entry, or None."""
  return next((d for d in degradations if d.kind == 'class'), None)


def downsample(images: jax.Array, k: int) -> jax.Array:
  """K x K box average, then nearest-upsampled back to the input size."""
  return layers.upsample_nearest(layers.downsample_avg(images, k), k)


def random_masks(key: jax.Array, n: int, resolution: int) -> jax.Array:
  """(n, R, R, 1) float masks, 1 inside one random square of side R/2 per image, else 0."""
  side = resolution // 2
  corners = jax.random.randint(key, (n, 2), 0, resolution - side + 1)
  idx = jnp.arange(resolution)
  rows = (idx[None] >= corners[:, :1]) & (idx[None] < corners[:, :1] + side)
  cols = (idx[None] >= corners[:, 1:]) & (idx[None] < corners[:, 1:] + side)
  return (rows[:, :, None] & cols[:, None, :]).astype(jnp.float32)[..., None]


def edges(images: jax.Array) -> jax.Array:
  """Sobel gradient magnitude of the channel mean, clipped to [0, 1], as [-1, 1] images."""
  grey = images.mean(axis=-1, keepdims=True)
  gx = jnp.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], jnp.float32)
  kernel = jnp.stack([gx, gx.T], axis=-1)[:, :, None, :]  # HWIO, 2 outputs
  grads = jax.lax.conv_general_dilated(jnp.pad(grey, ((0, 0), (1, 1), (1, 1), (0, 0)), 'edge'),
                                       kernel, (1, 1), 'VALID',
                                       dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  mag = jnp.sqrt(jnp.sum(jnp.square(grads), axis=-1, keepdims=True))  # an input: no gradient
  out = jnp.clip(mag, 0.0, 1.0) * 2.0 - 1.0
  return jnp.broadcast_to(out, images.shape)


def apply(images: jax.Array, degradations, key: jax.Array) -> jax.Array:
  """`images` with every degradation applied in order (class:A>B leaves them as they are: its
  input is G's sample of class A, made by the step)."""
  for i, d in enumerate(degradations):
    if d.kind == 'down':
      images = downsample(images, d.factor)
    elif d.kind == 'mask':
      masks = random_masks(jax.random.fold_in(key, i), images.shape[0], images.shape[1])
      images = images * (1.0 - masks) + MASK_VALUE * masks
    elif d.kind == 'edges':
      images = edges(images)
  return images
