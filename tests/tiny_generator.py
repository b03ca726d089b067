"""A tiny StyleGAN2 generator (32x32 grayscale, 8 ws of 16 dims) with usable buffers, exported
once per test module: no training run and no compiled init (seconds instead of a minute)."""

import jax
import numpy as np
from flax import traverse_util

from gan_jax.models import stylegan2
from gan_jax.tools import export

KWARGS = dict(img_resolution=32, img_channels=1, z_dim=16, w_dim=16, mapping_layers=2,
              channel_base=128, channel_max=16)


def make_export(dest, noise_strength: float = 0.1, seed: int = 0, c_dim: int = 0) -> str:
  """Weights drawn like the Flax init (N(0, 1) weights, const and noise maps, the mapping's
  weights divided by its lr multiplier; zero biases, affine biases 1), every noise_strength set
  to `noise_strength`, and w_avg the mean w of 256 samples (as training would track it; random
  classes for a conditional generator, c_dim > 0)."""
  kwargs = dict(KWARGS, c_dim=c_dim) if c_dim else KWARGS
  G = stylegan2.Generator(**kwargs)
  rng = np.random.RandomState(seed)
  flat = {}
  for path, leaf in traverse_util.flatten_dict(export.abstract_variables(G)).items():
    if path[-1] == 'noise_strength':
      value = np.full(leaf.shape, noise_strength)
    elif path[-1] == 'bias':
      value = np.full(leaf.shape, 1.0 if path[-2] == 'affine' else 0.0)
    else:  # weight, const, noise_const; w_avg below
      value = rng.randn(*leaf.shape)
      if path[:2] == ('params', 'mapping'):  # stored / lr multiplier, as EqualizedDense inits
        value /= G.mapping_lr_multiplier
    flat[path] = value.astype(np.float32)
  variables = traverse_util.unflatten_dict(flat)
  samples = rng.randn(256, G.z_dim).astype(np.float32)
  c = np.eye(c_dim, dtype=np.float32)[rng.randint(0, c_dim, 256)] if c_dim else None
  ws = jax.jit(lambda v, z, c: G.apply(v, z, c, method='map'))(variables, samples, c)
  variables['buffers']['mapping']['w_avg'] = np.asarray(ws[:, 0].mean(axis=0))
  return export.export_generator(dest, kwargs, variables, source='tests/tiny_generator.py')
