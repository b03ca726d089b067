"""Import NVIDIA StyleGAN3 generator weights (state-dict arrays) into `stylegan3.Generator`.

Our StyleGAN3 modules carry NVIDIA's names, so the import is `gan_jax.tools.nvlabs`'s rename and
layout change (conv weights (out, in, k, k) -> (k, k, in, out), dense and the input layer's
(out, in) -> (in, out)), with these NVIDIA buffers going to our 'buffers' collection: w_avg,
magnitude_ema, and the input layer's freqs, phases and transform. The layers' `up_filter` /
`down_filter` taps are not imported: our generator designs them from its constructor arguments,
and the import checks every stored filter against ours (a network built with other filter
arguments than the ones given or inferred is refused, not silently approximated).

The architecture is read off the weights (`generator_kwargs_from_nvlabs`): z / c / w dims and
mapping depth as for StyleGAN2, the resolution, channels and num_layers from the layer names
L{i}_{size}_{channels}, conv_kernel from L0's weight, use_radial_filters from L0's 2-D down
filter, channel_base / channel_max as the smallest values that give every layer's channel count.
Not in the weights (pass them, or take a pickle's recorded kwargs): w_avg_beta,
magnitude_ema_beta (training only), conv_clamp, and the filter schedule's arguments (num_critical,
cutoffs, margin), which NVIDIA's train.py never changes; the filter check catches a difference.
"""

import re
from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np

from gan_jax import cli_errors
from gan_jax.models import sg3_filters
from gan_jax.models import stylegan3
from gan_jax.tools import nvlabs

BUFFERS = ('w_avg', 'magnitude_ema', 'freqs', 'phases', 'transform')
FILTERS = ('up_filter', 'down_filter')
# Generator arguments NVIDIA records in a StyleGAN3 pickle's flat `_init_kwargs` that are ours too.
_RECORDED = ('channel_base', 'channel_max', 'conv_kernel', 'use_radial_filters', 'conv_clamp',
             'magnitude_ema_beta', 'num_layers', 'num_critical', 'first_cutoff', 'first_stopband',
             'last_stopband_rel', 'margin_size', 'output_scale', 'filter_size',
             'lrelu_upsampling')
_LAYER = re.compile(r'synthesis\.L(\d+)_(\d+)_(\d+)\.weight')


def is_stylegan3(state_dict: Mapping[str, Any]) -> bool:
  """Whether an NVIDIA generator state dict is a StyleGAN3 one (it has the Fourier input layer)."""
  return 'synthesis.input.freqs' in state_dict


def _layers(sd: Mapping[str, np.ndarray]) -> list[tuple[int, int, int]]:
  found = sorted((int(m.group(1)), int(m.group(2)), int(m.group(3)))
                 for k in sd if (m := _LAYER.fullmatch(k)))
  if not found or [i for i, _, _ in found] != list(range(len(found))):
    raise cli_errors.UserError(f'no contiguous synthesis.L{{i}}_* layers '
                               f'(found {[i for i, _, _ in found]})')
  return found


def generator_kwargs_from_nvlabs(state_dict: Mapping[str, np.ndarray]) -> dict[str, Any]:
  """Our stylegan3.Generator kwargs that the state dict determines (see the module doc)."""
  sd = state_dict
  kwargs = nvlabs_mapping_kwargs(sd)
  found = _layers(sd)
  last, size, img_channels = found[-1]
  l0 = next(f'synthesis.L0_{s}_{c}' for i, s, c in found if i == 0)
  conv_kernel = int(sd[f'{l0}.weight'].shape[-1])
  radial = f'{l0}.down_filter' in sd and np.ndim(sd[f'{l0}.down_filter']) == 2
  channels = [c for _, _, c in found]
  channel_max = max(channels[:-1])
  base = dict(img_resolution=size, img_channels=img_channels, num_layers=last,
              conv_kernel=conv_kernel, use_radial_filters=bool(radial))
  for channel_base in _channel_base_candidates(base, channels, channel_max):
    _, specs = sg3_filters.schedule(size, img_channels, channel_base, channel_max,
                                    num_layers=last)
    if [s.out_channels for s in specs] == channels:
      return dict(kwargs, **base, channel_base=channel_base, channel_max=channel_max)
  raise cli_errors.UserError(f'layer channels {channels} follow no channel_base with '
                             f'channel_max {channel_max}')


def _channel_base_candidates(base, channels, channel_max) -> list[int]:
  """Powers of two first (every NVIDIA config), then the values the unsaturated layers imply."""
  _, specs = sg3_filters.schedule(base['img_resolution'], base['img_channels'], 1, channel_max,
                                  num_layers=base['num_layers'])
  implied = {int(round(2 * s.out_cutoff * c)) for s, c in zip(specs[:-1], channels[:-1])
             if c < channel_max}
  return [2 ** k for k in range(4, 21)] + sorted(implied)


def nvlabs_mapping_kwargs(sd: Mapping[str, np.ndarray]) -> dict[str, Any]:
  """z_dim, c_dim, w_dim, mapping_layers from the mapping network's keys."""
  fc_ids = sorted(int(m.group(1)) for k in sd
                  if (m := re.fullmatch(r'mapping\.fc(\d+)\.weight', k)))
  if not fc_ids or fc_ids != list(range(len(fc_ids))):
    raise cli_errors.UserError(f'no contiguous mapping.fcN.weight keys (found ids {fc_ids})')
  w_dim = int(sd[f'mapping.fc{fc_ids[-1]}.weight'].shape[0])
  c_dim = int(sd['mapping.embed.weight'].shape[1]) if 'mapping.embed.weight' in sd else 0
  z_dim = int(sd['mapping.fc0.weight'].shape[1]) - (w_dim if c_dim else 0)
  return dict(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, mapping_layers=len(fc_ids))


