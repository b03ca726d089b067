"""The lazy-regularisation Adam adjustment and the G_ema decay."""

import jax.numpy as jnp
import numpy as np
import pytest

from gan_jax import config_base
from gan_jax import optim
from gan_jax import train_step
from tests import numerics


def _numpy_adam(grads, lr, b1, b2, eps):
  m = v = 0.0
  p = 0.0
  out = []
  for t, g in enumerate(grads, start=1):
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    mhat, vhat = m / (1 - b1 ** t), v / (1 - b2 ** t)
    p = p - lr * mhat / (np.sqrt(vhat) + eps)
    out.append(p)
  return np.array(out)


@pytest.mark.parametrize('interval,weight,c', [(16, 10.0, 16 / 17), (4, 2.0, 4 / 5), (0, 2.0, 1.0),
                                               (1, 10.0, 1.0),  # interval 1: fused, not lazy
                                               (4, 0.0, 1.0)])
def test_lazy_ratio(interval, weight, c):
  assert optim.lazy_ratio(interval, weight) == pytest.approx(c)


def test_adam_lazy_matches_adam_with_adjusted_hyperparameters():
  lr, b1, b2, eps, interval = 0.002, 0.5, 0.99, 1e-8, 16
  c = interval / (interval + 1)
  tx = optim.adam_lazy(lr, b1, b2, eps, interval, weight=10.0)
  grads = [0.3, -1.2, 0.05, 2.0, -0.7]
  params = jnp.zeros(())
  opt = tx.init(params)
  got = []
  for g in grads:
    upd, opt = tx.update(jnp.float32(g), opt, params)
    params = params + upd
    got.append(float(params))
  expected = _numpy_adam(grads, lr * c, b1 ** c, b2 ** c, eps)
  # The parameter crosses zero (steps of either sign): compared at the size of a step, lr.
  numerics.assert_close(got, expected, 1e-5, 'lazy Adam', scale=lr)
  # And it is not plain Adam: the adjustment changes the trajectory by far more than that.
  plain = _numpy_adam(grads, lr, b1, b2, eps)
  assert numerics.relative_error(got, plain, scale=lr) > 1e3 * 1e-5


def test_apply_update_replaces_nonfinite_gradients_as_nvidia():
  # NVIDIA's loop: nan_to_num(grad, nan=0, posinf=1e5, neginf=-1e5) before opt.step().
  tx = optim.adam(0.01, 0.0, 0.99, 1e-8)
  params = {'a': jnp.zeros((4,))}
  grads = {'a': jnp.array([jnp.nan, jnp.inf, -jnp.inf, 2.0])}
  got, _ = train_step.apply_update(tx, grads, tx.init(params), params)
  want, _ = train_step.apply_update(tx, {'a': jnp.array([0.0, 1e5, -1e5, 2.0])},
                                    tx.init(params), params)
  np.testing.assert_array_equal(got['a'], want['a'])
  np.testing.assert_allclose(got['a'], [0.0, -0.01, 0.01, -0.01], rtol=1e-6)


def _step_config(batch, ema_kimg, ema_rampup):
  config = config_base.get_base_config()
  config.schedule.batch_size = batch
  config.loss.r1_gamma, config.loss.style_mixing_prob = 1.0, 0.0
  config.ema.kimg, config.ema.rampup = ema_kimg, ema_rampup
  return train_step.StepConfig.from_config(config, c_dim=0)


def test_ema_beta_has_the_configured_half_life():
  cfg = _step_config(batch=32, ema_kimg=10.0, ema_rampup=0.0)
  beta = float(train_step.ema_beta(jnp.int32(1000), cfg))
  np.testing.assert_allclose(beta, 0.5 ** (32 / 10000), rtol=1e-6)
  # After half-life / batch steps the old weights keep half their weight.
  np.testing.assert_allclose(beta ** (10000 / 32), 0.5, rtol=1e-4)


def test_ema_beta_rampup():
  cfg = _step_config(batch=32, ema_kimg=10.0, ema_rampup=0.05)
  assert float(train_step.ema_beta(jnp.int32(0), cfg)) == 0.0  # G_ema starts as a copy of G
  # 100 steps = 3200 images -> half-life min(10000, 3200 * 0.05 = 160) images.
  np.testing.assert_allclose(float(train_step.ema_beta(jnp.int32(100), cfg)), 0.5 ** (32 / 160),
                             rtol=1e-6)
  # Late in training the ramp no longer binds.
  np.testing.assert_allclose(float(train_step.ema_beta(jnp.int32(10 ** 6), cfg)),
                             0.5 ** (32 / 10000), rtol=1e-6)


def test_regularization_schedule():
  cfg = _step_config(batch=8, ema_kimg=1.0, ema_rampup=0.0)
  flags = [cfg.regularize(s) for s in range(17)]
  assert flags[0] == (True, True)
  assert flags[4] == (False, True)
  assert flags[16] == (True, True)
  assert sum(r1 for r1, _ in flags) == 2 and sum(pl for _, pl in flags) == 5
