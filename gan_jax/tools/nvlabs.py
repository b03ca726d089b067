"""Import NVIDIA StyleGAN2-ADA-PyTorch weights (state-dict arrays) into our Generator and
Discriminator.

Our modules carry NVIDIA's names, so the conversion is a rename plus layout changes:

  conv / modulated conv weight (out, in, kh, kw) -> (kh, kw, in, out)   [HWIO]
  fully connected weight       (out, in)         -> (in, out)
  synthesis.b4.const           (C, 4, 4)         -> (4, 4, C)            [HWC]
  noise_const, w_avg                             -> 'buffers' collection
  *.resample_filter                              -> ignored (checked to be the [1,3,3,1] filter
                                                    our code uses as a numpy constant)

The discriminator's names are the same on both sides too (b{res}.fromrgb/conv0/conv1/skip,
b4.conv/fc/out, mapping.* when conditional); `b4.fc` needs no permutation because our epilogue
flattens in NVIDIA's (C, H, W) order. `to_nvlabs_layout` is the inverse of the layout change (for
comparing our parameters or gradients with NVIDIA's).

The import is strict: an NVIDIA key we do not know, a variable of ours left unfilled, or a shape
mismatch raises ValueError listing every problem.
"""

import re
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from gan_jax import cli_errors
from gan_jax.models import layers
from gan_jax.models import stylegan2

_BUFFERS = ('noise_const', 'w_avg')
_IGNORED = ('resample_filter',)


def _convert(name: str, value: np.ndarray) -> np.ndarray:
  """Our layout of one NVIDIA tensor, chosen by its variable name and rank."""
  value = np.asarray(value, dtype=np.float32)
  if name == 'weight' and value.ndim == 4:
    return value.transpose(2, 3, 1, 0)
  if name == 'weight' and value.ndim == 2:
    return value.T
  if name == 'const' and value.ndim == 3:
    return value.transpose(1, 2, 0)
  return value


def to_nvlabs_layout(name: str, value: np.ndarray) -> np.ndarray:
  """NVIDIA's layout of one of our variables (the inverse of the import's layout change)."""
  value = np.asarray(value)
  if name == 'weight' and value.ndim == 4:
    return value.transpose(3, 2, 0, 1)
  if name == 'weight' and value.ndim == 2:
    return value.T
  if name == 'const' and value.ndim == 3:
    return value.transpose(2, 0, 1)
  return value


def generator_kwargs_from_nvlabs(state_dict: Mapping[str, np.ndarray]) -> dict[str, Any]:
  """Generator constructor arguments that can be read off the state dict.

  Returns z_dim, c_dim, w_dim, img_resolution, img_channels, mapping_layers, channel_base,
  channel_max. Not recoverable from the weights (pass them yourself if they differ from our
  defaults): conv_clamp (None), mapping_lr_multiplier (0.01), w_avg_beta (0.995). channel_base
  and channel_max are the smallest values that reproduce every block's channel count.
  """
  sd = state_dict
  fc_ids = sorted(int(m.group(1)) for k in sd
                  if (m := re.fullmatch(r'mapping\.fc(\d+)\.weight', k)))
  if not fc_ids or fc_ids != list(range(len(fc_ids))):
    raise cli_errors.UserError(f'no contiguous mapping.fcN.weight keys (found ids {fc_ids})')
  w_dim = int(sd[f'mapping.fc{fc_ids[-1]}.weight'].shape[0])
  c_dim = int(sd['mapping.embed.weight'].shape[1]) if 'mapping.embed.weight' in sd else 0
  z_dim = int(sd['mapping.fc0.weight'].shape[1]) - (w_dim if c_dim else 0)

  resolutions = sorted({int(m.group(1)) for k in sd
                        if (m := re.match(r'synthesis\.b(\d+)\.', k))})
  if not resolutions or resolutions[0] != 4:
    raise cli_errors.UserError(f'synthesis blocks must start at b4, found {resolutions}')
  img_resolution = resolutions[-1]
  img_channels = int(sd[f'synthesis.b{img_resolution}.torgb.weight'].shape[0])

  channels = {res: int(sd[f'synthesis.b{res}.conv1.weight'].shape[0]) for res in resolutions}
  channel_max = max(channels.values())
  channel_base = max(ch * res for res, ch in channels.items())
  if any(stylegan2.channels_at(res, channel_base, channel_max) != ch
         for res, ch in channels.items()):
    raise cli_errors.UserError(f'channel counts {channels} do not follow min(base // res, max)')
  return dict(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=img_resolution,
              img_channels=img_channels, mapping_layers=len(fc_ids),
              channel_base=channel_base, channel_max=channel_max)


def _expected_variables(module, *inputs, **kwargs) -> dict:
  """Shapes of every variable of `module` (no computation, no allocation)."""
  return jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), *inputs, **kwargs))


