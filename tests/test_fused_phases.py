"""Regularisers with interval 1 join their main phase (NVIDIA's Gboth / Dboth).

The optimizers here record the last gradient they were given as their state and leave the
parameters unchanged, so a step's recorded D gradient with R1 fused, minus the one of a step
without R1, must be the R1 gradient at the same parameters, computed here independently with
`losses.r1_penalty`; likewise for path length in G.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from gan_jax import config_base
from gan_jax import losses
from gan_jax import models
from gan_jax import state as state_lib
from gan_jax import train_step

N = 4


def grad_recorder() -> optax.GradientTransformation:
  return optax.GradientTransformation(
      lambda params: jax.tree_util.tree_map(jnp.zeros_like, params),
      lambda grads, state, params=None: (jax.tree_util.tree_map(jnp.zeros_like, grads), grads))


def _step_cfg(r1_gamma, r1_interval, pl_weight, pl_interval):
  t = ml_collections.ConfigDict(dict(
      batch_size=N, r1_gamma=r1_gamma, r1_interval=r1_interval, pl_weight=pl_weight,
      pl_interval=pl_interval, pl_decay=0.01, pl_batch_shrink=2, style_mixing_prob=0.0,
      ema_kimg=1.0, ema_rampup=0.0))
  return train_step.StepConfig.from_config(t, c_dim=0)


@pytest.fixture(scope='module')
def setup():
  m = config_base.get_base_config().model
  m.z_dim = m.w_dim = 8
  m.mapping_layers = 1
  m.channel_base, m.channel_max = 64, 4
  m.mbstd_group_size = 2
  G, D = models.build(m, 8, 1, 0)
  sgd = grad_recorder()
  state = state_lib.create(G, D, sgd, sgd, 0, jax.random.PRNGKey(3))
  reals = jax.random.uniform(jax.random.PRNGKey(4), (N, 8, 8, 1), minval=-1, maxval=1)
  batch = {'image': reals, 'label': jnp.zeros((N,), jnp.int32)}

  def run(cfg, do_r1, do_pl):
    step = train_step.make_train_step(G, D, sgd, sgd, cfg)
    return jax.jit(step, static_argnums=(2, 3))(state, batch, do_r1, do_pl)

  plain = run(_step_cfg(0.0, 0, 0.0, 0), False, False)  # no regulariser: the shared baseline
  return G, D, state, batch, run, plain


def _delta(new, old):
  return jax.tree_util.tree_map(lambda a, b: a - b, new, old)


def test_fused_r1_is_one_update_at_the_same_parameters(setup):
  G, D, state, batch, run, (plain, plain_metrics) = setup
  gamma = 3.0
  fused, metrics = run(_step_cfg(gamma, 1, 0.0, 0), True, False)

  def r1_loss(d_params):  # independent: r1_penalty evaluates D again, at the old parameters
    penalty = losses.r1_penalty(lambda x: D.apply({'params': d_params}, x, None), batch['image'])
    return jnp.mean(penalty) * gamma / 2

  want = jax.grad(r1_loss)(state.d_params)
  got = _delta(fused.d_opt, plain.d_opt)
  # The difference of two float32 gradients: rounding of the logistic part (the plain gradient)
  # bounds its accuracy where the R1 gradient is much smaller.
  eps = float(np.finfo(np.float32).eps)
  for g, w, p in zip(*(jax.tree_util.tree_leaves(t) for t in (got, want, plain.d_opt))):
    atol = 1e-4 * float(jnp.max(jnp.abs(w))) + 4 * eps * float(jnp.max(jnp.abs(p)))
    np.testing.assert_allclose(g, w, rtol=1e-3, atol=atol)
  # G's gradient does not see R1; the logistic part and the penalty are reported separately.
  for a, b in zip(jax.tree_util.tree_leaves(fused.g_opt),
                  jax.tree_util.tree_leaves(plain.g_opt)):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_allclose(metrics['loss/D'], plain_metrics['loss/D'], rtol=1e-6)
  penalty = losses.r1_penalty(lambda x: D.apply({'params': state.d_params}, x, None),
                              batch['image'])
  np.testing.assert_allclose(metrics['loss/D_r1_penalty'], jnp.mean(penalty), rtol=1e-5)


def test_fused_path_length_adds_its_gradient(setup):
  G, _, state, _, run, (plain, m_plain) = setup
  weight = 2.0
  fused, m = run(_step_cfg(0.0, 0, weight, 1), False, True)
  np.testing.assert_allclose(m['loss/G'], m_plain['loss/G'], rtol=1e-6)  # the main term alone

  # The path-length draws, in the step's key order: z, c, mix, noise of G main, then z, c, mix,
  # noise and the random image of the path-length term.
  keys = jax.random.split(jax.random.fold_in(state.rng, state.step), 16)
  variables = lambda p: {'params': p, 'buffers': state.g_buffers}
  z_pl = jax.random.normal(keys[4], (N // 2, G.z_dim))

  def pl_loss(g_params):
    ws = G.apply(variables(g_params), z_pl, jnp.zeros((N // 2, 0)), method='map')
    synth = lambda w: G.apply(variables(g_params), w, method='synthesize',
                              rngs={'noise': keys[7]})
    lengths = losses.path_lengths(synth, ws, jax.random.normal(keys[8], (N // 2, 8, 8, 1)))
    penalty, _ = losses.path_length_penalty(lengths, state.pl_mean, 0.01)
    return jnp.mean(penalty) * weight

  want = jax.grad(pl_loss)(state.g_params)
  got = _delta(fused.g_opt, plain.g_opt)
  for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
    np.testing.assert_allclose(g, w, rtol=1e-3, atol=1e-4 * float(jnp.max(jnp.abs(w))))
