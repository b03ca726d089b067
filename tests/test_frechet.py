"""Feature statistics: streaming mean/covariance, Fréchet distance vs scipy's sqrtm, unbiased KID
vs a direct numpy computation."""

import numpy as np
import pytest
import scipy.linalg

from gan_jax.metrics import frechet


def _scipy_fid(mu1, sigma1, mu2, sigma2):
  """The usual reference: scipy's sqrtm of Σ₁Σ₂, real part, offset when not finite."""
  covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
  if not np.isfinite(covmean).all():
    offset = np.eye(sigma1.shape[0]) * 1e-6
    covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
  diff = mu1 - mu2
  return diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean.real)


def _gaussian_set(rng, n, d, scale=1.0, shift=0.0):
  mixing = rng.normal(size=(d, d)) * scale / np.sqrt(d)
  return rng.normal(size=(n, d)) @ mixing + shift


def _mean_cov(x):
  return x.mean(axis=0), np.cov(x, rowvar=False, bias=True)


@pytest.mark.parametrize('n1,n2,d', [(400, 300, 32),   # full rank
                                     (20, 400, 32),    # one rank-deficient (rank 19)
                                     (12, 9, 48),      # both rank-deficient
                                     (33, 33, 32)])    # near-singular (n = d + 1)
def test_frechet_distance_matches_scipy(n1, n2, d):
  rng = np.random.default_rng(n1 * 1000 + n2)
  a = _gaussian_set(rng, n1, d)
  b = _gaussian_set(rng, n2, d, scale=1.5, shift=0.2)
  mu1, sigma1 = _mean_cov(a)
  mu2, sigma2 = _mean_cov(b)
  expected = _scipy_fid(mu1, sigma1, mu2, sigma2)
  got = frechet.frechet_distance(mu1, sigma1, mu2, sigma2)
  assert expected > 1.0
  # scipy's sqrtm of a singular product is itself only good to ~sqrt(eps * |eigenvalue|) per null
  # direction, which depends on the LAPACK build: measured 1.8e-8 of the distance here (12 x 9
  # samples in 48 dimensions), 1e-14 at full rank. A wrong term of the distance is O(1e-1).
  assert got == pytest.approx(expected, rel=1e-6)
  # Symmetric in its two sets.
  assert frechet.frechet_distance(mu2, sigma2, mu1, sigma1) == pytest.approx(got, rel=1e-9)


def test_trace_sqrt_product_of_commuting_matrices():
  """Diagonal Σ₁, Σ₂ (one singular): tr((Σ₁Σ₂)^½) = Σ sqrt(a_i b_i), known exactly."""
  a = np.array([4.0, 1.0, 0.0, 9.0])
  b = np.array([1.0, 16.0, 5.0, 0.25])
  assert frechet.trace_sqrt_product(np.diag(a), np.diag(b)) == pytest.approx(2 + 4 + 0 + 1.5,
                                                                              rel=1e-12)


@pytest.mark.parametrize('n,d', [(500, 64), (30, 64)])
def test_fid_of_a_set_with_itself_is_zero(n, d):
  x = _gaussian_set(np.random.default_rng(n), n, d)
  mu, sigma = _mean_cov(x)
  assert abs(frechet.frechet_distance(mu, sigma, mu, sigma)) < 1e-9 * np.trace(sigma)
  # ... and a shifted copy is exactly the squared shift away.
  shift = np.full(d, 0.5)
  assert frechet.frechet_distance(mu, sigma, mu + shift, sigma) == pytest.approx(
      shift @ shift, abs=1e-9 * np.trace(sigma))


def test_streaming_stats_equal_whole_set_stats():
  x = _gaussian_set(np.random.default_rng(0), 250, 16, shift=3.0).astype(np.float32)
  stats = frechet.FeatureStats(16, capture_all=True)
  for chunk in np.array_split(x, [7, 8, 100, 101, 249]):
    stats.append(chunk)
  mean, cov = stats.mean_cov()
  assert stats.num_items == 250 and mean.dtype == cov.dtype == np.float64
  np.testing.assert_allclose(mean, np.mean(x.astype(np.float64), axis=0), rtol=1e-12)
  np.testing.assert_allclose(cov, np.cov(x.astype(np.float64), rowvar=False, bias=True),
                             rtol=1e-9, atol=1e-12)
  np.testing.assert_array_equal(stats.all_features(), x)

  # Shards merged, and a round trip through arrays, give the same statistics.
  first, second = frechet.FeatureStats(16), frechet.FeatureStats(16)
  first.append(x[:100])
  second.append(x[100:])
  first.merge(second)
  restored = frechet.FeatureStats.from_arrays(first.to_arrays())
  for got, want in zip(restored.mean_cov(), (mean, cov)):
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_stats_stop_at_max_items():
  x = np.arange(30, dtype=np.float32).reshape(10, 3)
  stats = frechet.FeatureStats(3, max_items=7)
  stats.append(x[:4])
  stats.append(x[4:])
  assert stats.num_items == 7 and stats.is_full()
  np.testing.assert_allclose(stats.mean_cov()[0], x[:7].mean(axis=0))
  with pytest.raises(ValueError, match='shape'):
    stats.append(np.zeros((2, 4)))


def _kernel(x, y):
  return (x @ y.T / x.shape[1] + 1) ** 3


def _unbiased_mmd2(x, y):
  """Direct unbiased MMD²: off-diagonal means of k(x, x) and k(y, y) minus twice mean k(x, y)."""
  m = x.shape[0]
  kxx, kyy, kxy = _kernel(x, x), _kernel(y, y), _kernel(x, y)
  off_diagonal = ~np.eye(m, dtype=bool)
  return kxx[off_diagonal].mean() + kyy[off_diagonal].mean() - 2 * kxy.mean()


def test_kid_of_whole_sets_is_the_unbiased_mmd():
  """With subsets as large as the sets, every subset is a permutation of the whole set."""
  rng = np.random.default_rng(1)
  real, fake = _gaussian_set(rng, 40, 24), _gaussian_set(rng, 40, 24, scale=1.3, shift=0.3)
  expected = _unbiased_mmd2(fake, real)
  assert expected > 1e-3
  kid = frechet.kernel_inception_distance(real, fake, num_subsets=3, max_subset_size=1000)
  assert kid == pytest.approx(expected, rel=1e-10)


def test_kid_averages_subset_estimates():
  rng = np.random.default_rng(2)
  real, fake = _gaussian_set(rng, 60, 16), _gaussian_set(rng, 50, 16, shift=0.4)
  kid = frechet.kernel_inception_distance(real, fake, num_subsets=5, max_subset_size=20, seed=7)
  draws = np.random.default_rng(7)
  estimates = []
  for _ in range(5):
    x = fake[draws.choice(50, 20, replace=False)]
    y = real[draws.choice(60, 20, replace=False)]
    estimates.append(_unbiased_mmd2(x, y))
  assert kid == pytest.approx(np.mean(estimates), rel=1e-10)
  # Identical distributions: near zero, and smaller than the shifted pair's.
  same = frechet.kernel_inception_distance(real[:30], real[30:], num_subsets=5)
  assert abs(same) < kid
