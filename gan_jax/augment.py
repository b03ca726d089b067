"""Adaptive discriminator augmentation (Karras et al. 2020, "Training GANs with Limited Data").

`augment(rng, images, p, cfg)` is a pure, jittable, differentiable function of a batch of
(N, H, W, C) images in [-1, 1] (C = 1 or 3). Each augmentation is applied to each image
independently with probability `p * multiplier`; the random parameters follow NVIDIA's
StyleGAN2-ADA `AugmentPipe` (their defaults for the standard deviations and ranges). Order:
pixel blitting, general geometric warp, colour (one 4x4 matrix), image-space filtering, additive
noise, cutout. Every stage leaves the images it does not touch bit-exact, so p = 0 is the identity.

p is tuned by `ada_update` from the sign of D's logits on reals: r_t = E[sign(D(real))] is pushed
toward a target (0.6) by moving p by sign(r_t - target) * batch * interval / (ada_kimg * 1000)
every `interval` steps, p >= 0.
"""

import math
from typing import NamedTuple

import numpy as np
import jax
import jax.numpy as jnp

from gan_jax import augment_geometry as geometry


class AugmentConfig(NamedTuple):
  """Probability multipliers (0: off) and magnitudes; the magnitudes are NVIDIA's defaults."""
  xflip: float = 0.0
  rotate90: float = 0.0
  xint: float = 0.0
  xint_max: float = 0.125  # integer translation, fraction of the image size
  scale: float = 0.0
  rotate: float = 0.0
  aniso: float = 0.0
  xfrac: float = 0.0
  scale_std: float = 0.2  # log2 of the isotropic scale
  rotate_max: float = 1.0  # fraction of a half turn either way (1: the full circle)
  aniso_std: float = 0.2  # log2 of the anisotropic scale
  xfrac_std: float = 0.125  # fractional translation, fraction of the image size
  brightness: float = 0.0
  contrast: float = 0.0
  lumaflip: float = 0.0
  hue: float = 0.0
  saturation: float = 0.0
  brightness_std: float = 0.2
  contrast_std: float = 0.5  # log2
  hue_max: float = 1.0  # fraction of a half turn either way around the luma axis
  saturation_std: float = 1.0  # log2
  imgfilter: float = 0.0
  imgfilter_bands: tuple = (1.0, 1.0, 1.0, 1.0)
  imgfilter_std: float = 1.0  # log2 of each band's gain
  noise: float = 0.0
  cutout: float = 0.0
  noise_std: float = 0.1
  cutout_size: float = 0.5  # side of the square, fraction of the image size


_BLIT = dict(xflip=1, rotate90=1, xint=1)
_GEOM = dict(scale=1, rotate=1, aniso=1, xfrac=1)
_COLOR = dict(brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1)

# NVIDIA's augpipe_specs.
PRESETS = {
    'blit': AugmentConfig(**_BLIT),
    'geom': AugmentConfig(**_GEOM),
    'color': AugmentConfig(**_COLOR),
    'filter': AugmentConfig(imgfilter=1),
    'noise': AugmentConfig(noise=1),
    'cutout': AugmentConfig(cutout=1),
    'bg': AugmentConfig(**_BLIT, **_GEOM),
    'bgc': AugmentConfig(**_BLIT, **_GEOM, **_COLOR),
    'bgcf': AugmentConfig(**_BLIT, **_GEOM, **_COLOR, imgfilter=1),
    'bgcfn': AugmentConfig(**_BLIT, **_GEOM, **_COLOR, imgfilter=1, noise=1),
    'bgcfnc': AugmentConfig(**_BLIT, **_GEOM, **_COLOR, imgfilter=1, noise=1, cutout=1),
}


def preset(name: str) -> AugmentConfig:
  if name not in PRESETS:
    raise ValueError(f'Unknown augmentation pipeline {name!r}; known: {", ".join(PRESETS)} '
                     "(or 'none').")
  return PRESETS[name]


# --------------------------------------------------------------------------------------------
# Colour: batched homogeneous 3-D matrices (N, 4, 4) acting on (r, g, b, 1).


def luma_axis() -> np.ndarray:
  return np.asarray([1, 1, 1, 0], np.float32) / np.float32(math.sqrt(3))


def translate3d(t: jax.Array) -> jax.Array:
  """Adds t (N,) to every channel."""
  eye = jnp.eye(4, dtype=jnp.float32)
  return eye + jnp.zeros((4, 4), jnp.float32).at[:3, 3].set(1) * t[:, None, None]


