"""Read NVIDIA network pickles and torch `.pt` files safely: plain Python and numpy, never torch.

A pickle is a program: unpickling one with `pickle.load` can call any importable function, and
network pickles are downloaded from the internet. So this module unpickles with an allow-list.
Every global the stream asks for is looked up in a table of our own small functions that build
plain data (dicts, numpy arrays, `PersistentObject` records); any other global — `os.system`,
`builtins.eval`, a torch module class — raises `UnsafePickleError` naming it, instead of being
called. Nothing from the file is ever executed, imported or compiled (the Python source that
NVIDIA's persistence mechanism embeds in every network object is ignored, not even read).

Formats:

  network-snapshot-*.pkl  NVIDIA's StyleGAN2-ADA training snapshots: a dict {'G', 'D', 'G_ema',
                          'augment_pipe', 'training_set_kwargs'} whose networks are
                          `torch_utils.persistence._reconstruct_persistent_obj(meta)` calls; each
                          tensor is `_rebuild_parameter(_rebuild_tensor_v2(_load_from_bytes(b),
                          ...))`, where `b` holds one storage in torch's legacy serialization.
                          -> `load_network_pickle`.
  *.pt (zip, torch>=1.6)  `<prefix>/data.pkl` referencing storages `<prefix>/data/<key>` through
                          persistent ids ('storage', torch.<Type>Storage, key, location, numel).
  *.pt (legacy)           magic number, protocol, system info, the object's pickle, the storage
                          keys, then each storage as int64 element count + raw bytes.
                          -> `load_torch_file` (either kind), `state_dict_from_torch_file`.

Allowed globals (all resolved to functions or types defined or vetted here):
  torch_utils.persistence._reconstruct_persistent_obj, collections.OrderedDict,
  dnnlib.util.EasyDict, builtins.set, numpy.dtype, numpy{._core,.core}.multiarray.scalar,
  torch._utils._rebuild_parameter, torch._utils._rebuild_tensor_v2, torch.storage._load_from_bytes,
  torch.<Type>Storage (only inside persistent ids).
"""

import collections
import io
import os
import pickle
import struct
import zipfile
from typing import Any, BinaryIO, Callable, Mapping, Optional

import numpy as np

_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c
_LEGACY_PROTOCOL = 1001
_STORAGE_DTYPES = {
    'FloatStorage': 'f4', 'DoubleStorage': 'f8', 'HalfStorage': 'f2', 'BFloat16Storage': 'bf16',
    'LongStorage': 'i8', 'IntStorage': 'i4', 'ShortStorage': 'i2', 'CharStorage': 'i1',
    'ByteStorage': 'u1', 'BoolStorage': '?',
}
_NUMERIC_KINDS = 'biufc'  # bool, int, uint, float, complex


class UnsafePickleError(pickle.UnpicklingError):
  """The pickle asked for a global that is not on the allow-list (it was not called)."""


class UnreadablePickleError(pickle.UnpicklingError):
  """The file is not a network pickle or torch file this reader understands (random bytes, a
  truncated download, another format); the message names the file and what went wrong."""


# What unpickling a file that is not a pickle (or is a damaged one) raises, besides our own
# UnpicklingErrors: "unsupported pickle protocol: 185" is a ValueError, a truncated file an
# EOFError, a damaged zip a BadZipFile, bad opcodes a KeyError/IndexError, bad structs a
# struct.error, absurd sizes an OverflowError or MemoryError.
_DAMAGED = (pickle.UnpicklingError, ValueError, EOFError, KeyError, IndexError, TypeError,
            struct.error, zipfile.BadZipFile, OverflowError, MemoryError, UnicodeDecodeError)


def _unreadable(path, what: str, error: BaseException) -> UnreadablePickleError:
  return UnreadablePickleError(f'{os.fspath(path) if not hasattr(path, "read") else "the file"}: '
                               f'not {what} this reader understands ({type(error).__name__}: '
                               f'{error})')


