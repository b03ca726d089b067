"""NVIDIA weights without torch: the network pickle, .npz and hand-made .pt files reproduce NVIDIA's
images through convert_nvlabs + load_generator; malicious pickles are refused before anything runs.

The .pt files are written here opcode by opcode (torch's layout, no torch), so the reader is tested
against the format, not against itself.
"""

import io
import pickle
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import gan_jax
from gan_jax.tools import convert_nvlabs
from gan_jax.tools import nvlabs_pickle
from tests import numerics

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / 'tests' / 'fixtures' / 'nvlabs'
PICKLE = FIXTURES / 'network-uncond-nosrc.pkl'


def _fixture(name):
  assert FIXTURES.is_dir(), f'NVIDIA fixtures not found at {FIXTURES}'
  return dict(np.load(FIXTURES / name, allow_pickle=False))


# --------------------------------------------------------------------------------------------
# A tiny pickle writer: protocol-2 opcodes by hand.


def _global(module, name):
  return b'c' + f'{module}\n{name}\n'.encode()


def _str(text):
  data = text.encode()
  return b'X' + struct.pack('<I', len(data)) + data


def _int(value):
  return b'J' + struct.pack('<i', value)


def _tuple(*items):
  return b'(' + b''.join(items) + b't'


def _call(func, *args):
  return func + _tuple(*args) + b'R'


def _program(body):
  return b'\x80\x02' + body + b'.'


def _ordered_dict(items):
  return _call(_global('collections', 'OrderedDict')) + b'(' + b''.join(
      _str(k) + v for k, v in items) + b'u'


def _tensor(key, numel, offset, size, stride, storage='FloatStorage', parameter=False,
            legacy=False):
  pid = [_str('storage'), _global('torch', storage), _str(key), _str('cpu'), _int(numel)]
  if legacy:
    pid.append(b'N')  # no view metadata
  hooks = _call(_global('collections', 'OrderedDict'))
  tensor = _call(_global('torch._utils', '_rebuild_tensor_v2'), _tuple(*pid) + b'Q', _int(offset),
                 _tuple(*map(_int, size)), _tuple(*map(_int, stride)), b'\x89', hooks)
  if parameter:
    tensor = _call(_global('torch._utils', '_rebuild_parameter'), tensor, b'\x89', hooks)
  return tensor


def _contiguous_strides(shape):
  return tuple(int(np.prod(shape[i + 1:], dtype=np.int64)) for i in range(len(shape)))


def _write_zip_pt(path, data_pkl, storages, prefix='archive'):
  with zipfile.ZipFile(path, 'w') as zf:
    zf.writestr(f'{prefix}/data.pkl', data_pkl)
    zf.writestr(f'{prefix}/byteorder', 'little')
    for key, array in storages.items():
      zf.writestr(f'{prefix}/data/{key}', np.ascontiguousarray(array).tobytes())
    zf.writestr(f'{prefix}/version', '3\n')


def _legacy_stream(data_pkl, storages):
  """torch's legacy serialization: magic, protocol, sys info, object, keys, raw storages."""
  out = pickle.dumps(0x1950a86a20f9469cfc6c, protocol=2) + pickle.dumps(1001, protocol=2)
  out += pickle.dumps({'protocol_version': 1001, 'little_endian': True,
                       'type_sizes': {'short': 2, 'int': 4, 'long': 4}}, protocol=2)
  out += data_pkl + pickle.dumps(sorted(storages), protocol=2)
  for key in sorted(storages):
    out += struct.pack('<q', storages[key].size) + np.ascontiguousarray(storages[key]).tobytes()
  return out


def _state_dict_pt(path, state_dict):
  """A zip .pt as `torch.save(G.state_dict(), path)` writes it: one storage per tensor."""
  items, storages = [], {}
  for i, (name, value) in enumerate(state_dict.items()):
    storages[str(i)] = value.astype(np.float32).ravel()
    items.append((name, _tensor(str(i), value.size, 0, value.shape,
                                _contiguous_strides(value.shape))))
  _write_zip_pt(path, _program(_ordered_dict(items)), storages)


# --------------------------------------------------------------------------------------------
# The network pickle.


