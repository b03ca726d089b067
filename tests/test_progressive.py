"""The progressive-growing schedule against a hand-written table and an explicit list of phases."""

import numpy as np
import pytest

from gan_jax import progressive


def phases(start, target, fade, stabilize):
  """[(kimg_begin, kimg_end, resolution, fading)] written out one phase at a time."""
  out, t, res = [(0.0, stabilize, start, False)], stabilize, start
  while res < target:
    res *= 2
    out += [(t, t + fade, res, True), (t + fade, t + fade + stabilize, res, False)]
    t += fade + stabilize
  return out, t


@pytest.mark.parametrize('kimg,want', [
    (0, (4, 1.0, 16)), (599.9, (4, 1.0, 16)), (600, (4, 1.0, 16)), (900, (8, 0.5, 16)),
    (1200, (8, 1.0, 16)), (1799, (8, 1.0, 16)), (1950, (16, 0.25, 8)), (2400, (16, 1.0, 8)),
    (1e6, (16, 1.0, 8)),
])
def test_schedule_table(kimg, want):
  got = progressive.schedule(kimg, target_resolution=16, batch_sizes={16: 8})
  assert got[0] == want[0] and got[2] == want[2]
  assert got[1] == pytest.approx(want[1], abs=1e-12)


@pytest.mark.parametrize('start,target,fade,stabilize', [(4, 32, 600, 600), (8, 64, 300, 500),
                                                         (4, 16, 800, 800)])
def test_schedule_follows_the_phases(start, target, fade, stabilize):
  table, end = phases(start, target, fade, stabilize)
  batches = {64: 2, 32: 4}
  for kimg in np.random.RandomState(0).uniform(0, end + 1000, 400):
    res, alpha, batch = progressive.schedule(kimg, target, start, fade, stabilize, batches, 16)
    assert batch == batches.get(res, 16)
    if kimg >= end:
      assert (res, alpha) == (target, 1.0)
      continue
    begin, finish, want_res, fading = next(p for p in table if p[0] <= kimg < p[1])
    assert res == want_res, kimg
    want_alpha = (kimg - begin) / (finish - begin) if fading else 1.0
    assert alpha == pytest.approx(want_alpha, abs=1e-9), kimg
  assert progressive.kimg_to_reach(target, start, fade, stabilize) == end - stabilize


def test_paper_schedule_reaches_1024_after_9600_kimg():
  assert progressive.kimg_to_reach(1024) == 9600
  assert progressive.schedule(9600, 1024, batch_sizes=progressive.PAPER_BATCH_SIZES) == (
      1024, 1.0, 3)
  assert progressive.schedule(7800 + 300, 1024, batch_sizes=progressive.PAPER_BATCH_SIZES) == (
      512, 0.5, 6)


def test_zero_fade_switches_at_once_and_fixed_resolution_never_fades():
  assert progressive.schedule(599, 16, fade_kimg=0) == (4, 1.0, 16)
  assert progressive.schedule(600, 16, fade_kimg=0) == (8, 1.0, 16)
  for kimg in (0, 10, 5000):
    assert progressive.schedule(kimg, 8, start_resolution=8) == (8, 1.0, 16)


def test_bad_arguments_are_refused():
  with pytest.raises(ValueError, match='target_resolution must be a power of two'):
    progressive.schedule(0, 24)
  with pytest.raises(ValueError, match='above target_resolution'):
    progressive.schedule(0, 8, start_resolution=16)
  with pytest.raises(ValueError, match='kimg must be >= 0'):
    progressive.schedule(-1, 8)
  with pytest.raises(ValueError, match='not both 0'):
    progressive.schedule(0, 8, fade_kimg=0, stabilize_kimg=0)
  with pytest.raises(ValueError, match='batch sizes must be positive'):
    progressive.schedule(0, 8, batch_sizes={8: 0})
