"""Write uint8 frames as an MP4 (H.264 through imageio-ffmpeg) or an animated GIF (Pillow)."""

import importlib.util
import os
import warnings
from typing import Sequence

import numpy as np

from gan_jax import cli_errors

VIDEO_SUFFIXES = ('.mp4', '.gif')


def check_video_path(path: str | os.PathLike) -> str:
  """The lower-case suffix of `path` if it is a video we can write; else a ValueError."""
  suffix = os.path.splitext(os.fspath(path))[1].lower()
  if suffix not in VIDEO_SUFFIXES:
    raise cli_errors.UserError(f'{path}: the video must end in .mp4 or .gif')
  if suffix == '.mp4':
    if not all(importlib.util.find_spec(m) for m in ('imageio', 'imageio_ffmpeg')):
      raise ImportError(f'{path}: writing MP4 needs imageio and imageio-ffmpeg (pip install '
                        "'gan_jax[tools]'); a .gif needs only Pillow")
  return suffix


def write_video(path: str | os.PathLike, frames: Sequence[np.ndarray] | np.ndarray,
                fps: float = 30) -> None:
  """Frames (T, H, W, C) uint8, C 1 or 3, -> `path` (.mp4: H.264 yuv420p at quality 8; .gif:
  frame duration round(1000 / fps) ms, looping forever)."""
  suffix = check_video_path(path)
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] not in (1, 3) or frames.dtype != np.uint8:
    raise ValueError(f'frames must be uint8 (T, H, W, 1 or 3), got {frames.dtype} {frames.shape}')
  if len(frames) == 0:
    raise ValueError('no frames to write')
  os.makedirs(os.path.dirname(os.path.abspath(os.fspath(path))), exist_ok=True)
  if suffix == '.gif':
    from PIL import Image  # pylint: disable=g-import-not-at-top
    images = [Image.fromarray(f[..., 0] if f.shape[-1] == 1 else f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:],
                   duration=max(1, round(1000 / fps)), loop=0)
    return
  import imageio.v2 as imageio  # pylint: disable=g-import-not-at-top
  if frames.shape[1] % 2 or frames.shape[2] % 2:
    raise ValueError(f'MP4 (yuv420p) needs even frame sizes, got {frames.shape[1:3]}')
  if frames.shape[-1] == 1:
    frames = np.repeat(frames, 3, axis=-1)
  with warnings.catch_warnings():
    # imageio-ffmpeg starts ffmpeg with subprocess (fork + exec at once): JAX's warning about
    # forking a multithreaded process does not apply.
    warnings.filterwarnings('ignore', message='os.fork', category=RuntimeWarning)
    with imageio.get_writer(path, fps=fps, codec='libx264', quality=8, pixelformat='yuv420p',
                            macro_block_size=1) as writer:
      for frame in frames:
        writer.append_data(frame)
