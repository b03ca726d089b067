"""Regularisers with interval 1 join their main phase (NVIDIA's Gboth / Dboth).

The optimizers here record the last gradient they were given as their state and leave the
parameters unchanged, so a step's recorded D gradient with R1 fused, minus the one of a step
without R1, must be the R1 gradient at the same parameters, computed here independently with
`losses.r1_penalty`; likewise for path length in G.
"""

import jax
import jax.numpy as jnp
import optax
import pytest

from gan_jax import config_base
from gan_jax import losses
from gan_jax import models
from gan_jax import state as state_lib
from gan_jax import step_common
from gan_jax import train_step
from tests import numerics

N = 4
# The fused step's gradient is (main + regulariser) from one program; the check below subtracts
# nothing and compares it with main (the plain step) + regulariser (computed apart), leaf by leaf
# at the scale of the fused leaf: the float32 spread measured under several XLA:CPU settings was
# at most 2e-6 of it (a 4-element bias), while a 10% error in the regulariser's weight moves the
# worst leaf by 0.046 (R1) and 0.18 (path length) of it, 460x and 1800x the bound (checked in
# `_assert_sum`).
GRAD_REL = 1e-4
# Scalar losses of two programs: measured <= 2.3e-7 of themselves.
REL = 1e-5


def grad_recorder() -> optax.GradientTransformation:
  return optax.GradientTransformation(
      lambda params: jax.tree_util.tree_map(jnp.zeros_like, params),
      lambda grads, state, params=None: (jax.tree_util.tree_map(jnp.zeros_like, grads), grads))


def _step_cfg(r1_gamma, r1_interval, pl_weight, pl_interval):
  config = config_base.get_base_config()
  config.schedule.batch_size = N
  l = config.loss
  l.r1_gamma, l.r1_interval, l.pl_weight, l.pl_interval = r1_gamma, r1_interval, pl_weight, pl_interval
  l.pl_decay, l.pl_batch_shrink, l.style_mixing_prob = 0.01, 2, 0.0
  config.ema.kimg, config.ema.rampup = 1.0, 0.0
  return train_step.StepConfig.from_config(config, c_dim=0)


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


def _assert_sum(fused, plain, regulariser, what):
  """fused == plain + regulariser leaf by leaf, at the scale of each fused leaf.

  Not (fused - plain) against the regulariser alone: some leaves' regulariser gradient is ~1e-4 of
  their main gradient (R1's biases), so the difference is all float32 noise of the main term, and
  its size relative to the tiny regulariser gradient depends on the CPU (the old rtol 1e-3 failed
  on another machine, and reached 1.8x its bound here).
  """
  want = jax.tree_util.tree_map(lambda a, b: a + b, plain, regulariser)
  numerics.assert_trees_close(fused, want, GRAD_REL, what)
  # The regulariser is there to be seen: with its weight 10% off the worst leaf would be off by
  # far more than the bound.
  off = max(numerics.relative_error(f, p + 0.9 * r) for f, p, r in zip(
      *(jax.tree_util.tree_leaves(t) for t in (fused, plain, regulariser))))
  assert off > 100 * GRAD_REL, f'{what}: the regulariser barely changes the gradient ({off:.2g})'


def test_fused_r1_is_one_update_at_the_same_parameters(setup):
  G, D, state, batch, run, (plain, plain_metrics) = setup
  gamma = 3.0
  fused, metrics = run(_step_cfg(gamma, 1, 0.0, 0), True, False)

  def r1_loss(d_params):  # independent: r1_penalty evaluates D again, at the old parameters
    penalty = losses.r1_penalty(lambda x: D.apply({'params': d_params}, x, None), batch['image'])
    return jnp.mean(penalty) * gamma / 2

  _assert_sum(fused.d_opt, plain.d_opt, jax.grad(r1_loss)(state.d_params), 'D grad with R1')
  # G's gradient does not see R1 (two programs: equal up to float32 summation order); the
  # logistic part and the penalty are reported separately.
  numerics.assert_trees_close(fused.g_opt, plain.g_opt, GRAD_REL, 'G grad')
  numerics.assert_close(metrics['loss/D'], plain_metrics['loss/D'], REL, 'loss/D')
  penalty = jnp.mean(losses.r1_penalty(lambda x: D.apply({'params': state.d_params}, x, None),
                                       batch['image']))
  numerics.assert_close(metrics['loss/D_r1_penalty'], penalty, REL, 'R1 penalty')
  # Reporting loss/D with the R1 term in it would be off by far more than the bound.
  assert gamma / 2 * float(penalty) > 1e3 * REL * abs(float(plain_metrics['loss/D']))


def test_fused_path_length_adds_its_gradient(setup):
  G, _, state, _, run, (plain, m_plain) = setup
  weight = 2.0
  fused, m = run(_step_cfg(0.0, 0, weight, 1), False, True)
  numerics.assert_close(m['loss/G'], m_plain['loss/G'], REL, 'loss/G')  # the main term alone

  # The path-length draws as the step derives them: the 'g_pl' phase key splits into the G
  # evaluation's key (z, c, mix, noise) and the random image's.
  key = step_common.phase_key(step_common.step_key(state.rng, state.step), 'g_pl')
  k_g, k_dir = jax.random.split(key)
  k_z, _, _, k_noise = jax.random.split(k_g, 4)
  variables = lambda p: {'params': p, 'buffers': state.g_buffers}
  z_pl = jax.random.normal(k_z, (N // 2, G.z_dim))

  def pl_loss(g_params):
    ws = G.apply(variables(g_params), z_pl, jnp.zeros((N // 2, 0)), method='map')
    synth = lambda w: G.apply(variables(g_params), w, method='synthesize',
                              rngs={'noise': k_noise})
    lengths = losses.path_lengths(synth, ws, jax.random.normal(k_dir, (N // 2, 8, 8, 1)))
    penalty, _ = losses.path_length_penalty(lengths, state.pl_mean, 0.01)
    return jnp.mean(penalty) * weight

  _assert_sum(fused.g_opt, plain.g_opt, jax.grad(pl_loss)(state.g_params), 'G grad with PL')