def kwargs_from_recorded(recorded: Mapping[str, Any], inferred: Mapping[str, Any]) -> dict:
  """Our extra Generator kwargs from a StyleGAN3 pickle's recorded `_init_kwargs`, cross-checked
  with what the weights say."""
  extra = {}
  for name in ('z_dim', 'c_dim', 'w_dim', 'img_resolution', 'img_channels'):
    if name in recorded and recorded[name] != inferred[name]:
      raise cli_errors.UserError(f'pickle says {name}={recorded[name]} but the weights say '
                                 f'{inferred[name]}')
  for name in _RECORDED:
    if recorded.get(name) is not None:
      value = recorded[name]
      extra[name] = type(inferred[name])(value) if name in inferred else value
  mapping = recorded.get('mapping_kwargs') or {}
  if mapping.get('num_layers', inferred['mapping_layers']) != inferred['mapping_layers']:
    raise cli_errors.UserError(f'pickle says {mapping["num_layers"]} mapping layers, the '
                               f'weights {inferred["mapping_layers"]}')
  if mapping.get('lr_multiplier') is not None:
    extra['mapping_lr_multiplier'] = float(mapping['lr_multiplier'])
  if mapping.get('w_avg_beta') is not None:
    extra['w_avg_beta'] = float(mapping['w_avg_beta'])
  for name in ('conv_clamp', 'magnitude_ema_beta', 'first_cutoff', 'first_stopband',
               'last_stopband_rel', 'output_scale'):
    if extra.get(name) is not None:
      extra[name] = float(extra[name])
  for name in inferred:
    if name in extra and extra[name] != inferred[name]:
      raise cli_errors.UserError(f'pickle says {name}={extra[name]} but the weights say '
                                 f'{inferred[name]}')
  return extra


def _check_filters(sd: Mapping[str, np.ndarray], G: stylegan3.Generator) -> list[str]:
  """Problems with the stored filter taps against the ones G designs."""
  problems = []
  synthesis = stylegan3.SynthesisNetwork(
      G.w_dim, G.img_resolution, G.img_channels, channel_base=G.channel_base,
      channel_max=G.channel_max, num_layers=G.num_layers, num_critical=G.num_critical,
      first_cutoff=G.first_cutoff, first_stopband=G.first_stopband,
      last_stopband_rel=G.last_stopband_rel, margin_size=G.margin_size,
      conv_kernel=G.conv_kernel, filter_size=G.filter_size, lrelu_upsampling=G.lrelu_upsampling,
      use_radial_filters=G.use_radial_filters)
  _, specs = synthesis.layout()
  for spec in specs:
    for name, ours in (('up_filter', spec.up_filter()), ('down_filter', spec.down_filter())):
      key = f'synthesis.{spec.name}.{name}'
      if ours is None:
        if key in sd:
          problems.append(f'{key}: NVIDIA has a filter where ours is the identity')
        continue
      if key not in sd:
        problems.append(f'missing: {key} {ours.shape}')
      elif np.shape(sd[key]) != ours.shape:
        problems.append(f'{key}: shape {np.shape(sd[key])}, ours {ours.shape}')
      elif not np.allclose(np.asarray(sd[key], np.float64), ours, rtol=0, atol=1e-6):
        diff = np.abs(np.asarray(sd[key], np.float64) - ours).max()
        problems.append(f'{key}: taps differ from our design by up to {diff:.2e}')
  return problems


def generator_variables_from_nvlabs(state_dict: Mapping[str, np.ndarray],
                                    generator: Optional[stylegan3.Generator] = None) -> dict:
  """{'params': ..., 'buffers': ...} for our stylegan3.Generator from an NVIDIA StyleGAN3
  generator state dict (`generator` default: built from `generator_kwargs_from_nvlabs`).
  Raises UserError listing every unknown, missing or misshapen key and every filter that
  differs from ours."""
  if generator is None:
    generator = stylegan3.Generator(**generator_kwargs_from_nvlabs(state_dict))
  problems = _check_filters(state_dict, generator)
  rest = {k: v for k, v in state_dict.items() if k.rsplit('.', 1)[-1] not in FILTERS}
  z = jnp.zeros((1, generator.z_dim), jnp.float32)
  c = jnp.zeros((1, generator.c_dim), jnp.float32)
  expected = jax.eval_shape(lambda: generator.init(jax.random.PRNGKey(0), z, c))
  try:
    variables = nvlabs._variables_from_nvlabs(rest, expected, 'StyleGAN3 generator',
                                              'stylegan3.Generator', buffers=BUFFERS)
  except cli_errors.UserError as e:
    if not problems:
      raise
    raise cli_errors.UserError(f'{e}\n  ' + '\n  '.join(problems)) from None
  if problems:
    raise cli_errors.UserError('NVIDIA StyleGAN3 generator state dict does not match our '
                               'stylegan3.Generator:\n  ' + '\n  '.join(problems))
  return variables
