"""Geometric part of ADA: exact pixel blitting, then one alias-free affine warp per image.

Pixel blitting (x-flip, 90-degree rotations, integer translation with reflection padding) moves
whole pixels and is done exactly, as in the original (TensorFlow) StyleGAN2-ADA. The general
transforms (isotropic and anisotropic scaling, rotation, fractional translation) are folded, as in
NVIDIA's `AugmentPipe`, into one inverse matrix `g_inv` that maps output pixel coordinates to
input pixel coordinates (pixel units, origin at the image centre, x right, y down). Blitting
first and warping second equals warping once with `blit_matrix @ g_inv` (up to the borders and
the filter). Folding the blits into the warp as PyTorch ADA does would blur them: the sym6 filter
is not symmetric, so a flip through the warp is off by a few percent even on smooth images.

The warp

1. pads the image by reflection (a static `W - 1` / `H - 1` on each side: NVIDIA's largest margin,
   so the shape does not depend on the random parameters and the function jits),
2. upsamples 2x with the orthogonal `sym6` wavelet low-pass,
3. samples bilinearly (zeros outside, as `grid_sample(align_corners=False)`) at the transformed
   coordinates,
4. downsamples 2x with the same filter (correlation instead of convolution, so the up/down pair is
   the filter's autocorrelation: an identity warp returns the image up to float rounding) and
   crops back to H x W.
"""

import numpy as np
import jax
import jax.numpy as jnp

from gan_jax.models import layers

# Daubechies' symlet coefficients as listed in NVIDIA's augment.py (= pywt's sym2 / sym6 rec_lo).
SYM2 = (-0.12940952255092145, 0.22414386804185735, 0.836516303737469, 0.48296291314469025)
SYM6 = (0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633,
        0.4910559419267466, 0.787641141030194, 0.3379294217276218, -0.07263752278646252,
        -0.021060292512300564, 0.04472490177066578, 0.0017677118642428036,
        -0.007800708325034148)


def geom_filter() -> np.ndarray:
  """The 1-D sym6 low-pass normalised to sum 1 (NVIDIA's setup_filter(wavelets['sym6']))."""
  f = np.asarray(SYM6, np.float64)
  return (f / f.sum()).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Batched homogeneous 2-D matrices (N, 3, 3); arguments are (N,) arrays or scalars.


def _matrix(rows, n: int) -> jax.Array:
  rows = [[jnp.broadcast_to(jnp.asarray(v, jnp.float32), (n,)) for v in row] for row in rows]
  return jnp.stack([jnp.stack(row, axis=-1) for row in rows], axis=-2)


def translate2d(tx, ty, n: int) -> jax.Array:
  return _matrix([[1, 0, tx], [0, 1, ty], [0, 0, 1]], n)


def scale2d(sx, sy, n: int) -> jax.Array:
  return _matrix([[sx, 0, 0], [0, sy, 0], [0, 0, 1]], n)


def rotate2d(theta, n: int) -> jax.Array:
  c, s = jnp.cos(theta), jnp.sin(theta)
  return _matrix([[c, -s, 0], [s, c, 0], [0, 0, 1]], n)


def translate2d_inv(tx, ty, n: int) -> jax.Array:
  return translate2d(-jnp.asarray(tx), -jnp.asarray(ty), n)


def scale2d_inv(sx, sy, n: int) -> jax.Array:
  return scale2d(1 / jnp.asarray(sx, jnp.float32), 1 / jnp.asarray(sy, jnp.float32), n)


def rotate2d_inv(theta, n: int) -> jax.Array:
  return rotate2d(-jnp.asarray(theta), n)


# --------------------------------------------------------------------------------------------
# The warp.


def _bilinear(image: jax.Array, ix: jax.Array, iy: jax.Array) -> jax.Array:
  """Samples one (H, W, C) image at pixel coordinates (ix, iy) of shape (Ho, Wo); 0 outside."""
  h, w = image.shape[0], image.shape[1]
  x0, y0 = jnp.floor(ix), jnp.floor(iy)
  wx, wy = ix - x0, iy - y0
  x0, y0 = x0.astype(jnp.int32), y0.astype(jnp.int32)

  def tap(yy, xx):
    inside = (xx >= 0) & (xx < w) & (yy >= 0) & (yy < h)
    v = image[jnp.clip(yy, 0, h - 1), jnp.clip(xx, 0, w - 1)]
    return v * inside[..., None].astype(image.dtype)

  wx, wy = wx[..., None], wy[..., None]
  return (tap(y0, x0) * (1 - wx) * (1 - wy) + tap(y0, x0 + 1) * wx * (1 - wy) +
          tap(y0 + 1, x0) * (1 - wx) * wy + tap(y0 + 1, x0 + 1) * wx * wy)