def test_network_pickle_holds_the_npz_weights_key_by_key():
  network = nvlabs_pickle.load_network_pickle(PICKLE)
  want = _fixture('g_uncond.npz')
  for name in ('G_ema', 'G'):  # the README: G and G_ema both hold g_uncond's weights
    got = network[name]
    assert list(got) == list(want)  # torch's state_dict order, too
    for key, value in want.items():
      assert got[key].dtype == value.dtype and got[key].shape == value.shape, key
      np.testing.assert_array_equal(got[key], value, err_msg=key)
  assert network['G_kwargs'] == {
      'z_dim': 64, 'w_dim': 64, 'c_dim': 0, 'img_resolution': 32, 'img_channels': 3, 'num_ws': 8,
      'mapping_kwargs': {'num_layers': 2},
      'synthesis_kwargs': {'channel_base': 2048, 'channel_max': 64, 'num_fp16_res': 0,
                           'conv_clamp': None, 'architecture': 'skip'}}
  D = network['D']  # NVIDIA's residual D at 32x32: b32, b16, b8 blocks and the b4 epilogue
  assert D['b32.fromrgb.weight'].shape == (64, 3, 1, 1)
  assert D['b4.out.weight'].shape == (1, 64) and D['b4.fc.weight'].shape == (64, 64 * 4 * 4)
  assert all(np.all(np.isfinite(v)) for v in D.values())


def _binbytes(data):
  return b'B' + struct.pack('<I', len(data)) + data


def _persistent(class_name, state_items):
  """torch_utils.persistence._reconstruct_persistent_obj({... 'state': {...}})."""
  state = b'}(' + b''.join(_str(k) + v for k, v in state_items) + b'u'
  meta = b'}(' + b''.join([
      _str('type'), _str('class'), _str('version'), _int(6),
      _str('module_src'), _str('import os; os.system("echo never run")'),
      _str('class_name'), _str(class_name), _str('state'), state]) + b'u'
  return _call(_global('torch_utils.persistence', '_reconstruct_persistent_obj'), meta)


def _tensor_from_bytes(array):
  """_rebuild_tensor_v2(_load_from_bytes(<legacy stream of one storage>), 0, shape, strides)."""
  pid = _tuple(_str('storage'), _global('torch', 'FloatStorage'), _str('94685731914768'),
               _str('cpu'), _int(array.size), b'N') + b'Q'
  blob = _legacy_stream(_program(pid), {'94685731914768': array.astype(np.float32).ravel()})
  storage = _call(_global('torch.storage', '_load_from_bytes'), _binbytes(blob))
  hooks = _call(_global('collections', 'OrderedDict'))
  return _call(_global('torch._utils', '_rebuild_tensor_v2'), storage, _int(0),
               _tuple(*map(_int, array.shape)),
               _tuple(*map(_int, _contiguous_strides(array.shape))), b'\x89', hooks)


