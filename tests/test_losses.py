"""Losses and regularisers against hand-derived values and numpy."""

import jax.numpy as jnp
import numpy as np

from gan_jax import losses
from tests import numerics


def _log_sigmoid(x):
  return -np.log1p(np.exp(-x))


def test_g_nonsaturating_matches_numpy():
  logits = np.array([-3.0, -0.5, 0.0, 2.0, 7.5], np.float32)
  expected = np.mean(-_log_sigmoid(logits.astype(np.float64)))
  np.testing.assert_allclose(losses.g_nonsaturating(jnp.asarray(logits)), expected, rtol=1e-6)


def test_d_logistic_matches_numpy():
  real = np.array([1.0, -2.0, 0.3], np.float32)
  fake = np.array([-1.5, 0.7, 4.0], np.float32)
  r, f = real.astype(np.float64), fake.astype(np.float64)
  expected = np.mean(-np.log1p(-np.exp(_log_sigmoid(f)))) + np.mean(-_log_sigmoid(r))
  np.testing.assert_allclose(losses.d_logistic(jnp.asarray(real), jnp.asarray(fake)), expected,
                             rtol=1e-5)


def test_r1_penalty_of_a_quadratic_discriminator():
  # D(x) = sum(a * x^2) per example -> dD/dx = 2 a x, penalty = sum(4 a^2 x^2).
  rng = np.random.default_rng(0)
  a = rng.standard_normal((4, 4, 3)).astype(np.float32)
  x = rng.standard_normal((5, 4, 4, 3)).astype(np.float32)
  d_fn = lambda imgs: jnp.sum(a * imgs ** 2, axis=(1, 2, 3))
  expected = np.sum(4 * a.astype(np.float64) ** 2 * x.astype(np.float64) ** 2, axis=(1, 2, 3))
  np.testing.assert_allclose(losses.r1_penalty(d_fn, jnp.asarray(x)), expected, rtol=1e-5)
  # The fused form returns the logits of the same forward pass too.
  logits, penalty = losses.logits_and_r1(d_fn, jnp.asarray(x))
  np.testing.assert_allclose(penalty, expected, rtol=1e-5)
  # Sums of 48 terms of either sign can cancel: compared at the size of the terms' magnitudes
  # (float32 order: ~1e-7 of it); the logits of another forward pass are O(1) off.
  terms = a.astype(np.float64) * x.astype(np.float64) ** 2
  numerics.assert_close(logits, terms.sum(axis=(1, 2, 3)), 1e-5, 'logits',
                        scale=float(np.abs(terms).sum(axis=(1, 2, 3)).max()))


def test_r1_penalty_of_a_linear_discriminator_is_the_weight_norm():
  w = np.random.default_rng(1).standard_normal((8, 8, 1)).astype(np.float32)
  d_fn = lambda imgs: jnp.sum(w * imgs, axis=(1, 2, 3))
  x = jnp.zeros((3, 8, 8, 1))
  np.testing.assert_allclose(losses.r1_penalty(d_fn, x), np.full(3, np.sum(w.astype(np.float64) ** 2)),
                             rtol=1e-5)


def test_path_lengths_of_a_linear_generator():
  # images = ws . A (per sample), so J^T y = A y and the length is known in closed form.
  rng = np.random.default_rng(2)
  n, num_ws, w_dim, h, w, c = 3, 4, 5, 6, 6, 2
  A = rng.standard_normal((num_ws, w_dim, h * w * c)).astype(np.float32)
  ws = rng.standard_normal((n, num_ws, w_dim)).astype(np.float32)
  synth = lambda x: jnp.einsum('nkd,kdp->np', x, A).reshape(n, h, w, c)
  noise = rng.standard_normal((n, h, w, c)).astype(np.float32)
  got = losses.path_lengths(synth, jnp.asarray(ws), jnp.asarray(noise))
  y = noise.astype(np.float64) / np.sqrt(h * w)
  grads = np.einsum('kdp,np->nkd', A.astype(np.float64), y.reshape(n, -1))
  expected = np.sqrt(np.mean(np.sum(grads ** 2, axis=2), axis=1))
  np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_path_length_penalty_updates_the_running_mean():
  lengths = jnp.array([1.0, 2.0, 3.0])
  penalty, new_mean = losses.path_length_penalty(lengths, jnp.float32(0.5), 0.01)
  np.testing.assert_allclose(new_mean, 0.5 + 0.01 * (2.0 - 0.5), rtol=1e-6)
  np.testing.assert_allclose(penalty, (np.array([1.0, 2.0, 3.0]) - 0.515) ** 2, rtol=1e-5)
