"""What every train step shares, and the interface the training loop drives.

A step module (`train_step` for StyleGAN2's lazy-regularised step, `progressive_step` for the
StyleGAN / ProGAN step that also trains growing networks) exposes `make_step(G, D, config, c_dim,
batch_sharding) -> Step`; `gan_jax.steps` picks the module from the config. The loop then calls

  step.fn(state, batch, alpha, nimg, resolution, variant) -> (state, metrics)

jitted by `jit_step` with `resolution` (the stage's image size) and `variant` (the step's static
flags, e.g. which lazy regularisers are due; `step.variant(step_index)`) static, so a run compiles
one executable per (resolution, variant) it meets. `alpha` (the fade-in, float32) and `nimg`
(images shown before this step, int32) are traced; a fixed-resolution run passes its resolution
and alpha 1.

Random draws: the step's key is fold_in(state.rng, state.step); each phase's key is
`phase_key(step_key, name)` — fold_in with the phase's fixed id — so one phase's draws never
depend on whether another phase ran (D's latents are the same with or without path length due).
"""

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

# Phase names and their fold_in ids. Ids are part of a run's reproducibility: append, never
# renumber.
PHASE_IDS = {'g_main': 1, 'g_pl': 2, 'd_main': 3, 'd_r1': 4, 'augment': 5, 'd_gp': 6}

StepFn = Callable[..., tuple[Any, dict]]


class Step(NamedTuple):
  """A train step as the loop drives it (see the module docstring)."""
  name: str  # its registry key (gan_jax.steps)
  g_tx: optax.GradientTransformation
  d_tx: optax.GradientTransformation
  fn: StepFn  # (state, batch, alpha, nimg, resolution, variant) -> (state, metrics); pure
  variant: Callable[[int], tuple]  # step index -> the static flags of that step
  variant_names: Callable[[tuple], str]  # flags -> a short name ('r1_pl', 'plain')
  reachable: tuple[tuple, ...]  # every variant a run meets, the heaviest (step 0's) first
  # (state, reals) -> (images, cols): what the sample grid shows instead of G_ema's samples of the
  # grid latents (an encoder run's reconstructions of step 0's reals); None: the samples.
  preview: Optional[Callable[..., tuple[Any, int]]] = None


def step_key(rng: jax.Array, step: jax.Array) -> jax.Array:
  """The key of one train step: every draw of the step derives from it."""
  return jax.random.fold_in(rng, step)


def phase_key(key: jax.Array, phase: str) -> jax.Array:
  """The key of one named phase of a step (PHASE_IDS)."""
  return jax.random.fold_in(key, PHASE_IDS[phase])


def batch_constraint(batch_sharding: Optional[jax.sharding.Sharding]
                     ) -> Callable[[jax.Array], jax.Array]:
  """x -> x constrained to the batch sharding (generated latents carry no sharding of their own:
  this keeps the generator data-parallel); a no-op without a sharding or for an odd size."""
  def shard(x):
    if batch_sharding is not None and x.shape[0] % batch_sharding.mesh.size == 0:
      return jax.lax.with_sharding_constraint(x, batch_sharding)
    return x
  return shard


def ema_beta(batch_size: int, nimg: jax.Array, ema_kimg: float, ema_rampup: float) -> jax.Array:
  """G_ema decay of one step: 0.5 ** (batch / half-life in images); with ema_rampup > 0 the
  half-life is at most ema_rampup * nimg (images shown before this step), as NVIDIA's."""
  ema_nimg = jnp.asarray(ema_kimg * 1000.0, jnp.float32)
  if ema_rampup > 0:
    ema_nimg = jnp.minimum(ema_nimg, jnp.asarray(nimg, jnp.float32) * ema_rampup)
  return 0.5 ** (batch_size / jnp.maximum(ema_nimg, 1e-8))


def ema_update(ema_params, params, beta):
  """G_ema <- G + beta * (G_ema - G) (NVIDIA's p.lerp(p_ema, beta)), leaf by leaf."""
  return jax.tree_util.tree_map(lambda e, p: p + (e - p) * beta, ema_params, params)


def real_labels(labels: jax.Array, c_dim: int) -> jax.Array:
  """One-hot labels of the reals ((N, 0) for an unconditional model)."""
  if c_dim == 0:
    return jnp.zeros((labels.shape[0], 0), jnp.float32)
  return jax.nn.one_hot(labels, c_dim, dtype=jnp.float32)


def fake_labels(key, labels, c_dim):
  """Labels for generated images: the real batch's labels in a random order (the data's prior)."""
  if c_dim == 0:
    return jnp.zeros((labels.shape[0], 0), jnp.float32)
  return jax.nn.one_hot(jax.random.permutation(key, labels), c_dim, dtype=jnp.float32)


def apply_update(tx: optax.GradientTransformation, grads, opt_state, params):
  """One optimizer step: (new params, new optimizer state). As NVIDIA's training loop, non-finite
  gradient entries are replaced first (NaN -> 0, +-inf -> +-1e5), so one bad entry does not
  poison a tensor; a non-finite loss still trips the step's non-finite guard."""
  grads = jax.tree_util.tree_map(
      lambda g: jnp.nan_to_num(g, nan=0.0, posinf=1e5, neginf=-1e5), grads)
  updates, opt_state = tx.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state


def nonfinite(watched) -> jax.Array:
  """int32 1 when any leaf of `watched` holds a NaN or Inf, else 0. The loop checks it on the host
  only when a tick is logged or a checkpoint is due (guard.check_finite)."""
  leaves = jax.tree_util.tree_leaves(watched)
  return 1 - jnp.all(jnp.array([jnp.all(jnp.isfinite(x)) for x in leaves])).astype(jnp.int32)


def jit_step(fn: StepFn, state_sharding, batch_sharding, replicated):
  """jit of a Step.fn with its shardings: the state donated, resolution and variant static."""
  return jax.jit(fn, static_argnums=(4, 5), donate_argnums=(0,),
                 in_shardings=(state_sharding, batch_sharding, replicated, replicated),
                 out_shardings=(state_sharding, replicated))


def reset_optimizers(g_tx, d_tx, state_sharding):
  """jit(state) -> state with fresh optimizer states (ProGAN's reset_opt_for_new_lod)."""
  def reset(state):
    return state.replace(g_opt=g_tx.init(state.g_params), d_opt=d_tx.init(state.d_params))
  return jax.jit(reset, donate_argnums=(0,), in_shardings=(state_sharding,),
                 out_shardings=state_sharding)
