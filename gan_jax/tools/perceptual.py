"""Image distances for the projector, on images in the generator's range ([-1, 1], NHWC), pure
and differentiable.

`pixel`: mean squared error over the known pixels (all channels).

`inception`: LPIPS-style, on the FID Inception-v3 (`gan_jax.metrics.inception`, weights fetched
once with `python -m gan_jax.metrics.fetch`, then offline). NVIDIA's projector uses VGG16-LPIPS,
which it downloads; we have no VGG offline, so we take LPIPS's recipe (Zhang et al. 2018) with
the network we have and LPIPS's untrained uniform weighting (their "baseline" variant): feature
maps at four scales -- the stem's conv_2 (147x147x64), conv_4 (71x71x192), mixed_2 (35x35x288)
and mixed_3 (17x17x768), like LPIPS's VGG taps at successive poolings -- each unit-normalised
along the channels at every position, f / sqrt(|f|^2 + 1e-10); per tap the squared difference
summed over channels and averaged over positions; the taps summed (so 0 <= d <= 16). Images go
in as NVIDIA's FID pipeline feeds them (x * 127.5 + 128 on the 0-255 scale, (v - 128) / 128, gray
repeated to RGB, TF-aligned bilinear resize to 299x299), after 2x box downscales while larger than
299 (bilinear alone would alias a 1024 image). The deeper taps are left out: they cost most of the
network (with taps up to mixed_7 a value-and-grad pass at batch 1 took 2.0 s instead of 1.4 s on
2 busy CPU cores) and carry class semantics more than the image's layout. XLA drops the layers
above the last tap, so only the stem to mixed_3 is run.
"""

from typing import Any, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp

from gan_jax.metrics import inception
from gan_jax.metrics import ppl
from gan_jax.models import layers

Array = jax.Array
DISTANCES = ('inception', 'pixel')
INCEPTION_TAPS = ('conv_2', 'conv_4', 'mixed_2', 'mixed_3')


# NHWC mean over k x k blocks (H and W must be multiples of k): the models' average pooling.
box_downscale = layers.downsample_avg


def pixel_distance(x: Array, target: Array, mask: Optional[Array] = None) -> Array:
  """Mean squared error per image (N,), over the pixels where mask (N or 1, H, W, 1) is 1."""
  sq = jnp.square(x - target)
  if mask is None:
    return sq.mean(axis=(1, 2, 3))
  mask = jnp.broadcast_to(mask, x.shape[:3] + (1,))
  return (sq * mask).sum(axis=(1, 2, 3)) / (mask.sum(axis=(1, 2, 3)) * x.shape[-1])


def inception_input(x: Array) -> Array:
  """Generator-range NHWC images -> the body's (N, 299, 299, 3) input, differentiably."""
  x = (x * 127.5 + 128.0 - 128.0) / 128.0
  if x.shape[-1] == 1:
    x = jnp.repeat(x, 3, axis=-1)
  while max(x.shape[1:3]) > inception.RESOLUTION and x.shape[1] % 2 == 0 and x.shape[2] % 2 == 0:
    x = box_downscale(x, 2)
  return inception.resize_bilinear(x)


def inception_taps(params: Mapping[str, Any], x: Array,
                   taps: Sequence[str] = INCEPTION_TAPS) -> list[Array]:
  """The feature maps after the named `layers.*` modules, for generator-range images x."""
  wanted = {('layers', t) for t in taps}
  _, state = inception.InceptionV3().apply(
      {'params': params}, inception_input(x), mutable=['intermediates'],
      capture_intermediates=lambda m, method: method == '__call__' and m.path in wanted)
  found = state['intermediates']['layers']
  missing = [t for t in taps if t not in found]
  if missing:
    raise ValueError(f'no Inception layer(s) {missing}: taps name modules of layers, '
                     f'e.g. {INCEPTION_TAPS}')
  return [found[t]['__call__'][0] for t in taps]


# LPIPS (uniform weights) between two lists of feature maps, (N,): the PPL metric's distance.
normalize_channels = ppl.normalize
tap_distance = ppl.distance_from_maps


class Distance:
  """A distance to one target: `prepare(target, mask)` once (outside the optimisation), then
  `dist(images, prepared)` inside it, both pure. Masks are (1, H, W, 1) 0/1 floats.

  With a mask, the Inception distance compares the images with the target whose hole is filled
  with the images' own pixels (held constant): the hole then contributes nothing, whatever the
  target holds there.
  """

  def __init__(self, kind: str, inception_params: Optional[Mapping[str, Any]] = None,
               taps: Sequence[str] = INCEPTION_TAPS):
    if kind not in DISTANCES:
      raise ValueError(f'distance must be one of {DISTANCES}, got {kind!r}')
    if kind == 'inception' and inception_params is None:
      inception_params = inception.load_params()
    self.kind, self.params, self.taps = kind, inception_params, tuple(taps)
    self.compiled_steps = {}  # the projector's jitted steps with this distance, to reuse them

  def prepare(self, target: Array, mask: Optional[Array]) -> dict:
    target = jnp.asarray(target, jnp.float32)
    prepared = {'target': target, 'mask': None if mask is None else jnp.asarray(mask, jnp.float32)}
    if self.kind == 'inception':  # an argument, not a constant baked into the compiled step
      prepared['params'] = self.params
      if mask is None:
        prepared['features'] = jax.jit(inception_taps, static_argnums=2)(self.params, target,
                                                                         self.taps)
    return prepared

  def __call__(self, images: Array, prepared: dict) -> Array:
    """(N,) distances of images (N, h, w, C) to the prepared target."""
    target, mask = prepared['target'], prepared['mask']
    if images.shape[1:] != target.shape[1:]:
      raise ValueError(f'images {images.shape[1:]} and target {target.shape[1:]} differ in size')
    if self.kind == 'pixel':
      return pixel_distance(images, target, mask)
    if mask is None:
      features = prepared['features']
    else:
      filled = jax.lax.stop_gradient(mask * target + (1 - mask) * images)
      features = inception_taps(prepared['params'], filled, self.taps)
    return tap_distance(inception_taps(prepared['params'], images, self.taps), features)
