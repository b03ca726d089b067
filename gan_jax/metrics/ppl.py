"""Perceptual path length (Karras et al. 2019), as NVIDIA's `ppl2_wend` / `ppl_wend` sample it,
with an offline perceptual distance.

Sampling (NVIDIA's PPLSampler, space 'w', sampling 'end'): z0, z1 ~ N(0, I); w0, w1 = map(z0),
map(z1); t = 0 ('end'; uniform in [0, 1) for 'full'); the pair wt0 = lerp(w0, w1, t),
wt1 = lerp(w0, w1, t + epsilon) is synthesised with the same freshly drawn noise (NVIDIA
re-randomises the noise_const buffers per batch and uses noise_mode 'const'); the optional
face crop keeps rows 3/8..7/8 and columns 2/8..6/8; images above 256 px are box-downsampled to
256; distance d(img0, img1) / epsilon^2 per pair. The metric is the mean of the per-pair values
that lie between their 1st (lower) and 99th (higher) percentiles.

The distance. NVIDIA uses LPIPS on VGG16, whose weights cannot be had offline. gan_jax uses the
same construction on the network it does have, the FID Inception-v3: images go through the FID
input pipeline (uint8-range values, bilinear resize to 299, scaling), five feature maps are taken
(after conv_2, conv_4, mixed_2, mixed_7 and mixed_10: 147, 71, 35, 17 and 8 px), each spatial
position's channel vector is divided by its L2 norm (LPIPS's normalisation), and
  d = sum over maps of mean over positions of |f0 - f1|^2
i.e. LPIPS without its learned per-channel weights (all weights 1, LPIPS's 'baseline'). It is a
perceptual distance in the same sense, but on another network: values are not comparable with
published PPL numbers, only between runs of gan_jax.
"""

from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np

from gan_jax.metrics import inception
from gan_jax.models import layers

LAYERS = ('conv_2', 'conv_4', 'mixed_2', 'mixed_7', 'mixed_10')
_NORM_EPS = 1e-10  # LPIPS's normalize_tensor eps


def feature_maps(params: Mapping[str, Any], images: jax.Array) -> list[jax.Array]:
  """The LAYERS' outputs (NHWC float32) for images in [0, 255] float (any size, 1 or 3
  channels), through the FID input pipeline (resize to 299, (x - 128) / 128)."""
  x = images.astype(jnp.float32)
  if x.shape[-1] == 1:
    x = jnp.repeat(x, 3, axis=-1)
  x = (inception.resize_bilinear(x) - 128.0) / 128.0
  wanted = {('layers', name) for name in LAYERS}
  _, state = inception.InceptionV3().apply(
      {'params': params}, x,
      capture_intermediates=lambda module, method: (method == '__call__' and
                                                    tuple(module.path) in wanted),
      mutable=['intermediates'])
  captured = state['intermediates']['layers']
  return [captured[name]['__call__'][0] for name in LAYERS]


def normalize(f: jax.Array) -> jax.Array:
  """Each position's channel vector scaled to unit L2 norm, as LPIPS; the eps sits inside the
  rsqrt so the gradient stays finite on all-zero features (the projector differentiates it)."""
  return f * jax.lax.rsqrt(jnp.sum(jnp.square(f), axis=-1, keepdims=True) + _NORM_EPS)


def distance_from_maps(maps0, maps1) -> jax.Array:
  """Per-image sum over maps of the spatial mean of |normalize(f0) - normalize(f1)|^2."""
  total = 0.0
  for f0, f1 in zip(maps0, maps1):
    total = total + jnp.mean(jnp.sum(jnp.square(normalize(f0) - normalize(f1)), axis=-1),
                             axis=(1, 2))
  return total


def prepare_images(images: jax.Array, crop: bool) -> jax.Array:
  """Generator output (about [-1, 1], NHWC) -> [0, 255] float as NVIDIA's PPL: optional face
  crop, box downsampling to 256 px when larger, (x + 1) * 127.5 (not clipped or rounded)."""
  if crop:
    size = images.shape[1]
    c = size // 8
    images = images[:, c * 3:c * 7, c * 2:c * 6]
  factor = images.shape[1] // 256
  if factor > 1:
    n, h, w, ch = images.shape
    images = images.reshape(n, h // factor, factor, w // factor, factor, ch).mean((2, 4))
  return (images + 1) * (255 / 2)


def endpoint_ws(w0: jax.Array, w1: jax.Array, t: jax.Array, epsilon: float):
  """(lerp(w0, w1, t), lerp(w0, w1, t + epsilon)) with t of shape (N,)."""
  t = t[:, None, None]
  return w0 + (w1 - w0) * t, w0 + (w1 - w0) * (t + epsilon)


def randomize_noise(buffers, rng: jax.Array):
  """The buffers with every noise_const replaced by fresh N(0, 1) draws."""
  leaves, treedef = jax.tree_util.tree_flatten_with_path(buffers)
  keys = jax.random.split(rng, len(leaves))
  out = []
  for (path, leaf), key in zip(leaves, keys):
    is_noise = getattr(path[-1], 'key', None) == 'noise_const'
    out.append(jax.random.normal(key, leaf.shape, leaf.dtype) if is_noise else leaf)
  return jax.tree_util.tree_unflatten(treedef, out)


def make_sampler(G, feature_params, epsilon: float, sampling: str, crop: bool,
                 stage: Optional[int] = None):
  """A pure fn(variables, z0, z1, c, rng, alpha=1.0) -> (N,) path-length values d / epsilon^2.

  stage (static; None: the full network) and alpha (traced): a growing StyleGAN synthesises at
  that stage and fade-in, nearest-upsampled to its full resolution, as the FID of
  `gan_jax.metrics.evaluator` sees it."""
  if sampling not in ('end', 'full'):
    raise ValueError(f"sampling must be 'end' or 'full', got {sampling!r}")

  def sample(variables, z0, z1, c, rng, alpha=1.0):
    t_key, noise_key = jax.random.split(rng)
    n = z0.shape[0]
    t = (jax.random.uniform(t_key, (n,)) if sampling == 'full' else jnp.zeros((n,)))
    ws = G.apply(variables, jnp.concatenate([z0, z1]), None if c is None else
                 jnp.concatenate([c, c]), method='map')
    wt0, wt1 = endpoint_ws(ws[:n], ws[n:], t, epsilon)
    noisy = {'params': variables['params'],
             'buffers': randomize_noise(variables['buffers'], noise_key)}
    at = {} if stage is None else {'stage': stage, 'alpha': alpha}
    images = G.apply(noisy, jnp.concatenate([wt0, wt1]), noise_mode='const',
                     method='synthesize', **at)
    images = layers.upsample_nearest(images, G.img_resolution // images.shape[1])
    maps = feature_maps(feature_params, prepare_images(images, crop))
    return distance_from_maps([m[:n] for m in maps], [m[n:] for m in maps]) / epsilon ** 2

  return sample


def aggregate(distances) -> float:
  """NVIDIA's reduction: the mean of the values within [1st percentile ('lower'), 99th
  percentile ('higher')]."""
  d = np.asarray(distances, np.float64)
  lo = np.percentile(d, 1, method='lower')
  hi = np.percentile(d, 99, method='higher')
  return float(d[(d >= lo) & (d <= hi)].mean())