def generator_variables_from_nvlabs(state_dict: Mapping[str, np.ndarray],
                                    generator: stylegan2.Generator = None) -> dict:
  """{'params': ..., 'buffers': ...} for our Generator from an NVIDIA generator state dict.

  Args:
    state_dict: NVIDIA key -> array (e.g. `{k: v.numpy() for k, v in G.state_dict().items()}`).
    generator: the Generator to fill; default built from `generator_kwargs_from_nvlabs`.
  """
  if generator is None:
    generator = stylegan2.Generator(**generator_kwargs_from_nvlabs(state_dict))
  z = jnp.zeros((1, generator.z_dim), jnp.float32)
  c = jnp.zeros((1, generator.c_dim), jnp.float32)
  expected = _expected_variables(generator, z, c, noise_mode='const')
  return _variables_from_nvlabs(state_dict, expected, 'generator', 'Generator')


def discriminator_variables_from_nvlabs(state_dict: Mapping[str, np.ndarray],
                                        discriminator: stylegan2.Discriminator) -> dict:
  """{'params': ...} for our residual Discriminator from an NVIDIA discriminator state dict
  (`training.networks.Discriminator(architecture='resnet')`, the StyleGAN2-ADA default).

  The architecture is not read off the weights: build `discriminator` with NVIDIA's constructor
  arguments (img_resolution, img_channels, c_dim, channel_base, channel_max, mbstd group size and
  channels; conv_clamp does not change the weights).
  """
  d = discriminator
  img = jnp.zeros((1, d.img_resolution, d.img_resolution, d.img_channels), jnp.float32)
  c = jnp.zeros((1, d.c_dim), jnp.float32)
  expected = _expected_variables(d, img, c)
  return _variables_from_nvlabs(state_dict, expected, 'discriminator', 'Discriminator')


def _variables_from_nvlabs(state_dict: Mapping[str, np.ndarray], expected: dict, what: str,
                           ours: str, buffers: tuple[str, ...] = _BUFFERS) -> dict:
  """Renames and converts `state_dict` into variable collections shaped like `expected`
  (variables named in `buffers` go to the 'buffers' collection); raises ValueError listing every
  key or shape that does not match."""
  want_filter = layers.setup_filter((1, 3, 3, 1))
  problems = []
  variables = {collection: {} for collection in expected}
  for key, value in state_dict.items():
    path = key.split('.')
    name = path[-1]
    if name in _IGNORED:
      if not np.allclose(np.asarray(value), want_filter, rtol=0, atol=1e-7):
        problems.append(f'{key}: resample filter differs from the [1, 3, 3, 1] filter we use')
      continue
    collection = 'buffers' if name in buffers else 'params'
    node = variables.setdefault(collection, {})
    for part in path[:-1]:
      node = node.setdefault(part, {})
    node[name] = _convert(name, value)

  got_flat = {(col,) + tuple(getattr(k, 'key', k) for k in kp): v
              for col in variables
              for kp, v in jax.tree_util.tree_flatten_with_path(variables[col])[0]}
  want_flat = {tuple(getattr(k, 'key', k) for k in kp): v
               for kp, v in jax.tree_util.tree_flatten_with_path(expected)[0]}
  for path in sorted(set(want_flat) - set(got_flat)):
    problems.append(f'missing: {"/".join(path)} {tuple(want_flat[path].shape)}')
  for path in sorted(set(got_flat) - set(want_flat)):
    problems.append(f'unexpected NVIDIA tensor: {"/".join(path)}')
  for path in sorted(set(got_flat) & set(want_flat)):
    if tuple(got_flat[path].shape) != tuple(want_flat[path].shape):
      problems.append(f'shape mismatch at {"/".join(path)}: got {got_flat[path].shape}, '
                      f'want {tuple(want_flat[path].shape)}')
  if problems:
    raise cli_errors.UserError(
        f'NVIDIA {what} state dict does not match our {ours}:\n  ' +
        '\n  '.join(problems))
  return jax.tree_util.tree_map(jnp.asarray, variables)


def variables_tree(state_dict: Mapping[str, np.ndarray]) -> dict:
  """{'params': ..., 'buffers': ...} numpy trees in our names and layouts, for any NVIDIA
  StyleGAN2-ADA generator or discriminator state dict, not checked against a module (transfer
  learning matches them to its own networks leaf by leaf, `gan_jax.transfer`). Resample filters
  are dropped after checking that they are the [1, 3, 3, 1] filter we use."""
  want_filter = layers.setup_filter((1, 3, 3, 1))
  variables, problems = {'params': {}, 'buffers': {}}, []
  for key, value in state_dict.items():
    path = key.split('.')
    name = path[-1]
    if name in _IGNORED:
      if not np.allclose(np.asarray(value), want_filter, rtol=0, atol=1e-7):
        problems.append(f'{key}: resample filter differs from the [1, 3, 3, 1] filter we use')
      continue
    node = variables['buffers' if name in _BUFFERS else 'params']
    for part in path[:-1]:
      node = node.setdefault(part, {})
    node[name] = _convert(name, value)
  if problems:
    raise cli_errors.UserError('NVIDIA state dict:\n  ' + '\n  '.join(problems))
  return variables