class PersistentObject:
  """A network object from a NVIDIA pickle: its class name and attribute dict, nothing callable.

  For a torch module, `state` holds `_parameters`, `_buffers`, `_modules` (children, again
  PersistentObjects) and plain attributes such as `z_dim` or `_init_kwargs`.
  """
  __slots__ = ('class_name', 'state')

  def __init__(self, class_name: str, state: dict):
    self.class_name = class_name
    self.state = state

  def __repr__(self):
    return f'PersistentObject({self.class_name})'


class _StorageType:
  """Stands for `torch.<Type>Storage` inside a persistent id; only its dtype matters."""
  __slots__ = ('name', 'dtype')

  def __init__(self, name: str, dtype: np.dtype):
    self.name, self.dtype = name, dtype


class _Storage:
  """A flat typed buffer; `data` is filled when its bytes have been read."""
  __slots__ = ('dtype', 'numel', 'data')

  def __init__(self, dtype: np.dtype, numel: int):
    self.dtype, self.numel, self.data = dtype, numel, None

  def fill(self, raw: bytes) -> None:
    if len(raw) != self.numel * self.dtype.itemsize:
      raise pickle.UnpicklingError(f'storage holds {len(raw)} bytes, expected {self.numel} '
                                   f'elements of {self.dtype.itemsize} bytes')
    self.data = np.frombuffer(raw, self.dtype)


class _StorageView:
  """A legacy storage view: `numel` elements of `base` from element `offset`."""
  __slots__ = ('base', 'offset', 'numel')

  def __init__(self, base: _Storage, offset: int, numel: int):
    self.base, self.offset, self.numel = base, offset, numel


class _TensorRef:
  """A tensor whose storage bytes may not have been read yet (legacy .pt files store them last)."""
  __slots__ = ('storage', 'offset', 'size', 'stride')

  def __init__(self, storage, offset: int, size: tuple, stride: tuple):
    self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

  def ready(self) -> bool:
    base = self.storage.base if isinstance(self.storage, _StorageView) else self.storage
    return base.data is not None

  def materialize(self) -> np.ndarray:
    """A C-contiguous native-endian copy of the strided view, bounds-checked first."""
    storage, offset = self.storage, self.offset
    if isinstance(storage, _StorageView):
      flat = storage.base.data[storage.offset:storage.offset + storage.numel]
    else:
      flat = storage.data
    numel = int(np.prod(self.size, dtype=np.int64))
    if numel:
      last = offset + sum((n - 1) * s for n, s in zip(self.size, self.stride))
      if offset < 0 or last >= flat.size:
        raise pickle.UnpicklingError(
            f'tensor of size {self.size}, stride {self.stride}, offset {offset} reaches element '
            f'{last} of a storage of {flat.size}')
    view = np.lib.stride_tricks.as_strided(
        flat[offset:] if numel else flat[:0], shape=self.size,
        strides=tuple(s * flat.dtype.itemsize for s in self.stride), writeable=False)
    return np.array(view, dtype=flat.dtype.newbyteorder('='), order='C')


# --------------------------------------------------------------------------------------------
# The allowed globals: each one checks its arguments and builds plain data.


def _int_tuple(value, what: str) -> tuple:
  if not isinstance(value, (tuple, list)) or not all(isinstance(v, int) for v in value):
    raise pickle.UnpicklingError(f'{what} must be a tuple of ints, got {value!r}')
  return tuple(value)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
  del requires_grad, backward_hooks, metadata  # autograd bookkeeping: irrelevant to the values
  if not isinstance(storage, (_Storage, _StorageView)):
    raise pickle.UnpicklingError(f'tensor storage must come from a storage record, got '
                                 f'{type(storage).__name__}')
  size, stride = _int_tuple(size, 'tensor size'), _int_tuple(stride, 'tensor stride')
  if len(size) != len(stride) or any(s < 0 for s in size + stride):
    raise pickle.UnpicklingError(f'bad tensor size {size} / stride {stride}')
  if not isinstance(storage_offset, int):
    raise pickle.UnpicklingError(f'tensor offset must be an int, got {storage_offset!r}')
  ref = _TensorRef(storage, storage_offset, size, stride)
  return ref.materialize() if ref.ready() else ref


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
  del requires_grad, backward_hooks
  if not isinstance(data, (np.ndarray, _TensorRef)):
    raise pickle.UnpicklingError(f'parameter data must be a tensor, got {type(data).__name__}')
  return data


