"""Tiny fake Fashion-MNIST idx files, so tests never build the real 60k set.

Image i of a split is a known pattern: pixel (r, c) = (i * 7 + r * 28 + c) % 251
+ 1, so no pixel is 0 (a padded border is easy to tell from the content) and
every image differs; label i = (i * 3) % 10.

Usage from any test:

  from tests.fake_data import write_fake_fashion_mnist
  write_fake_fashion_mnist(tmp_path / 'src', n_train=40, n_test=10)
"""

from __future__ import annotations

import gzip
import os

import numpy as np

SIZE = 28
FILES = {
    'train': ('train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz'),
    'test': ('t10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz'),
}


def fake_images(n: int) -> np.ndarray:
  """The (n, 28, 28) uint8 images the fake files hold."""
  i = np.arange(n)[:, None, None]
  r = np.arange(SIZE)[None, :, None]
  c = np.arange(SIZE)[None, None, :]
  return ((i * 7 + r * SIZE + c) % 251 + 1).astype(np.uint8)


def fake_labels(n: int) -> np.ndarray:
  """The (n,) uint8 labels the fake files hold."""
  return ((np.arange(n) * 3) % 10).astype(np.uint8)


def idx_bytes(array: np.ndarray) -> bytes:
  """Serializes a uint8 array in the idx format (header + raw bytes)."""
  array = np.asarray(array, np.uint8)
  header = bytes([0, 0, 0x08, array.ndim])
  header += b''.join(int(d).to_bytes(4, 'big') for d in array.shape)
  return header + array.tobytes()


def write_fake_fashion_mnist(dirpath: str | os.PathLike, n_train: int = 40,
                             n_test: int = 10) -> str:
  """Writes the four idx .gz files into `dirpath` (created); returns it."""
  dirpath = os.fspath(dirpath)
  os.makedirs(dirpath, exist_ok=True)
  for split, n in (('train', n_train), ('test', n_test)):
    images_name, labels_name = FILES[split]
    for name, array in ((images_name, fake_images(n)),
                        (labels_name, fake_labels(n))):
      with gzip.open(os.path.join(dirpath, name), 'wb') as f:
        f.write(idx_bytes(array))
  return dirpath
