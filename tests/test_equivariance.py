"""Equivariance metrics (gan_jax.metrics.equivariance): the names, the image translations and
rotation against independent NumPy / analytic references, and the metrics on NVIDIA's own
config-T and config-R generators (fixtures): T is the more translation-equivariant, R by far the
more rotation-equivariant, as the paper reports."""

from pathlib import Path

import numpy as np
import pytest

from gan_jax.metrics import equivariance as eq
from gan_jax.metrics import registry
from gan_jax.models import stylegan2
from gan_jax.models import stylegan3
from gan_jax.tools import nvlabs_sg3

FIXTURES = Path(__file__).resolve().parent / 'fixtures' / 'nvlabs_sg3'


def test_names():
  spec = registry.parse('eqt50k_int')
  assert (spec.family, spec.num_gen, spec.num_real, spec.transform) == ('eq', 50000, 0, 'int')
  assert registry.parse('eqt1k_frac').transform == 'frac'
  spec = registry.parse('eqr2k')
  assert (spec.num_gen, spec.transform) == (2000, 'rot')
  assert registry.parse('eqr50k').capped(16).num_gen == 16
  for bad in ('eqt50k', 'eqr50k_int', 'eqt0k_int'):
    with pytest.raises(ValueError, match='eqt<N>k_int'):
      registry.parse(bad)


def _wave(size, shift=(0.0, 0.0)):
  """A band-limited test image (N=1, size, size, 2): cosines well under Nyquist, sampled at
  (p - shift), pixel centres at integers."""
  y, x = np.meshgrid(np.arange(size) - shift[1], np.arange(size) - shift[0], indexing='ij')
  a = np.cos(2 * np.pi * (0.09 * x + 0.05 * y) + 0.3)
  b = np.sin(2 * np.pi * (-0.06 * x + 0.11 * y))
  return np.stack([a, b], -1)[None].astype(np.float32)


def test_integer_translation_against_numpy():
  x = np.random.default_rng(0).standard_normal((2, 12, 10, 3)).astype(np.float32)
  for tx, ty in ((3, -2), (-4, 5), (0, 0)):
    z, mask = eq.integer_translation(x, np.float32(tx), np.float32(ty))
    want = np.zeros_like(x)
    want_mask = np.zeros((12, 10), np.float32)
    dst = (slice(max(ty, 0), 12 + min(ty, 0)), slice(max(tx, 0), 10 + min(tx, 0)))
    src = (slice(max(-ty, 0), 12 + min(-ty, 0)), slice(max(-tx, 0), 10 + min(-tx, 0)))
    want[:, dst[0], dst[1]] = x[:, src[0], src[1]]
    want_mask[dst] = 1
    np.testing.assert_array_equal(np.asarray(mask), want_mask)
    np.testing.assert_array_equal(np.asarray(z) * want_mask[None, :, :, None], want)


def test_fractional_translation_of_a_band_limited_image():
  size = 48
  x = _wave(size)
  for t in ((2.3, -1.6), (-3.75, 0.5), (4.0, 2.0)):
    z, mask = eq.fractional_translation(x, np.float32(t[0]), np.float32(t[1]))
    mask = np.asarray(mask)
    ix, iy = int(np.floor(t[0])), int(np.floor(t[1]))
    # 3 pixels (the taps) on the side it moves to, beyond the shift; 2 on the other side
    extent = [size - max(i + 3, 0) - max(2 - i, 0) for i in (iy, ix)]
    assert mask.sum() == extent[0] * extent[1], (t, mask.sum(), extent)
    err = np.abs(np.asarray(z) - _wave(size, t))[0][mask > 0]
    assert err.max() < 0.02, (t, err.max())  # Lanczos-3 on waves at < 0.12 cycles / pixel
  z_int, m_int = eq.integer_translation(x, np.float32(4), np.float32(2))
  z, mask = eq.fractional_translation(x, np.float32(4), np.float32(2))
  inside = (np.asarray(mask) > 0)
  np.testing.assert_allclose(np.asarray(z)[0][inside], np.asarray(z_int)[0][inside], atol=1e-6)


def test_rotation_of_a_band_limited_image():
  """A quarter turn of a smooth image is np.rot90 (exactly representable), the angle's sign
  NVIDIA's (rotation_matrix(angle) maps the rotated image's grid, a positive angle turning the
  content counter-clockwise as displayed); the pseudo-rotation of a smooth image changes little."""
  size = 32
  yy, xx = np.meshgrid(np.arange(size) - 15.5, np.arange(size) - 15.5, indexing='ij')
  img = (np.exp(-((xx - 5) ** 2 + (yy + 3) ** 2) / 40.0) -
         np.exp(-(xx ** 2 + (yy - 6) ** 2) / 30.0))
  x = img[None, :, :, None].astype(np.float32)
  plan = eq.rotation_plan(np.pi / 2, size)
  z, mask = eq.fractional_rotation(x, plan)
  mask = np.asarray(mask) > 0
  assert mask.sum() > size * size // 3
  best = {k: float(np.abs(np.asarray(z)[0, :, :, 0] - np.rot90(img, k))[mask].max())
          for k in (1, 3)}
  assert best[1] < 0.01, best
  assert best[3] > 0.3, best
  pseudo, pmask = eq.pseudo_rotation(x, eq.rotation_plan(0.3, size))
  pmask = np.asarray(pmask) > 0
  assert np.abs(np.asarray(pseudo)[0, :, :, 0] - img)[pmask].max() < 0.01


def _fixture_generator(tag):
  sd = dict(np.load(FIXTURES / f'g_{tag}.npz', allow_pickle=False))
  G = stylegan3.Generator(**nvlabs_sg3.generator_kwargs_from_nvlabs(sd))
  return G, nvlabs_sg3.generator_variables_from_nvlabs(sd, G)


def test_nvidia_generators_t_and_r():
  """One batch (4 samples) each: config T keeps integer translations to > 60 dB; R's rotation
  PSNR is far above T's (the paper's Table 2 contrast)."""
  results = {}
  for tag, kinds in (('t', ('int', 'rot')), ('r', ('rot',))):
    G, variables = _fixture_generator(tag)
    for kind in kinds:
      results[tag, kind] = eq.compute(G, variables, kind, 4)
  assert results['t', 'int'] > 60, results
  assert results['r', 'rot'] > results['t', 'rot'] + 20, results


def test_stylegan2_refused():
  G = stylegan2.Generator(img_resolution=32, img_channels=1, z_dim=16, w_dim=16)
  with pytest.raises(ValueError, match='input transform'):
    eq.check_generator(G, 'eqt50k_int')
  G3, _ = _fixture_generator('t')
  eq.check_generator(G3, 'eqt50k_int')
