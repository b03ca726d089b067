"""The inference export: a generator's constructor arguments and weights in one directory.

  DEST/generator.json  {"format": "gan_jax.generator", "version": 1, "model": "stylegan2",
                        "kwargs": {...Generator constructor arguments...}, "source": "..."}
  DEST/variables/      Orbax StandardCheckpointer save of {'params': ..., 'buffers': ...}

generator.json is written last, so a directory holding it is complete. Nothing else of a run
(D, optimizer states, the dataset) is needed to use the export: `gan_jax.load_generator(DEST)`.

  python -m gan_jax.tools.export --workdir runs/fmnist --dest exports/fmnist [--step N]

Exporting a training workdir takes G_ema of its latest (or a given) checkpoint, restoring only
`ema_params` and `ema_buffers` (as numpy, on the host, whatever mesh the run was sharded over).
The Generator is rebuilt from WORKDIR/config.json (config.model) with `models.build`, as training
did; the three things training takes from the dataset — resolution, channels and label count —
are read off the checkpoint's own parameter shapes (the last synthesis block, its toRGB layer and
the label embedding), so exporting never needs the dataset. The rebuilt Generator's variable
shapes are then checked against the checkpoint, every one.
"""

import argparse
import dataclasses
import json
import os
import re
import shutil
from typing import Any, Optional

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from gan_jax import checkpointing
from gan_jax import cli_errors
from gan_jax import models

FORMAT = 'gan_jax.generator'
VERSION = 1
CONFIG_FILE = 'generator.json'
VARIABLES_DIR = 'variables'


def module_kwargs(module) -> dict[str, Any]:
  """The constructor arguments of a Flax module (its dataclass fields but parent and name)."""
  return {f.name: getattr(module, f.name) for f in dataclasses.fields(module)
          if f.name not in ('parent', 'name')}


def build_generator(model: str, kwargs: dict[str, Any]):
  try:
    family = models.family(model)
  except ValueError as error:
    raise cli_errors.UserError(str(error)) from None
  return family.generator(**kwargs)


def abstract_variables(G) -> dict:
  """{'params', 'buffers'} of `G` as ShapeDtypeStructs (no computation)."""
  z = np.zeros((1, G.z_dim), np.float32)
  c = np.zeros((1, G.c_dim), np.float32)
  kwargs = models.family_of(G).noise_kwargs('const')
  shapes = jax.eval_shape(lambda: G.init(jax.random.PRNGKey(0), z, c, **kwargs))
  return {'params': shapes['params'], 'buffers': shapes.get('buffers', {})}