def warp(images: jax.Array, g_inv: jax.Array) -> jax.Array:
  """Applies per-image inverse matrices `g_inv` (N, 3, 3) to images (N, H, W, C); same shape."""
  n, height, width, _ = images.shape
  f = geom_filter()
  hz_pad = len(f) // 4
  my, mx = height - 1, width - 1
  if mx < 1 or my < 1:
    raise ValueError(f'images of {height}x{width} are too small for the geometric augmentations '
                     '(reflection padding needs at least 2 pixels per side).')
  x = jnp.pad(images, ((0, 0), (my, my), (mx, mx), (0, 0)), mode='reflect')
  # The pad is symmetric, so the centre (the matrices' origin) does not move.
  x = layers.upsample2d(x, f, up=2)
  g = scale2d(2, 2, n) @ g_inv @ scale2d_inv(2, 2, n)
  g = translate2d(-0.5, -0.5, n) @ g @ translate2d_inv(-0.5, -0.5, n)
  out_h, out_w = (height + hz_pad * 2) * 2, (width + hz_pad * 2) * 2
  in_h, in_w = x.shape[1], x.shape[2]
  # affine_grid + grid_sample(align_corners=False) in normalised [-1, 1] coordinates.
  g = scale2d(2 / in_w, 2 / in_h, n) @ g @ scale2d_inv(2 / out_w, 2 / out_h, n)
  gx = (2 * jnp.arange(out_w, dtype=jnp.float32) + 1) / out_w - 1
  gy = (2 * jnp.arange(out_h, dtype=jnp.float32) + 1) / out_h - 1
  base = jnp.stack(jnp.broadcast_arrays(gx[None, :], gy[:, None], jnp.ones((1, 1))), axis=-1)
  grid = jnp.einsum('nij,hwj->nhwi', g[:, :2, :], base)  # (N, out_h, out_w, 2)
  ix = ((grid[..., 0] + 1) * in_w - 1) / 2
  iy = ((grid[..., 1] + 1) * in_h - 1) / 2
  x = jax.vmap(_bilinear)(x, ix, iy)
  return layers.downsample2d(x, f, down=2, padding=-hz_pad * 2, flip_filter=True)


def blit(images: jax.Array, flip: jax.Array, rot90: jax.Array, tx: jax.Array, ty: jax.Array,
         max_shift: int) -> jax.Array:
  """Exact per-image pixel blitting of (N, H, W, C) images.

  flip: (N,) 0/1, mirror x. rot90: (N,) 0..3, quarter turns as np.rot90(x, k, axes=(1, 2)), or
  None (no rotations; then the images need not be square).
  tx, ty: (N,) integer shifts in pixels (content moves right / down), |shift| <= max_shift; the
  uncovered border is filled by reflection. Applied in that order (NVIDIA's matrix order).
  """
  n, height, width, channels = images.shape
  per_image = lambda m: m.reshape((n, 1, 1, 1))
  x = jnp.where(per_image(flip > 0), images[:, :, ::-1], images)
  if rot90 is not None:
    if height != width:
      raise ValueError(f'90-degree rotations need square images, got {height}x{width}; use a '
                       'pipeline without rotate90.')
    turned = x
    for k in (1, 2, 3):
      turned = jnp.where(per_image(rot90 == k), jnp.rot90(x, k, axes=(1, 2)), turned)
    x = turned
  if max_shift <= 0:
    return x
  if max_shift >= min(height, width):
    raise ValueError(f'integer translation by up to {max_shift} pixels needs images larger than '
                     f'that for reflection padding, got {height}x{width}.')
  padded = jnp.pad(x, ((0, 0), (max_shift,) * 2, (max_shift,) * 2, (0, 0)), mode='reflect')

  def shift_one(img, sx, sy):
    return jax.lax.dynamic_slice(img, (max_shift - sy, max_shift - sx, 0),
                                 (height, width, channels))

  return jax.vmap(shift_one)(padded, tx.astype(jnp.int32), ty.astype(jnp.int32))
