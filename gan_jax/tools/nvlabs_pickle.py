"""Read NVIDIA network pickles and torch `.pt` files safely: plain Python and numpy, never torch.

A pickle is a program: unpickling one with `pickle.load` can call any importable function, and
network pickles are downloaded from the internet. So this module unpickles with an allow-list
(the mechanism, torch's storages and tensors, and the errors are `gan_jax.torch_pickle`'s; the
list below is this module's). Every global the stream asks for is looked up in a table of small
functions that build plain data (dicts, numpy arrays, `PersistentObject` records); any other
global — `os.system`, `builtins.eval`, a torch module class — raises `UnsafePickleError` naming
it, instead of being called. Nothing from the file is ever executed, imported or compiled (the
Python source that NVIDIA's persistence mechanism embeds in every network object is ignored, not
even read).

Formats:

  network-snapshot-*.pkl  NVIDIA's StyleGAN2-ADA (and StyleGAN3) training snapshots: a dict
                          {'G', 'D', 'G_ema', 'augment_pipe', 'training_set_kwargs'} whose
                          networks are
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
  numpy.ndarray and numpy{._core,.core}.multiarray._reconstruct (numeric arrays only; StyleGAN3),
  torch._utils._rebuild_parameter, torch._utils._rebuild_tensor_v2, torch.storage._load_from_bytes,
  torch.<Type>Storage (only inside persistent ids).
"""

import io
import os
import pickle
import zipfile
from typing import Any, BinaryIO

import numpy as np

from gan_jax import torch_pickle

# The errors are torch_pickle's, named here too for the callers of this module.
UnsafePickleError = torch_pickle.UnsafePickleError
UnreadablePickleError = torch_pickle.UnreadablePickleError

_NUMERIC_KINDS = 'biufc'  # bool, int, uint, float, complex
_NETWORK = 'a StyleGAN2-ADA network pickle'
_TORCH_FILE = 'a torch file (torch.save)'


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


# --------------------------------------------------------------------------------------------
# The allowed globals: each one checks its arguments and builds plain data.


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


class _NdarrayType:
  """Stands for `numpy.ndarray` in a pickle: only `_reconstruct` accepts it."""


class PickledArray:
  """A numeric numpy array pickled as an object (StyleGAN3's `size` / `in_size` attributes):
  `numpy.core.multiarray._reconstruct` makes an empty one, the stream's BUILD then fills it from
  (version, shape, dtype, is_fortran, raw bytes). `array` is the numpy array."""
  __slots__ = ('array',)

  def __init__(self):
    self.array = None

  def __setstate__(self, state):
    if not (isinstance(state, tuple) and len(state) == 5):
      raise pickle.UnpicklingError('numpy array state must be a 5-tuple')
    _, shape, dtype, fortran, raw = state
    if not (isinstance(shape, tuple) and all(isinstance(d, int) and d >= 0 for d in shape)):
      raise pickle.UnpicklingError(f'numpy array shape {shape!r} is not a tuple of sizes')
    if not isinstance(dtype, np.dtype) or dtype.kind not in _NUMERIC_KINDS:
      raise pickle.UnpicklingError(f'numpy array of unsupported dtype {dtype!r}')
    if not isinstance(raw, bytes) or len(raw) != int(np.prod(shape)) * dtype.itemsize:
      raise pickle.UnpicklingError('numpy array data does not match its shape and dtype')
    self.array = np.frombuffer(raw, dtype).reshape(shape, order='F' if fortran else 'C').copy()

  def __repr__(self):
    return f'PickledArray({self.array!r})'


