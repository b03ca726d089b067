"""Unpickling torch files safely: an allow-list of globals, torch's storages and tensors as numpy.

A pickle is a program: unpickling one with `pickle.load` can call any importable function, and
weights files are downloaded from the internet. `RestrictedUnpickler` resolves every global the
stream asks for in the caller's allow-list — a table {'module.name': our own small function or
type that builds plain data}, plus optionally a rule for a whole family of names (TorchScript's
`__torch__.*` classes) — and any other global (`os.system`, `builtins.eval`, a torch module class)
raises `UnsafePickleError` naming it, before anything is called. The callers own their lists:

  gan_jax.metrics.torchscript_weights  the FID Inception network (a TorchScript archive)
  gan_jax.tools.nvlabs_pickle          NVIDIA network pickles and torch.save files

What both share lives here: the storage records and tensor rebuilding (`TENSOR_GLOBALS`,
`storage_globals`), the two torch serializations —

  zip (torch>=1.6, TorchScript)  `<prefix>/data.pkl` referencing storages `<prefix>/data/<key>`
                                 through persistent ids ('storage', torch.<Type>Storage, key,
                                 location, numel)                       -> `load_zip`
  legacy                         magic number, protocol, system info, the object's pickle, the
                                 storage keys, then each storage as int64 element count + raw
                                 bytes                                  -> `load_legacy`

— and the errors: `UnsafePickleError` (a global outside the list; nothing has run) and
`UnreadablePickleError` (not a file this reader understands), both user errors on the command
line (`gan_jax.cli_errors`). Tensors come back as C-contiguous native-endian numpy copies, their
views bounds-checked against their storage.
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

# A rule for globals beyond the table: (module, name) -> the object to use, or None (refused).
ClassRule = Callable[[str, str], Optional[Any]]


class UnsafePickleError(pickle.UnpicklingError):
  """The pickle asked for a global that is not on the allow-list (it was not called)."""


class UnreadablePickleError(pickle.UnpicklingError):
  """The file is not a pickle or torch file this reader understands (random bytes, a truncated
  download, another format); the message names the file and what went wrong."""


# What unpickling a file that is not a pickle (or is a damaged one) raises, besides our own
# UnpicklingErrors: "unsupported pickle protocol: 185" is a ValueError, a truncated file an
# EOFError, a damaged zip a BadZipFile, bad opcodes a KeyError/IndexError, bad structs a
# struct.error, absurd sizes an OverflowError or MemoryError.
DAMAGED = (pickle.UnpicklingError, ValueError, EOFError, KeyError, IndexError, TypeError,
           struct.error, zipfile.BadZipFile, OverflowError, MemoryError, UnicodeDecodeError)


def unreadable(path, what: str, error: BaseException) -> UnreadablePickleError:
  """UnreadablePickleError for `path` (a path or an open file) that is not `what`."""
  return UnreadablePickleError(f'{os.fspath(path) if not hasattr(path, "read") else "the file"}: '
                               f'not {what} this reader understands ({type(error).__name__}: '
                               f'{error})')


# --------------------------------------------------------------------------------------------
# The allow-list mechanism.


class RestrictedUnpickler(pickle.Unpickler):
  """An Unpickler that resolves globals only from `allowed` (and `classes`), persistent ids only
  through `persistent_load`.

  Args:
    file: the pickle stream.
    allowed: {'module.name': the object that stands for it}.
    persistent_load: pid -> object (None: persistent ids are refused).
    classes: the rule for globals not in `allowed` (None: refuse them all).
    what: what the stream should be, for the refusal message.
  """

  def __init__(self, file: BinaryIO, allowed: Mapping[str, Any],
               persistent_load: Optional[Callable[[Any], Any]] = None,
               classes: Optional[ClassRule] = None, what: str = 'a weights file'):
    super().__init__(file)
    self._allowed = allowed
    self._persistent = persistent_load
    self._classes = classes
    self._what = what

  def find_class(self, module, name):
    key = f'{module}.{name}'
    if key in self._allowed:
      return self._allowed[key]
    found = self._classes(module, name) if self._classes is not None else None
    if found is None:
      raise UnsafePickleError(
          f'refusing to load global {key!r}: it is not allowed in {self._what}, and this reader '
          f'builds only the records such a file holds and calls nothing else (the file may be '
          f'malicious, or not {self._what})')
    return found

  def persistent_load(self, pid):
    if self._persistent is None:
      raise pickle.UnpicklingError(f'unexpected persistent id {pid!r}')
    return self._persistent(pid)


def restricted_load(f: BinaryIO, allowed: Mapping[str, Any], persistent_load=None,
                    classes: Optional[ClassRule] = None, what: str = 'a weights file') -> Any:
  """One object from the pickle stream `f`, under the allow-list (`RestrictedUnpickler`)."""
  return RestrictedUnpickler(f, allowed, persistent_load, classes, what).load()


# --------------------------------------------------------------------------------------------
# Storages and tensors.


class StorageType:
  """Stands for `torch.<Type>Storage` inside a persistent id; only its dtype matters."""
  __slots__ = ('name', 'dtype')

  def __init__(self, name: str, dtype: np.dtype):
    self.name, self.dtype = name, dtype


class Storage:
  """A flat typed buffer; `data` is filled when its bytes have been read."""
  __slots__ = ('dtype', 'numel', 'data')

  def __init__(self, dtype: np.dtype, numel: int):
    self.dtype, self.numel, self.data = dtype, numel, None

  def fill(self, raw: bytes) -> None:
    if len(raw) != self.numel * self.dtype.itemsize:
      raise pickle.UnpicklingError(f'storage holds {len(raw)} bytes, expected {self.numel} '
                                   f'elements of {self.dtype.itemsize} bytes')
    self.data = np.frombuffer(raw, self.dtype)


class StorageView:
  """A legacy storage view: `numel` elements of `base` from element `offset`."""
  __slots__ = ('base', 'offset', 'numel')

  def __init__(self, base: Storage, offset: int, numel: int):
    self.base, self.offset, self.numel = base, offset, numel


class TensorRef:
  """A tensor whose storage bytes may not have been read yet (legacy streams store them last)."""
  __slots__ = ('storage', 'offset', 'size', 'stride')

  def __init__(self, storage, offset: int, size: tuple, stride: tuple):
    self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

  def ready(self) -> bool:
    base = self.storage.base if isinstance(self.storage, StorageView) else self.storage
    return base.data is not None

  def materialize(self) -> np.ndarray:
    """A C-contiguous native-endian copy of the strided view, bounds-checked first."""
    storage, offset = self.storage, self.offset
    if isinstance(storage, StorageView):
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


def _int_tuple(value, what: str) -> tuple:
  if not isinstance(value, (tuple, list)) or not all(isinstance(v, int) for v in value):
    raise pickle.UnpicklingError(f'{what} must be a tuple of ints, got {value!r}')
  return tuple(value)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
  del requires_grad, backward_hooks, metadata  # autograd bookkeeping: irrelevant to the values
  if not isinstance(storage, (Storage, StorageView)):
    raise pickle.UnpicklingError(f'tensor storage must come from a storage record, got '
                                 f'{type(storage).__name__}')
  size, stride = _int_tuple(size, 'tensor size'), _int_tuple(stride, 'tensor stride')
  if len(size) != len(stride) or any(s < 0 for s in size + stride):
    raise pickle.UnpicklingError(f'bad tensor size {size} / stride {stride}')
  if not isinstance(storage_offset, int):
    raise pickle.UnpicklingError(f'tensor offset must be an int, got {storage_offset!r}')
  ref = TensorRef(storage, storage_offset, size, stride)
  return ref.materialize() if ref.ready() else ref


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
  del requires_grad, backward_hooks
  if not isinstance(data, (np.ndarray, TensorRef)):
    raise pickle.UnpicklingError(f'parameter data must be a tensor, got {type(data).__name__}')
  return data


def _storage_dtype(code: str, byteorder: str = '<') -> np.dtype:
  if code == 'bf16':
    import ml_dtypes  # pylint: disable=g-import-not-at-top  (a JAX dependency)
    return np.dtype(ml_dtypes.bfloat16)
  return np.dtype(code).newbyteorder(byteorder) if np.dtype(code).itemsize > 1 else np.dtype(code)


def storage_globals(byteorder: str = '<') -> dict[str, StorageType]:
  """The allow-list entries of `torch.<Type>Storage` (used only inside persistent ids)."""
  return {f'torch.{name}': StorageType(name, _storage_dtype(code, byteorder))
          for name, code in _STORAGE_DTYPES.items()}


# Tensors, parameters and ordered dicts: what any file of tensors needs.
TENSOR_GLOBALS = {
    'collections.OrderedDict': collections.OrderedDict,
    'torch._utils._rebuild_tensor_v2': _rebuild_tensor_v2,
    'torch._utils._rebuild_parameter': _rebuild_parameter,
}


def _storage_pid(pid, byteorder: str = '<') -> tuple:
  """Validates ('storage', type, key, location, numel[, view_metadata])."""
  if not isinstance(pid, tuple) or len(pid) not in (5, 6) or pid[0] != 'storage':
    raise pickle.UnpicklingError(f'unsupported persistent id {pid!r}')
  _, storage_type, key, _, numel = pid[:5]
  if not isinstance(storage_type, StorageType):
    raise pickle.UnpicklingError(f'persistent id names no storage type: {storage_type!r}')
  if not isinstance(key, str) or not isinstance(numel, int) or numel < 0:
    raise pickle.UnpicklingError(f'bad storage key or size in {pid!r}')
  dtype = storage_type.dtype
  if byteorder == '>' and dtype.itemsize > 1:
    dtype = dtype.newbyteorder('>')
  return dtype, key, numel, pid[5] if len(pid) == 6 else None


def resolve(obj: Any, _seen=None) -> Any:
  """Replaces the `TensorRef`s left by a legacy stream with arrays, in place where possible."""
  if isinstance(obj, TensorRef):
    return obj.materialize()
  _seen = set() if _seen is None else _seen
  if id(obj) in _seen:
    return obj
  if isinstance(obj, dict):
    _seen.add(id(obj))
    for key, value in obj.items():
      obj[key] = resolve(value, _seen)
  elif isinstance(obj, list):
    _seen.add(id(obj))
    obj[:] = [resolve(v, _seen) for v in obj]
  elif isinstance(obj, tuple):
    return type(obj)(resolve(v, _seen) for v in obj) if type(obj) is tuple else obj
  return obj


# --------------------------------------------------------------------------------------------
# Torch serialization: legacy stream and zip archive.


def load_legacy(f: BinaryIO, what: str = 'a torch file') -> Any:
  """torch's legacy (non-zip) serialization: header pickles, object, keys, raw storages. The
  object may use `TENSOR_GLOBALS` and the storage types only."""
  header = {}
  if restricted_load(f, header, what=what) != _LEGACY_MAGIC:
    raise pickle.UnpicklingError('not a torch legacy stream (bad magic number)')
  protocol = restricted_load(f, header, what=what)
  if protocol != _LEGACY_PROTOCOL:
    raise pickle.UnpicklingError(f'unsupported torch legacy protocol {protocol!r}')
  sys_info = restricted_load(f, header, what=what)
  if not isinstance(sys_info, dict) or not sys_info.get('little_endian', False):
    raise pickle.UnpicklingError('only little-endian torch legacy streams are supported')

  storages: dict[str, Storage] = {}

  def persistent_load(pid):
    dtype, key, numel, view = _storage_pid(pid)
    if key not in storages:
      storages[key] = Storage(dtype, numel)
    root = storages[key]
    if view is None:
      return root
    _, offset, view_numel = view
    if not (isinstance(offset, int) and isinstance(view_numel, int) and 0 <= offset and
            offset + view_numel <= root.numel):
      raise pickle.UnpicklingError(f'bad storage view {view!r}')
    return StorageView(root, offset, view_numel)

  obj = restricted_load(f, {**TENSOR_GLOBALS, **storage_globals()}, persistent_load, what=what)
  keys = restricted_load(f, header, what=what)
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
  return resolve(obj)


def zip_prefix(archive: zipfile.ZipFile) -> str:
  """The `<prefix>` of the archive's one `<prefix>/data.pkl`."""
  pkls = [n for n in archive.namelist() if n.endswith('/data.pkl') and n.count('/') == 1]
  if len(pkls) != 1:
    raise ValueError(f'expected one <prefix>/data.pkl in the zip, found {pkls}')
  return pkls[0][:-len('/data.pkl')]