def test_protocol_3_network_pickle_as_python_3_7_writes_it():
  """A snapshot written by hand in NVIDIA's layout, with protocol 3's builtins.set, a numpy scalar,
  an EasyDict, a non-persistent buffer and a child module."""
  weight, kept, scratch, bias = (np.arange(6, dtype=np.float32).reshape(2, 3) - 2.5,
                                 np.array([1.5, -2.0], np.float32), np.ones(4, np.float32),
                                 np.array([0.25], np.float32))
  f8 = (_call(_global('numpy', 'dtype'), _str('f8'), b'\x89', b'\x88')
        + _tuple(_int(3), _str('<'), b'N', b'N', b'N', _int(-1), _int(-1), _int(0)) + b'b')
  gain = _call(_global('numpy.core.multiarray', 'scalar'), f8, _binbytes(struct.pack('<d', 0.125)))
  init_kwargs = (_global('dnnlib.util', 'EasyDict') + b')\x81(' + _str('z_dim') + _int(4)
                 + _str('mapping_kwargs') + b'}(' + _str('num_layers') + _int(1) + b'uu')
  hooks = _call(_global('collections', 'OrderedDict'))
  child = _persistent('FullyConnectedLayer', [
      ('_parameters', _ordered_dict([('bias', _tensor_from_bytes(bias))])),
      ('_buffers', _ordered_dict([])), ('_modules', _ordered_dict([])), ('gain', gain)])
  net = _persistent('Generator', [
      ('training', b'\x89'),
      ('_parameters', _ordered_dict([('weight', _call(
          _global('torch._utils', '_rebuild_parameter'), _tensor_from_bytes(weight), b'\x88',
          hooks))])),
      ('_buffers', _ordered_dict([('kept', _tensor_from_bytes(kept)),
                                  ('scratch', _tensor_from_bytes(scratch))])),
      ('_non_persistent_buffers_set',
       _call(_global('builtins', 'set'), b']' + b'(' + _str('scratch') + b'e')),
      ('_modules', _ordered_dict([('fc', child), ('unused', b'N')])),
      ('_init_kwargs', init_kwargs), ('z_dim', _int(4)), ('img_resolution', _int(8))])
  data = b'\x80\x03' + b'}(' + _str('G') + b'N' + _str('G_ema') + net + _str('D') + b'N' + b'u.'
  network = nvlabs_pickle.load_network_pickle(io.BytesIO(data))
  assert set(network) == {'G_ema', 'G_kwargs'}
  sd = network['G_ema']
  assert list(sd) == ['weight', 'kept', 'fc.bias']  # params, persistent buffers, children
  np.testing.assert_array_equal(sd['weight'], weight)
  np.testing.assert_array_equal(sd['kept'], kept)
  np.testing.assert_array_equal(sd['fc.bias'], bias)
  assert network['G_kwargs'] == {'z_dim': 4, 'mapping_kwargs': {'num_layers': 1},
                                 'img_resolution': 8}
  assert type(network['G_kwargs']) is dict and type(network['G_kwargs']['mapping_kwargs']) is dict


def _compare_with_nvidia(g, io, c, tag):
  """Errors (relative to max|NVIDIA's value|) of every NVIDIA output we can recompute, each
  asserted below numerics.NVIDIA_REL."""
  ours = {
      'ws_psi1': g.mapping(io['z'], c),
      'ws_psi05': g.mapping(io['z'], c, psi=0.5),
      'img_psi1_const': g(io['z'], c),
      'img_psi05_const': g(io['z'], c, psi=0.5),
      'img_psi1_none': g(io['z'], c, noise='none'),
      'synth_from_ws': g.synthesis(io['ws_psi1']),
      'img_mixed': g.synthesis(io['ws_mixed']),
  }
  errors = {}
  for key, value in ours.items():
    want = io[key] if key.startswith('ws') else io[key].transpose(0, 2, 3, 1)  # NCHW -> NHWC
    assert value.shape == want.shape and value.dtype == np.float32, key
    errors[key] = numerics.relative_error(value, want)
    numerics.assert_close(value, want, numerics.NVIDIA_REL, f'{tag}: {key}')
  print(tag, {k: f'{v:.1e}' for k, v in errors.items()})
  return errors


@pytest.mark.parametrize('source, tag', [('pkl', 'uncond'), ('npz', 'uncond'), ('npz', 'cond'),
                                         ('pt', 'uncond')])
def test_converted_weights_reproduce_nvidia_images(source, tag, tmp_path):
  io = _fixture(f'io_{tag}.npz')
  if source == 'pkl':
    src = PICKLE
  elif source == 'npz':
    src = FIXTURES / f'g_{tag}.npz'
  else:
    src = tmp_path / f'g_{tag}.pt'
    _state_dict_pt(src, _fixture(f'g_{tag}.npz'))
  convert_nvlabs.main([str(src), str(tmp_path / 'export')])
  g = gan_jax.load_generator(tmp_path / 'export')
  assert (g.z_dim, g.c_dim, g.img_resolution, g.num_ws) == (64, 5 if tag == 'cond' else 0, 32, 8)
  _compare_with_nvidia(g, io, io['c'] if tag == 'cond' else None, f'{source}/{tag}')


def test_conditional_labels_one_hot_or_indices_and_checked():
  io = _fixture('io_cond.npz')
  g = gan_jax.load_generator(FIXTURES / 'g_cond.npz')  # converted on the fly
  classes = np.array([0, 1, 2, 3, 4, 0, 1, 2])
  np.testing.assert_array_equal(io['c'], np.eye(5, dtype=np.float32)[classes])
  numerics.assert_close(g(io['z'], classes), io['img_psi1_const'].transpose(0, 2, 3, 1),
                        numerics.NVIDIA_REL, 'class indices')
  with pytest.raises(ValueError, match='conditional'):
    g(io['z'])
  with pytest.raises(ValueError, match=r'class indices'):
    g(io['z'], classes + 1)
  uncond = gan_jax.load_generator(FIXTURES / 'g_uncond.npz')
  with pytest.raises(ValueError, match='unconditional'):
    uncond(io['z'], io['c'])


