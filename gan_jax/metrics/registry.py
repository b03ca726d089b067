"""Metric names as NVIDIA spells them, parsed into what to compute.

  fid<N>k[_full]    Fréchet Inception distance, N thousand generated images against N thousand
                    reals (`_full`: against every real image of the split). fid50k_full is the
                    number published tables quote.
  kid<N>k[_full]    kernel Inception distance (NVIDIA's subset estimator), same counts.
  pr<N>k<K>[_full]  precision and recall of Kynkäänniemi et al. 2019 with K nearest neighbours
                    (pr50k3_full: 50k generated, all reals, k = 3). Two values: <name>_precision
                    and <name>_recall.
  ppl2_wend         perceptual path length in W at path ends, 50k samples, epsilon 1e-4, no crop
                    (NVIDIA's legacy StyleGAN2 metric); ppl_wend is the same with the face crop.
  eqt<N>k_int       StyleGAN3's equivariance PSNR (dB) to integer translations of the input,
  eqt<N>k_frac      to fractional translations, eqr<N>k to rotations; N thousand samples
  eqr<N>k           (eqt50k_int, eqt50k_frac, eqr50k are NVIDIA's; eqt1k_int etc. are small-sample
                    versions). gan_jax/metrics/equivariance.py has the definitions.

Counts may be capped for smoke tests with an explicit `max_images` (evaluator / CLI argument),
never by a fake name. This module is light (no JAX) so that config validation can use it.
"""

import dataclasses
import re
from typing import Optional

FAMILIES = ('fid', 'kid', 'pr', 'ppl', 'eq')
_COUNTED = re.compile(r'^(fid|kid)([1-9][0-9]*)k(_full)?$')
_PR = re.compile(r'^pr([1-9][0-9]*)k([1-9][0-9]*)(_full)?$')
_EQ = re.compile(r'^(eqt([1-9][0-9]*)k_(int|frac)|eqr([1-9][0-9]*)k)$')


@dataclasses.dataclass(frozen=True)
class MetricSpec:
  """What one metric name asks for.

  Attributes:
    name: the name as given ('fid50k_full').
    family: 'fid' | 'kid' | 'pr' | 'ppl' | 'eq'.
    num_gen: generated images (ppl: sampled paths).
    num_real: real images; None for all of the split (`_full`); 0 for none (ppl).
    k: neighbourhood size (pr).
    epsilon, space, sampling, crop: path-length settings (ppl).
    transform: 'int' | 'frac' | 'rot' (eq).
  """
  name: str
  family: str
  num_gen: int
  num_real: Optional[int]
  k: int = 0
  epsilon: float = 0.0
  space: str = ''
  sampling: str = ''
  crop: bool = False
  transform: str = ''

  @property
  def result_names(self) -> tuple[str, ...]:
    """The keys this metric reports under."""
    if self.family == 'pr':
      return (f'{self.name}_precision', f'{self.name}_recall')
    return (self.name,)

  def capped(self, max_images: Optional[int]) -> 'MetricSpec':
    """The spec with both counts capped at `max_images` (None or 0: unchanged)."""
    if not max_images:
      return self
    num_real = self.num_real if self.num_real == 0 else min(self.num_real or max_images,
                                                               max_images)
    return dataclasses.replace(self, num_gen=min(self.num_gen, max_images), num_real=num_real)


# Names that are not of the counted forms above: NVIDIA's path-length metrics.
NAMED = {
    'ppl2_wend': MetricSpec('ppl2_wend', 'ppl', num_gen=50000, num_real=0, epsilon=1e-4,
                            space='w', sampling='end', crop=False),
    'ppl_wend': MetricSpec('ppl_wend', 'ppl', num_gen=50000, num_real=0, epsilon=1e-4,
                           space='w', sampling='end', crop=True),
}


def parse(name: str) -> MetricSpec:
  """The spec of a metric name; ValueError naming the accepted forms for anything else."""
  name = name.strip()
  if name in NAMED:
    return NAMED[name]
  match = _COUNTED.match(name)
  if match:
    family, thousands, full = match.groups()
    count = int(thousands) * 1000
    return MetricSpec(name, family, num_gen=count, num_real=None if full else count)
  match = _PR.match(name)
  if match:
    thousands, k, full = match.groups()
    count = int(thousands) * 1000
    return MetricSpec(name, 'pr', num_gen=count, num_real=None if full else count, k=int(k))
  match = _EQ.match(name)
  if match:
    _, t_thousands, t_kind, r_thousands = match.groups()
    count = int(t_thousands or r_thousands) * 1000
    return MetricSpec(name, 'eq', num_gen=count, num_real=0, transform=t_kind or 'rot')
  raise ValueError(
      f'unknown metric {name!r}: use fid<N>k[_full], kid<N>k[_full], pr<N>k<K>[_full], '
      f'eqt<N>k_int, eqt<N>k_frac, eqr<N>k (N thousand images, K neighbours) or one of '
      f'{sorted(NAMED)}; e.g. fid50k_full, kid50k_full, pr50k3_full, ppl2_wend, eqt50k_int, '
      f'fid2k.')


def parse_list(names: str) -> list[MetricSpec]:
  """Specs of a comma-separated list ('' -> []); duplicates refused."""
  specs = [parse(n) for n in names.split(',') if n.strip()]
  seen = [s.name for s in specs]
  duplicates = sorted({n for n in seen if seen.count(n) > 1})
  if duplicates:
    raise ValueError(f'metric(s) listed twice: {duplicates}')
  return specs
