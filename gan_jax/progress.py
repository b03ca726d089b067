"""The training loop's progress: a tick's averaged scalars and its progress line."""

from typing import Sequence

import jax
import numpy as np


def average(metrics_list: Sequence[dict]) -> dict:
  """Means over the tick of every metric (regularisers only count the steps that ran them)."""
  fetched = jax.device_get(list(metrics_list))
  out = {}
  for key in sorted({k for m in fetched for k in m}):
    out[key] = float(np.mean([m[key] for m in fetched if key in m]))
  return out


def tick_report(tick_metrics: Sequence[dict], elapsed: float, images_done: int, kimg: float,
                kimg_left: float) -> tuple[dict, str]:
  """A tick's scalars (means over the tick, then timing and progress) and its progress text
  (`kimg  sec/kimg  img/s  ETA  G  D`)."""
  scalars = average(tick_metrics)
  sec_per_kimg = elapsed / (images_done / 1000)
  img_per_sec = images_done / elapsed
  scalars.update({'timing/sec_per_kimg': sec_per_kimg, 'timing/img_per_sec': img_per_sec,
                  'progress/kimg': kimg})
  text = (f'kimg {kimg:.2f}  sec/kimg {sec_per_kimg:.2f}  img/s {img_per_sec:.1f}  '
          f'ETA {fmt_time(sec_per_kimg * kimg_left)}')
  for name in ('G', 'D', 'E'):  # E: an encoder run's loss (gan_jax.encoder_step)
    if f'loss/{name}' in scalars:
      text += f'  {name} {scalars[f"loss/{name}"]:.3f}'
  return scalars, text


def fmt_time(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f'{h}h{m:02d}m{s:02d}s' if h else f'{m}m{s:02d}s'


