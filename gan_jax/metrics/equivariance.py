"""Equivariance metrics of StyleGAN3 (Karras et al. 2021, "Alias-Free Generative Adversarial
Networks", section 3 and appendix E), as NVIDIA's `metrics/equivariance.py` computes them.

EQ-T: sample z, w = mapping(z, c) (psi 1); synthesise with the identity input transform (the
reference, img0); draw a translation t = (tx, ty), each uniform in [-translate_max,
translate_max] image widths (0.125); set the input transform to translate by t (NVIDIA's
`M[:2, 2] = -t`) and synthesise again (img1); translate img0 by t and compare it with img1 over
the pixels where the translated reference is valid:

  eqt_int   t rounded to whole pixels; img0 rolled by t, the uncovered band masked out.
  eqt_frac  t fractional; img0 resampled with a separable Lanczos kernel (a = 3, 6 taps,
            sinc(u) sinc(u / 3) normalised), the band within 3 pixels of the border masked.
  eqr       an angle uniform in [-rotate_max pi, rotate_max pi] (rotate_max 1: any angle); the
            input rotated by it (`M = rotation_matrix(-angle)`); img0 rotated with NVIDIA's
            band-limited affine resampling (a 2D filter that is the convolution of the input-
            and output-oriented sinc filters times the convolution of their Lanczos windows,
            4x upsampling with it, bilinear sampling of the rotated grid), img1 filtered with the
            same filter design at 1x ("pseudo-rotation", so both sides carry the same band
            limit); compared where both masks are valid.

The reduction is NVIDIA's: over all samples, MSE = sum(squared error * mask) / sum(mask)
(images in [-1, 1], every channel counted), then PSNR = 20 log10(2) - 10 log10(MSE) dB (2: the
peak-to-peak range). As NVIDIA, one transform is drawn per batch of BATCH = 4 samples.

Only a generator with an input transform (StyleGAN3) has these metrics: NVIDIA's code refuses
any other ("the given generator does not support user-specified image transformations"), and so
does `compute` here (a StyleGAN2 generator has no coordinates to translate; translating its
output would measure nothing about it).

Differences from NVIDIA's code, all numerical: the filters are designed in float64 NumPy (NVIDIA:
float32 torch) on the host per batch, and the batches run on one device.
"""

import math
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from gan_jax import models

BATCH = 4  # samples per drawn transform, NVIDIA's batch_size for these metrics
TRANSLATE_MAX = 0.125  # image widths
ROTATE_MAX = 1.0  # times pi radians
LANCZOS_A = 3


def psnr(sum_sq: float, sum_mask: float) -> float:
  """NVIDIA's PSNR (dB) of the pooled masked MSE, images in [-1, 1]."""
  return float(20 * np.log10(2) - 10 * np.log10(sum_sq / sum_mask))


def rotation_matrix(angle: float) -> np.ndarray:
  """NVIDIA's `rotation_matrix` (radians), float32 (3, 3)."""
  c, s = math.cos(angle), math.sin(angle)
  return np.array([[c, s, 0], [-s, c, 0], [0, 0, 1]], np.float32)


def translation_matrix(tx: float, ty: float) -> np.ndarray:
  """The input transform that translates the output by (tx, ty) image widths: M[:2, 2] = -t."""
  m = np.eye(3, dtype=np.float32)
  m[0, 2], m[1, 2] = -tx, -ty
  return m


# ----------------------------------------------------------------------------------------------
# Translations of NHWC images; tx, ty in pixels (traced scalars).


def _span_mask(size: int, start, stop) -> jax.Array:
  i = jnp.arange(size)
  return ((i >= start) & (i < stop)).astype(jnp.float32)


def _mask2d(h: int, w: int, y0, y1, x0, x1) -> jax.Array:
  return _span_mask(h, y0, y1)[:, None] * _span_mask(w, x0, x1)[None, :]


def integer_translation(x: jax.Array, tx, ty) -> tuple[jax.Array, jax.Array]:
  """NVIDIA's `apply_integer_translation`: x (N, H, W, C) moved by round(tx), round(ty) pixels
  (positive: right / down) and the (H, W) mask of the pixels it covers."""
  _, h, w, _ = x.shape
  ix, iy = jnp.round(tx).astype(jnp.int32), jnp.round(ty).astype(jnp.int32)
  z = jnp.roll(x, (iy, ix), axis=(1, 2))
  mask = _mask2d(h, w, jnp.maximum(iy, 0), h + jnp.minimum(iy, 0), jnp.maximum(ix, 0),
                 w + jnp.minimum(ix, 0))
  return z, mask


