"""Sharded feature extraction over all devices of all processes, and the real-data statistics
cache.

  extractor = features.Extractor(mesh, params, batch_size=64)
  stats = extractor.accumulate(batches, num_items, capture_all=True)   # FeatureStats, float64

Each global batch is split along the mesh's data axis: every process supplies only its own rows
(`jax.make_array_from_process_local_data`), every device computes the features of its share, and
the features come back replicated, so every process ends with the same statistics. The last batch
is padded to the global batch size (one compiled shape) and the padding dropped.

Real-image statistics are computed once per (dataset, split, resolution, count, feature network
hash, features kept or not) and cached as an .npz (default ~/.cache/gan_jax/stats); see
`real_stats`.
"""

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Union

from absl import logging
import jax
import numpy as np

from gan_jax import sharding
from gan_jax.metrics import fetch
from gan_jax.metrics import frechet
from gan_jax.metrics import inception

DEFAULT_CACHE_DIR = Path('~/.cache/gan_jax/stats')
_LOG_EVERY_SEC = 30.0


class Progress:
  """absl log lines for a long loop: count, rate and ETA at most every 30 s, and at the end."""

  def __init__(self, what: str, total: int):
    self.what, self.total, self.done = what, total, 0
    self.start = self.last = time.time()

  def update(self, count: int) -> None:
    self.done += count
    now = time.time()
    if now - self.last >= _LOG_EVERY_SEC or self.done >= self.total:
      rate = self.done / max(now - self.start, 1e-9)
      eta = (self.total - self.done) / rate if rate > 0 else float('inf')
      logging.info('%s: %d/%d images, %.1f img/s, %.0f s left', self.what, self.done,
                   self.total, rate, eta)
      self.last = now


