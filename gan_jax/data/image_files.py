"""Image files -> square uint8 PNGs of one resolution: the conversion core.

Shared by `gan_jax.data.prepare` (any folder or zip of images) and
`gan_jax.data.ffhq`. One `Conversion` says what every stored image becomes:

  channels       3: RGB (grayscale and palette expanded, alpha dropped as
                 PIL's convert('RGB') does: no compositing); 1: grayscale
                 (PIL's ITU-R 601-2 luma, L = (299 R + 587 G + 114 B) / 1000).
                 Chosen by the user, never guessed per file, so every record
                 has the same shape.
  fit            a non-square image is 'crop'ped to its centred largest square
                 or 'pad'ded with black to a centred square of its longer
                 side; 'refuse' rejects it (FFHQ: its images are square).
  small          an image whose (fitted) side is below the resolution is
                 'upscale'd with the filter or 'reject'ed.
  resize_filter  PIL's 'lanczos' (as StyleGAN2-ADA's dataset_tool) or 'box'.

`convert` raises `Unusable` (with the reason) for a file that cannot be read or
is rejected by these rules; callers decide whether that skips the file or stops.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import io
from typing import Callable, Iterable, Iterator

import numpy as np
from PIL import Image

RESIZE_FILTERS = {'lanczos': Image.Resampling.LANCZOS,
                  'box': Image.Resampling.BOX}
FITS = ('crop', 'pad', 'refuse')
SMALL = ('upscale', 'reject')
CHANNELS = (1, 3)
# Extensions read as images (lower case); other files in a source are ignored.
EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.gif', '.tif', '.tiff',
              '.webp', '.ppm', '.pgm')

# Errors PIL raises for a file it cannot decode (truncated, not an image, ...).
_UNREADABLE = (OSError, SyntaxError, ValueError, EOFError,
               Image.DecompressionBombError)
_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
_PNG_COLOUR_TYPES = {3: 2, 1: 0}  # channels -> IHDR colour type (RGB, gray)


class Unusable(Exception):
  """A file that is not stored; str(e) says why.

  Attributes:
    unreadable: True when PIL cannot decode it (corrupt, not an image); False
      when a readable image is rejected by the `Conversion`'s rules.
  """

  def __init__(self, reason: str, unreadable: bool = False):
    super().__init__(reason)
    self.unreadable = unreadable


@dataclasses.dataclass(frozen=True)
class Conversion:
  """What every stored image becomes (see the module docstring)."""
  resolution: int
  channels: int = 3
  fit: str = 'crop'
  small: str = 'reject'
  resize_filter: str = 'lanczos'

  def __post_init__(self):
    for key, value, allowed in (
        ('channels', self.channels, CHANNELS), ('fit', self.fit, FITS),
        ('small', self.small, SMALL),
        ('resize_filter', self.resize_filter, tuple(RESIZE_FILTERS))):
      if value not in allowed:
        raise ValueError(f'{key}={value!r}; expected one of {allowed}.')
    if not isinstance(self.resolution, int) or self.resolution <= 0:
      raise ValueError(f'resolution must be a positive int, got '
                       f'{self.resolution!r}.')


def is_image_name(name: str) -> bool:
  return name.lower().endswith(EXTENSIONS)


def fit_square(image: Image.Image, fit: str) -> Image.Image:
  """The centred square of `image` per `fit` ('crop', 'pad', 'refuse')."""
  width, height = image.size
  if width == height:
    return image
  if fit == 'refuse':
    raise Unusable(f'image is {width}x{height}, not square')
  if fit == 'crop':
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return image.crop((left, top, left + side, top + side))
  side = max(width, height)
  square = Image.new(image.mode, (side, side))  # zeros: black
  square.paste(image, ((side - width) // 2, (side - height) // 2))
  return square


def _unchanged_png(raw: bytes, conversion: Conversion) -> bool:
  """raw is an 8-bit PNG of the target size and colour type: store as is."""
  if raw[:8] != _PNG_SIGNATURE or len(raw) < 26:
    return False
  width = int.from_bytes(raw[16:20], 'big')
  height = int.from_bytes(raw[20:24], 'big')
  colour = _PNG_COLOUR_TYPES[conversion.channels]
  return (width == height == conversion.resolution and raw[24] == 8
          and raw[25] == colour)


def decode(raw: bytes, channels: int) -> Image.Image:
  """PIL image in mode 'RGB' (channels 3) or 'L' (1); Unusable if unreadable."""
  try:
    with Image.open(io.BytesIO(raw)) as image:
      image.load()
      if image.mode in ('I;16', 'I;16B', 'I;16L', 'I'):  # 16-bit grayscale
        image = Image.fromarray(
            (np.asarray(image, np.uint32) >> 8).astype(np.uint8), 'L')
      return image.convert('RGB' if channels == 3 else 'L')
  except _UNREADABLE as e:
    detail = ('not an image format PIL knows'
              if isinstance(e, Image.UnidentifiedImageError) else str(e))
    raise Unusable(f'unreadable: {type(e).__name__}: {detail}',
                   unreadable=True) from e


def convert(raw: bytes, conversion: Conversion) -> bytes:
  """PNG bytes (resolution x resolution, `channels`) of an encoded image.

  An 8-bit PNG already in the target shape is returned byte for byte.

  Raises:
    Unusable: the bytes are not a readable image, or the rules reject it.
  """
  image = fit_square(decode(raw, conversion.channels), conversion.fit)
  side, r = image.size[0], conversion.resolution
  if side < r and conversion.small == 'reject':
    raise Unusable(f'image is {side}x{side} after fitting, smaller than '
                   f'the resolution {r} (small=reject)')
  if side == r and _unchanged_png(raw, conversion):
    return raw
  if side != r:
    image = image.resize((r, r), RESIZE_FILTERS[conversion.resize_filter])
  buffer = io.BytesIO()
  image.save(buffer, format='PNG')
  return buffer.getvalue()


def ordered_map(fn: Callable, items: Iterable, num_workers: int) -> Iterator:
  """fn(item) for each item in order, computed by threads a bounded way ahead.

  PIL releases the GIL while it decodes and
  resizes, not while it encodes a PNG into memory, so threads speed up only
  part of the work.
  """
  with concurrent.futures.ThreadPoolExecutor(num_workers) as pool:
    pending = collections.deque()
    for item in items:
      pending.append(pool.submit(fn, item))
      if len(pending) >= 4 * num_workers:
        yield pending.popleft().result()
    while pending:
      yield pending.popleft().result()