def lanczos_kernel(frac, a: int = LANCZOS_A) -> tuple[np.ndarray, jax.Array]:
  """(taps -a+1 .. a, their weights sinc(t - frac) sinc((t - frac) / a), normalised to sum 1)."""
  taps = np.arange(2 * a) - (a - 1)
  u = taps - frac
  h = jnp.sinc(u) * jnp.sinc(u / a)
  return taps, h / jnp.sum(h)


def fractional_translation(x: jax.Array, tx, ty, a: int = LANCZOS_A):
  """NVIDIA's `apply_fractional_translation`: x resampled at (p - t) by the separable Lanczos
  kernel, z[p] = sum_k h(k - frac) x[p - floor(t) - k], and the mask of the pixels whose taps all
  lie inside the image: [floor(t) + a, W + min(floor(t) - a + 1, 0))."""
  _, h, w, _ = x.shape
  b = a - 1
  ix, iy = jnp.floor(tx).astype(jnp.int32), jnp.floor(ty).astype(jnp.int32)
  z = x
  for axis, i, f in ((2, ix, tx - ix), (1, iy, ty - iy)):  # x first, as NVIDIA
    taps, weights = lanczos_kernel(f, a)
    z = sum(weights[k] * jnp.roll(z, i + int(t), axis=axis) for k, t in enumerate(taps))
  mask = _mask2d(h, w, jnp.maximum(iy + a, 0), h + jnp.minimum(iy - b, 0),
                 jnp.maximum(ix + a, 0), w + jnp.minimum(ix - b, 0))
  return z, mask


# ----------------------------------------------------------------------------------------------
# Rotation: NVIDIA's band-limited affine resampling. Filters are host NumPy (they depend on the
# drawn angle only); their application is JAX.


def _sinc(x):
  return np.sinc(x)


def _lanczos_window(x, a):
  x = np.abs(x) / a
  return np.where(x < 1, np.sinc(x), 0.0)


def affine_bandlimit_filter(mat, a: int = 3, amax: int = 16, aflt: int = 64, up: int = 4,
                            cutoff_in: float = 1, cutoff_out: float = 1) -> np.ndarray:
  """NVIDIA's `construct_affine_bandlimit_filter`: the (2 amax up - 1)^2 filter that band-limits
  both the input grid and the grid transformed by `mat`, at `up` times the pixel rate, each of
  its up x up phases normalised to sum 1 / up^2."""
  assert a <= amax < aflt
  mat = np.asarray(mat, np.float64)
  n = aflt * up * 2 - 1
  taps = np.roll((np.arange(n) + 1) / up - aflt, 1 - aflt * up)
  yi, xi = np.meshgrid(taps, taps, indexing='ij')
  xo = xi * mat[0, 0] + yi * mat[0, 1]
  yo = xi * mat[1, 0] + yi * mat[1, 1]
  fi = _sinc(xi * cutoff_in) * _sinc(yi * cutoff_in)
  fo = _sinc(xo * cutoff_out) * _sinc(yo * cutoff_out)
  f = np.fft.ifftn(np.fft.fftn(fi) * np.fft.fftn(fo)).real
  wi = _lanczos_window(xi, a) * _lanczos_window(yi, a)
  wo = _lanczos_window(xo, a) * _lanczos_window(yo, a)
  w = np.fft.ifftn(np.fft.fftn(wi) * np.fft.fftn(wo)).real
  f = f * w
  c = (aflt - amax) * up
  f = np.roll(f, (aflt * up - 1, aflt * up - 1), axis=(0, 1))[c:-c, c:-c]
  f = np.pad(f, ((0, 1), (0, 1))).reshape(amax * 2, up, amax * 2, up)
  f = f / f.sum(axis=(0, 2), keepdims=True) / up ** 2
  return f.reshape(amax * 2 * up, amax * 2 * up)[:-1, :-1].astype(np.float32)


