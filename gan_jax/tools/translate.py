"""Image-to-image with a trained encoder run (pSp): encode each image of a folder, render with G.

  python -m gan_jax.tools.translate --workdir runs/enc_sr4 --input imgs/ --outdir out/sr4
  python -m gan_jax.tools.translate --workdir runs/enc_sr4 --task down4 --degraded \
      --input low_res/ --outdir out/sr4      # inputs already 4x smaller: no degradation applied
  python -m gan_jax.tools.translate --workdir runs/enc_class --input sneakers/ --outdir out/boots

--task names what the encoder does, as its run's config.encoder.degradations says it: invert
(''), down4 / down8 (super-resolution), mask (inpainting), edges (sketch -> image), class:A>B
(garment A -> garment B) or a comma list of them; it defaults to the run's, and a task the run was
not trained for is refused (one encoder per task, as pSp). By default the images are clean and
the tool degrades them as training did (mask positions from --seed); --degraded takes them as
the encoder's input as they are (a downK input may then be K times smaller: it is
nearest-upsampled, as in training).

Writes inputs/<name>.png (what the encoder read), outputs/<name>.png (G(E(input))), grid.png
(one row per image: input | output, then | original when the tool did the degrading) and
encoded_w.npz ('w' (N, num_ws, w_dim), 'names'): `gan_jax.tools.edit --latent` edits those.
"""

import argparse
import os
from typing import Optional, Sequence

import numpy as np

from gan_jax import cli_errors
from gan_jax import degradations as degradations_lib
from gan_jax import encoder as encoder_lib
from gan_jax.images import make_grid, save_png, to_uint8
from gan_jax.models import layers
from gan_jax.tools import projector

SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.webp')


def task_name(degradations) -> str:
  """The --task of a parsed degradation list ('invert' for none)."""
  return ','.join(d.name for d in degradations) or 'invert'


def check_task(e: encoder_lib.LoadedEncoder, task: Optional[str]) -> str:
  """The encoder's task; UserError if `task` is another one."""
  trained = task_name(e.degradations)
  if task is None:
    return trained
  try:
    wanted = task_name(degradations_lib.parse('' if task == 'invert' else task))
  except ValueError as error:
    raise cli_errors.UserError(f'--task {task!r}: {error}') from None
  if wanted != trained:
    raise cli_errors.UserError(
        f'--task {task!r}: {e.source} was trained for {trained!r} (config.encoder.degradations='
        f'{e.config.encoder.degradations!r}); train an encoder run for {wanted!r}, e.g. '
        f'--config.encoder.degradations={"" if wanted == "invert" else wanted}')
  return trained


def read_folder(path: str) -> list[str]:
  if not os.path.isdir(path):
    raise FileNotFoundError(f'--input {path} is not a directory')
  files = sorted(f for f in os.listdir(path) if f.lower().endswith(SUFFIXES))
  if not files:
    raise cli_errors.UserError(f'--input {path} holds no image ({", ".join(SUFFIXES)})')
  return [os.path.join(path, f) for f in files]


def load_images(e: encoder_lib.LoadedEncoder, paths: Sequence[str],
                degraded: bool) -> np.ndarray:
  """(N, R, R, C) float in [-1, 1]; a --degraded downK input of R/K pixels is upsampled."""
  r, ch = e.img_resolution, e.img_channels
  k = int(np.prod([d.factor for d in e.degradations if d.kind == 'down'])) if degraded else 1
  out = []
  for path in paths:
    from PIL import Image  # pylint: disable=g-import-not-at-top
    with Image.open(path) as image:
      small = k > 1 and image.size == (r // k, r // k)
    x = projector.load_target(path, r, ch, downsample=k if small else 1)
    out.append(np.asarray(layers.upsample_nearest(x, k)) if small else x)
  return np.concatenate(out).astype(np.float32)


def translate(e: encoder_lib.LoadedEncoder, images: np.ndarray, degraded: bool = False,
              seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(inputs, outputs, ws): the encoder's inputs (images degraded unless `degraded`), G's
  renderings of their ws, and the ws."""
  inputs = images if degraded else e.degrade(images, seed)
  ws = e(inputs)
  return inputs, e.generator.synthesis(ws), ws


def main(argv: Optional[Sequence[str]] = None) -> list[str]:
  """Runs the command line; returns the paths written."""
  parser = argparse.ArgumentParser(prog='python -m gan_jax.tools.translate',
                                   description='Encode a folder of images with an encoder run.')
  parser.add_argument('--workdir', required=True, help="an encoder run's workdir")
  parser.add_argument('--step', type=int, default=None, help='its checkpoint step')
  parser.add_argument('--task', default=None,
                      help="invert, down4, down8, mask, edges, class:A>B (default: the run's)")
  parser.add_argument('--input', required=True, help='folder of images')
  parser.add_argument('--outdir', required=True)
  parser.add_argument('--degraded', action='store_true',
                      help='the images are already the encoder input (do not degrade them)')
  parser.add_argument('--seed', type=int, default=0, help='mask positions of the degrading')
  args = parser.parse_args(argv)

  e = encoder_lib.load_encoder(args.workdir, args.step)
  task = check_task(e, args.task)
  paths = read_folder(args.input)
  images = load_images(e, paths, args.degraded)
  inputs, outputs, ws = translate(e, images, args.degraded, args.seed)
  names = [os.path.splitext(os.path.basename(p))[0] for p in paths]
  written = []
  for sub, batch in (('inputs', inputs), ('outputs', outputs)):
    os.makedirs(os.path.join(args.outdir, sub), exist_ok=True)
    for name, image in zip(names, to_uint8(batch)):
      written.append(os.path.join(args.outdir, sub, f'{name}.png'))
      save_png(written[-1], image)
  columns = [inputs, outputs] + ([] if args.degraded else [images])
  tiles = to_uint8(np.stack(columns, axis=1).reshape((-1,) + images.shape[1:]))
  written.append(os.path.join(args.outdir, 'grid.png'))
  save_png(written[-1], make_grid(tiles, cols=len(columns)))
  written.append(os.path.join(args.outdir, 'encoded_w.npz'))
  np.savez(written[-1], w=ws, names=np.array(names))
  print(f'{task}: {len(paths)} images through {e.source}; wrote inputs/, outputs/, grid.png, '
        f'encoded_w.npz to {args.outdir}')
  return written


if __name__ == '__main__':
  cli_errors.run(main)
