"""Start a fresh run from a trained network (transfer learning, config.init).

A run whose workdir holds no checkpoint, with config.init.source set, starts from the source's
weights instead of a random init: G, G_ema and D (and, if asked, G's tracked w_avg and ADA's p)
go into the fresh state, which keeps step 0, fresh optimizer states, a fresh PRNG key and this
config's schedule. A run that resumes restores its own checkpoint and never reads the source
again (`train.py` calls `start_state` only from the fresh-init branch of restore_or_init).

Sources (`read_source`):
  NVIDIA pickle  a StyleGAN2-ADA or StyleGAN3 `network-snapshot-*.pkl` or a released network:
                 G, G_ema, D and ADA's p, read with the restricted unpickler
                 (gan_jax.tools.nvlabs_pickle; no code from the file runs). A StyleGAN3 source
                 needs config.model.name='stylegan3' (its D is StyleGAN2's). Other NVIDIA
                 generations plug into NVLABS_FORMATS.
  workdir        one of our training workdirs (or its checkpoints/ or checkpoints/<step>):
                 G, G_ema, D, ADA's p of the latest checkpoint (or config.init.step).
  export         an export directory (gan_jax.tools.export): G_ema only; G starts as a copy of
                 it and D from its random init.

Matching, leaf by leaf against the fresh state (the model config must describe the source):
  * another resolution is refused with a message: no blocks are grown or cropped (the
    resolution fixes which blocks exist and what every layer has learnt to see);
  * another z_dim, w_dim, mapping depth, channel count or model family is refused with the
    config keys that would match;
  * another label count (c_dim, including 0 <-> N) re-initialises what depends on it: G's label
    embedding, D's label mapping network and D's output layer (its width is cmap_dim, or 1 when
    unconditional); G's first mapping layer keeps the source's rows for z (its input is [z, embed
    (c)], each normalised on its own) and starts the embedding's rows fresh;
  * any other tensor that is missing, unexpected or of another shape is listed; config.init.strict
    (default) stops the run with the list, strict=False starts those fresh (dropping the
    unexpected ones), e.g. an RGB network's torgb / fromrgb for grayscale data.
What was copied, re-initialised and dropped is logged and written to <workdir>/init_source.json.
"""

import dataclasses
import datetime
import hashlib
import json
import os
import re
from typing import Any, Callable, Optional

from absl import logging
import jax
import numpy as np
from etils import epath

from gan_jax import checkpointing
from gan_jax import cli_errors

RECORD_FILE = 'init_source.json'
NETWORKS = ('g_params', 'g_buffers', 'ema_params', 'ema_buffers', 'd_params')


@dataclasses.dataclass
class Source:
  """A trained network's weights in our names and layouts (numpy trees; None where absent)."""
  kind: str  # 'nvlabs-stylegan2', 'nvlabs-stylegan3', 'workdir', 'export'
  path: str
  model: str  # the model family its networks are (config.model.name)
  g_params: Any = None
  g_buffers: Any = None
  ema_params: Any = None
  ema_buffers: Any = None
  d_params: Any = None
  ada_p: Optional[float] = None
  step: Optional[int] = None  # a workdir's checkpoint step
  sha256: Optional[str] = None  # a file's digest
  notes: list = dataclasses.field(default_factory=list)  # what the source lacked, and why it is fine
  model_kwargs: Optional[dict] = None  # the generator's kwargs, where the source records them


class TransferError(cli_errors.UserError):
  """The source cannot start this run; the message lists every problem and what to set."""


# --------------------------------------------------------------------------------------------
# Reading a source.


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


def _is_stylegan2(network: dict) -> bool:
  return any(k.startswith('synthesis.b4.') for k in network['G_ema' if 'G_ema' in network
                                                             else 'G'])


