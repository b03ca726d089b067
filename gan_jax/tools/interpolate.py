"""Interpolation video between seeds, in Z or in W, as MP4 or GIF.

  python -m gan_jax.tools.interpolate --workdir runs/fmnist --seeds 0,1,2 --space z \
      --method slerp --frames 30 --loop --out video.mp4 [--grid 2x2] [--trunc 0.7]

Keyframe k is seed k's latent (NVIDIA's seed -> z); in Z the path runs between the zs and every
frame's z goes through the mapping network (with truncation); in W it runs between the seeds'
(truncated) ws. --frames is per transition: without --loop the video holds
(K - 1) * frames + 1 frames and ends on the last seed; with --loop it holds K * frames and its
next frame would be the first (it plays seamlessly on repeat).

  lerp(a, b, t)  = a + t (b - a)
  slerp(a, b, t) = sin((1 - t) W) / sin(W) a + sin(t W) / sin(W) b,  cos(W) = a.b / (|a| |b|)

(slerp along the last axis, as White 2016 uses it for Gaussian latents; nearly parallel vectors
fall back to lerp). Defaults follow NVIDIA's perceptual path length: slerp in Z, lerp in W.
--grid WxH shows W * H interpolations side by side: the seeds are split in order into W * H
equal runs, one per cell (so len(seeds) must be a multiple of W * H, with at least 2 per cell).
StyleGAN3 generators also take --translate X,Y and --rotate DEG: the camera moves over the video,
frame t of T showing the input transform of t / (T - 1) of that translation and rotation (the
first frame none, the last all of it; with --loop t / T, so it never wraps back).
MP4 needs imageio and imageio-ffmpeg (`pip install 'gan_jax[tools]'`); GIF needs only Pillow.
"""

import argparse
from typing import Optional, Sequence

import numpy as np

from gan_jax import cli_errors
from gan_jax.images import make_grid, to_uint8
from gan_jax.tools import cli
from gan_jax.tools import generate
from gan_jax.tools import loading
from gan_jax.tools import video

METHODS = ('slerp', 'lerp')


def lerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return a + t * (b - a)


