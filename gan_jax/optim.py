"""Optimizers, with the lazy-regularisation adjustment of StyleGAN2 (Appendix B of the paper).

When a regulariser runs as its own optimizer step every `interval` minibatches, the optimizer takes
interval + 1 steps per interval instead of interval. To keep the effective schedule that of a step
per minibatch, the learning rate is multiplied and the Adam betas raised to the power
c = interval / (interval + 1). Interval 1 is not lazy: the regulariser is part of the main update
(train_step fuses the two phases), so c = 1.

Freezing (config.train.freeze_d, freeze_g_mapping, freeze_g_res; transfer learning): the frozen
leaves go to `optax.set_to_zero` through `optax.multi_transform`, so they get a zero update and the
Adam state holds no moments for them; the Adam of the trained leaves (and its lazy lr and betas)
is the same transformation as without freezing. With nothing frozen the optimizer is the plain
Adam, so the optimizer state of runs that freeze nothing keeps its structure.
"""

import math
import re
from typing import Callable, Sequence

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
  every D update, StyleGAN's R1 and ProGAN's gradient penalty); the layers config.train freezes
  get no update and no Adam state (`freeze`)."""
  o, l = config.optim, config.loss
  g_tx = adam_lazy(o.g_lr, o.adam_b1, o.adam_b2, o.adam_eps, l.pl_interval, l.pl_weight)
  if lazy_d:
    d_tx = adam_lazy(o.d_lr, o.adam_b1, o.adam_b2, o.adam_eps, l.r1_interval, l.r1_gamma)
  else:
    d_tx = adam(o.d_lr, o.adam_b1, o.adam_b2, o.adam_eps)
  t = config.get('train', {})
  d_frozen = t.get('freeze_d', 0) or 0
  g_mapping, g_res = bool(t.get('freeze_g_mapping', False)), t.get('freeze_g_res', 0) or 0
  if d_frozen:
    d_tx = freeze(d_tx, lambda params: frozen_d_layers(params, d_frozen))
  if g_mapping or g_res:
    g_tx = freeze(g_tx, lambda params: frozen_g_modules(params, g_mapping, g_res))
  return g_tx, d_tx


# --------------------------------------------------------------------------------------------
# Freezing.

Path = tuple[str, ...]


def _block_resolutions(params, prefix: Path = ()) -> list[int]:
  node = params
  for key in prefix:
    node = node[key]
  return sorted((int(m.group(1)) for k in node if (m := re.fullmatch(r'b(\d+)', k))),
                reverse=True)


def d_layer_order(d_params) -> list[Path]:
  """The layers of a StyleGAN2 residual D from the input side, in NVIDIA's order (what its
  `--freezed` counts): b{R}.fromrgb, conv0, conv1, skip, then b{R/2}.conv0, conv1, skip, ...
  down to b8. The 4x4 epilogue (b4: mbstd, conv, fc, out) and the label mapping are not counted:
  NVIDIA never freezes them."""
  order = []
  for res in _block_resolutions(d_params):
    if res == 4:
      continue
    block = d_params[f'b{res}']
    order += [(f'b{res}', name) for name in ('fromrgb', 'conv0', 'conv1', 'skip') if name in block]
  return order


def frozen_d_layers(d_params, num_layers: int) -> list[Path]:
  """The first `num_layers` layers of `d_layer_order` (ValueError if D has fewer)."""
  order = d_layer_order(d_params)
  if num_layers > len(order):
    raise ValueError(f'train.freeze_d={num_layers}, but this D has {len(order)} layers before '
                     f'its 4x4 epilogue ({", ".join(".".join(p) for p in order)})')
  return order[:num_layers]


def frozen_g_modules(g_params, mapping: bool, max_res: int) -> list[Path]:
  """G's frozen modules: the mapping network (with the label embedding) if `mapping`, and the
  synthesis blocks of resolution <= `max_res` (each with its torgb)."""
  frozen = [('mapping',)] if mapping else []
  if max_res:
    frozen += [('synthesis', f'b{res}') for res in _block_resolutions(g_params, ('synthesis',))
               if res <= max_res]
  return frozen


def frozen_counts(config, g_params, d_params) -> tuple[int, int]:
  """(G, D) parameters that config.train freezes (for the log)."""
  t = config.get('train', {})
  g = frozen_g_modules(g_params, bool(t.get('freeze_g_mapping', False)),
                       t.get('freeze_g_res', 0) or 0)
  d = frozen_d_layers(d_params, t.get('freeze_d', 0) or 0)
  count = lambda params, paths: sum(
      int(x.size) for x, f in zip(jax.tree_util.tree_leaves(params),
                                  jax.tree_util.tree_leaves(frozen_mask(params, paths))) if f)
  return count(g_params, g), count(d_params, d)


def _keys(path) -> Path:
  return tuple(str(getattr(k, 'key', k)) for k in path)


def frozen_mask(params, prefixes: Sequence[Path]):
  """A tree of bools like `params`: True for the leaves under one of `prefixes`."""
  prefixes = [tuple(p) for p in prefixes]
  return jax.tree_util.tree_map_with_path(
      lambda path, _: any(_keys(path)[:len(p)] == p for p in prefixes), params)


def freeze(tx: optax.GradientTransformation,
           frozen: Callable[..., Sequence[Path]]) -> optax.GradientTransformation:
  """`tx` on the leaves not under `frozen(params)`'s module paths; a zero update and no state on
  the others."""
  def labels(params):
    return jax.tree_util.tree_map(lambda f: 'frozen' if f else 'trained',
                                  frozen_mask(params, frozen(params)))
  return optax.multi_transform({'trained': tx, 'frozen': optax.set_to_zero()}, labels)


def effective_hparams(config, lazy_d: bool = True) -> dict:
  """The learning rates and betas actually used, for logging."""
  o, l = config.optim, config.loss
  cg = lazy_ratio(l.pl_interval, l.pl_weight)
  cd = lazy_ratio(l.r1_interval, l.r1_gamma) if lazy_d else 1.0
  return {'g_lr': o.g_lr * cg, 'd_lr': o.d_lr * cd,
          'g_beta2': o.adam_b2 ** cg, 'd_beta2': o.adam_b2 ** cd}
