"""Style-mixing figure (Karras et al. 2019, Fig. 3): rows and columns of seeds, with the column's
w swapped into a range of the row's ws.

  python -m gan_jax.tools.style_mixing --workdir runs/fmnist --rows 85,100,75 \
      --cols 55,821,1789 --styles coarse --trunc 0.7 --outdir out/ [--cells]

grid.png: the top row holds the column seeds' images, the left column the row seeds' images (the
top-left corner is black), and cell (r, c) is the row seed's ws with the column seed's w in the
chosen layers. --cells also writes each cell as {row}-{col}.png. The seed images are exactly
those of `python -m gan_jax.generate` (NVIDIA's seed -> z, batch 1, same truncation and noise).

Which ws --styles names. As in the StyleGAN paper (whose networks take two ws per resolution,
ws[2k-4], ws[2k-3] at 2^k x 2^k), coarse = the ws of resolutions 4-8 = ws 0-3, middle = 16-32 =
ws 4-7, fine = 64 and up = ws 8 to the last. StyleGAN2 shares a w between a block's toRGB and the
next block's first (upsampling) conv (see `gan_jax.models.stylegan2`), so by layer these are:

  coarse (ws 0-3): every layer of b4 and b8, and b16.conv0 (which upsamples b8's features);
  middle (ws 4-7): b16.conv1, b16.torgb, all of b32, and b64.conv0;
  fine   (ws 8-):  the rest, from b64.conv1 on.

Small generators (num_ws = 2 log2(resolution) - 2) have only the ranges that exist: at 32x32
(ws 0-7) there is no fine range, at 16x16 middle is ws 4-5, at 8x8 coarse is every w (every cell
is then the column's image) and at 4x4 coarse is ws 0-1. Asking for a range the generator does
not have is an error naming the ranges it has; explicit ranges always work: --styles 0-1,6 or 5.
"""

import argparse
import os
from typing import Optional, Sequence

import numpy as np

from gan_jax import cli_errors
from gan_jax.images import make_grid, save_png, to_uint8
from gan_jax.tools import cli
from gan_jax.tools import generate
from gan_jax.tools import loading

# ws index ranges [start, stop) in StyleGAN's two-ws-per-resolution count; None: to the end.
NAMED_STYLES = {'coarse': (0, 4), 'middle': (4, 8), 'fine': (8, None)}


def style_indices(spec: str, num_ws: int) -> list[int]:
  """'coarse' | 'middle' | 'fine' | comma list of 'a-b' / 'a' -> sorted ws indices < num_ws."""
  spec = spec.strip().lower()
  if spec in NAMED_STYLES:
    start, stop = NAMED_STYLES[spec]
    indices = list(range(start, num_ws if stop is None else min(stop, num_ws)))
    if not indices:
      have = ', '.join(f'{name} (ws {s}-{min(num_ws if e is None else e, num_ws) - 1})'
                       for name, (s, e) in NAMED_STYLES.items() if s < num_ws)
      raise cli_errors.UserError(
          f'--styles {spec}: this generator has only {num_ws} ws (resolution '
          f'{2 ** ((num_ws + 2) // 2)}), so there is no {spec} range; it has '
          f'{have}, or give ws indices such as 0-{num_ws - 1}')
    return indices
  indices = set()
  for part in spec.split(','):
    part = part.strip()
    lo, sep, hi = part.partition('-')
    if not lo.isdigit() or (sep and not hi.isdigit()) or (sep and int(hi) < int(lo)):
      raise cli_errors.UserError(
          f'bad --styles part {part!r}: use coarse, middle, fine, or ws ranges '
          'such as 0-3 or 0-1,6')
    indices.update(range(int(lo), int(hi) + 1) if sep else [int(lo)])
  if max(indices) >= num_ws:
    raise cli_errors.UserError(f'--styles {spec}: ws indices must be below num_ws = {num_ws}')
  return sorted(indices)


