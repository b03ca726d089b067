"""Optimizers, with the lazy-regularisation adjustment of StyleGAN2 (Appendix B of the paper).

When a regulariser runs as its own optimizer step every `interval` minibatches, the optimizer takes
interval + 1 steps per interval instead of interval. To keep the effective schedule that of a step
per minibatch, the learning rate is multiplied and the Adam betas raised to the power
c = interval / (interval + 1). Interval 1 is not lazy: the regulariser is part of the main update
(train_step fuses the two phases), so c = 1.
"""

import optax


def lazy_ratio(interval: int, weight: float) -> float:
  """c = interval / (interval + 1) for a lazy regulariser (interval >= 2), else 1."""
  if interval <= 1 or weight <= 0:
    return 1.0
  return interval / (interval + 1)


def adam_lazy(lr: float, b1: float, b2: float, eps: float, interval: int,
              weight: float) -> optax.GradientTransformation:
  """Adam with lr * c and betas ** c for a lazily applied regulariser (see module doc)."""
  c = lazy_ratio(interval, weight)
  return optax.adam(learning_rate=lr * c, b1=b1 ** c, b2=b2 ** c, eps=eps)


def make_optimizers(train_config):
  """(G optimizer, D optimizer) from `config.train`."""
  t = train_config
  g_tx = adam_lazy(t.g_lr, t.adam_b1, t.adam_b2, t.adam_eps, t.pl_interval, t.pl_weight)
  d_tx = adam_lazy(t.d_lr, t.adam_b1, t.adam_b2, t.adam_eps, t.r1_interval, t.r1_gamma)
  return g_tx, d_tx


def effective_hparams(train_config) -> dict:
  """The learning rates and betas actually used, for logging."""
  t = train_config
  cg = lazy_ratio(t.pl_interval, t.pl_weight)
  cd = lazy_ratio(t.r1_interval, t.r1_gamma)
  return {'g_lr': t.g_lr * cg, 'd_lr': t.d_lr * cd,
          'g_beta2': t.adam_b2 ** cg, 'd_beta2': t.adam_b2 ** cd}