def scale3d(s: jax.Array) -> jax.Array:
  """Multiplies every channel by s (N,)."""
  return jnp.eye(4, dtype=jnp.float32) * jnp.stack(
      [s, s, s, jnp.ones_like(s)], axis=-1)[:, None, :]


def lumaflip3d(i: jax.Array) -> jax.Array:
  """Householder reflection through the plane orthogonal to the luma axis where i (N,) is 1."""
  v = luma_axis()
  return jnp.eye(4, dtype=jnp.float32) - 2 * np.outer(v, v) * i[:, None, None]


def rotate3d(theta: jax.Array) -> jax.Array:
  """Rotation by theta (N,) around the luma axis (hue)."""
  vx, vy, vz = (float(c) for c in luma_axis()[:3])
  s, c = jnp.sin(theta), jnp.cos(theta)
  cc, one, zero = 1 - c, jnp.ones_like(theta), jnp.zeros_like(theta)
  rows = [[vx * vx * cc + c, vx * vy * cc - vz * s, vx * vz * cc + vy * s, zero],
          [vy * vx * cc + vz * s, vy * vy * cc + c, vy * vz * cc - vx * s, zero],
          [vz * vx * cc - vy * s, vz * vy * cc + vx * s, vz * vz * cc + c, zero],
          [zero, zero, zero, one]]
  return jnp.stack([jnp.stack(r, axis=-1) for r in rows], axis=-2)


def saturate3d(s: jax.Array) -> jax.Array:
  """Scales the chroma (the part orthogonal to the luma axis) by s (N,): vv' + (I - vv') s."""
  v = luma_axis()
  chroma = np.eye(4, dtype=np.float32) - np.outer(v, v)
  # I + (I - vv')(s - 1): the same matrix, exactly I where s == 1.
  return jnp.eye(4, dtype=jnp.float32) + chroma * (s - 1)[:, None, None]


def color_transform(images: jax.Array, c_mat: jax.Array) -> jax.Array:
  """Applies (N, 4, 4) colour matrices; grayscale uses the mean of the RGB rows (as NVIDIA)."""
  channels = images.shape[-1]
  if channels == 3:
    return (jnp.einsum('nij,nhwj->nhwi', c_mat[:, :3, :3], images) +
            c_mat[:, None, None, :3, 3])
  if channels == 1:
    mean = jnp.mean(c_mat[:, :3, :], axis=1)  # (N, 4)
    return (images * jnp.sum(mean[:, :3], axis=1)[:, None, None, None] +
            mean[:, 3][:, None, None, None])
  raise ValueError(f'Colour augmentation needs RGB (3) or grayscale (1) images, got {channels} '
                   'channels; use a pipeline without colour ops (blit, geom, bg, ...).')


# --------------------------------------------------------------------------------------------
# Image-space filtering: 4 frequency bands with random gains.


def filter_bank() -> np.ndarray:
  """NVIDIA's (4, 43) bank of symmetric 1-D band filters from sym2; the rows add up to a delta."""
  lo = np.asarray(geometry.SYM2, np.float64)
  hi = lo * ((-1.0) ** np.arange(lo.size))
  lo2 = np.convolve(lo, lo[::-1]) / 2
  hi2 = np.convolve(hi, hi[::-1]) / 2
  bank = np.eye(4, 1)
  for i in range(1, bank.shape[0]):
    bank = np.dstack([bank, np.zeros_like(bank)]).reshape(bank.shape[0], -1)[:, :-1]
    bank = np.stack([np.convolve(row, lo2) for row in bank])
    start = (bank.shape[1] - hi2.size) // 2
    bank[i, start:start + hi2.size] += hi2
  return bank.astype(np.float32)