def _dtype(spec, align=False, copy=False):
  """numpy.dtype for numeric scalars only (no object or structured dtypes)."""
  if not isinstance(spec, str):
    raise pickle.UnpicklingError(f'numpy.dtype spec must be a string, got {spec!r}')
  dtype = np.dtype(spec, bool(align), bool(copy))
  if dtype.kind not in _NUMERIC_KINDS or dtype.fields is not None:
    raise pickle.UnpicklingError(f'numpy.dtype {spec!r} is not a plain numeric type')
  return dtype


def _scalar(dtype, data):
  """numpy.core.multiarray.scalar: a numeric numpy scalar from its raw bytes, as a Python number."""
  if not isinstance(dtype, np.dtype) or dtype.kind not in _NUMERIC_KINDS:
    raise pickle.UnpicklingError(f'numpy scalar of unsupported dtype {dtype!r}')
  if not isinstance(data, bytes) or len(data) != dtype.itemsize:
    raise pickle.UnpicklingError(f'numpy scalar needs {dtype.itemsize} bytes')
  return np.frombuffer(data, dtype)[0].item()


def _reconstruct_persistent_obj(meta):
  """NVIDIA's persistent network object -> PersistentObject; its embedded source is ignored."""
  if not isinstance(meta, dict) or meta.get('type') != 'class':
    raise pickle.UnpicklingError('persistent object record must be a dict with type "class"')
  class_name, state = meta.get('class_name'), meta.get('state')
  if not isinstance(class_name, str) or not isinstance(state, dict):
    raise pickle.UnpicklingError('persistent object record lacks class_name or state')
  return PersistentObject(class_name, state)


def _load_from_bytes(raw):
  """torch.storage._load_from_bytes: one storage in torch's legacy serialization."""
  if not isinstance(raw, bytes):
    raise pickle.UnpicklingError('_load_from_bytes expects bytes')
  storage = _load_legacy(io.BytesIO(raw))
  if not isinstance(storage, (_Storage, _StorageView)):
    raise pickle.UnpicklingError('_load_from_bytes did not hold a storage')
  return storage


def _storage_dtype(code: str, byteorder: str = '<') -> np.dtype:
  if code == 'bf16':
    import ml_dtypes  # pylint: disable=g-import-not-at-top  (a JAX dependency)
    return np.dtype(ml_dtypes.bfloat16)
  return np.dtype(code).newbyteorder(byteorder) if np.dtype(code).itemsize > 1 else np.dtype(code)


def _storage_globals(byteorder: str = '<') -> dict[str, Any]:
  return {f'torch.{name}': _StorageType(name, _storage_dtype(code, byteorder))
          for name, code in _STORAGE_DTYPES.items()}


_TENSOR_GLOBALS = {
    'collections.OrderedDict': collections.OrderedDict,
    'torch._utils._rebuild_tensor_v2': _rebuild_tensor_v2,
    'torch._utils._rebuild_parameter': _rebuild_parameter,
}
_NETWORK_GLOBALS = {
    **_TENSOR_GLOBALS,
    'torch_utils.persistence._reconstruct_persistent_obj': _reconstruct_persistent_obj,
    'dnnlib.util.EasyDict': dict,  # a dict with attribute access; NEWOBJ + SETITEMS fill it
    'builtins.set': set,  # protocols 2-3 (Python 3.7's default) pickle sets as set([...])
    'numpy.dtype': _dtype,
    'numpy._core.multiarray.scalar': _scalar,
    'numpy.core.multiarray.scalar': _scalar,
    'torch.storage._load_from_bytes': _load_from_bytes,
}