def load_zip(path: str | os.PathLike, allowed: Mapping[str, Any] = TENSOR_GLOBALS,
             classes: Optional[ClassRule] = None, what: str = 'a torch file') -> Any:
  """The object of a torch>=1.6 zip archive (torch.save, TorchScript): `<prefix>/data.pkl`
  under `allowed` (+ `classes`) and the storage types, `<prefix>/data/<key>` its storages."""
  with zipfile.ZipFile(path) as zf:
    names = set(zf.namelist())
    prefix = zip_prefix(zf)
    byteorder = '<'
    if f'{prefix}/byteorder' in names:
      byteorder = {'little': '<', 'big': '>'}[zf.read(f'{prefix}/byteorder').decode().strip()]
    storages: dict[str, Storage] = {}

    def persistent_load(pid):
      dtype, key, numel, _ = _storage_pid(pid, byteorder)
      if key not in storages:
        entry = f'{prefix}/data/{key}'
        if entry not in names:
          raise pickle.UnpicklingError(f'{os.fspath(path)}: storage {entry} is missing')
        storages[key] = Storage(dtype, numel)
        storages[key].fill(zf.read(entry))
      return storages[key]

    obj = restricted_load(io.BytesIO(zf.read(f'{prefix}/data.pkl')),
                          {**allowed, **storage_globals()}, persistent_load, classes, what)
  return resolve(obj)
