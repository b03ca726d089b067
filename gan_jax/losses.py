"""Pure loss and regulariser functions (StyleGAN2: non-saturating logistic loss, R1, path length)."""

from typing import Callable

import jax
import jax.numpy as jnp


def g_nonsaturating(fake_logits: jax.Array) -> jax.Array:
  """Generator loss -log(sigmoid(D(G(z)))), averaged over the batch."""
  return jnp.mean(jax.nn.softplus(-fake_logits))


def d_logistic(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
  """Discriminator loss -log(sigmoid(D(x))) - log(1 - sigmoid(D(G(z)))), averaged over the batch."""
  return jnp.mean(jax.nn.softplus(fake_logits)) + jnp.mean(jax.nn.softplus(-real_logits))


def r1_penalty(d_fn: Callable[[jax.Array], jax.Array], reals: jax.Array) -> jax.Array:
  """Per-example squared norm of the gradient of D's logit with respect to its real input.

  `d_fn` maps images (N, H, W, C) to logits (N,). Returns (N,); the R1 loss is
  `mean(penalty) * gamma / 2`.
  """
  grads = jax.grad(lambda x: jnp.sum(d_fn(x)))(reals)
  return jnp.sum(jnp.square(grads), axis=tuple(range(1, grads.ndim)))


def path_lengths(synth_fn: Callable[[jax.Array], jax.Array], ws: jax.Array,
                 noise_key: jax.Array) -> jax.Array:
  """Path lengths |J_w^T y| for random image-space directions y (StyleGAN2, Sec. 3.2).

  `synth_fn` maps ws (N, num_ws, w_dim) to images (N, H, W, C). y ~ N(0, I) / sqrt(H*W), so the
  length does not depend on the resolution. The gradient is summed over w_dim and averaged over
  the num_ws copies before the square root, as in the paper's implementation. Returns (N,).
  """
  images, vjp = jax.vjp(synth_fn, ws)
  height, width = images.shape[1], images.shape[2]
  y = jax.random.normal(noise_key, images.shape, images.dtype) / jnp.sqrt(height * width)
  (grads,) = vjp(y)
  return jnp.sqrt(jnp.mean(jnp.sum(jnp.square(grads), axis=2), axis=1))


def path_length_penalty(lengths: jax.Array, pl_mean: jax.Array, decay: float):
  """Updates the running target pl_mean and returns (per-example penalty, new pl_mean)."""
  new_mean = pl_mean + decay * (jnp.mean(lengths) - pl_mean)
  new_mean = jax.lax.stop_gradient(new_mean)
  return jnp.square(lengths - new_mean), new_mean