class _RestrictedUnpickler(pickle.Unpickler):
  """An Unpickler that resolves globals only from `allowed` and persistent ids via a callback."""

  def __init__(self, file: BinaryIO, allowed: Mapping[str, Any],
               persistent_load: Optional[Callable[[Any], Any]] = None):
    super().__init__(file)
    self._allowed = allowed
    self._persistent = persistent_load

  def find_class(self, module, name):
    key = f'{module}.{name}'
    if key not in self._allowed:
      raise UnsafePickleError(
          f'refusing to load global {key!r}: this reader builds only NVIDIA network and tensor '
          f'records and calls nothing else (the file may be malicious, or not a StyleGAN2-ADA '
          f'network pickle or state dict)')
    return self._allowed[key]

  def persistent_load(self, pid):
    if self._persistent is None:
      raise pickle.UnpicklingError(f'unexpected persistent id {pid!r}')
    return self._persistent(pid)


def _restricted_load(f: BinaryIO, allowed: Mapping[str, Any], persistent_load=None) -> Any:
  return _RestrictedUnpickler(f, allowed, persistent_load).load()


# --------------------------------------------------------------------------------------------
# Torch serialization: legacy stream and zip archive.


def _storage_pid(pid, byteorder: str = '<') -> tuple:
  """Validates ('storage', type, key, location, numel[, view_metadata])."""
  if not isinstance(pid, tuple) or len(pid) not in (5, 6) or pid[0] != 'storage':
    raise pickle.UnpicklingError(f'unsupported persistent id {pid!r}')
  _, storage_type, key, _, numel = pid[:5]
  if not isinstance(storage_type, _StorageType):
    raise pickle.UnpicklingError(f'persistent id names no storage type: {storage_type!r}')
  if not isinstance(key, str) or not isinstance(numel, int) or numel < 0:
    raise pickle.UnpicklingError(f'bad storage key or size in {pid!r}')
  dtype = storage_type.dtype
  if byteorder == '>' and dtype.itemsize > 1:
    dtype = dtype.newbyteorder('>')
  return dtype, key, numel, pid[5] if len(pid) == 6 else None


def _load_legacy(f: BinaryIO) -> Any:
  """torch's legacy (non-zip) serialization: header pickles, object, keys, raw storages."""
  header = {}
  if _restricted_load(f, header) != _LEGACY_MAGIC:
    raise pickle.UnpicklingError('not a torch legacy stream (bad magic number)')
  protocol = _restricted_load(f, header)
  if protocol != _LEGACY_PROTOCOL:
    raise pickle.UnpicklingError(f'unsupported torch legacy protocol {protocol!r}')
  sys_info = _restricted_load(f, header)
  if not isinstance(sys_info, dict) or not sys_info.get('little_endian', False):
    raise pickle.UnpicklingError('only little-endian torch legacy streams are supported')

  storages: dict[str, _Storage] = {}

  def persistent_load(pid):
    dtype, key, numel, view = _storage_pid(pid)
    if key not in storages:
      storages[key] = _Storage(dtype, numel)
    root = storages[key]
    if view is None:
      return root
    _, offset, view_numel = view
    if not (isinstance(offset, int) and isinstance(view_numel, int) and 0 <= offset and
            offset + view_numel <= root.numel):
      raise pickle.UnpicklingError(f'bad storage view {view!r}')
    return _StorageView(root, offset, view_numel)

  obj = _restricted_load(f, {**_TENSOR_GLOBALS, **_storage_globals()}, persistent_load)
  keys = _restricted_load(f, header)
  if not isinstance(keys, list) or set(keys) != set(storages):
    raise pickle.UnpicklingError('storage key list does not match the persistent ids')
  for key in keys:
    count_bytes = f.read(8)
    if len(count_bytes) != 8:
      raise pickle.UnpicklingError('truncated torch legacy stream')
    (count,) = struct.unpack('<q', count_bytes)
    storage = storages[key]
    if count != storage.numel:
      raise pickle.UnpicklingError(f'storage {key}: {count} elements, expected {storage.numel}')
    storage.fill(f.read(count * storage.dtype.itemsize))
  return _resolve(obj)


