"""Generate images from a trained or imported generator, one PNG per seed (as NVIDIA's generate.py).

  python -m gan_jax.tools.generate --workdir runs/fmnist --seeds 0-63 --trunc 0.7 \
      --outdir out/ --grid
  python -m gan_jax.tools.generate --checkpoint exports/ffhq --seeds 0,5,10-12 --outdir out/
  python -m gan_jax.tools.generate --checkpoint network-snapshot.pkl --seeds 0-3 --class 2 \
      --outdir out/
  python -m gan_jax.tools.generate --checkpoint stylegan3-t.pkl --seeds 0-3 \
      --translate 0.2,-0.1 --rotate 25 --outdir out/      # StyleGAN3 only, as gen_images.py

(`python -m gan_jax.generate` is the same command.) --checkpoint takes anything
`gan_jax.load_generator` takes: an export directory, a workdir's checkpoints/<step> directory, or
NVIDIA weights (.pkl/.npz/.pt).

Seed s draws z = np.random.RandomState(s).randn(z_dim), as NVIDIA does, so a seed names the same
latent in both codebases. Each seed is generated on its own (batch 1), so its image depends on
nothing else on the command line: the same seed gives the same PNG, bit for bit (batching would
let XLA's vectorised tails change the last bits with the image's position in the batch). With
--noise random the noise comes from jax.random.PRNGKey(seed). Files: seed%04d.png per seed and,
with --grid, grid.png (seeds in order, row by row, ceil(sqrt(n)) columns unless --grid-cols).
"""

import argparse
import os
import sys
from typing import Optional, Sequence

import numpy as np

from gan_jax import cli_errors
from gan_jax.images import make_grid, save_png, to_uint8
from gan_jax.tools import cli
from gan_jax.tools import loading


def parse_seeds(text: str) -> list[int]:
  """'0-3,7,10-11' -> [0, 1, 2, 3, 7, 10, 11]."""
  seeds = []
  for part in text.split(','):
    part = part.strip()
    if not part:
      continue
    lo, sep, hi = part.partition('-')
    if not lo.isdigit() or (sep and not hi.isdigit()):
      raise cli_errors.UserError(f'bad seed range {part!r}: use e.g. 0-63 or 0,5,10-12')
    seeds.extend(range(int(lo), int(hi) + 1) if sep else [int(lo)])
  if not seeds:
    raise cli_errors.UserError(f'no seeds in {text!r}')
  return seeds


def seed_latent(seed: int, z_dim: int) -> np.ndarray:
  """NVIDIA's z for a seed: RandomState(seed).randn(z_dim), float64 drawn, float32 returned."""
  return np.random.RandomState(seed).randn(1, z_dim).astype(np.float32)


def generate_images(g: loading.LoadedGenerator, seeds: Sequence[int], psi: float = 1.0,
                    class_idx: Optional[int] = None, noise: str = 'const',
                    truncation_cutoff: Optional[int] = None,
                    transform: Optional[np.ndarray] = None) -> np.ndarray:
  """uint8 images (len(seeds), H, W, C), one generator call per seed; `transform`: StyleGAN3's
  (3, 3) input transform (`cli.input_transform`), None for the stored one."""
  c = None
  if g.c_dim:
    if class_idx is None:
      raise cli_errors.UserError(f'the generator is conditional ({g.c_dim} classes): pass --class')
    c = np.array([class_idx])
  elif class_idx is not None:
    print(f'warning: --class={class_idx} ignored: the generator is unconditional',
          file=sys.stderr)
  out = [g(seed_latent(seed, g.z_dim), c, psi=psi, noise=noise,
           truncation_cutoff=truncation_cutoff, rng=seed, transform=transform)[0]
         for seed in seeds]
  return to_uint8(np.stack(out))


def main(argv: Optional[Sequence[str]] = None) -> list[str]:
  """Runs the command line; returns the paths written."""
  parser = argparse.ArgumentParser(prog='python -m gan_jax.tools.generate',
                                   description='Generate one PNG per seed (and a grid).')
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument('--workdir', help='training workdir: G_ema of its latest checkpoint')
  source.add_argument('--checkpoint', help='export dir, checkpoints/<step> dir, or NVIDIA weights '
                      '(.pkl/.npz/.pt)')
  parser.add_argument('--step', type=int, default=None, help='with --workdir: checkpoint step')
  parser.add_argument('--seeds', required=True, help='e.g. 0-63 or 0,5,10-12')
  parser.add_argument('--trunc', type=float, default=1.0, help='truncation psi (1: none)')
  parser.add_argument('--trunc-cutoff', type=int, default=None,
                      help='truncate only the first N ws (default: all)')
  parser.add_argument('--class', dest='class_idx', type=int, default=None,
                      help='class label (conditional generators)')
  parser.add_argument('--noise', choices=loading.NOISE_MODES, default='const')
  cli.add_transform_args(parser)
  parser.add_argument('--outdir', required=True)
  parser.add_argument('--grid', action='store_true', help='also write grid.png')
  parser.add_argument('--grid-cols', type=int, default=None, help='grid columns')
  args = parser.parse_args(argv)

  if args.step is not None and not args.workdir:
    parser.error('--step goes with --workdir (a checkpoints/<step> dir works as --checkpoint)')
  seeds = parse_seeds(args.seeds)
  transform = cli.input_transform(args)  # a bad --translate fails before loading
  g = loading.load_generator(args.workdir or args.checkpoint, step=args.step)
  images = generate_images(g, seeds, args.trunc, args.class_idx, args.noise, args.trunc_cutoff,
                           transform)
  os.makedirs(args.outdir, exist_ok=True)
  written = []
  for seed, image in zip(seeds, images):
    written.append(os.path.join(args.outdir, f'seed{seed:04d}.png'))
    save_png(written[-1], image)
  if args.grid:
    written.append(os.path.join(args.outdir, 'grid.png'))
    save_png(written[-1], make_grid(images, args.grid_cols))
  print(f'{len(written)} files written to {args.outdir} ({g.source})')
  return written


if __name__ == '__main__':
  cli_errors.run(main)
