"""The complete training state: everything a run needs to continue exactly."""

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

PyTree = Any


@flax.struct.dataclass
class GANState:
  """One pytree holding G, D, G_ema, both optimizer states and the counters.

  The data position is not stored separately: the input order is a pure function of
  (config.seed, step), so `step` is what makes the data resume exactly.
  """
  step: jax.Array  # int32 scalar: optimizer steps (minibatches) done
  g_params: PyTree
  g_buffers: PyTree  # non-trained G variables: mapping w_avg, per-layer noise_const
  d_params: PyTree
  ema_params: PyTree  # G_ema
  ema_buffers: PyTree
  g_opt: optax.OptState
  d_opt: optax.OptState
  pl_mean: jax.Array  # float32 scalar: running target of the path-length regulariser
  ada_p: jax.Array  # float32 scalar: augmentation probability (ADA; unused without augmentation)
  ada_stats: jax.Array  # float32 (2,): sum of sign(D(real)) and count since p last moved
  rng: jax.Array  # base PRNG key; step keys are fold_in(rng, step)


def _dummy_inputs(G, D, c_dim: int):
  z = jnp.zeros((1, G.z_dim), jnp.float32)
  c = jnp.zeros((1, c_dim), jnp.float32)
  img = jnp.zeros((1, D.img_resolution, D.img_resolution, D.img_channels), jnp.float32)
  return z, c, img


def create(G, D, g_tx: optax.GradientTransformation, d_tx: optax.GradientTransformation,
           c_dim: int, rng: jax.Array, ada_p: float = 0.0) -> GANState:
  """Initialises a fresh state (jit this with out_shardings to allocate it in place); `ada_p` is
  the initial augmentation probability (config.augment.p)."""
  g_key, d_key, noise_key, run_key = jax.random.split(rng, 4)
  z, c, img = _dummy_inputs(G, D, c_dim)
  g_vars = G.init({'params': g_key, 'noise': noise_key}, z, c)
  d_vars = D.init({'params': d_key}, img, c)
  g_params, g_buffers = g_vars['params'], g_vars.get('buffers', {})  # ProGAN's G has none
  d_params = d_vars['params']
  return GANState(
      step=jnp.zeros((), jnp.int32),
      g_params=g_params,
      g_buffers=g_buffers,
      d_params=d_params,
      ema_params=g_params,
      ema_buffers=g_buffers,
      g_opt=g_tx.init(g_params),
      d_opt=d_tx.init(d_params),
      pl_mean=jnp.zeros((), jnp.float32),
      ada_p=jnp.asarray(ada_p, jnp.float32),
      ada_stats=jnp.zeros((2,), jnp.float32),
      rng=run_key,
  )


def abstract(G, D, g_tx, d_tx, c_dim: int) -> GANState:
  """The state's shapes and dtypes (jax.ShapeDtypeStruct leaves) without allocating it."""
  return jax.eval_shape(lambda k: create(G, D, g_tx, d_tx, c_dim, k), jax.random.PRNGKey(0))


def param_count(tree: PyTree) -> int:
  return sum(int(x.size) for x in jax.tree_util.tree_leaves(tree))