def _flat_shapes(tree) -> dict[str, tuple]:
  return {jax.tree_util.keystr(path): tuple(leaf.shape)
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def check_variables(G, variables) -> None:
  """Raises ValueError unless `variables` has exactly G's variables with G's shapes."""
  want = _flat_shapes(abstract_variables(G))
  got = _flat_shapes({k: variables[k] for k in ('params', 'buffers') if k in variables})
  problems = [f'missing {k} {v}' for k, v in want.items() if k not in got]
  problems += [f'unexpected {k} {v}' for k, v in got.items() if k not in want]
  problems += [f'shape of {k}: {got[k]} != {v}' for k, v in want.items()
               if k in got and got[k] != v]
  if problems:
    raise cli_errors.UserError('variables do not fit the generator:\n  ' + '\n  '.join(problems))


def export_generator(dest: str | os.PathLike, G_kwargs: dict[str, Any], variables: dict,
                     model: str = 'stylegan2', source: str = '', overwrite: bool = False,
                     growth: Optional[dict] = None) -> str:
  """Writes the export directory `dest`; returns its absolute path.

  Args:
    dest: directory to create (it must not hold an export yet, unless `overwrite`).
    G_kwargs: the Generator's constructor arguments (JSON-serializable).
    variables: {'params': ..., 'buffers': ...} for that Generator (checked, shape by shape).
    model: the family's name in `gan_jax.models.FAMILIES`.
    source: free text recorded in generator.json (where the weights came from).
    overwrite: replace an existing export in `dest`.
    growth: {'stage', 'alpha'} of a progressive generator caught mid-growth (None: full size).
  """
  dest = epath.Path(os.path.abspath(os.fspath(dest)))
  G = build_generator(model, G_kwargs)
  check_variables(G, variables)
  config_path, variables_path = dest / CONFIG_FILE, dest / VARIABLES_DIR
  if config_path.exists() or variables_path.exists():
    if not overwrite:
      raise FileExistsError(f'{dest} already holds an export (pass overwrite=True / --overwrite)')
    config_path.unlink(missing_ok=True)
    if variables_path.exists():
      shutil.rmtree(variables_path)
  dest.mkdir(parents=True, exist_ok=True)
  tree = jax.tree_util.tree_map(lambda x: np.asarray(jax.device_get(x)),
                                {'params': variables['params'],
                                 'buffers': variables.get('buffers', {})})
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(variables_path, tree)
  config = {'format': FORMAT, 'version': VERSION, 'model': model, 'kwargs': dict(G_kwargs),
            'source': source}
  if growth is not None:
    config['growth'] = {'stage': int(growth['stage']), 'alpha': float(growth['alpha'])}
  config_path.write_text(json.dumps(config, indent=2) + '\n')
  return os.fspath(dest)


def is_export(path: str | os.PathLike) -> bool:
  return (epath.Path(os.fspath(path)) / CONFIG_FILE).exists()


def read_export(path: str | os.PathLike) -> tuple[Any, dict, dict]:
  """(Generator module, variables as numpy, generator.json contents) of an export directory."""
  path = epath.Path(os.path.abspath(os.fspath(path)))
  config = json.loads((path / CONFIG_FILE).read_text())
  if config.get('format') != FORMAT or config.get('version') != VERSION:
    raise cli_errors.UserError(
        f'{path / CONFIG_FILE}: not a {FORMAT} v{VERSION} export '
        f'(format {config.get("format")!r}, version {config.get("version")!r})')
  G = build_generator(config['model'], config['kwargs'])
  with ocp.StandardCheckpointer() as checkpointer:  # ShapeDtypeStruct targets restore as numpy
    variables = checkpointer.restore(path / VARIABLES_DIR, abstract_variables(G))
  return G, variables, config


# --------------------------------------------------------------------------------------------
# Training workdirs.


def _data_shapes_from_params(ema_params, z_dim: int) -> dict[str, int]:
  """img_resolution, img_channels and c_dim of a G from its parameter shapes (StyleGAN2 and
  StyleGAN: synthesis/b<res> and the mapping's label embedding; ProGAN: b<res> and the input
  width of b4/dense, z_dim + c_dim)."""
  if 'synthesis' not in ema_params:  # ProGAN
    resolutions = sorted(int(m.group(1)) for k in ema_params if (m := re.fullmatch(r'b(\d+)', k)))
    if not resolutions:
      raise cli_errors.UserError('checkpoint has no generator blocks b<res>')
    res = resolutions[-1]
    return dict(img_resolution=res,
                img_channels=int(ema_params[f'b{res}']['torgb']['weight'].shape[-1]),
                c_dim=int(ema_params['b4']['dense']['weight'].shape[0]) - z_dim)
  synthesis = ema_params['synthesis']
  mapping = ema_params['mapping']
  c_dim = int(mapping['embed']['weight'].shape[0]) if 'embed' in mapping else 0  # (in, out)
  # StyleGAN3: layers L{i}_{size}_{channels}; the last (toRGB) has the image's size and channels.
  sg3_layers = sorted((int(m.group(1)), int(m.group(2)), int(m.group(3))) for k in synthesis
                      if (m := re.fullmatch(r'L(\d+)_(\d+)_(\d+)', k)))
  if sg3_layers:
    return dict(img_resolution=sg3_layers[-1][1], img_channels=sg3_layers[-1][2], c_dim=c_dim)
  resolutions = sorted(int(m.group(1)) for k in synthesis if (m := re.fullmatch(r'b(\d+)', k)))
  if not resolutions:
    raise cli_errors.UserError('checkpoint has no synthesis blocks b<res>')
  res = resolutions[-1]
  img_channels = int(synthesis[f'b{res}']['torgb']['weight'].shape[-1])  # HWIO
  return dict(img_resolution=res, img_channels=img_channels, c_dim=c_dim)


def restore_workdir(workdir: str | os.PathLike, step: Optional[int] = None):
  """(Generator module, G_ema variables as numpy, step) of a training workdir's checkpoint."""
  workdir = epath.Path(os.path.abspath(os.fspath(workdir)))
  config_file, checkpoints = workdir / 'config.json', workdir / 'checkpoints'
  if not config_file.exists() or not checkpoints.exists():
    raise FileNotFoundError(f'{workdir} is not a training workdir (needs config.json and '
                            'checkpoints/)')
  model_config = ml_collections.ConfigDict(json.loads(config_file.read_text())['model'])
  restored, step = checkpointing.restore_parts(checkpoints, ('ema_params', 'ema_buffers'), step)
  variables = {'params': restored['ema_params'], 'buffers': restored['ema_buffers']}
  G, _ = models.build(model_config, **_data_shapes_from_params(variables['params'],
                                                                model_config.z_dim))
  check_variables(G, variables)
  return G, variables, step


def growth_of(workdir: str | os.PathLike, step: int) -> Optional[dict]:
  """{'stage', 'alpha'} of a progressive run's checkpoint that has not finished growing (the
  generator then makes stage x stage images, faded in by alpha); None otherwise."""
  checkpoints = epath.Path(os.path.abspath(os.fspath(workdir))) / 'checkpoints'
  meta = checkpointing.read_meta(checkpoints, step)
  if 'stage' not in meta:
    return None
  return {'stage': int(meta['stage']), 'alpha': float(meta['alpha'])}


def export_from_workdir(workdir: str | os.PathLike, dest: str | os.PathLike,
                        step: Optional[int] = None, overwrite: bool = False) -> str:
  """Exports G_ema of the workdir's latest checkpoint (or of `step`); returns `dest`. A
  progressive run's export records the stage and alpha it had reached (generator.json
  'growth')."""
  G, variables, step = restore_workdir(workdir, step)
  model = json.loads((epath.Path(os.path.abspath(os.fspath(workdir))) / 'config.json')
                     .read_text())['model']['name']
  return export_generator(dest, module_kwargs(G), variables, model=model,
                          source=f'G_ema of {os.path.abspath(os.fspath(workdir))} at step {step}',
                          overwrite=overwrite, growth=growth_of(workdir, step))


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(prog='python -m gan_jax.tools.export',
                                   description='Export G_ema of a training workdir for inference.')
  parser.add_argument('--workdir', required=True,
                      help='training workdir (config.json, checkpoints/)')
  parser.add_argument('--dest', required=True, help='export directory to write')
  parser.add_argument('--step', type=int, default=None, help='checkpoint step (default: latest)')
  parser.add_argument('--overwrite', action='store_true', help='replace an existing export')
  args = parser.parse_args(argv)
  print(export_from_workdir(args.workdir, args.dest, args.step, args.overwrite))


if __name__ == '__main__':
  cli_errors.run(main)