def slerp(a: np.ndarray, b: np.ndarray, t: float, eps: float = 1e-7) -> np.ndarray:
  """Spherical interpolation along the last axis (float64); lerp where a and b are parallel."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  norms = np.linalg.norm(a, axis=-1, keepdims=True) * np.linalg.norm(b, axis=-1, keepdims=True)
  cos = np.clip(np.sum(a * b, axis=-1, keepdims=True) / np.maximum(norms, 1e-300), -1.0, 1.0)
  omega = np.arccos(cos)
  sin = np.sin(omega)
  parallel = sin < eps
  safe = np.where(parallel, 1.0, sin)
  out = np.sin((1 - t) * omega) / safe * a + np.sin(t * omega) / safe * b
  return np.where(parallel, lerp(a, b, t), out)


def latent_path(keys: np.ndarray, frames: int, method: str = 'slerp',
                loop: bool = False) -> np.ndarray:
  """keys (K, ...) -> frames (T, ...) float64: `frames` steps t = i / frames from each key to the
  next; without loop T = (K - 1) * frames + 1 (ending exactly on the last key), with loop
  T = K * frames (the last transition leads back to keys[0])."""
  if method not in METHODS:
    raise cli_errors.UserError(f'method must be one of {METHODS}, got {method!r}')
  if frames < 1:
    raise cli_errors.UserError(f'frames per transition must be >= 1, got {frames}')
  keys = np.asarray(keys, np.float64)
  if len(keys) < 2:
    raise cli_errors.UserError(f'need at least 2 keyframes, got {len(keys)}')
  fn = slerp if method == 'slerp' else lerp
  ends = list(keys[1:]) + ([keys[0]] if loop else [])
  out = [keys[k] if i == 0 else fn(keys[k], end, i / frames)
         for k, end in enumerate(ends) for i in range(frames)]
  if not loop:
    out.append(keys[-1])
  return np.stack(out)


def parse_grid(text: str) -> tuple[int, int]:
  """'3x2' -> (3, 2) (columns, rows)."""
  w, sep, h = text.lower().partition('x')
  if not sep or not w.isdigit() or not h.isdigit() or int(w) < 1 or int(h) < 1:
    raise cli_errors.UserError(f'bad --grid {text!r}: use WxH, e.g. 2x2')
  return int(w), int(h)


def interpolation_frames(g: loading.LoadedGenerator, seeds: Sequence[int], space: str = 'z',
                         method: Optional[str] = None, frames: int = 30, loop: bool = False,
                         grid: tuple[int, int] = (1, 1), psi: float = 1.0,
                         class_idx: Optional[int] = None,
                         transform_at=None) -> np.ndarray:
  """uint8 video frames (T, H * grid_h, W * grid_w, C); const noise. `transform_at(fraction)`:
  StyleGAN3's (3, 3) input transform at that fraction of the video (None: the stored one)."""
  if space not in ('z', 'w'):
    raise cli_errors.UserError(f'space must be z or w, got {space!r}')
  method = method or ('slerp' if space == 'z' else 'lerp')
  cols, rows = grid
  cells = cols * rows
  if len(seeds) % cells or len(seeds) // cells < 2:
    raise cli_errors.UserError(
        f'--grid {cols}x{rows} needs a multiple of {cells} seeds with at least 2 '
        f'per cell (they are split in order into {cells} runs), got {len(seeds)}')
  label = cli.class_label(g, class_idx)
  c = lambda n: None if label is None else np.repeat(label, n)
  zs = np.concatenate([generate.seed_latent(s, g.z_dim) for s in seeds])
  zs = zs.reshape(cells, len(seeds) // cells, g.z_dim)
  if space == 'z':
    paths = np.stack([latent_path(z, frames, method, loop) for z in zs], axis=1)  # (T, cells, D)
  else:
    ws = np.stack([g.mapping(z, c(len(z)), psi=psi) for z in zs])
    paths = np.stack([latent_path(w, frames, method, loop) for w in ws], axis=1)
  count = len(paths)
  fraction = lambda t: t / count if loop else t / max(count - 1, 1)
  transforms = [None if transform_at is None else transform_at(fraction(t))
                for t in range(count)]
  if space == 'z':
    images = [g(path.astype(np.float32), c(cells), psi=psi, transform=tr)
              for path, tr in zip(paths, transforms)]
  else:
    images = [g.synthesis(path.astype(np.float32), transform=tr)
              for path, tr in zip(paths, transforms)]
  return np.stack([make_grid(to_uint8(batch), cols=cols) for batch in images])


def main(argv: Optional[Sequence[str]] = None) -> str:
  """Runs the command line; returns the path written."""
  parser = argparse.ArgumentParser(prog='python -m gan_jax.tools.interpolate',
                                   description='Interpolation video between seeds (MP4 or GIF).')
  cli.add_generator_args(parser)
  parser.add_argument('--seeds', required=True, help='keyframe seeds, e.g. 0,1,2 or 0-7')
  parser.add_argument('--space', choices=('z', 'w'), default='z')
  parser.add_argument('--method', choices=METHODS, default=None,
                      help='default: slerp in z, lerp in w')
  parser.add_argument('--frames', type=int, default=30, help='frames per transition')
  parser.add_argument('--loop', action='store_true', help='return to the first seed')
  parser.add_argument('--grid', default='1x1', help='WxH interpolations side by side')
  parser.add_argument('--trunc', type=float, default=1.0, help='truncation psi (1: none)')
  parser.add_argument('--fps', type=float, default=30)
  parser.add_argument('--out', required=True, help='video path, .mp4 or .gif')
  cli.add_transform_args(parser, what='the last frame (ramped from none at the first)')
  args = parser.parse_args(argv)

  video.check_video_path(args.out)  # before any work
  seeds = generate.parse_seeds(args.seeds)
  cli.input_transform(args)  # a bad --translate fails before loading
  transform_at = None
  if args.translate is not None or args.rotate is not None:
    transform_at = lambda fraction: cli.input_transform(args, fraction)
  g = cli.load_generator(parser, args)
  frames = interpolation_frames(g, seeds, args.space, args.method, args.frames, args.loop,
                                parse_grid(args.grid), args.trunc, args.class_idx, transform_at)
  video.write_video(args.out, frames, args.fps)
  print(f'{len(frames)} frames written to {args.out} ({g.source})')
  return args.out


if __name__ == '__main__':
  cli_errors.run(main)