def nvlabs_source(network: dict, path: str = '') -> Source:
  """A Source from `nvlabs_pickle.load_network_pickle`'s dict ({'G', 'G_ema', 'D': NVIDIA state
  dicts, optional 'D_kwargs', 'augment_p'}); also takes state dicts from elsewhere (tests)."""
  from gan_jax.tools import nvlabs  # pylint: disable=g-import-not-at-top
  d_kwargs = network.get('D_kwargs') or {}
  if d_kwargs.get('architecture', 'resnet') != 'resnet':
    raise TransferError(f'{path}: D architecture {d_kwargs["architecture"]!r}; only the residual '
                        "D ('resnet', StyleGAN2-ADA's default) is ours")
  synthesis = (network.get('G_kwargs') or {}).get('synthesis_kwargs') or {}
  if synthesis.get('architecture', 'skip') != 'skip':
    raise TransferError(f'{path}: G architecture {synthesis["architecture"]!r}; only the skip '
                        'generator (the default) is ours')
  source = Source('nvlabs-stylegan2', path, 'stylegan2')
  for ours, theirs in (('g', 'G'), ('ema', 'G_ema')):
    if theirs in network:
      tree = nvlabs.variables_tree(network[theirs])
      setattr(source, f'{ours}_params', tree['params'])
      setattr(source, f'{ours}_buffers', tree['buffers'])
  if 'D' in network:
    source.d_params = nvlabs.variables_tree(network['D'])['params']
  source.ada_p = network.get('augment_p')
  group = (d_kwargs.get('epilogue_kwargs') or {}).get('mbstd_group_size')
  if group is not None:
    source.notes.append(f'NVIDIA D minibatch-std group size {group}')
  return source


def _is_stylegan3(network: dict) -> bool:
  from gan_jax.tools import nvlabs_sg3  # pylint: disable=g-import-not-at-top
  return nvlabs_sg3.is_stylegan3(network['G_ema' if 'G_ema' in network else 'G'])


def nvlabs_sg3_source(network: dict, path: str = '') -> Source:
  """A Source from a StyleGAN3 network pickle's dict: G / G_ema through `nvlabs_sg3` (every
  stored filter checked against the one our generator designs), D as StyleGAN2's."""
  from gan_jax.tools import nvlabs  # pylint: disable=g-import-not-at-top
  from gan_jax.tools import nvlabs_sg3  # pylint: disable=g-import-not-at-top
  source = nvlabs_source({k: v for k, v in network.items() if k not in ('G', 'G_ema')}, path)
  source.kind, source.model = 'nvlabs-stylegan3', 'stylegan3'
  for ours, theirs in (('g', 'G'), ('ema', 'G_ema')):
    if theirs in network:
      tree = nvlabs_sg3.generator_variables_from_nvlabs(network[theirs])
      setattr(source, f'{ours}_params', tree['params'])
      setattr(source, f'{ours}_buffers', tree['buffers'])
      source.model_kwargs = nvlabs_sg3.generator_kwargs_from_nvlabs(network[theirs])
  return source


def _read_nvlabs(path: str) -> Source:
  from gan_jax.tools import nvlabs_pickle  # pylint: disable=g-import-not-at-top
  network = nvlabs_pickle.load_network_pickle(path)
  for name, recognises, convert in NVLABS_FORMATS:
    if recognises(network):
      source = convert(network, path)
      source.sha256 = _sha256(path)
      return source
  raise TransferError(f'{path}: an NVIDIA network pickle of a kind init.source does not read '
                      f'(known: {", ".join(n for n, _, _ in NVLABS_FORMATS)})')


# NVIDIA pickle generations: (name, recognises(network dict) -> bool, to_source(network, path)).
NVLABS_FORMATS: list[tuple[str, Callable[[dict], bool], Callable[[dict, str], Source]]] = [
    ('stylegan3', _is_stylegan3, nvlabs_sg3_source),  # before StyleGAN2: both have a mapping
    ('stylegan2-ada', _is_stylegan2, nvlabs_source),
]


def _read_workdir(workdir: epath.Path, step: Optional[int], with_ada_p: bool) -> Source:
  saved = json.loads((workdir / 'config.json').read_text())
  model = (saved.get('model') or {}).get('name', 'stylegan2')
  keys = NETWORKS + (('ada_p',) if with_ada_p else ())
  restored, step = checkpointing.restore_parts(workdir / 'checkpoints', keys, step)
  source = Source('workdir', os.fspath(workdir), model, step=step,
                  **{k: restored[k] for k in NETWORKS})
  if with_ada_p:
    source.ada_p = float(np.asarray(restored['ada_p']))
  return source


def _read_export(path: epath.Path) -> Source:
  from gan_jax.tools import export  # pylint: disable=g-import-not-at-top
  _, variables, config = export.read_export(path)
  source = Source('export', os.fspath(path), config.get('model', 'stylegan2'),
                  ema_params=variables['params'], ema_buffers=variables.get('buffers', {}))
  source.notes.append('an export holds G_ema only: G starts as a copy of G_ema, D from its '
                      'random init')
  return source


