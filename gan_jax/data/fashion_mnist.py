"""Fashion-MNIST as a local TFDS builder, read from Debian's idx files.

TFDS's own `fashion_mnist` downloads its files; this builder
(`fashion_mnist_local`) reads the four idx files that Debian's
`dataset-fashion-mnist` package installs, so a build never touches the network.
The 28x28 images are zero-padded by 2 px on each side to 32x32, the smallest
power of two that StyleGAN-family generators synthesize.

Records are stored in ArrayRecord files in the original idx order (shuffling at
write time is disabled), so record i of a split is example i of its idx file and
`builder.as_data_source(split)[i]` is random access into it.
"""

from __future__ import annotations

import gzip
import os
import zlib

import numpy as np
import tensorflow_datasets as tfds

from gan_jax.data.errors import DatasetError

DEFAULT_SOURCE_DIR = '/usr/share/datasets/fashion-mnist'

SOURCE_FILES = {
    'train': ('train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz'),
    'test': ('t10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz'),
}

CLASS_NAMES = (
    'T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat',
    'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot',
)

SOURCE_SIZE = 28
PADDING = 2  # zero pixels added on each side: 28 + 2 * 2 = 32
RESOLUTION = SOURCE_SIZE + 2 * PADDING
CHANNELS = 1

# idx magic numbers: two zero bytes, the element type (0x08 = unsigned byte),
# then the number of dimensions.
_IMAGES_MAGIC = 0x00000803
_LABELS_MAGIC = 0x00000801

_INSTALL_HINT = (
    'install with `apt-get install dataset-fashion-mnist` (or point '
    '`config.data.source_dir` at a folder holding the four idx .gz files)'
)

_CITATION = """\
@article{DBLP:journals/corr/abs-1708-07747,
  author  = {Han Xiao and Kashif Rasul and Roland Vollgraf},
  title   = {Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine
             Learning Algorithms},
  journal = {CoRR},
  volume  = {abs/1708.07747},
  year    = {2017},
  url     = {http://arxiv.org/abs/1708.07747},
}
"""


def check_source(source_dir: str | os.PathLike) -> None:
  """Raises `DatasetError` unless `source_dir` holds the four idx files."""
  source_dir = os.fspath(source_dir)
  missing = [
      name for names in SOURCE_FILES.values() for name in names
      if not os.path.isfile(os.path.join(source_dir, name))
  ]
  if missing:
    raise DatasetError(
        f'Fashion-MNIST source files not found in {source_dir!r} (missing: '
        f'{", ".join(missing)}); {_INSTALL_HINT}.'
    )


def read_idx(path: str | os.PathLike, magic: int) -> np.ndarray:
  """Reads one gzipped idx file of unsigned bytes; validates its header.

  Args:
    path: a `*-ubyte.gz` file.
    magic: the expected magic number (`0x803` images, `0x801` labels).

  Returns:
    A uint8 array shaped by the dimensions in the header.

  Raises:
    DatasetError: the file is not gzip, is truncated, or its header or size
      does not match.
  """
  path = os.fspath(path)
  try:
    with gzip.open(path, 'rb') as f:
      raw = f.read()
  except (OSError, EOFError, zlib.error) as e:
    raise DatasetError(
        f'{path}: corrupt or truncated idx .gz file ({e}); reinstall '
        f'`dataset-fashion-mnist` or replace the file.'
    ) from e
  found = int.from_bytes(raw[:4], 'big') if len(raw) >= 4 else None
  if found != magic:
    found = 'none (file too short)' if found is None else f'0x{found:08x}'
    raise DatasetError(f'{path}: bad idx magic number {found}, expected '
                       f'0x{magic:08x}: not a Fashion-MNIST idx file of this '
                       f'kind, or corrupt.')
  ndim = magic & 0xFF
  header_size = 4 + 4 * ndim
  if len(raw) < header_size:
    raise DatasetError(f'{path}: idx file truncated inside its header '
                       f'({len(raw)} bytes).')
  dims = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], 'big')
               for i in range(ndim))
  expected = int(np.prod(dims))
  got = len(raw) - header_size
  if got != expected:
    raise DatasetError(f'{path}: idx header says shape {dims} '
                       f'({expected} bytes) but the file holds {got} bytes: '
                       f'truncated or corrupt.')
  return np.frombuffer(raw, np.uint8, offset=header_size).reshape(dims)