def mix(row_ws: np.ndarray, col_ws: np.ndarray, indices: Sequence[int]) -> np.ndarray:
  """row_ws (..., num_ws, w_dim) with the ws at `indices` taken from col_ws."""
  out = np.array(row_ws, copy=True)
  out[..., list(indices), :] = np.asarray(col_ws)[..., list(indices), :]
  return out


def style_mixing_images(g: loading.LoadedGenerator, rows: Sequence[int], cols: Sequence[int],
                        indices: Sequence[int], psi: float = 1.0, noise: str = 'const',
                        class_idx: Optional[int] = None):
  """uint8 (row images (R, H, W, C), column images (C, ...), cells (R, C, H, W, C)).

  Every image is generated on its own (batch 1), so each depends only on its own seeds; the row
  and column images come from the same call as `generate`'s, so they match its PNGs bit for bit.
  Random noise (noise='random') is drawn from PRNGKey(row seed) for the row's cells.
  """
  c = cli.class_label(g, class_idx)
  seeds = list(dict.fromkeys(list(rows) + list(cols)))
  ws = {s: g.mapping(generate.seed_latent(s, g.z_dim), c, psi=psi) for s in seeds}
  image = {s: to_uint8(g(generate.seed_latent(s, g.z_dim), c, psi=psi, noise=noise, rng=s))[0]
           for s in seeds}
  cells = np.stack([
      np.stack([to_uint8(g.synthesis(mix(ws[r], ws[col], indices), noise=noise, rng=r))[0]
                for col in cols]) for r in rows])
  return np.stack([image[r] for r in rows]), np.stack([image[col] for col in cols]), cells


def figure(row_images: np.ndarray, col_images: np.ndarray, cells: np.ndarray) -> np.ndarray:
  """The (R + 1) x (C + 1) grid: column images on top, row images on the left, corner black."""
  n_rows, n_cols = cells.shape[:2]
  tiles = np.zeros((n_rows + 1, n_cols + 1) + cells.shape[2:], cells.dtype)
  tiles[0, 1:] = col_images
  tiles[1:, 0] = row_images
  tiles[1:, 1:] = cells
  return make_grid(tiles.reshape((-1,) + cells.shape[2:]), cols=n_cols + 1)


def main(argv: Optional[Sequence[str]] = None) -> list[str]:
  """Runs the command line; returns the paths written."""
  parser = argparse.ArgumentParser(prog='python -m gan_jax.tools.style_mixing',
                                   description='Style-mixing grid: rows x columns of seeds.')
  cli.add_generator_args(parser)
  parser.add_argument('--rows', required=True, help='row seeds, e.g. 85,100,75 or 0-3')
  parser.add_argument('--cols', required=True, help='column seeds, e.g. 55,821,1789')
  parser.add_argument('--styles', default='coarse',
                      help='ws taken from the column seed: coarse (ws 0-3), middle (4-7), fine '
                      '(8-), or ranges such as 0-1,6 (default coarse)')
  parser.add_argument('--trunc', type=float, default=1.0, help='truncation psi (1: none)')
  parser.add_argument('--noise', choices=loading.NOISE_MODES, default='const')
  parser.add_argument('--outdir', required=True)
  parser.add_argument('--cells', action='store_true', help='also write each cell as a PNG')
  args = parser.parse_args(argv)

  rows, cols = generate.parse_seeds(args.rows), generate.parse_seeds(args.cols)
  g = cli.load_generator(parser, args)
  indices = style_indices(args.styles, g.num_ws)
  row_images, col_images, cells = style_mixing_images(g, rows, cols, indices, args.trunc,
                                                      args.noise, args.class_idx)
  os.makedirs(args.outdir, exist_ok=True)
  written = [os.path.join(args.outdir, 'grid.png')]
  save_png(written[0], figure(row_images, col_images, cells))
  if args.cells:
    for i, r in enumerate(rows):
      for j, col in enumerate(cols):
        written.append(os.path.join(args.outdir, f'{r}-{col}.png'))
        save_png(written[-1], cells[i, j])
  print(f'{len(written)} files written to {args.outdir} (ws {indices} from the columns; '
        f'{g.source})')
  return written


if __name__ == '__main__':
  cli_errors.run(main)
