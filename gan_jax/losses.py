"""Pure loss and regulariser functions: StyleGAN2's non-saturating logistic loss, R1 and path
length; ProGAN's WGAN-GP with the drift term."""

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


def logits_and_r1(d_fn: Callable[[jax.Array], jax.Array], reals: jax.Array
                  ) -> tuple[jax.Array, jax.Array]:
  """(D's logits on the reals, per-example R1 penalty) from one forward pass: `r1_penalty`
  without a second evaluation of D when the logits are needed too."""
  logits, vjp = jax.vjp(d_fn, reals)
  (grads,) = vjp(jnp.ones_like(logits))
  return logits, jnp.sum(jnp.square(grads), axis=tuple(range(1, grads.ndim)))


def path_lengths(synth_fn: Callable[[jax.Array], jax.Array], ws: jax.Array,
                 noise: jax.Array) -> jax.Array:
  """Path lengths |J_w^T y| for random image-space directions y (StyleGAN2, Sec. 3.2).

  `synth_fn` maps ws (N, num_ws, w_dim) to images (N, H, W, C); `noise` is an N(0, I) draw of the
  images' shape, and y = noise / sqrt(H*W), so the length does not depend on the resolution. The
  gradient is summed over w_dim and averaged over the num_ws copies before the square root, as in
  the paper's implementation. Returns (N,).
  """
  images, vjp = jax.vjp(synth_fn, ws)
  if noise.shape != images.shape:
    raise ValueError(f'noise {noise.shape} must have the images\' shape {images.shape}')
  height, width = images.shape[1], images.shape[2]
  y = noise.astype(images.dtype) / jnp.sqrt(height * width)
  (grads,) = vjp(y)
  return jnp.sqrt(jnp.mean(jnp.sum(jnp.square(grads), axis=2), axis=1))


def path_length_penalty(lengths: jax.Array, pl_mean: jax.Array, decay: float):
  """Updates the running target pl_mean and returns (per-example penalty, new pl_mean).

  As NVIDIA's StyleGAN2Loss, the penalty uses the updated target without a stop-gradient: it
  includes this batch, so `decay` times the gradient of the batch's mean length flows through it.
  The returned new pl_mean (the state) is detached.
  """
  new_mean = pl_mean + decay * (jnp.mean(lengths) - pl_mean)
  return jnp.square(lengths - new_mean), jax.lax.stop_gradient(new_mean)


# --------------------------------------------------------------------------------------------
# WGAN-GP with the drift term (ProGAN, Karras et al. 2018, Sec. A.1; Gulrajani et al. 2017).


def g_wasserstein(fake_scores: jax.Array) -> jax.Array:
  """Generator loss -D(G(z)), averaged over the batch."""
  return -jnp.mean(fake_scores)


def d_wasserstein(real_scores: jax.Array, fake_scores: jax.Array) -> jax.Array:
  """Critic loss D(G(z)) - D(x), averaged over the batch."""
  return jnp.mean(fake_scores) - jnp.mean(real_scores)


def drift_penalty(real_scores: jax.Array) -> jax.Array:
  """ProGAN's drift term D(x)^2 per example (keeps the critic's output near 0); weight 0.001."""
  return jnp.square(real_scores)


def gradient_penalty(d_fn: Callable[[jax.Array], jax.Array], reals: jax.Array, fakes: jax.Array,
                     key: jax.Array, target: float = 1.0) -> jax.Array:
  """WGAN-GP penalty per example: (|grad D(x_hat)| - target)^2 / target^2 at the interpolates
  x_hat = reals + u * (fakes - reals), u ~ U[0, 1) = jax.random.uniform(key, (N, 1, 1, 1)).

  `d_fn` maps images (N, H, W, C) to scores (N,). The fakes are not differentiated through (the
  interpolates are constants). Returns (N,); the loss term is `wgan_lambda * mean(penalty)`
  (lambda 10, target 1 in ProGAN).
  """
  if reals.shape != fakes.shape:
    raise ValueError(f'reals and fakes must have the same shape, got {reals.shape} and '
                     f'{fakes.shape}')
  u = jax.random.uniform(key, (reals.shape[0],) + (1,) * (reals.ndim - 1), reals.dtype)
  mixed = jax.lax.stop_gradient(reals + u * (fakes - reals))
  grads = jax.grad(lambda x: jnp.sum(d_fn(x)))(mixed)
  norms = jnp.sqrt(jnp.sum(jnp.square(grads), axis=tuple(range(1, grads.ndim))))
  return jnp.square(norms - target) / target ** 2


def d_wgan_gp(real_scores: jax.Array, fake_scores: jax.Array, penalty: jax.Array,
              wgan_lambda: float = 10.0, drift: float = 0.001) -> jax.Array:
  """ProGAN's critic loss: D(G(z)) - D(x) + lambda * GP + drift * D(x)^2, batch means."""
  return (d_wasserstein(real_scores, fake_scores) + wgan_lambda * jnp.mean(penalty)
          + drift * jnp.mean(drift_penalty(real_scores)))