def read_source(spec: str, step: int = -1, with_ada_p: bool = False) -> Source:
  """The Source `spec` names (config.init.source): an NVIDIA .pkl, a workdir (or its
  checkpoints/ or a checkpoints/<step>), or an export; `step` picks a workdir's checkpoint (-1:
  the latest)."""
  from gan_jax.tools import export  # pylint: disable=g-import-not-at-top
  path = epath.Path(os.path.abspath(os.path.expanduser(spec))) if '://' not in spec \
      else epath.Path(spec)
  if not path.exists():
    raise TransferError(f'config.init.source={spec!r} does not exist')
  if path.is_dir() and export.is_export(path):
    return _read_export(path)
  if path.is_dir():
    workdir, dir_step = checkpointing.workdir_and_step(path)
    if workdir is None:
      raise TransferError(f'config.init.source={spec!r} is neither a training workdir '
                          '(config.json + checkpoints/) nor an export (generator.json)')
    if dir_step is not None and step not in (-1, dir_step):
      raise TransferError(f'config.init.source={spec!r} is step {dir_step}, but config.init.step='
                          f'{step}')
    return _read_workdir(workdir, dir_step if dir_step is not None else
                         (None if step < 0 else step), with_ada_p)
  if path.suffix.lower() == '.pkl':
    return _read_nvlabs(os.fspath(path))
  raise TransferError(f'config.init.source={spec!r}: expected an NVIDIA network pickle (.pkl), a '
                      'training workdir or an export directory')


# --------------------------------------------------------------------------------------------
# Architecture: what the weights fix, with the config keys that set it.


