"""Sample images of a generator during training: the grid's fixed latents and the jitted sampler
at any stage of a growing network (used by the training loop and its tools)."""

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from gan_jax import models
from gan_jax import sharding
from gan_jax.models import layers


def make_sample_fn(G, target_resolution: int, mesh: Optional[jax.sharding.Mesh] = None):
  """jit(params, buffers, z, c, psi, alpha, resolution) -> images of G (constant noise, psi for
  the families with a w space) at the stage `resolution` and fade-in `alpha` of a growing G,
  nearest-upsampled to `target_resolution`, so a grid keeps its size all run long.

  With a mesh, the latents and the images are replicated over it: every process of a
  multi-process run gets all the images (the params keep whatever sharding they have)."""
  family = models.family_of(G)

  def sample(params, buffers, z, c, psi, alpha, resolution):
    kwargs = dict(stage=resolution, alpha=alpha) if family.grows else {}
    if family.w_space:
      images = G.apply({'params': params, 'buffers': buffers}, z, c, truncation_psi=psi,
                       **family.noise_kwargs('const'), **kwargs)
    else:  # ProGAN: no truncation, no buffers
      images = G.apply({'params': params}, z, c, **kwargs)
    return layers.upsample_nearest(images, target_resolution // resolution)

  if mesh is None:
    jitted = jax.jit(sample, static_argnums=(6,))
    return lambda params, buffers, z, c, psi, alpha, resolution: jitted(
        params, buffers, z, c, jnp.float32(psi), jnp.float32(alpha), resolution)
  rep = sharding.replicated(mesh)
  jitted = jax.jit(sample, static_argnums=(6,), out_shardings=rep)
  return lambda params, buffers, z, c, psi, alpha, resolution: jitted(
      params, buffers, *jax.device_put((z, c, np.float32(psi), np.float32(alpha)), rep),
      resolution)


def grid_latents(config, G, c_dim: int):
  """Fixed latents (and labels cycling through the classes) for the sample grid."""
  n = config.log.grid_rows * config.log.grid_cols
  rng = np.random.default_rng([config.seed, 12345])
  z = rng.standard_normal((n, G.z_dim)).astype(np.float32)
  c = (np.eye(c_dim, dtype=np.float32)[np.arange(n) % c_dim] if c_dim
       else np.zeros((n, 0), np.float32))
  return z, c