def _depthwise(x: jax.Array, f: jax.Array, pad: tuple[int, int], up: int = 1) -> jax.Array:
  """upfirdn2d's convolution (the filter flipped) of every channel of x (N, H, W, C) with the 2D
  filter f, after zero-insertion by `up` (upfirdn2d's layout: H * up samples) and padding
  `pad` = (before, after) on both axes."""
  ch = x.shape[-1]
  kernel = jnp.tile(f[::-1, ::-1, None, None], (1, 1, 1, ch)).astype(x.dtype)
  padding = ((pad[0], pad[1] + up - 1),) * 2
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), padding, lhs_dilation=(up, up),
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                                      feature_group_count=ch,
                                      precision=jax.lax.Precision.HIGHEST)


def _grid_sample(y: jax.Array, gx: jax.Array, gy: jax.Array, mode: str) -> jax.Array:
  """torch grid_sample(align_corners=False, padding_mode='zeros') of y (N, Hy, Wy, C) at the
  normalised positions (gx, gy) (H, W), shared by the batch; mode 'bilinear' or 'nearest'."""
  _, hy, wy, _ = y.shape
  px = ((gx + 1) * wy - 1) / 2
  py = ((gy + 1) * hy - 1) / 2

  def tap(iy, ix):
    valid = ((ix >= 0) & (ix < wy) & (iy >= 0) & (iy < hy)).astype(y.dtype)
    v = y[:, jnp.clip(iy, 0, hy - 1), jnp.clip(ix, 0, wy - 1), :]
    return v * valid[None, :, :, None]

  if mode == 'nearest':
    return tap(jnp.round(py).astype(jnp.int32), jnp.round(px).astype(jnp.int32))
  x0, y0 = jnp.floor(px), jnp.floor(py)
  fx, fy = (px - x0)[None, :, :, None], (py - y0)[None, :, :, None]
  x0, y0 = x0.astype(jnp.int32), y0.astype(jnp.int32)
  return (tap(y0, x0) * (1 - fx) * (1 - fy) + tap(y0, x0 + 1) * fx * (1 - fy) +
          tap(y0 + 1, x0) * (1 - fx) * fy + tap(y0 + 1, x0 + 1) * fx * fy)


def rotation_plan(angle: float, size: int, a: int = LANCZOS_A, up: int = 4) -> dict:
  """Host-side arrays of one rotation of `size`^2 images: the 4x resampling filter and the
  sampling grid of NVIDIA's `apply_fractional_rotation`, and the 1x filter of its
  `apply_fractional_pseudo_rotation`."""
  mat = rotation_matrix(angle)
  f = affine_bandlimit_filter(mat, a=a, amax=a * 2, up=up)
  p = f.shape[0] // 2
  theta = np.linalg.inv(mat.astype(np.float32)).astype(np.float32)
  theta[:2, 2] *= 2
  theta[0, 2] += 1 / up / size
  theta[1, 2] += 1 / up / size
  theta[0, :] *= size / (size + p / up * 2)
  theta[1, :] *= size / (size + p / up * 2)
  base = (2 * np.arange(size, dtype=np.float32) + 1) / size - 1  # affine_grid, align False
  bx, by = np.meshgrid(base, base, indexing='xy')
  gx = theta[0, 0] * bx + theta[0, 1] * by + theta[0, 2]
  gy = theta[1, 0] * bx + theta[1, 1] * by + theta[1, 2]
  pseudo = affine_bandlimit_filter(rotation_matrix(-angle), a=a, amax=a * 2, up=1)
  return {'filter': f, 'gx': gx.astype(np.float32), 'gy': gy.astype(np.float32),
          'pseudo': pseudo}


