"""What the loop trains at each step: the stage (resolution, fade-in alpha, batch size) as a
function of the images shown so far, and when the run is done.

Everything it reads is config.schedule. Fixed-resolution training is the one-stage schedule: the
data's resolution, alpha 1, schedule.batch_size, for ceil(schedule.kimg * 1000 / batch) steps.
Progressive growing (schedule.growing.grow) follows `gan_jax.progressive.schedule` (the official
ProGAN / StyleGAN level-of-detail schedule) to schedule.kimg, at growing.batch_sizes' batch per
resolution and schedule.batch_size for the others. Either stops early at schedule.max_steps (> 0).

The position of a run is (step, nimg); a checkpoint's meta records nimg with the stage of its last
step, so a resumed run recomputes the same stage, alpha and batch and continues exactly.
"""

import math
from typing import NamedTuple, Optional

from absl import logging

from gan_jax import progressive


def fixed_num_steps(config) -> int:
  """Steps in a fixed-resolution run: config.schedule.kimg worth of images, capped by
  config.schedule.max_steps."""
  s = config.schedule
  num_steps = math.ceil(s.kimg * 1000 / s.batch_size)
  if s.max_steps > 0:
    num_steps = min(num_steps, s.max_steps)
  return num_steps


class Stage(NamedTuple):
  resolution: int
  alpha: float
  batch_size: int


class Schedule:
  """nimg -> Stage for a config and the data's resolution."""

  def __init__(self, config, target_resolution: int):
    t = config.schedule
    p = t.growing
    self.growing = bool(p.grow)
    self.target = target_resolution
    self.max_steps = t.max_steps
    if self.growing:
      self._kwargs = dict(target_resolution=target_resolution,
                          start_resolution=p.start_resolution, fade_kimg=p.fade_kimg,
                          stabilize_kimg=p.stabilize_kimg,
                          batch_sizes=progressive.parse_batch_sizes(p.batch_sizes),
                          default_batch_size=t.batch_size)
      self.resolutions = progressive.stages(target_resolution, p.start_resolution)
      self.total_nimg = int(round(t.kimg * 1000))
      self.reset_optimizer = bool(p.reset_optimizer)
    else:
      self.batch_size = t.batch_size
      self.resolutions = [target_resolution]
      self.num_steps = fixed_num_steps(config)
      self.total_nimg = self.num_steps * t.batch_size
      self.reset_optimizer = False

  def at(self, nimg: int) -> Stage:
    """The stage of the step that starts after `nimg` images."""
    if not self.growing:
      return Stage(self.target, 1.0, self.batch_size)
    return Stage(*progressive.schedule(nimg / 1000, **self._kwargs))

  def batch_sizes(self) -> dict[int, int]:
    """{resolution: batch} of every stage."""
    if not self.growing:
      return {self.target: self.batch_size}
    kw = self._kwargs
    return {r: kw['batch_sizes'].get(r, kw['default_batch_size']) for r in self.resolutions}

  def done(self, step: int, nimg: int) -> bool:
    if not self.growing:
      return step >= self.num_steps
    return nimg >= self.total_nimg or (self.max_steps > 0 and step >= self.max_steps)

  def replay(self, num_steps: int) -> int:
    """Images shown after `num_steps` steps from the start."""
    if not self.growing:
      return num_steps * self.batch_size
    nimg = 0
    for _ in range(num_steps):
      nimg += self.at(nimg).batch_size
    return nimg

  @staticmethod
  def phase(stage: Stage) -> tuple[int, bool]:
    """What the optimizer reset watches: the resolution, and whether its fade-in is over."""
    return int(stage.resolution), bool(stage.alpha >= 1.0)

  def position(self, meta: dict, step: int) -> tuple[int, Optional[tuple[int, bool]]]:
    """(images shown, phase of the last step done) at a restored `step` (None: nothing done)."""
    if step == 0:
      return 0, None
    if 'nimg' in meta and 'stage' in meta:
      return int(meta['nimg']), self.phase(Stage(meta['stage'], meta['alpha'], 0))
    nimg, prev = self.replay(step), self.replay(step - 1)
    if self.growing:  # a checkpoint without growth meta (e.g. config.resume of another run)
      logging.warning('The checkpoint of step %d holds no image count: replayed the schedule, '
                      '%d images.', step, nimg)
    return nimg, self.phase(self.at(prev))
