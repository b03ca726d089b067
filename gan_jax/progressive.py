"""The progressive-growing schedule (ProGAN, Karras et al. 2018): which resolution, fade-in alpha
and batch size at a given point of training, measured in kimg (thousands of real images shown).

Training starts at `start_resolution` and stays there for `stabilize_kimg`; then, for every
doubling, the new blocks fade in over `fade_kimg` (alpha 0 -> 1, the networks at the new
resolution) and the network trains at alpha 1 for another `stabilize_kimg`. Once at
`target_resolution` it stays there with alpha 1. This is the official code's level-of-detail
schedule (TrainingSchedule: lod_training_kimg / lod_transition_kimg, whose defaults are 600 kimg
each; its 'v1' preset used 800), including the boundaries: at the exact start of a fade the
stage is still the lower one (alpha 1), at its exact end the new one at alpha 1 -- the same
images either way, as alpha 0 at the new stage equals the old stage upsampled.

The batch size comes from `batch_sizes` ({resolution: batch}, the official minibatch_dict; the
paper's is {256: 14, 512: 6, 1024: 3}) with `default_batch_size` (the official minibatch_base,
16) for the resolutions not in it.

Use: each training step calls `schedule(images_seen / 1000, ...)`, jits the step once per stage
(stage static) and passes alpha as a traced float32 scalar (`gan_jax.models.progan`; the fade-in
helpers are in `gan_jax.models.layers`).
"""

import math
from typing import Mapping, Optional

PAPER_BATCH_SIZES = {256: 14, 512: 6, 1024: 3}


def _log2(resolution: int, what: str) -> int:
  log2 = int(round(math.log2(resolution))) if resolution > 0 else 0
  if resolution < 4 or 2 ** log2 != resolution:
    raise ValueError(f'{what} must be a power of two >= 4, got {resolution}')
  return log2


def schedule(kimg: float, target_resolution: int, start_resolution: int = 4,
             fade_kimg: float = 600.0, stabilize_kimg: float = 600.0,
             batch_sizes: Optional[Mapping[int, int]] = None,
             default_batch_size: int = 16) -> tuple[int, float, int]:
  """(stage resolution, alpha in [0, 1], batch size) after `kimg` thousand real images."""
  log2_target = _log2(target_resolution, 'target_resolution')
  log2_start = _log2(start_resolution, 'start_resolution')
  if start_resolution > target_resolution:
    raise ValueError(f'start_resolution {start_resolution} is above target_resolution '
                     f'{target_resolution}')
  if kimg < 0:
    raise ValueError(f'kimg must be >= 0, got {kimg}')
  if fade_kimg < 0 or stabilize_kimg < 0 or fade_kimg + stabilize_kimg <= 0:
    raise ValueError(f'fade_kimg ({fade_kimg}) and stabilize_kimg ({stabilize_kimg}) must be '
                     '>= 0 and not both 0')
  batch_sizes = dict(batch_sizes or {})
  if any(b <= 0 for b in list(batch_sizes.values()) + [default_batch_size]):
    raise ValueError(f'batch sizes must be positive, got {batch_sizes} and default '
                     f'{default_batch_size}')

  phase_kimg = fade_kimg + stabilize_kimg
  phase = math.floor(kimg / phase_kimg)
  into_phase = kimg - phase * phase_kimg
  # Level of detail: log2(target / resolution), fractional while fading.
  lod = float(log2_target - log2_start - phase)
  if fade_kimg > 0:
    lod -= max(into_phase - stabilize_kimg, 0.0) / fade_kimg
  lod = max(lod, 0.0)
  resolution = 2 ** (log2_target - math.floor(lod))
  alpha = 1.0 - (lod - math.floor(lod))
  return resolution, alpha, batch_sizes.get(resolution, default_batch_size)


def kimg_to_reach(resolution: int, start_resolution: int = 4, fade_kimg: float = 600.0,
                  stabilize_kimg: float = 600.0) -> float:
  """kimg at which the fade-in to `resolution` completes (alpha reaches 1 there)."""
  doublings = _log2(resolution, 'resolution') - _log2(start_resolution, 'start_resolution')
  if doublings < 0:
    raise ValueError(f'resolution {resolution} is below start_resolution {start_resolution}')
  return doublings * (fade_kimg + stabilize_kimg)


def parse_batch_sizes(text: str) -> dict[int, int]:
  """'256:14,512:6,1024:3' -> {256: 14, 512: 6, 1024: 3} (config.schedule.growing.batch_sizes);
  '' -> {}. Resolutions must be powers of two >= 4, batches positive."""
  out = {}
  for part in text.replace(' ', '').split(','):
    if not part:
      continue
    res, sep, batch = part.partition(':')
    if not sep or not res.isdigit() or not batch.isdigit():
      raise ValueError(f'bad batch size entry {part!r} in {text!r}: write RES:BATCH pairs, '
                       'e.g. 256:14,512:6,1024:3')
    _log2(int(res), f'resolution {res} in {text!r}')
    if int(batch) <= 0 or int(res) in out:
      raise ValueError(f'bad batch size entry {part!r} in {text!r}: batches must be positive '
                       'and each resolution given once')
    out[int(res)] = int(batch)
  return out


def stages(target_resolution: int, start_resolution: int = 4) -> list[int]:
  """The stage resolutions a run passes through: start, 2 * start, ..., target."""
  lo, hi = _log2(start_resolution, 'start_resolution'), _log2(target_resolution,
                                                              'target_resolution')
  return [2 ** k for k in range(lo, hi + 1)]
