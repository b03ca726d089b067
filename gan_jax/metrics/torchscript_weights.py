"""Read the tensors of a TorchScript archive (a zip) with the standard library and numpy, no torch.

A TorchScript archive `<prefix>/...` holds:

  <prefix>/data.pkl     the module tree, pickled: modules are `__torch__.*` objects whose state is
                        a dict of attributes (submodules, tensors, ints, lists)
  <prefix>/data/<key>   raw little-endian storage bytes, one entry per storage, referenced from
                        data.pkl by persistent ids ('storage', <Type>Storage, key, device, numel)
  <prefix>/code/...     TorchScript source of the forward passes (text; never run here)

data.pkl is read by `gan_jax.torch_pickle` (the restricted unpickler, storages and tensors) with
this module's allow-list: tensors, parameters and ordered dicts, TorchScript's int/double/bool
list builders, each mapped to a small function that builds plain Python/numpy objects, and the
`__torch__.*` classes, which become inert `ScriptObject`s that just record their attributes. Any
other global (`os.system`, `builtins.eval`, ...) raises `torch_pickle.UnsafePickleError` before
anything runs.
"""

import os
import pickle
import re
import zipfile
from typing import Any, Iterator, Optional

import numpy as np

from gan_jax import torch_pickle

_SCRIPT_CLASS = re.compile(r'__torch__(\.[A-Za-z_][A-Za-z0-9_]*)*')
_WHAT = 'a TorchScript weights file'


class ScriptObject:
  """An object of a TorchScript class (a module): its class name and pickled attributes."""

  type_name = '?'

  def __init__(self):
    self.attributes: dict[str, Any] = {}

  def __setstate__(self, state):
    if not isinstance(state, dict):
      raise pickle.UnpicklingError(f'{self.type_name}: unexpected state of type {type(state)}')
    self.attributes = dict(state)

  def __repr__(self):
    return f'ScriptObject({self.type_name})'


def _build_list(items):
  return list(items)


GLOBALS = {
    **torch_pickle.TENSOR_GLOBALS,
    'torch.jit._pickle.build_intlist': _build_list,
    'torch.jit._pickle.build_doublelist': _build_list,
    'torch.jit._pickle.build_boollist': _build_list,
}


class ScriptClasses:
  """The allow-list rule for `__torch__.*` classes: one ScriptObject subclass per class name."""

  def __init__(self):
    self._classes: dict[str, type] = {}

  def __call__(self, module: str, name: str) -> Optional[type]:
    if not (_SCRIPT_CLASS.fullmatch(module) and name.isidentifier()):
      return None
    qualified = f'{module}.{name}'
    if qualified not in self._classes:
      self._classes[qualified] = type(name, (ScriptObject,), {'type_name': qualified})
    return self._classes[qualified]


def load(path: str | os.PathLike) -> ScriptObject:
  """The root module of the TorchScript archive at `path`, with numpy arrays for tensors."""
  try:
    root = torch_pickle.load_zip(path, GLOBALS, ScriptClasses(), _WHAT)
  except torch_pickle.UnsafePickleError:
    raise
  except torch_pickle.DAMAGED as e:
    raise torch_pickle.unreadable(path, _WHAT, e) from e
  if not isinstance(root, ScriptObject):
    raise ValueError(f'{path}: data.pkl holds a {type(root)}, not a TorchScript module')
  return root


def code(path: str | os.PathLike) -> dict[str, str]:
  """The archive's TorchScript source files (text, for reading), keyed by path below code/."""
  with zipfile.ZipFile(path) as archive:
    start = f'{torch_pickle.zip_prefix(archive)}/code/'
    return {n[len(start):]: archive.read(n).decode('utf-8') for n in archive.namelist()
            if n.startswith(start) and n.endswith('.py')}


def named_modules(root: ScriptObject, prefix: str = '') -> Iterator[tuple[str, ScriptObject]]:
  """(dotted path, module) for `root` and every submodule, parents first, in pickled order."""
  yield prefix, root
  for name, value in root.attributes.items():
    if isinstance(value, ScriptObject):
      yield from named_modules(value, f'{prefix}.{name}' if prefix else name)


def named_tensors(root: ScriptObject) -> dict[str, np.ndarray]:
  """Every tensor attribute of the module tree, keyed by dotted path ('net.layers.conv.weight')."""
  tensors = {}
  for path, module in named_modules(root):
    for name, value in module.attributes.items():
      if isinstance(value, np.ndarray):
        tensors[f'{path}.{name}' if path else name] = value
  return tensors
