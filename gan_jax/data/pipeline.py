"""The per-process input pipeline: TFDS random access, exact resume, prefetch.

  from gan_jax.data import pipeline

  info = pipeline.dataset_info(config.data)        # resolution, classes, ...
  with pipeline.InputPipeline(config.data, global_batch_size=64, seed=0,
                              process_index=jax.process_index(),
                              process_count=jax.process_count(),
                              start_step=int(state.step)) as data:
    batch = next(data)  # {'image': f32 (64 / P, H, W, C) in [-1, 1],
                        #  'label': i32 (64 / P,)}

Which examples land in which batch is decided by `gan_jax.data.sampler`: a pure
function of (seed, step), so a run resumed at step s sees exactly the batches an
uninterrupted run would have seen, and the global batch does not depend on the
number of processes. Each process reads only its own slice, by random access
into the ArrayRecord files TFDS wrote (`builder.as_data_source(split)`).

`config.data` fields:
  name         registry key in `DATASETS` ('fashion_mnist_local', 'lfw_faces',
               'ffhq/1024', 'ffhq/256', 'celeb_a_hq/1024' ... '/128'), or
               'prepared/NAME': a dataset `gan_jax.data.prepare` wrote.
  data_dir     TFDS data_dir; None -> TFDS's default (~/tensorflow_datasets).
  source_dir   where local builders read their raw files from (CelebA-HQ:
               the folder with its data{R}x{R}.tar); '' or None: the builder's
               default (Fashion-MNIST: DEFAULT_SOURCE_DIR; FFHQ, CelebA-HQ:
               TFDS's manual_dir).
  resize_filter  optional, FFHQ only: 'lanczos' or 'box' (see `ffhq`).
  split        'train'.
  xflip        random horizontal flips (a pure function of seed, step, slot).
  num_workers  threads that read and decode batches.
  prefetch     batches kept in flight ahead of the consumer.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import functools
from typing import Any, Callable, Mapping

import numpy as np
import tensorflow_datasets as tfds

from gan_jax.data import celeb_a_hq
from gan_jax.data import fashion_mnist
from gan_jax.data import ffhq
from gan_jax.data import lfw
from gan_jax.data import prepare
from gan_jax.data import sampler as sampler_lib
from gan_jax.data.errors import DatasetError

__all__ = ['DATASETS', 'DataInfo', 'DatasetEntry', 'DatasetError',
           'InputPipeline', 'dataset_info', 'load_builder']


@dataclasses.dataclass(frozen=True)
class DatasetEntry:
  """How to construct one dataset's TFDS builder from `config.data`.

  Attributes:
    builder_cls: a `tfds.core.DatasetBuilder` subclass.
    builder_kwargs: config.data -> extra constructor kwargs (besides data_dir).
    prepare: (builder, config.data) -> None, builds an unprepared dataset (or
      raises DatasetError saying how); None: `builder.download_and_prepare()`.
  """
  builder_cls: type[tfds.core.DatasetBuilder]
  builder_kwargs: Callable[[Any], Mapping[str, Any]] = lambda _: {}
  prepare: Callable[[Any, Any], None] | None = None


def _fashion_mnist_kwargs(data_config) -> dict[str, Any]:
  source_dir = data_config.get('source_dir') or fashion_mnist.DEFAULT_SOURCE_DIR
  return {'source_dir': source_dir}


def _ffhq_kwargs(resolution: int, data_config) -> dict[str, Any]:
  # No source_dir: the builder looks in TFDS's manual_dir.
  return {'config': ffhq.builder_config(resolution),
          'source_dir': data_config.get('source_dir') or None,
          'resize_filter': data_config.get('resize_filter')}


# name -> entry. Add a dataset by writing its builder and one line here.
DATASETS: Mapping[str, DatasetEntry] = {
    'fashion_mnist_local': DatasetEntry(fashion_mnist.FashionMnistLocal,
                                        _fashion_mnist_kwargs),
    'ffhq/1024': DatasetEntry(ffhq.Ffhq, functools.partial(_ffhq_kwargs, 1024)),
    'ffhq/256': DatasetEntry(ffhq.Ffhq, functools.partial(_ffhq_kwargs, 256)),
    'lfw_faces': DatasetEntry(lfw.LfwFaces),
    **{f'celeb_a_hq/{r}': DatasetEntry(
        celeb_a_hq.builder_cls(),
        functools.partial(celeb_a_hq.builder_kwargs, r), celeb_a_hq.prepare)
       for r in celeb_a_hq.RESOLUTIONS},
}


@dataclasses.dataclass(frozen=True)
class DataInfo:
  """What models need to know about a dataset split.

  Attributes:
    resolution: image height == width, in pixels.
    channels: image channels (1 grayscale, 3 RGB).
    num_classes: number of label classes (0: unlabeled); for conditional models.
    num_examples: examples in the split.
  """
  resolution: int
  channels: int
  num_classes: int
  num_examples: int


def load_builder(data_config, build: bool = True) -> tfds.core.DatasetBuilder:
  """The TFDS builder named by `data_config.name`, prepared once if `build`.

  Args:
    data_config: `config.data` (see the module docstring).
    build: build the dataset when it is not yet prepared in
      `data_config.data_dir`. Local builders never download anything;
      'prepared/NAME' datasets are only read (`gan_jax.data.prepare` writes
      them).

  Raises:
    DatasetError: unknown name, the builder's raw files are missing or
      corrupt, or the dataset is not in ArrayRecord (the message says how to
      fix it).
  """
  name = data_config.name
  if name.startswith(prepare.PREFIX):
    return prepare.load(name[len(prepare.PREFIX):], data_config.get('data_dir'))
  if name not in DATASETS:
    raise DatasetError(f'Unknown dataset {name!r}; known: {sorted(DATASETS)} '
                       f'or {prepare.PREFIX}NAME (python -m '
                       f'gan_jax.data.prepare). Register new builders in '
                       f'gan_jax/data/pipeline.py.')
  entry = DATASETS[name]
  try:
    builder = entry.builder_cls(data_dir=data_config.get('data_dir'),
                                **entry.builder_kwargs(data_config))
  except ValueError as e:  # TFDS: prepared in another format than requested
    if 'file format' not in str(e).lower():
      raise
    raise DatasetError(_format_hint(name, data_config, e)) from e
  if build and not builder.is_prepared():
    if entry.prepare is None:
      builder.download_and_prepare()
    else:
      entry.prepare(builder, data_config)
  if builder.is_prepared() and builder.info.file_format.value != 'array_record':
    raise DatasetError(_format_hint(name, data_config,
                                    builder.info.file_format.value))
  return builder


def _format_hint(name: str, data_config, found) -> str:
  return (f'{name} in {data_config.get("data_dir")} is not stored as '
          f'ArrayRecord ({found}); the input pipeline reads records by index '
          f'from ArrayRecord. Rebuild it with `tfds build ... --file_format '
          f'array_record` into another data_dir.')


def _info_from_builder(builder: tfds.core.DatasetBuilder,
                       split: str) -> DataInfo:
  features = builder.info.features
  height, width, channels = features['image'].shape
  if height != width:
    raise DatasetError(f'{builder.name}: images are {height}x{width}; '
                       f'square images expected.')
  if split not in builder.info.splits:
    raise DatasetError(f'{builder.name} has no split {split!r}; '
                       f'it has {sorted(builder.info.splits)}.')
  num_classes = features['label'].num_classes if 'label' in features else 0
  return DataInfo(resolution=int(height), channels=int(channels),
                  num_classes=int(num_classes),
                  num_examples=int(builder.info.splits[split].num_examples))


def dataset_info(data_config) -> DataInfo:
  """`DataInfo` for `data_config.split`; prepares the dataset if needed."""
  builder = load_builder(data_config, build=True)
  return _info_from_builder(builder, data_config.get('split', 'train'))


def to_model_range(images: np.ndarray) -> np.ndarray:
  """uint8 [0, 255] -> float32 [-1, 1] as x / 127.5 - 1."""
  return images.astype(np.float32) / np.float32(127.5) - np.float32(1.0)


class InputPipeline:
  """Infinite iterator over this process's batches for steps start_step, ...

  Batch for step s = `batch_at(s)`, a pure function of (config, seed, s,
  process_index, process_count). `num_workers` background threads read and
  decode up to `prefetch` batches ahead. Call `close()` (or use `with`) to stop
  them.

  Attributes:
    info: `DataInfo` of the split.
    step: the step of the batch the next `next()` returns.
    local_batch_size: global_batch_size // process_count.
  """

  def __init__(self, data_config, global_batch_size: int, seed: int,
               process_index: int = 0, process_count: int = 1,
               start_step: int = 0):
    if process_count <= 0 or global_batch_size % process_count:
      raise ValueError(
          f'global_batch_size={global_batch_size} must be a positive multiple '
          f'of process_count={process_count}.')
    if start_step < 0:
      raise ValueError(f'start_step must be non-negative, got {start_step}.')
    split = data_config.get('split', 'train')
    builder = load_builder(data_config, build=True)
    self.info = _info_from_builder(builder, split)
    self._source = builder.as_data_source(split)
    self._sampler = sampler_lib.Sampler(
        self.info.num_examples, global_batch_size, seed,
        process_index=process_index, process_count=process_count,
        xflip=bool(data_config.get('xflip', False)))
    self.local_batch_size = self._sampler.local_batch_size
    self.step = int(start_step)
    self._prefetch = max(1, int(data_config.get('prefetch', 2) or 1))
    self._executor = concurrent.futures.ThreadPoolExecutor(
        max_workers=max(1, int(data_config.get('num_workers', 1) or 1)),
        thread_name_prefix='gan_jax_data')
    # Futures for steps self.step, self.step + 1, ... in order.
    self._pending: collections.deque[concurrent.futures.Future] = (
        collections.deque())
    self._closed = False
    self._fill()

  def _read(self, indices: np.ndarray, flips: np.ndarray) -> dict[str, Any]:
    examples = self._source.__getitems__(indices.tolist())
    images = np.stack([ex['image'] for ex in examples])  # (N, H, W, C) uint8
    images = np.where(flips[:, None, None, None], images[:, :, ::-1], images)
    if 'label' in examples[0]:
      labels = np.array([ex['label'] for ex in examples], np.int32)
    else:
      labels = np.zeros(len(examples), np.int32)
    return {'image': to_model_range(images), 'label': labels}

  def batch_at(self, step: int) -> dict[str, np.ndarray]:
    """This process's batch for `step`, read synchronously (no prefetch)."""
    return self._read(*self._sampler.local_batch(step))

  def _fill(self) -> None:
    # The sampler runs here, on the consumer's thread; workers only read.
    next_step = self.step + len(self._pending)
    while len(self._pending) < self._prefetch:
      indices, flips = self._sampler.local_batch(next_step)
      self._pending.append(self._executor.submit(self._read, indices, flips))
      next_step += 1

  def __iter__(self) -> InputPipeline:
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    if self._closed:
      raise RuntimeError('InputPipeline is closed.')
    future = self._pending.popleft()
    try:
      batch = future.result()
    except BaseException:
      self.close()
      raise
    self.step += 1
    self._fill()
    return batch

  def close(self, wait: bool = True) -> None:
    """Stops the background threads; idempotent."""
    if self._closed:
      return
    self._closed = True
    for future in self._pending:
      future.cancel()
    self._pending.clear()
    self._executor.shutdown(wait=wait, cancel_futures=True)

  def __enter__(self) -> InputPipeline:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()

  def __del__(self):
    if getattr(self, '_executor', None) is not None:
      self.close(wait=False)