def fractional_rotation(x: jax.Array, plan: dict, up: int = 4) -> tuple[jax.Array, jax.Array]:
  """NVIDIA's `apply_fractional_rotation` of x (N, H, W, C) by the plan's angle: 4x upsampling
  with the band-limit filter (gain up^2), bilinear sampling of the rotated grid; the (H, W) mask
  of grid points that land 2p + 1 samples inside the upsampled image (nearest)."""
  f = plan['filter']
  p = f.shape[0] // 2
  fw = f.shape[0]
  y = _depthwise(x, f * up ** 2, (p + (fw + up - 1) // 2, p + (fw - up) // 2), up=up)
  z = _grid_sample(y, plan['gx'], plan['gy'], 'bilinear')
  c = p * 2 + 1
  m = jnp.zeros(y.shape[1:3], x.dtype).at[c:-c, c:-c].set(1)
  mask = _grid_sample(m[None, :, :, None], plan['gx'], plan['gy'], 'nearest')[0, :, :, 0]
  return z, mask


def pseudo_rotation(x: jax.Array, plan: dict) -> tuple[jax.Array, jax.Array]:
  """NVIDIA's `apply_fractional_pseudo_rotation`: x filtered at 1x with the band limit of the
  rotation (size kept), and the mask without the filter's border."""
  f = plan['pseudo']
  fw = f.shape[0]
  y = _depthwise(x, f, (fw // 2, (fw - 1) // 2))
  c = fw // 2
  mask = jnp.zeros(y.shape[1:3], x.dtype).at[c:-c, c:-c].set(1)
  return y, mask


# ----------------------------------------------------------------------------------------------
# The metric.


def make_batch_fn(G, kind: str):
  """A jit-able fn(variables, z, c, transform, args) -> (sum of masked squared errors, sum of
  the mask) for one batch; kind 'int' | 'frac' ('args': (tx, ty) in pixels) or 'rot' ('args':
  the `rotation_plan`)."""

  def fn(variables, z, c, transform, args):
    ws = G.apply(variables, z, c, method='map')
    eye = jnp.eye(3, dtype=jnp.float32)
    images = G.apply(variables, jnp.concatenate([ws, ws]),
                     jnp.concatenate([jnp.broadcast_to(eye, (z.shape[0], 3, 3)),
                                      jnp.broadcast_to(transform, (z.shape[0], 3, 3))]),
                     method='synthesize')
    orig, img = images[:z.shape[0]], images[z.shape[0]:]
    if kind == 'int':
      ref, mask = integer_translation(orig, *args)
    elif kind == 'frac':
      ref, mask = fractional_translation(orig, *args)
    elif kind == 'rot':
      ref, ref_mask = fractional_rotation(orig, args)
      img, img_mask = pseudo_rotation(img, args)
      mask = ref_mask * img_mask
    else:
      raise ValueError(f'unknown equivariance kind {kind!r}')
    mask = mask[None, :, :, None]
    sq = jnp.sum(jnp.square(ref - img) * mask)
    return sq, jnp.sum(mask) * orig.shape[0] * orig.shape[-1]

  return fn


def draw(rng: np.random.Generator, kind: str, size: int,
         translate_max: float = TRANSLATE_MAX, rotate_max: float = ROTATE_MAX):
  """One batch's transform as NVIDIA draws it: (input transform (3, 3), args of make_batch_fn)."""
  if kind in ('int', 'frac'):
    t = (rng.random(2) * 2 - 1) * translate_max
    if kind == 'int':
      t = np.round(t * size) / size
    return translation_matrix(*t), (np.float32(t[0] * size), np.float32(t[1] * size))
  angle = (rng.random() * 2 - 1) * (rotate_max * np.pi)
  return rotation_matrix(-angle), rotation_plan(angle, size)


def check_generator(G, name: str) -> None:
  """ValueError unless G has a user input transform (StyleGAN3), as NVIDIA's code requires."""
  family = models.family_of(G)
  if not family.input_transform:
    raise ValueError(f'{name}: equivariance needs a generator with an input transform '
                     f'(StyleGAN3); a {family.title} generator has none')


def compute(G, variables, kind: str, num_samples: int, seed: int = 0,
            batch_fn: Optional[Callable] = None) -> float:
  """PSNR (dB) of `kind` ('int' | 'frac' | 'rot') over `num_samples` samples (rounded up to
  whole batches of BATCH), NVIDIA's pooled reduction."""
  fn = batch_fn or jax.jit(make_batch_fn(G, kind))
  rng = np.random.default_rng([seed, 21])
  sum_sq = sum_mask = 0.0
  for _ in range(-(-num_samples // BATCH)):
    z = rng.standard_normal((BATCH, G.z_dim)).astype(np.float32)
    c = (np.eye(G.c_dim, dtype=np.float32)[rng.integers(0, G.c_dim, BATCH)] if G.c_dim
         else np.zeros((BATCH, 0), np.float32))
    transform, args = draw(rng, kind, G.img_resolution)
    sq, m = fn(variables, z, c, transform, args)
    sum_sq += float(sq)
    sum_mask += float(m)
  return psnr(sum_sq, sum_mask)