def test_convert_command_line(tmp_path):
  result = subprocess.run([sys.executable, '-m', 'gan_jax.tools.convert_nvlabs', str(PICKLE),
                           str(tmp_path / 'export')], capture_output=True, text=True, cwd=REPO,
                          check=False)
  assert result.returncode == 0, result.stderr
  assert (tmp_path / 'export' / 'generator.json').exists()
  again = subprocess.run([sys.executable, '-m', 'gan_jax.tools.convert_nvlabs', str(PICKLE),
                          str(tmp_path / 'export')], capture_output=True, text=True, cwd=REPO,
                         check=False)
  assert again.returncode != 0 and 'already holds an export' in again.stderr


# --------------------------------------------------------------------------------------------
# .pt files: zip and legacy, views, dtypes.


def _views_program(legacy=False):
  return _program(_ordered_dict([
      ('a', _tensor('0', 12, 0, (3, 4), (4, 1), parameter=True, legacy=legacy)),
      ('a_t', _tensor('0', 12, 0, (4, 3), (1, 4), legacy=legacy)),  # a transposed view
      ('every_5th', _tensor('0', 12, 2, (2,), (5,), legacy=legacy)),  # offset and stride
      ('scalar', _tensor('1', 1, 0, (), (), storage='LongStorage', legacy=legacy)),
      ('half', _tensor('2', 3, 0, (3,), (1,), storage='HalfStorage', legacy=legacy)),
  ]))


_VIEW_STORAGES = {'0': np.arange(12, dtype=np.float32), '1': np.array([7], np.int64),
                  '2': np.array([0.5, -1.0, 2.0], np.float16)}


def _check_views(sd):
  base = np.arange(12, dtype=np.float32)
  assert list(sd) == ['a', 'a_t', 'every_5th', 'scalar', 'half']
  np.testing.assert_array_equal(sd['a'], base.reshape(3, 4))
  np.testing.assert_array_equal(sd['a_t'], base.reshape(3, 4).T)
  np.testing.assert_array_equal(sd['every_5th'], [2, 7])
  assert sd['scalar'].shape == () and sd['scalar'].dtype == np.int64 and sd['scalar'] == 7
  assert sd['half'].dtype == np.float16
  np.testing.assert_array_equal(sd['half'], [0.5, -1.0, 2.0])
  for value in sd.values():  # copies, not views into the file's bytes
    assert value.flags['C_CONTIGUOUS'] and value.flags['OWNDATA']


def test_pt_zip_with_views_and_dtypes(tmp_path):
  _write_zip_pt(tmp_path / 'v.pt', _views_program(), _VIEW_STORAGES, prefix='v')
  _check_views(nvlabs_pickle.state_dict_from_torch_file(tmp_path / 'v.pt'))


def test_pt_legacy_format(tmp_path):
  (tmp_path / 'v.pt').write_bytes(_legacy_stream(_views_program(legacy=True), _VIEW_STORAGES))
  _check_views(nvlabs_pickle.state_dict_from_torch_file(tmp_path / 'v.pt'))


def test_pt_state_dict_round_trips_exactly(tmp_path):
  sd = _fixture('g_cond.npz')
  _state_dict_pt(tmp_path / 'g.pt', sd)
  got = nvlabs_pickle.state_dict_from_torch_file(tmp_path / 'g.pt')
  assert list(got) == list(sd)
  for key, value in sd.items():
    np.testing.assert_array_equal(got[key], value, err_msg=key)
    assert got[key].shape == value.shape


