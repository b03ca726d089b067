"""Optimizers, with the lazy-regularisation adjustment of StyleGAN2 (Appendix B of the paper).

When a regulariser runs as its own optimizer step every `interval` minibatches, the optimizer takes
interval + 1 steps per interval instead of interval. To keep the effective schedule that of a step
per minibatch, the learning rate is multiplied and the Adam betas raised to the power
c = interval / (interval + 1). Interval 1 is not lazy: the regulariser is part of the main update
(train_step fuses the two phases), so c = 1.
"""

import math

import jax
import jax.numpy as jnp
import optax


def lazy_ratio(interval: int, weight: float) -> float:
  """c = interval / (interval + 1) for a lazy regulariser (interval >= 2), else 1."""
  if interval <= 1 or weight <= 0:
    return 1.0
  return interval / (interval + 1)


def _bias_correction(beta: float, count: jax.Array) -> jax.Array:
  """1 - beta ** count in float32 to a few ulp: -expm1(count * log(beta)), log taken in float64.

  optax computes float32(beta) ** count and subtracts from 1, which for beta = 0.99 ** (4 / 5)
  loses ~4e-6 of the result (float32(beta) is off by up to 3e-8, 1 - beta is 0.008); torch's
  Adam (NVIDIA's) computes it in float64 on the host.
  """
  if beta == 0:
    return jnp.ones((), jnp.float32)
  return -jnp.expm1(count.astype(jnp.float32) * jnp.float32(math.log(beta)))


def scale_by_adam(b1: float, b2: float, eps: float) -> optax.GradientTransformation:
  """torch.optim.Adam's direction m_hat / (sqrt(v) / sqrt(1 - b2^t) + eps), with accurate bias
  corrections (`_bias_correction`). Same state as optax.scale_by_adam."""

  def init_fn(params):
    zeros = lambda: jax.tree_util.tree_map(jnp.zeros_like, params)
    return optax.ScaleByAdamState(count=jnp.zeros([], jnp.int32), mu=zeros(), nu=zeros())

  def update_fn(updates, state, params=None):
    del params
    mu = jax.tree_util.tree_map(lambda g, m: b1 * m + (1 - b1) * g, updates, state.mu)
    nu = jax.tree_util.tree_map(lambda g, v: b2 * v + (1 - b2) * jnp.square(g), updates,
                                state.nu)
    count = optax.safe_increment(state.count)
    bc1, bc2_sqrt = _bias_correction(b1, count), jnp.sqrt(_bias_correction(b2, count))
    updates = jax.tree_util.tree_map(lambda m, v: (m / bc1) / (jnp.sqrt(v) / bc2_sqrt + eps),
                                     mu, nu)
    return updates, optax.ScaleByAdamState(count=count, mu=mu, nu=nu)

  return optax.GradientTransformation(init_fn, update_fn)


def adam(lr: float, b1: float, b2: float, eps: float) -> optax.GradientTransformation:
  """Adam as torch.optim.Adam (NVIDIA's optimizer); the state is optax.adam's."""
  return optax.chain(scale_by_adam(b1, b2, eps), optax.scale_by_learning_rate(lr))


def adam_lazy(lr: float, b1: float, b2: float, eps: float, interval: int,
              weight: float) -> optax.GradientTransformation:
  """Adam with lr * c and betas ** c for a lazily applied regulariser (see module doc)."""
  c = lazy_ratio(interval, weight)
  return adam(lr * c, b1 ** c, b2 ** c, eps)


def make_optimizers(config, lazy_d: bool = True):
  """(G optimizer, D optimizer) from config.optim, with the lazy intervals of config.loss: G
  lazy for path length, D lazy for R1 (`lazy_d`; False for the steps whose D penalty runs in
  every D update, StyleGAN's R1 and ProGAN's gradient penalty)."""
  o, l = config.optim, config.loss
  g_tx = adam_lazy(o.g_lr, o.adam_b1, o.adam_b2, o.adam_eps, l.pl_interval, l.pl_weight)
  if lazy_d:
    d_tx = adam_lazy(o.d_lr, o.adam_b1, o.adam_b2, o.adam_eps, l.r1_interval, l.r1_gamma)
  else:
    d_tx = adam(o.d_lr, o.adam_b1, o.adam_b2, o.adam_eps)
  return g_tx, d_tx


def effective_hparams(config, lazy_d: bool = True) -> dict:
  """The learning rates and betas actually used, for logging."""
  o, l = config.optim, config.loss
  cg = lazy_ratio(l.pl_interval, l.pl_weight)
  cd = lazy_ratio(l.r1_interval, l.r1_gamma) if lazy_d else 1.0
  return {'g_lr': o.g_lr * cg, 'd_lr': o.d_lr * cd,
          'g_beta2': o.adam_b2 ** cg, 'd_beta2': o.adam_b2 ** cd}
