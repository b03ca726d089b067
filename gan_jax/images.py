"""Image conversions shared by training (sample grids) and the tools; light to import."""

import math
from typing import Optional

import numpy as np


def to_uint8(images) -> np.ndarray:
  """[-1, 1] float images -> uint8 with NVIDIA's convention x * 127.5 + 128, clipped."""
  return np.clip(np.asarray(images) * 127.5 + 128, 0, 255).astype(np.uint8)


def make_grid(images: np.ndarray, cols: Optional[int] = None) -> np.ndarray:
  """(N, H, W, C) -> one (rows*H, cols*W, C) image, row by row; black where tiles are missing."""
  n, h, w, ch = images.shape
  cols = cols or math.ceil(math.sqrt(n))
  rows = math.ceil(n / cols)
  tiles = np.zeros((rows * cols, h, w, ch), images.dtype)
  tiles[:n] = images
  return tiles.reshape(rows, cols, h, w, ch).transpose(0, 2, 1, 3, 4).reshape(rows * h, cols * w,
                                                                              ch)


def save_png(path, image: np.ndarray) -> None:
  """(H, W, C) uint8 -> PNG at a local or gs:// path (grayscale for 1 channel, else RGB)."""
  from etils import epath  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  img = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
  with epath.Path(path).open('wb') as f:
    img.save(f, format='PNG')


def box_downsample(images: np.ndarray, resolution: int) -> np.ndarray:
  """Host-side (numpy) box filter of (N, H, W, C) images to resolution x resolution: what
  `models.layers.downsample_avg` computes, done before the transfer so a low stage of a growing
  network does not ship full-size images to the devices. Returns `images` itself at their size."""
  n, h, w, c = images.shape
  factor = h // resolution
  if h != w or factor * resolution != h or 2 ** int(round(math.log2(factor))) != factor:
    raise ValueError(f'cannot box-filter {h}x{w} images to {resolution}x{resolution}')
  if factor == 1:
    return images
  return images.reshape(n, resolution, factor, resolution, factor, c).mean(axis=(2, 4))