def test_tensor_outside_its_storage_is_refused(tmp_path):
  program = _program(_ordered_dict([('w', _tensor('0', 12, 1, (3, 4), (4, 1)))]))
  _write_zip_pt(tmp_path / 'bad.pt', program, {'0': np.arange(12, dtype=np.float32)})
  with pytest.raises(pickle.UnpicklingError, match='reaches element 12 of a storage of 12'):
    nvlabs_pickle.load_torch_file(tmp_path / 'bad.pt')
  _write_zip_pt(tmp_path / 'short.pt', program, {'0': np.arange(5, dtype=np.float32)})
  with pytest.raises(pickle.UnpicklingError, match='storage holds 20 bytes'):
    nvlabs_pickle.load_torch_file(tmp_path / 'short.pt')


# --------------------------------------------------------------------------------------------
# Malicious pickles.


def _eval_payload(sentinel):
  return _program(_call(_global('builtins', 'eval'),
                        _str(f'open({str(sentinel)!r}, "w").write("pwned")')))


def _system_payload(sentinel):
  return _program(_call(_global('os', 'system'), _str(f'touch {sentinel}')))


class _Exploit:
  """What an attacker would pickle: an object whose reduce calls eval."""

  def __init__(self, sentinel):
    self.sentinel = str(sentinel)

  def __reduce__(self):
    return eval, (f'open({self.sentinel!r}, "w").write("pwned")',)


def test_the_eval_payload_is_live_under_plain_pickle(tmp_path):
  """Control: the payloads below really would write the sentinel if unpickled naively."""
  sentinel = tmp_path / 'sentinel'
  pickle.loads(_eval_payload(sentinel))
  assert sentinel.read_text() == 'pwned'
  sentinel.unlink()
  pickle.loads(pickle.dumps(_Exploit(sentinel), protocol=4))
  assert sentinel.exists()


@pytest.mark.parametrize('kind', ['os.system', 'builtins.eval', 'pickle.dumps-made eval'])
def test_malicious_network_pickle_is_refused_and_nothing_runs(kind, tmp_path):
  sentinel = tmp_path / 'sentinel'
  payload = {'os.system': _system_payload, 'builtins.eval': _eval_payload,
             'pickle.dumps-made eval': lambda s: pickle.dumps({'G_ema': _Exploit(s)},
                                                              protocol=4)}[kind](sentinel)
  path = tmp_path / 'network-snapshot-000000.pkl'
  path.write_bytes(payload)
  global_name = 'os.system' if kind == 'os.system' else 'builtins.eval'
  with pytest.raises(nvlabs_pickle.UnsafePickleError, match=f"refusing to load global "
                     f"'{global_name}'"):
    nvlabs_pickle.load_network_pickle(path)
  with pytest.raises(nvlabs_pickle.UnsafePickleError):
    convert_nvlabs.main([str(path), str(tmp_path / 'export')])
  assert not sentinel.exists()
  assert not (tmp_path / 'export' / 'generator.json').exists()


def test_malicious_payload_hidden_in_a_storage_or_a_pt_is_refused(tmp_path):
  sentinel = tmp_path / 'sentinel'
  # Inside a storage blob: _load_from_bytes(b) whose legacy stream calls eval.
  blob = _legacy_stream(_eval_payload(sentinel), {})
  load = _call(_global('torch.storage', '_load_from_bytes'),
               b'B' + struct.pack('<I', len(blob)) + blob)  # BINBYTES
  network = _program(b'(' + _str('G_ema') + load + b'd')  # {'G_ema': _load_from_bytes(blob)}
  (tmp_path / 'n.pkl').write_bytes(network)
  with pytest.raises(nvlabs_pickle.UnsafePickleError, match="'builtins.eval'"):
    nvlabs_pickle.load_network_pickle(tmp_path / 'n.pkl')
  # As a .pt's data.pkl.
  _write_zip_pt(tmp_path / 'x.pt', _system_payload(sentinel), {})
  with pytest.raises(nvlabs_pickle.UnsafePickleError, match="'os.system'"):
    nvlabs_pickle.load_torch_file(tmp_path / 'x.pt')
  # A torch class that is real but not on the list (a module needing torch's code to build).
  conv = _program(b'(' + _str('G_ema') + _call(_global('torch.nn.modules.conv', 'Conv2d')) + b'd')
  with pytest.raises(nvlabs_pickle.UnsafePickleError, match='torch.nn.modules.conv.Conv2d'):
    nvlabs_pickle.load_network_pickle(io.BytesIO(conv))
  assert not sentinel.exists()
