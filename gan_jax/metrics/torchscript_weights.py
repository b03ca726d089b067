"""Read the tensors of a TorchScript archive (a zip) with the standard library and numpy, no torch.

A TorchScript archive `<prefix>/...` holds:

  <prefix>/data.pkl     the module tree, pickled: modules are `__torch__.*` objects whose state is
                        a dict of attributes (submodules, tensors, ints, lists)
  <prefix>/data/<key>   raw little-endian storage bytes, one entry per storage, referenced from
                        data.pkl by persistent ids ('storage', <Type>Storage, key, device, numel)
  <prefix>/code/...     TorchScript source of the forward passes (text; never run here)

data.pkl is read with `RestrictedUnpickler`: it resolves only the handful of globals a module tree
needs, each mapped to a small function of ours that builds plain Python/numpy objects; any other
global (`os.system`, `builtins.eval`, ...) raises `pickle.UnpicklingError` before anything runs.
`__torch__.*` classes become inert `ScriptObject`s that just record their attributes.
"""

import io
import os
import pickle
import re
import zipfile
from collections import OrderedDict
from typing import Any, Iterator

import numpy as np

_STORAGE_DTYPES = {
    'FloatStorage': np.dtype('<f4'),
    'DoubleStorage': np.dtype('<f8'),
    'HalfStorage': np.dtype('<f2'),
    'LongStorage': np.dtype('<i8'),
    'IntStorage': np.dtype('<i4'),
    'ShortStorage': np.dtype('<i2'),
    'CharStorage': np.dtype('i1'),
    'ByteStorage': np.dtype('u1'),
    'BoolStorage': np.dtype('?'),
}
_SCRIPT_CLASS = re.compile(r'__torch__(\.[A-Za-z_][A-Za-z0-9_]*)*')


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


class _StorageType:
  """Stands for `torch.<Type>Storage` in a persistent id: only its dtype matters."""

  def __init__(self, name: str):
    self.name = name
    self.dtype = _STORAGE_DTYPES[name]


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
  """A numpy copy of the tensor view `storage[offset:]` with `size` and element `stride`."""
  del requires_grad, backward_hooks, metadata
  if not isinstance(storage, np.ndarray):
    raise pickle.UnpicklingError(f'tensor storage is {type(storage)}, not a storage')
  size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
  if len(size) != len(stride):
    raise pickle.UnpicklingError(f'tensor size {size} and stride {stride} differ in rank')
  last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride)) if all(size) else 0
  if storage_offset < 0 or min(stride, default=0) < 0 or last >= max(storage.size, 1):
    raise pickle.UnpicklingError(f'tensor view {size}/{stride}+{storage_offset} outside its '
                                 f'storage of {storage.size} elements')
  itemsize = storage.dtype.itemsize
  view = np.lib.stride_tricks.as_strided(
      storage[storage_offset:], shape=size, strides=tuple(s * itemsize for s in stride),
      writeable=False)
  return np.array(view)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
  del requires_grad, backward_hooks
  return data


def _build_list(items):
  return list(items)


class RestrictedUnpickler(pickle.Unpickler):
  """Unpickles a TorchScript data.pkl into ScriptObjects, numpy arrays and builtins, nothing else.

  `load_storage(storage_type, key, numel)` returns the 1-D numpy array of one storage.
  """

  _GLOBALS = {
      ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor_v2,
      ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
      ('torch.jit._pickle', 'build_intlist'): _build_list,
      ('torch.jit._pickle', 'build_doublelist'): _build_list,
      ('torch.jit._pickle', 'build_boollist'): _build_list,
      ('collections', 'OrderedDict'): OrderedDict,
  }

  def __init__(self, file, load_storage):
    super().__init__(file)
    self._load_storage = load_storage
    self._script_classes: dict[str, type] = {}

  def find_class(self, module, name):
    if (module, name) in self._GLOBALS:
      return self._GLOBALS[(module, name)]
    if module == 'torch' and name in _STORAGE_DTYPES:
      return _StorageType(name)
    if _SCRIPT_CLASS.fullmatch(module) and name.isidentifier():
      qualified = f'{module}.{name}'
      if qualified not in self._script_classes:
        self._script_classes[qualified] = type(name, (ScriptObject,), {'type_name': qualified})
      return self._script_classes[qualified]
    raise pickle.UnpicklingError(f'global {module}.{name} is not allowed in a weights file')

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == 'storage'
            and isinstance(pid[1], _StorageType)):
      raise pickle.UnpicklingError(f'unsupported persistent id {pid!r}')
    _, storage_type, key, _, numel = pid
    return self._load_storage(storage_type, str(key), int(numel))


def _archive_prefix(archive: zipfile.ZipFile) -> str:
  prefixes = [n[:-len('/data.pkl')] for n in archive.namelist()
              if n.endswith('/data.pkl') and n.count('/') == 1]
  if len(prefixes) != 1:
    raise ValueError(f'not a TorchScript archive: expected one <prefix>/data.pkl, '
                     f'found {prefixes}')
  return prefixes[0]


def load(path: str | os.PathLike) -> ScriptObject:
  """The root module of the TorchScript archive at `path`, with numpy arrays for tensors."""
  with zipfile.ZipFile(path) as archive:
    prefix = _archive_prefix(archive)
    storages: dict[str, np.ndarray] = {}

    def load_storage(storage_type: _StorageType, key: str, numel: int) -> np.ndarray:
      if key not in storages:
        raw = archive.read(f'{prefix}/data/{key}')
        array = np.frombuffer(raw, dtype=storage_type.dtype)
        if array.size < numel:
          raise pickle.UnpicklingError(f'storage {key}: {array.size} elements, expected {numel}')
        storages[key] = array[:numel]
      return storages[key]

    root = RestrictedUnpickler(io.BytesIO(archive.read(f'{prefix}/data.pkl')), load_storage).load()
  if not isinstance(root, ScriptObject):
    raise ValueError(f'{path}: data.pkl holds a {type(root)}, not a TorchScript module')
  return root


def code(path: str | os.PathLike) -> dict[str, str]:
  """The archive's TorchScript source files (text, for reading), keyed by path below code/."""
  with zipfile.ZipFile(path) as archive:
    prefix = _archive_prefix(archive)
    start = f'{prefix}/code/'
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