def _load_zip(path: str) -> Any:
  """torch>=1.6 zip archive: `<prefix>/data.pkl` + `<prefix>/data/<key>` storages."""
  with zipfile.ZipFile(path) as zf:
    names = set(zf.namelist())
    pkls = [n for n in names if n.endswith('data.pkl') and n.count('/') == 1]
    if len(pkls) != 1:
      raise ValueError(f'{path}: expected one <prefix>/data.pkl in the zip, found {pkls}')
    prefix = pkls[0][:-len('data.pkl')]
    byteorder = '<'
    if prefix + 'byteorder' in names:
      byteorder = {'little': '<', 'big': '>'}[zf.read(prefix + 'byteorder').decode().strip()]
    storages: dict[str, _Storage] = {}

    def persistent_load(pid):
      dtype, key, numel, _ = _storage_pid(pid, byteorder)
      if key not in storages:
        entry = f'{prefix}data/{key}'
        if entry not in names:
          raise pickle.UnpicklingError(f'{path}: storage {entry} is missing')
        storages[key] = _Storage(dtype, numel)
        storages[key].fill(zf.read(entry))
      return storages[key]

    with zf.open(pkls[0]) as f:
      obj = _restricted_load(io.BytesIO(f.read()), {**_TENSOR_GLOBALS, **_storage_globals()},
                             persistent_load)
  return _resolve(obj)


def _resolve(obj: Any, _seen=None) -> Any:
  """Replaces the `_TensorRef`s left by a legacy stream with arrays, in place where possible."""
  if isinstance(obj, _TensorRef):
    return obj.materialize()
  _seen = set() if _seen is None else _seen
  if id(obj) in _seen:
    return obj
  if isinstance(obj, dict):
    _seen.add(id(obj))
    for key, value in obj.items():
      obj[key] = _resolve(value, _seen)
  elif isinstance(obj, list):
    _seen.add(id(obj))
    obj[:] = [_resolve(v, _seen) for v in obj]
  elif isinstance(obj, tuple):
    return type(obj)(_resolve(v, _seen) for v in obj) if type(obj) is tuple else obj
  elif isinstance(obj, PersistentObject):
    _seen.add(id(obj))
    _resolve(obj.state, _seen)
  return obj


def load_torch_file(path: str | os.PathLike) -> Any:
  """The object stored by `torch.save` (zip or legacy format), tensors as numpy arrays.

  Raises UnsafePickleError (a global outside the allow-list; nothing has run) or
  UnreadablePickleError (not a torch file this reader understands).
  """
  path = os.fspath(path)
  with open(path, 'rb') as f:  # a missing file: FileNotFoundError, before anything is parsed
    try:
      if zipfile.is_zipfile(f):
        return _load_zip(path)
      f.seek(0)
      return _load_legacy(f)
    except UnsafePickleError:
      raise
    except _DAMAGED as e:
      raise _unreadable(path, 'a torch file (torch.save)', e) from e


def _as_state_dict(obj: Any, what: str) -> dict[str, np.ndarray]:
  if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, np.ndarray)
                                          for k, v in obj.items()):
    raise ValueError(f'{what} is not a flat state dict of tensors')
  return dict(obj)


def state_dict_from_torch_file(path: str | os.PathLike, key: str = 'G_ema') -> dict:
  """A flat {name: array} state dict from a .pt holding one (or a dict with it under `key`)."""
  obj = load_torch_file(path)
  if isinstance(obj, dict) and key in obj:
    obj = obj[key]
  if isinstance(obj, PersistentObject):
    return module_state_dict(obj)
  return _as_state_dict(obj, f'{path}')