def _reconstruct(subtype, shape, dtype_code):
  """numpy.core.multiarray._reconstruct(ndarray, (0,), b'b'): an empty PickledArray."""
  if subtype is not _NdarrayType or tuple(shape) != (0,) or dtype_code not in (b'b', 'b'):
    raise pickle.UnpicklingError('numpy _reconstruct is allowed only for a plain ndarray')
  return PickledArray()


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
  storage = torch_pickle.load_legacy(io.BytesIO(raw), _NETWORK)
  if not isinstance(storage, (torch_pickle.Storage, torch_pickle.StorageView)):
    raise pickle.UnpicklingError('_load_from_bytes did not hold a storage')
  return storage


_NETWORK_GLOBALS = {
    **torch_pickle.TENSOR_GLOBALS,
    'torch_utils.persistence._reconstruct_persistent_obj': _reconstruct_persistent_obj,
    'dnnlib.util.EasyDict': dict,  # a dict with attribute access; NEWOBJ + SETITEMS fill it
    'builtins.set': set,  # protocols 2-3 (Python 3.7's default) pickle sets as set([...])
    'numpy.dtype': _dtype,
    'numpy._core.multiarray.scalar': _scalar,
    'numpy.core.multiarray.scalar': _scalar,
    # StyleGAN3 pickles: numeric ndarray attributes (NumPy >= 2 spells the module _core).
    'numpy.ndarray': _NdarrayType,
    'numpy._core.multiarray._reconstruct': _reconstruct,
    'numpy.core.multiarray._reconstruct': _reconstruct,
    'torch.storage._load_from_bytes': _load_from_bytes,
}


def load_torch_file(path: str | os.PathLike) -> Any:
  """The object stored by `torch.save` (zip or legacy format), tensors as numpy arrays.

  Raises UnsafePickleError (a global outside the allow-list; nothing has run) or
  UnreadablePickleError (not a torch file this reader understands).
  """
  path = os.fspath(path)
  with open(path, 'rb') as f:  # a missing file: FileNotFoundError, before anything is parsed
    try:
      if zipfile.is_zipfile(f):
        return torch_pickle.load_zip(path, what=_TORCH_FILE)
      f.seek(0)
      return torch_pickle.load_legacy(f, _TORCH_FILE)
    except UnsafePickleError:
      raise
    except torch_pickle.DAMAGED as e:
      raise torch_pickle.unreadable(path, _TORCH_FILE, e) from e


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
  """A StyleGAN2-ADA or StyleGAN3 `network-snapshot-*.pkl`, read without torch and without running
  its code.

  Args:
    path: the file, or an open binary file object.

  Returns {'G': state dict, 'G_ema': state dict, 'D': state dict, 'G_kwargs': dict, 'D_kwargs':
  dict (with D), 'augment_p': float (with an augment pipe)}; a state dict
  is a flat {NVIDIA key: np.ndarray} in torch's order, as `{k: v.numpy() for k, v in
  net.state_dict().items()}` would give. Networks missing from the file are left out.

  Raises:
    UnsafePickleError: the pickle asks for a global outside the allow-list (nothing has run).
    UnreadablePickleError: the file is not a pickle, or a damaged one.
    ValueError: the pickle holds no networks we understand.
  """
  try:
    if hasattr(path, 'read'):
      data = torch_pickle.restricted_load(path, _NETWORK_GLOBALS, what=_NETWORK)
    else:
      with open(path, 'rb') as f:
        data = torch_pickle.restricted_load(f, _NETWORK_GLOBALS, what=_NETWORK)
  except UnsafePickleError:
    raise
  except torch_pickle.DAMAGED as e:
    raise torch_pickle.unreadable(path, _NETWORK, e) from e
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
  if data.get('D') is not None:  # the discriminator's constructor kwargs, as recorded
    out['D_kwargs'] = _plain(data['D'].state.get('_init_kwargs') or {})
  pipe = data.get('augment_pipe')
  if isinstance(pipe, PersistentObject):  # ADA's p at the snapshot (a buffer of augment_pipe)
    p = (pipe.state.get('_buffers') or {}).get('p')
    if isinstance(p, np.ndarray) and p.size == 1:
      out['augment_p'] = float(p.reshape(()))
  return out