class Extractor:
  """features(params, uint8 NHWC images) jitted over `mesh` with the batch axis sharded.

  Attributes:
    batch_size: the global batch (a multiple of the mesh size).
    feature_dim: the feature width.
    network_hash: identifies the network's weights in cache keys.
  """

  def __init__(self, mesh, params=None, batch_size: int = 64,
               fn: Callable = inception.apply_features,
               feature_dim: int = inception.FEATURE_DIM, network_hash: Optional[str] = None):
    if batch_size < 1:
      raise ValueError(f'batch_size must be positive, got {batch_size}')
    self.mesh = mesh
    self.params = inception.load_params() if params is None else params
    self.batch_size = -(-batch_size // mesh.size) * mesh.size
    self.feature_dim = feature_dim
    self.network_hash = network_hash or fetch.sha1_of(fetch.weights_path())
    self.batch_sharding = sharding.batch_sharding(mesh)
    rep = sharding.replicated(mesh)
    self._fn = jax.jit(fn, in_shardings=(rep, self.batch_sharding), out_shardings=rep)
    self.params = jax.device_put(self.params, rep)

  def local_rows(self) -> slice:
    """This process's rows of a global batch."""
    per_process = self.batch_size // jax.process_count()
    start = jax.process_index() * per_process
    return slice(start, start + per_process)

  def global_batch(self, local_images: np.ndarray) -> jax.Array:
    """This process's rows (padded with zeros to its share) -> a global sharded batch."""
    local_images = np.asarray(local_images)
    share = self.batch_size // jax.process_count()
    if local_images.shape[0] > share:
      raise ValueError(f'{local_images.shape[0]} local rows for a share of {share}')
    if local_images.shape[0] < share:
      pad = np.zeros((share - local_images.shape[0],) + local_images.shape[1:],
                     local_images.dtype)
      local_images = np.concatenate([local_images, pad])
    return jax.make_array_from_process_local_data(
        self.batch_sharding, local_images, (self.batch_size,) + local_images.shape[1:])

  def __call__(self, images: jax.Array) -> np.ndarray:
    """float32 (batch_size, dim) features of a global batch (all processes get all rows)."""
    return np.asarray(jax.device_get(self._fn(self.params, images)), np.float32)

  def accumulate(self, batches: Iterable[Union[np.ndarray, jax.Array]], num_items: int,
                 capture_all: bool = False, what: str = 'features') -> frechet.FeatureStats:
    """Streams global batches into float64 FeatureStats, keeping the first `num_items` rows.

    `batches` yields global jax.Arrays of batch_size rows, or this process's numpy rows (made
    global here); iteration stops once `num_items` rows are in.
    """
    stats = frechet.FeatureStats(self.feature_dim, capture_all=capture_all, max_items=num_items)
    progress = Progress(what, num_items)
    for batch in batches:
      if stats.is_full():
        break
      if not isinstance(batch, jax.Array):
        batch = self.global_batch(batch)
      before = stats.num_items
      stats.append(self(batch))
      progress.update(stats.num_items - before)
    if stats.num_items < num_items:
      raise ValueError(f'{what}: the batches ran out after {stats.num_items} of {num_items}')
    return stats


# --------------------------------------------------------------------------------------------
# Real images and their cached statistics.


def real_batches(source, num_items: int, extractor: Extractor) -> Iterator[np.ndarray]:
  """This process's uint8 rows of the global batches over examples 0 .. num_items - 1 of a
  random-access `source` (TFDS `as_data_source`: source[i]['image'] is uint8 HWC)."""
  rows = extractor.local_rows()
  for start in range(0, num_items, extractor.batch_size):
    indices = np.arange(start, start + extractor.batch_size)[rows]
    indices = indices[indices < num_items]
    if len(indices):
      examples = source.__getitems__(indices.tolist())
      yield np.stack([np.asarray(ex['image'], np.uint8) for ex in examples])
    else:  # this process's share lies in the padding of the last batch
      first = np.asarray(source[0]['image'], np.uint8)
      yield np.zeros((0,) + first.shape, np.uint8)


def cache_key(dataset: str, split: str, resolution: int, num_items: int, network_hash: str,
              capture_all: bool) -> dict:
  """Everything that determines the real statistics."""
  return {'dataset': dataset, 'split': split, 'resolution': int(resolution),
          'num_items': int(num_items), 'network': network_hash, 'features': bool(capture_all),
          'format': 1}


def cache_path(cache_dir: Union[str, os.PathLike], key: dict) -> Path:
  digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
  name = key['dataset'].replace('/', '-')
  return (Path(cache_dir).expanduser() /
          f'{name}-{key["split"]}-{key["resolution"]}-{key["num_items"]}-{digest}.npz')


def load_cached(path: Path, key: dict) -> Optional[frechet.FeatureStats]:
  """The stats stored at `path` when its stored key equals `key`; else None."""
  if not path.is_file():
    return None
  try:
    with np.load(path) as data:
      if json.loads(str(data['key'])) != key:
        logging.warning('%s holds statistics for another key; recomputing', path)
        return None
      stats = frechet.FeatureStats.from_arrays(data)
      if key['features']:
        stats.capture_all = True
        stats._all = [np.asarray(data['features'], np.float32)]  # pylint: disable=protected-access
      return stats
  except (OSError, ValueError, KeyError) as error:
    logging.warning('ignoring unreadable statistics cache %s (%s)', path, error)
    return None


def save_cached(path: Path, key: dict, stats: frechet.FeatureStats) -> None:
  """Writes atomically (temporary file, then rename); only process 0 writes."""
  if jax.process_index() != 0:
    return
  path.parent.mkdir(parents=True, exist_ok=True)
  arrays = dict(stats.to_arrays(), key=np.array(json.dumps(key, sort_keys=True)))
  if stats.capture_all:
    arrays['features'] = stats.all_features()
  partial = path.with_name(f'.{path.name}.{os.getpid()}.partial')
  with open(partial, 'wb') as f:
    np.savez(f, **arrays)
  os.replace(partial, path)


def real_stats(data_config, num_items: Optional[int], extractor: Extractor,
               capture_all: bool = False, cache_dir: Optional[Union[str, os.PathLike]] = None,
               builder=None) -> frechet.FeatureStats:
  """Feature statistics of the first `num_items` images (None: all) of the config's split.

  Read from the cache when an entry with the same key exists; else computed (sharded) and
  written there. `cache_dir` None: ~/.cache/gan_jax/stats.
  """
  from gan_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  builder = builder or pipeline.load_builder(data_config)
  split = data_config.get('split', 'train')
  source = builder.as_data_source(split)
  total = len(source)
  if num_items is None:
    num_items = total
  elif num_items > total:
    logging.warning('%s/%s has %d images, fewer than the %d asked for: using all of them',
                    data_config.name, split, total, num_items)
    num_items = total
  resolution = int(builder.info.features['image'].shape[0])
  key = cache_key(data_config.name, split, resolution, num_items, extractor.network_hash,
                  capture_all)
  path = cache_path(cache_dir or DEFAULT_CACHE_DIR, key)
  candidates = [(path, key)]
  if not capture_all:  # an entry with the features also holds the statistics
    with_features = dict(key, features=True)
    candidates.insert(0, (cache_path(cache_dir or DEFAULT_CACHE_DIR, with_features),
                          with_features))
  for candidate, candidate_key in candidates:
    stats = load_cached(candidate, candidate_key)
    if stats is not None:
      logging.info('real statistics from the cache %s', candidate)
      return stats
  stats = extractor.accumulate(real_batches(source, num_items, extractor), num_items,
                               capture_all=capture_all, what=f'reals {data_config.name}/{split}')
  save_cached(path, key, stats)
  logging.info('real statistics cached in %s', path)
  return stats