# --------------------------------------------------------------------------------------------
# NVIDIA network pickles.


def module_state_dict(module: PersistentObject, prefix: str = '') -> dict[str, np.ndarray]:
  """torch's `state_dict()` of a pickled module: parameters, persistent buffers, then children."""
  if not isinstance(module, PersistentObject):
    raise ValueError(f'{prefix or "network"}: expected a network object, got '
                     f'{type(module).__name__}')
  state = module.state
  out = {}
  skip = state.get('_non_persistent_buffers_set') or set()
  for collection in ('_parameters', '_buffers'):
    for name, value in (state.get(collection) or {}).items():
      if value is None or (collection == '_buffers' and name in skip):
        continue
      if not isinstance(value, np.ndarray):
        raise ValueError(f'{prefix}{name}: expected a tensor, got {type(value).__name__}')
      out[prefix + name] = value
  for name, child in (state.get('_modules') or {}).items():
    if child is not None:
      out.update(module_state_dict(child, f'{prefix}{name}.'))
  return out


_GENERATOR_ATTRIBUTES = ('z_dim', 'c_dim', 'w_dim', 'img_resolution', 'img_channels', 'num_ws')


def _plain(value: Any) -> Any:
  """Dicts (EasyDict, OrderedDict) -> dict, recursively; everything else as is."""
  if isinstance(value, dict):
    return {k: _plain(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return type(value)(_plain(v) for v in value) if type(value) in (list, tuple) else value
  return value


def generator_kwargs(G: PersistentObject) -> dict[str, Any]:
  """The Generator's constructor kwargs, as far as its pickled attributes give them.

  NVIDIA's persistent classes record their constructor arguments in `_init_kwargs`; the plain
  attributes (z_dim, c_dim, w_dim, img_resolution, img_channels, num_ws) fill in or override.
  """
  state = G.state
  kwargs = _plain(state.get('_init_kwargs') or {})
  for name in _GENERATOR_ATTRIBUTES:
    if isinstance(state.get(name), int):
      kwargs[name] = state[name]
  return kwargs


def load_network_pickle(path: str | os.PathLike | BinaryIO) -> dict[str, Any]:
  """A StyleGAN2-ADA `network-snapshot-*.pkl`, read without torch and without running its code.

  Args:
    path: the file, or an open binary file object.

  Returns {'G': state dict, 'G_ema': state dict, 'D': state dict, 'G_kwargs': dict}; a state dict
  is a flat {NVIDIA key: np.ndarray} in torch's order, as `{k: v.numpy() for k, v in
  net.state_dict().items()}` would give. Networks missing from the file are left out.

  Raises:
    UnsafePickleError: the pickle asks for a global outside the allow-list (nothing has run).
    UnreadablePickleError: the file is not a pickle, or a damaged one.
    ValueError: the pickle holds no networks we understand.
  """
  try:
    if hasattr(path, 'read'):
      data = _restricted_load(path, _NETWORK_GLOBALS)
    else:
      with open(path, 'rb') as f:
        data = _restricted_load(f, _NETWORK_GLOBALS)
  except UnsafePickleError:
    raise
  except _DAMAGED as e:
    raise _unreadable(path, 'a StyleGAN2-ADA network pickle', e) from e
  if not isinstance(data, dict):
    raise ValueError(f'{path}: expected a dict of networks, got {type(data).__name__}')
  out = {}
  for name in ('G', 'G_ema', 'D'):
    if data.get(name) is not None:
      out[name] = module_state_dict(data[name])
  generator = data.get('G_ema', data.get('G'))
  if generator is None:
    raise ValueError(f'{path}: holds no G_ema or G (keys: {sorted(data)})')
  out['G_kwargs'] = generator_kwargs(generator)
  return out