def band_filter(images: jax.Array, gains: jax.Array) -> jax.Array:
  """Filters each image with the separable filter (gains @ bank) per axis, reflection padded."""
  n, height, width, channels = images.shape
  bank = filter_bank()
  pad = bank.shape[1] // 2
  if pad >= min(height, width):
    raise ValueError(f'Image-space filtering pads by {pad} pixels (reflection) and needs images '
                     f'larger than that, got {height}x{width}; use a pipeline without it.')
  x = jnp.transpose(images, (0, 3, 1, 2)).reshape((n * channels, height, width, 1))
  x = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode='reflect')
  g = jnp.repeat(gains, channels, axis=0)[:, None, None, :]  # (N * C, 1, 1, 4)
  for kernel in (bank.T[None, :, None, :], bank.T[:, None, None, :]):  # along x, then along y
    x = jax.lax.conv_general_dilated(x, jnp.asarray(kernel), (1, 1), 'VALID',
                                     dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    x = jnp.sum(x * g, axis=-1, keepdims=True)
  return jnp.transpose(x.reshape((n, channels, height, width)), (0, 2, 3, 1))


# --------------------------------------------------------------------------------------------
# The pipeline.


def _per_image(mask: jax.Array) -> jax.Array:
  return mask.reshape((-1, 1, 1, 1))


def _apply_where(images: jax.Array, identity: jax.Array, fn) -> jax.Array:
  """fn(images) where not `identity` (N,) and the images bit-exact elsewhere; skipped if none."""
  return jax.lax.cond(jnp.all(identity), lambda x: x,
                      lambda x: jnp.where(_per_image(identity), x, fn(x)), images)


def augment(rng: jax.Array, images: jax.Array, p: jax.Array, cfg: AugmentConfig) -> jax.Array:
  """Augments (N, H, W, C) images, each op with probability p * its multiplier, per image."""
  n, height, width, channels = images.shape
  dtype = images.dtype
  keys = iter(jax.random.split(rng, 48))
  p = jnp.asarray(p, jnp.float32)
  uniform = lambda shape=(n,): jax.random.uniform(next(keys), shape)
  normal = lambda shape=(n,): jax.random.normal(next(keys), shape)
  chance = lambda mult: uniform() < mult * p

  # Pixel blitting.
  if cfg.xflip > 0 or cfg.rotate90 > 0 or cfg.xint > 0:
    zero = jnp.zeros((n,), jnp.int32)
    flip = jnp.where(chance(cfg.xflip), jnp.floor(uniform() * 2).astype(jnp.int32), zero)
    rot = jnp.where(chance(cfg.rotate90), jnp.floor(uniform() * 4).astype(jnp.int32), zero)
    t = (uniform((n, 2)) * 2 - 1) * cfg.xint_max
    t = jnp.where(chance(cfg.xint)[:, None], t, 0.0)
    tx = jnp.round(t[:, 0] * width).astype(jnp.int32)
    ty = jnp.round(t[:, 1] * height).astype(jnp.int32)
    max_shift = int(round(cfg.xint_max * max(height, width))) if cfg.xint > 0 else 0
    identity = (flip == 0) & (rot == 0) & (tx == 0) & (ty == 0)
    rot_or_none = rot if cfg.rotate90 > 0 else None
    images = _apply_where(images, identity,
                          lambda x: geometry.blit(x, flip, rot_or_none, tx, ty, max_shift))

  # General geometric transforms, one composed inverse matrix (NVIDIA's order).
  if cfg.scale > 0 or cfg.rotate > 0 or cfg.aniso > 0 or cfg.xfrac > 0:
    g_inv = jnp.broadcast_to(jnp.eye(3, dtype=jnp.float32), (n, 3, 3))
    if cfg.scale > 0:
      s = jnp.where(chance(cfg.scale), jnp.exp2(normal() * cfg.scale_std), 1.0)
      g_inv = g_inv @ geometry.scale2d_inv(s, s, n)
    p_rot = 1 - jnp.sqrt(jnp.clip(1 - cfg.rotate * p, 0, 1))  # P(pre or post rotation) = p
    if cfg.rotate > 0:
      theta = jnp.where(uniform() < p_rot, (uniform() * 2 - 1) * np.pi * cfg.rotate_max, 0.0)
      g_inv = g_inv @ geometry.rotate2d_inv(-theta, n)
    if cfg.aniso > 0:
      s = jnp.where(chance(cfg.aniso), jnp.exp2(normal() * cfg.aniso_std), 1.0)
      g_inv = g_inv @ geometry.scale2d_inv(s, 1 / s, n)
    if cfg.rotate > 0:
      theta = jnp.where(uniform() < p_rot, (uniform() * 2 - 1) * np.pi * cfg.rotate_max, 0.0)
      g_inv = g_inv @ geometry.rotate2d_inv(-theta, n)
    if cfg.xfrac > 0:
      t = jnp.where(chance(cfg.xfrac)[:, None], normal((n, 2)) * cfg.xfrac_std, 0.0)
      g_inv = g_inv @ geometry.translate2d_inv(t[:, 0] * width, t[:, 1] * height, n)
    identity = jnp.all(g_inv == jnp.eye(3), axis=(1, 2))
    images = _apply_where(images, identity, lambda x: geometry.warp(x, g_inv))

  # Colour, one composed matrix; hue and saturation only for RGB.
  rgb = channels > 1
  if (cfg.brightness > 0 or cfg.contrast > 0 or cfg.lumaflip > 0 or
      (rgb and (cfg.hue > 0 or cfg.saturation > 0))):
    c_mat = jnp.broadcast_to(jnp.eye(4, dtype=jnp.float32), (n, 4, 4))
    if cfg.brightness > 0:
      b = jnp.where(chance(cfg.brightness), normal() * cfg.brightness_std, 0.0)
      c_mat = translate3d(b) @ c_mat
    if cfg.contrast > 0:
      c = jnp.where(chance(cfg.contrast), jnp.exp2(normal() * cfg.contrast_std), 1.0)
      c_mat = scale3d(c) @ c_mat
    if cfg.lumaflip > 0:
      i = jnp.where(chance(cfg.lumaflip), jnp.floor(uniform() * 2), 0.0)
      c_mat = lumaflip3d(i) @ c_mat
    if rgb and cfg.hue > 0:
      theta = jnp.where(chance(cfg.hue), (uniform() * 2 - 1) * np.pi * cfg.hue_max, 0.0)
      c_mat = rotate3d(theta) @ c_mat
    if rgb and cfg.saturation > 0:
      s = jnp.where(chance(cfg.saturation), jnp.exp2(normal() * cfg.saturation_std), 1.0)
      c_mat = saturate3d(s) @ c_mat
    identity = jnp.all(c_mat == jnp.eye(4), axis=(1, 2))
    images = _apply_where(images, identity, lambda x: color_transform(x, c_mat))

  # Image-space filtering: a random gain per band, the spectrum's expected power kept.
  if cfg.imgfilter > 0:
    expected_power = np.asarray([10, 1, 1, 1], np.float32) / 13
    gains = jnp.ones((n, 4), jnp.float32)
    for band, strength in enumerate(cfg.imgfilter_bands):
      if strength <= 0:
        continue
      chosen = uniform() < cfg.imgfilter * p * strength
      t = jnp.ones((n, 4), jnp.float32).at[:, band].set(jnp.exp2(normal() * cfg.imgfilter_std))
      t = t / jnp.sqrt(jnp.sum(expected_power * jnp.square(t), axis=-1, keepdims=True))
      gains = gains * jnp.where(chosen[:, None], t, 1.0)
    identity = jnp.all(gains == 1, axis=1)
    images = _apply_where(images, identity, lambda x: band_filter(x, gains))

  if cfg.noise > 0:
    sigma = jnp.where(chance(cfg.noise), jnp.abs(normal()) * cfg.noise_std, 0.0)
    images = images + normal(images.shape) * _per_image(sigma)

  if cfg.cutout > 0:
    size = jnp.where(chance(cfg.cutout), cfg.cutout_size, 0.0)[:, None, None]
    center = uniform((n, 2))
    cx = (jnp.arange(width, dtype=jnp.float32) + 0.5) / width
    cy = (jnp.arange(height, dtype=jnp.float32) + 0.5) / height
    outside_x = jnp.abs(cx[None, None, :] - center[:, 0, None, None]) >= size / 2
    outside_y = jnp.abs(cy[None, :, None] - center[:, 1, None, None]) >= size / 2
    images = images * (outside_x | outside_y)[..., None].astype(images.dtype)
  return images.astype(dtype)


# --------------------------------------------------------------------------------------------
# The p controller.


def ada_update(p: jax.Array, stats: jax.Array, real_logits: jax.Array, step: jax.Array,
               target: float, interval: int, ada_kimg: float, batch_size: int):
  """Accumulates sign(D(real)) and, on every `interval`-th step, moves p toward the target.

  `stats` is (sum of signs, count) since the last adjustment; `step` the 0-based index of the
  step that produced `real_logits`. Returns (new p, new stats, r_t of the accumulated window).
  """
  signs = jnp.sign(real_logits.astype(jnp.float32))
  stats = stats + jnp.stack([jnp.sum(signs), jnp.asarray(signs.size, jnp.float32)])
  r_t = stats[0] / jnp.maximum(stats[1], 1.0)
  due = (step + 1) % interval == 0
  rate = batch_size * interval / (ada_kimg * 1000)
  adjusted = jnp.maximum(p + jnp.sign(r_t - target) * rate, 0.0)
  return (jnp.where(due, adjusted, p).astype(jnp.float32),
          jnp.where(due, jnp.zeros_like(stats), stats), r_t)