def read_split(source_dir: str | os.PathLike,
               split: str) -> tuple[np.ndarray, np.ndarray]:
  """Reads and validates one split: uint8 images (N, 28, 28), labels (N,)."""
  images_name, labels_name = SOURCE_FILES[split]
  images_path = os.path.join(os.fspath(source_dir), images_name)
  labels_path = os.path.join(os.fspath(source_dir), labels_name)
  images = read_idx(images_path, _IMAGES_MAGIC)
  labels = read_idx(labels_path, _LABELS_MAGIC)
  if images.shape[1:] != (SOURCE_SIZE, SOURCE_SIZE):
    raise DatasetError(f'{images_path}: images are {images.shape[1:]}, '
                       f'expected ({SOURCE_SIZE}, {SOURCE_SIZE}).')
  if len(images) != len(labels):
    raise DatasetError(f'{split}: {len(images)} images but {len(labels)} '
                       f'labels ({images_path}, {labels_path}).')
  if len(labels) and labels.max() >= len(CLASS_NAMES):
    raise DatasetError(f'{labels_path}: label {labels.max()} out of range '
                       f'[0, {len(CLASS_NAMES)}).')
  return images, labels


def pad_images(images: np.ndarray) -> np.ndarray:
  """(N, 28, 28) uint8 -> (N, 32, 32, 1) uint8 with a zero border."""
  padded = np.pad(images, ((0, 0), (PADDING, PADDING), (PADDING, PADDING)))
  return padded[..., None]


class FashionMnistLocal(tfds.core.GeneratorBasedBuilder):
  """Fashion-MNIST from local idx files, padded to 32x32, in ArrayRecord."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {
      '1.0.0': 'Debian idx files, zero-padded 28->32, ArrayRecord, idx order.',
  }

  def __init__(self, *, source_dir: str | os.PathLike = DEFAULT_SOURCE_DIR,
               **kwargs):
    """Args: source_dir: folder with the four idx .gz files; rest to TFDS."""
    self._source_dir = os.fspath(source_dir)
    kwargs.setdefault('file_format', 'array_record')
    super().__init__(**kwargs)

  @property
  def source_dir(self) -> str:
    return self._source_dir

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=(
            'Fashion-MNIST (Zalando) read from the local idx files of '
            "Debian's dataset-fashion-mnist package. Resolution 32, "
            f'channels 1: the 28x28 grayscale images are zero-padded by '
            f'{PADDING} px on each side. Records keep the idx file order.'
        ),
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(
                shape=(RESOLUTION, RESOLUTION, CHANNELS)),
            'label': tfds.features.ClassLabel(names=CLASS_NAMES),
        }),
        supervised_keys=('image', 'label'),
        disable_shuffling=True,  # record i == idx example i
        homepage='https://github.com/zalandoresearch/fashion-mnist',
        citation=_CITATION,
        metadata=tfds.core.MetadataDict(
            resolution=RESOLUTION,
            channels=CHANNELS,
            source_resolution=SOURCE_SIZE,
            padding=PADDING,
        ),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing is downloaded
    check_source(self._source_dir)
    # Read and validate every file before any record is written.
    splits = {name: read_split(self._source_dir, name)
              for name in SOURCE_FILES}
    return {name: self._generate_examples(images, labels)
            for name, (images, labels) in splits.items()}

  def _generate_examples(self, images, labels):
    padded = pad_images(images)
    for i in range(len(padded)):
      yield i, {'image': padded[i], 'label': int(labels[i])}