def _flat(tree) -> dict[tuple, Any]:
  return {tuple(str(getattr(k, 'key', k)) for k in kp): v
          for kp, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _shape(x) -> tuple:
  return tuple(np.shape(x)) if not hasattr(x, 'shape') else tuple(x.shape)


def _mapping(mapping) -> dict[str, Any]:
  fcs = sorted(int(m.group(1)) for k in mapping if (m := re.fullmatch(r'fc(\d+)', k)))
  c_dim = _shape(mapping['embed']['weight'])[0] if 'embed' in mapping else 0
  w_dim = _shape(mapping[f'fc{fcs[-1]}']['weight'])[-1]
  return dict(c_dim=c_dim, w_dim=w_dim, mapping_layers=len(fcs),
              z_dim=_shape(mapping['fc0']['weight'])[0] - (w_dim if c_dim else 0))


def describe(g_params) -> dict[str, Any]:
  """What a StyleGAN-family G's weights fix: resolution, image channels, labels, z/w sizes,
  mapping depth and channels per resolution (ProGAN: resolution and channels only; StyleGAN3:
  its layers L{i}_{size}_{channels}, whose names carry the schedule and the channels)."""
  synthesis = 'synthesis' in g_params
  blocks = g_params['synthesis'] if synthesis else g_params
  if 'input' in blocks:  # StyleGAN3
    layers = sorted((int(m.group(1)), k) for k in blocks
                    if (m := re.fullmatch(r'L(\d+)_(\d+)_(\d+)', k)))
    last = layers[-1][1].split('_')
    return dict(_mapping(g_params['mapping']), img_resolution=int(last[1]),
                img_channels=int(last[2]), layers=[k for _, k in layers])
  res = sorted(int(m.group(1)) for k in blocks if (m := re.fullmatch(r'b(\d+)', k)))
  if not res:
    return {}
  top = blocks[f'b{res[-1]}']
  out = {'img_resolution': res[-1], 'img_channels': _shape(top['torgb']['weight'])[-1]}
  if synthesis:
    out['channels'] = {r: _shape(blocks[f'b{r}']['conv1']['weight'])[-1] for r in res}
    out.update(_mapping(g_params['mapping']))
  return out


def check_architecture(source: Source, model_name: str, ours: dict, theirs: dict) -> None:
  """Raises TransferError naming every architectural difference and the config that would
  match (resolution: refused, with what to do)."""
  where = f'config.init.source={source.path!r}'
  if source.model != model_name:
    raise TransferError(f'{where} holds {source.model!r} networks; set config.model.name='
                        f'{source.model!r} (this run builds {model_name!r})')
  if theirs.get('img_resolution') != ours.get('img_resolution'):
    r, mine = theirs.get('img_resolution'), ours.get('img_resolution')
    raise TransferError(
        f'{where} makes {r}x{r} images, this run\'s data is {mine}x{mine}. Transfer keeps the '
        f'resolution: gan_jax neither grows nor crops a network\'s blocks (each block is trained '
        f'for its resolution). Fine-tune on {r}x{r} images (e.g. python -m gan_jax.data.prepare '
        f'... --resolution {r}).')
  problems, hints = [], []
  for key in ('z_dim', 'w_dim', 'mapping_layers'):
    if key in theirs and theirs[key] != ours.get(key):
      problems.append(f'{key}: source {theirs[key]}, this run {ours.get(key)}')
      hints.append(f'--config.model.{key}={theirs[key]}')
  if theirs.get('channels') and theirs['channels'] != ours.get('channels'):
    problems.append(f'channels per resolution: source {theirs["channels"]}, this run '
                    f'{ours.get("channels")}')
    ch = theirs['channels']
    hints.append(f'--config.model.channel_base={max(c * r for r, c in ch.items())} '
                 f'--config.model.channel_max={max(ch.values())}')
  if theirs.get('layers') and theirs['layers'] != ours.get('layers'):
    problems.append(f'StyleGAN3 layers (L<i>_<size>_<channels>): source {theirs["layers"]}, '
                    f'this run {ours.get("layers")}')
    kw = source.model_kwargs or {}
    hints.extend(f'--config.model.{k}={kw[k]}' for k in
                 ('channel_base', 'channel_max', 'conv_kernel', 'use_radial_filters') if k in kw)
  if problems:
    raise TransferError(f'{where} has another architecture than this config:\n  ' +
                        '\n  '.join(problems) + '\nTo match it: ' + ' '.join(hints))


# --------------------------------------------------------------------------------------------
# Matching the source's tensors to the fresh state's.


def _label_dependent(network: str, path: tuple) -> bool:
  """Tensors whose shape or meaning depends on the label count."""
  if network.startswith('d'):
    return path[:1] == ('mapping',) or path[:2] == ('b4', 'out')
  return path[:2] == ('mapping', 'embed') or path[:3] == ('mapping', 'fc0', 'weight')


@dataclasses.dataclass
class Report:
  copied: int = 0  # tensors copied whole
  partial: list = dataclasses.field(default_factory=list)  # some rows copied
  fresh: list = dataclasses.field(default_factory=list)  # re-initialised (random init kept)
  dropped: list = dataclasses.field(default_factory=list)  # the source's, unused
  problems: list = dataclasses.field(default_factory=list)  # strict mode stops on these


def merge(network: str, fresh, theirs, labels_changed: bool, z_dim: int, strict: bool,
          report: Report):
  """`fresh` (a tree of the new state) with every leaf the source `theirs` gives (see the
  module doc); records what happened in `report`. Leaves come back as numpy or as `fresh`'s."""
  ours, src = _flat(fresh), _flat(theirs)
  name = lambda p: f'{network}/' + '/'.join(p)
  out = {}
  for path, leaf in ours.items():
    shape = _shape(leaf)
    if path in src and _shape(src[path]) == shape:
      out[path] = np.asarray(src[path], np.float32).astype(np.asarray(leaf).dtype)
      report.copied += 1
      continue
    out[path] = leaf
    if labels_changed and _label_dependent(network, path):
      if path == ('mapping', 'fc0', 'weight') and path in src and \
          _shape(src[path])[1:] == shape[1:] and min(_shape(src[path])[0], shape[0]) >= z_dim:
        rows = np.array(leaf)
        rows[:z_dim] = np.asarray(src[path])[:z_dim]
        out[path] = rows
        report.partial.append(f'{name(path)} (the {z_dim} rows of z; the label rows start fresh)')
      else:
        report.fresh.append(name(path))
      continue
    what = (f'{name(path)}: source {_shape(src[path])}, ours {shape}' if path in src else
            f'{name(path)} {shape}: not in the source')
    (report.problems if strict else report.fresh).append(what)
  for path in sorted(set(src) - set(ours)):
    if labels_changed and _label_dependent(network, path):
      report.dropped.append(name(path))
    elif strict:
      report.problems.append(f'{name(path)}: in the source, not in this run\'s networks')
    else:
      report.dropped.append(name(path))
  treedef = jax.tree_util.tree_structure(fresh)
  return jax.tree_util.tree_unflatten(treedef, [out[p] for p in ours])


def start_state(config, fresh, workdir: epath.Path, is_main: bool, source: Source = None):
  """The fresh `state` (already placed with its shardings) with the weights of config.init's
  source; writes <workdir>/init_source.json (process 0). Raises TransferError on a mismatch."""
  from gan_jax import models  # pylint: disable=g-import-not-at-top
  init = config.init
  if source is None:
    source = read_source(init.source, init.step, init.ada_p)
  # What the source lacks: an export has no G (it starts as G_ema) and no D (random init).
  g_params = source.g_params if source.g_params is not None else source.ema_params
  g_buffers = source.g_buffers if source.g_buffers is not None else source.ema_buffers
  if source.ema_params is None:
    source.ema_params, source.ema_buffers = g_params, g_buffers
    source.notes.append('the source has no G_ema: G_ema starts as a copy of G')
  ours, theirs = describe(fresh.g_params), describe(source.ema_params)  # shapes only
  check_architecture(source, config.model.name, ours, theirs)
  host = jax.device_get(fresh)
  labels_changed = ours.get('c_dim', 0) != theirs.get('c_dim', 0)
  z_dim = ours.get('z_dim', 0)
  report = Report()
  trees = {'g_params': g_params, 'g_buffers': g_buffers, 'ema_params': source.ema_params,
           'ema_buffers': source.ema_buffers, 'd_params': source.d_params}
  if config.loss.name == 'encoder':  # D's slot holds the encoder (gan_jax.encoder_step)
    del trees['d_params']
    source.notes.append("an encoder run: the source's D is not read (the encoder starts fresh)")
  merged = {'d_params': host.d_params}
  for network, theirs_tree in trees.items():
    if theirs_tree is None:
      merged[network] = getattr(host, network)
      report.fresh.append(f'{network} (all: the source has none)')
      continue
    merged[network] = merge(network, getattr(host, network), theirs_tree, labels_changed, z_dim,
                            init.strict, report)
    if network.endswith('buffers') and not init.w_avg:  # the fresh w_avg (zeros) instead
      merged[network] = jax.tree_util.tree_map_with_path(
          lambda path, new, old: old if str(getattr(path[-1], 'key', '')) == 'w_avg' else new,
          merged[network], getattr(host, network))
  if report.problems:
    raise TransferError(
        f'config.init.source={source.path!r} does not fit this run\'s networks '
        f'({len(report.problems)} problems; config.init.strict=False starts these fresh):\n  ' +
        '\n  '.join(report.problems))
  ada_p = float(host.ada_p)
  if init.ada_p:
    if source.ada_p is None:
      raise TransferError(f'config.init.ada_p=True, but config.init.source={source.path!r} '
                          'records no ADA p (NVIDIA pickles without an augment pipe and exports '
                          'have none): set config.init.ada_p=False')
    ada_p = source.ada_p
  shardings = jax.tree_util.tree_map(lambda x: x.sharding, fresh)
  state = host.replace(ada_p=np.float32(ada_p), **merged)
  state = jax.tree_util.tree_map(lambda x, s: jax.device_put(np.asarray(x), s), state, shardings)
  _log_report(source, report)
  if is_main:
    write_record(workdir, source, report, ada_p, init, models.family(config.model.name).title)
  return state


def _log_report(source: Source, report: Report) -> None:
  logging.info('Init from %s %s%s: %d tensors copied, %d partly, %d re-initialised, %d of the '
               "source's dropped.", source.kind, source.path,
               f' (step {source.step})' if source.step is not None else '', report.copied,
               len(report.partial), len(report.fresh), len(report.dropped))
  for what, items in (('partly copied', report.partial), ('re-initialised', report.fresh),
                      ('dropped', report.dropped), ('note', source.notes)):
    for item in items:
      logging.info('Init %s: %s', what, item)


def write_record(workdir: epath.Path, source: Source, report: Report, ada_p: float, init,
                 family: str) -> None:
  """<workdir>/init_source.json: what the run started from and how it was matched."""
  record = {
      'source': source.path, 'kind': source.kind, 'model': family, 'step': source.step,
      'sha256': source.sha256, 'time': datetime.datetime.now(datetime.timezone.utc).isoformat(),
      'init': init.to_dict(), 'ada_p': ada_p, 'copied': report.copied,
      'partly_copied': report.partial, 'reinitialised': report.fresh, 'dropped': report.dropped,
      'notes': source.notes,
  }
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / RECORD_FILE).write_text(json.dumps(record, indent=2))


def read_record(workdir) -> Optional[dict]:
  """The init_source.json of a workdir (None: it started from a random init)."""
  path = epath.Path(os.fspath(workdir)) / RECORD_FILE
  return json.loads(path.read_text()) if path.exists() else None

