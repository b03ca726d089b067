"""Convert NVIDIA StyleGAN2-ADA-PyTorch and StyleGAN3 generator weights into our export format.

  python -m gan_jax.tools.convert_nvlabs network-snapshot-025000.pkl exports/ffhq [--overwrite]
  python -m gan_jax.tools.convert_nvlabs g_state_dict.npz exports/mine
  python -m gan_jax.tools.convert_nvlabs g_state_dict.pt exports/mine

Sources:
  .pkl  a network pickle (NVIDIA's `network-snapshot-*.pkl` and the released models), read with
        the restricted unpickler of `gan_jax.tools.nvlabs_pickle` (no torch, no code from the
        file is run); its G_ema is converted, with the constructor arguments it records.
  .npz  a generator state dict with NVIDIA's key names (`np.savez(f, **{k: v.numpy() for k, v in
        G.state_dict().items()})`); loaded with allow_pickle=False.
  .pt   `torch.save(G.state_dict(), f)` (zip or legacy format; or a dict holding one under
        'G_ema'), read without torch by the same restricted unpickler.

The architecture comes from the weights (`nvlabs.generator_kwargs_from_nvlabs`); what weights
cannot tell (conv_clamp, mapping lr multiplier, w_avg beta) comes from the pickle's recorded
kwargs when there are any, else NVIDIA's defaults, which are ours. Only the 'skip' generator
architecture is supported. Layers NVIDIA runs in float16 (num_fp16_res > 0) run in float32 here,
so such a network's images match NVIDIA's to float16 precision, not float32.

StyleGAN3 weights (configs T and R; told apart by the Fourier input layer,
`synthesis.input.freqs`) become a 'stylegan3' export: `gan_jax.tools.nvlabs_sg3` reads the
architecture off the weights, a pickle's recorded kwargs (flat in StyleGAN3) fill in the rest, and
the stored up / down filters must equal the ones our generator designs.
"""

import argparse
import os
import zipfile
from typing import Any

import numpy as np

from gan_jax import cli_errors
from gan_jax.tools import export
from gan_jax.tools import nvlabs
from gan_jax.tools import nvlabs_pickle
from gan_jax.tools import nvlabs_sg3

SUFFIXES = ('.pkl', '.npz', '.pt', '.pth')


def _kwargs_from_recorded(recorded: dict[str, Any], inferred: dict[str, Any]) -> dict[str, Any]:
  """Our extra Generator kwargs from NVIDIA's recorded ones, cross-checked with the weights."""
  extra = {}
  for name in ('z_dim', 'c_dim', 'w_dim', 'img_resolution', 'img_channels'):
    if name in recorded and recorded[name] != inferred[name]:
      raise cli_errors.UserError(
          f'pickle says {name}={recorded[name]} but the weights say '
          f'{inferred[name]}')
  synthesis = recorded.get('synthesis_kwargs') or {}
  architecture = synthesis.get('architecture', 'skip')
  if architecture != 'skip':
    raise cli_errors.UserError(
        f'only the skip generator architecture is supported, got {architecture!r}')
  if synthesis.get('conv_clamp') is not None:
    extra['conv_clamp'] = float(synthesis['conv_clamp'])
  mapping = recorded.get('mapping_kwargs') or {}
  if mapping.get('num_layers', inferred['mapping_layers']) != inferred['mapping_layers']:
    raise cli_errors.UserError(
        f'pickle says {mapping["num_layers"]} mapping layers, the weights '
        f'{inferred["mapping_layers"]}')
  if mapping.get('lr_multiplier') is not None:
    extra['mapping_lr_multiplier'] = float(mapping['lr_multiplier'])
  if mapping.get('w_avg_beta') is not None:
    extra['w_avg_beta'] = float(mapping['w_avg_beta'])
  return extra


def read_state_dict(src: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
  """(NVIDIA generator state dict, NVIDIA's recorded G kwargs or {}) from a .pkl/.npz/.pt."""
  src = os.fspath(src)
  suffix = os.path.splitext(src)[1].lower()
  if suffix == '.pkl':
    network = nvlabs_pickle.load_network_pickle(src)
    if 'G_ema' not in network:
      raise cli_errors.UserError(f'{src}: the pickle holds no G_ema')
    return network['G_ema'], network['G_kwargs']
  if suffix == '.npz':
    try:
      with np.load(src, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}, {}
    except (ValueError, EOFError, zipfile.BadZipFile) as e:  # not an .npz, or a damaged one
      raise cli_errors.UserError(f'{src}: not a NumPy .npz state dict this converter reads '
                                 f'({type(e).__name__}: {e})') from e
  if suffix in ('.pt', '.pth'):
    return nvlabs_pickle.state_dict_from_torch_file(src), {}
  raise cli_errors.UserError(
      f'{src}: unknown weight file type {suffix!r} (expected one of {SUFFIXES})')


def read_nvlabs_model(src: str | os.PathLike) -> tuple[str, dict[str, Any], dict]:
  """(our model family name, Generator kwargs, variables) for NVIDIA generator weights in `src`:
  'stylegan3' for StyleGAN3 weights, else 'stylegan2'."""
  state_dict, recorded = read_state_dict(src)
  if nvlabs_sg3.is_stylegan3(state_dict):
    model = 'stylegan3'
    kwargs = nvlabs_sg3.generator_kwargs_from_nvlabs(state_dict)
    kwargs.update(nvlabs_sg3.kwargs_from_recorded(recorded, kwargs))
    G = export.build_generator(model, kwargs)
    variables = nvlabs_sg3.generator_variables_from_nvlabs(state_dict, G)
  else:
    model = 'stylegan2'
    kwargs = nvlabs.generator_kwargs_from_nvlabs(state_dict)
    kwargs.update(_kwargs_from_recorded(recorded, kwargs))
    G = export.build_generator(model, kwargs)
    variables = nvlabs.generator_variables_from_nvlabs(state_dict, G)
  return model, export.module_kwargs(G), variables


def read_nvlabs(src: str | os.PathLike) -> tuple[dict[str, Any], dict]:
  """(our Generator kwargs, our variables) for NVIDIA generator weights in `src` (the family:
  `read_nvlabs_model`)."""
  _, kwargs, variables = read_nvlabs_model(src)
  return kwargs, variables


def convert(src: str | os.PathLike, dest: str | os.PathLike, overwrite: bool = False) -> str:
  """Writes the export of NVIDIA's generator in `src` to `dest`; returns `dest`."""
  model, kwargs, variables = read_nvlabs_model(src)
  return export.export_generator(dest, kwargs, variables, model=model,
                                 source=f'NVIDIA weights {os.path.abspath(os.fspath(src))}',
                                 overwrite=overwrite)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(
      prog='python -m gan_jax.tools.convert_nvlabs',
      description='Convert NVIDIA StyleGAN2-ADA or StyleGAN3 generator weights (.pkl, .npz, '
                  '.pt) into an export directory for gan_jax.load_generator.')
  parser.add_argument('src', help='network pickle (.pkl) or generator state dict (.npz, .pt)')
  parser.add_argument('dest', help='export directory to write')
  parser.add_argument('--overwrite', action='store_true', help='replace an existing export')
  args = parser.parse_args(argv)
  print(convert(args.src, args.dest, args.overwrite))


if __name__ == '__main__':
  cli_errors.run(main)
