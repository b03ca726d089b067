"""Edit along a saved direction: a strip of edits per seed or projected/encoded image, and a video.

  python -m gan_jax.tools.edit --workdir runs/fmnist_cond --directions dirs.npz \
      --direction '1->3' --strength 4 --seeds 0-3 --class 1 --outdir out/edit
  python -m gan_jax.tools.edit --checkpoint exports/faces --directions dirs.npz --direction pc1 \
      --strength=-3:3 --layers 0-3 --latent out/proj/projected_w.npz --outdir out/edit

The edit of a latent ws (num_ws, w_dim) along the direction d (a unit vector in W, see
`gan_jax.tools.directions`) at strength s is

  ws[i] + s * sigma_d * d   for the ws i in the layer range;  the other ws unchanged,

sigma_d being the standard deviation of the generator's sampled ws along d (stored with it), so
a strength counts standard deviations; the range is --layers (all, coarse, middle, fine or ws
indices such as 0-3, as in style_mixing), by default the direction's stored one. At strength 0
the latent, and so the image, is the unedited one, bit for bit.

--strength S gives the strengths 0 .. S, --strength A:B the strengths A .. B (write
--strength=-3:3 when A is negative), in --steps columns, evenly spaced: age/attribute
progression is this grid, one row per source. Sources, one row each, in this order:
  --seeds: NVIDIA's seed -> z, mapped with --trunc (and --class for a conditional generator),
    rendered with the stored noise maps (as `gan_jax.generate`);
  --latent FILE.npz[,...]: a projected or encoded image: the projector's projected_w.npz, or
    any .npz holding 'w' (1 or N, num_ws, w_dim) (one row per w; an encoder that saves its W+
    so plugs in: translate's encoded_w.npz), with the projector's optimised noise maps
    ('noise/<layer>') when it has them;
  --encode IMG[,IMG...] --encoder ENC_RUN: images inverted in one forward pass by an encoder run
    (`gan_jax.load_encoder`; the images go in as they are, as the encoder's input), rendered
    with the stored noise maps: encode -> move along a direction in steps -> grid.
Writes edit.png (rows = sources, columns = strengths) and, unless --no-video, edit.mp4 (or the
--video name, .gif works without ffmpeg): the sources side by side, the strength sweeping from
the first to the last and back in 2 x --frames frames.
"""

import argparse
import os
from typing import Optional, Sequence

import numpy as np

from gan_jax import cli_errors
from gan_jax.images import make_grid, save_png, to_uint8
from gan_jax.tools import cli
from gan_jax.tools import directions as directions_lib
from gan_jax.tools import generate
from gan_jax.tools import loading
from gan_jax.tools import projector
from gan_jax.tools import style_mixing
from gan_jax.tools import video


def layer_indices(spec: str, num_ws: int) -> list[int]:
  """'all' or a style_mixing range ('coarse', '0-3', ...) -> ws indices."""
  return list(range(num_ws)) if spec == 'all' else style_mixing.style_indices(spec, num_ws)


def apply_edit(ws: np.ndarray, step: np.ndarray, strength: float,
               indices: Sequence[int]) -> np.ndarray:
  """ws (..., num_ws, w_dim) float32 with strength * step (w_dim,) added to the ws at indices."""
  ws = np.asarray(ws, np.float32)
  if strength == 0:
    return ws.copy()
  out = ws.copy()
  out[..., list(indices), :] += np.float32(strength) * np.asarray(step, np.float32)
  return out


def parse_strengths(text: str, steps: int) -> np.ndarray:
  """'S' -> linspace(0, S, steps); 'A:B' -> linspace(A, B, steps)."""
  lo, sep, hi = text.partition(':')
  try:
    lo, hi = (float(lo), float(hi)) if sep else (0.0, float(lo))
  except ValueError:
    raise cli_errors.UserError(f'bad --strength {text!r}: use S (0 .. S) or A:B') from None
  if steps < 1 or (steps == 1 and lo != hi):
    raise cli_errors.UserError(f'--steps must be >= 2 for a range of strengths, got {steps}')
  return np.linspace(lo, hi, steps)


class Source:
  """One row: a latent ws (num_ws, w_dim) and how to render it (noise maps or the stored ones)."""

  def __init__(self, label: str, ws: np.ndarray, noise: Optional[dict] = None):
    self.label, self.ws, self.noise = label, np.asarray(ws, np.float32), noise

  def render(self, g: loading.LoadedGenerator, ws: np.ndarray) -> np.ndarray:
    """uint8 images (N, H, W, C) of ws (N, num_ws, w_dim), each rendered alone (batch 1)."""
    if self.noise:
      return to_uint8(projector.render(g, ws, self.noise))
    return np.concatenate([to_uint8(g.synthesis(w[None])) for w in ws])


def seed_sources(g: loading.LoadedGenerator, seeds: Sequence[int], psi: float,
                 class_idx: Optional[int]) -> list[Source]:
  c = cli.class_label(g, class_idx)
  return [Source(f'seed {s}', g.mapping(generate.seed_latent(s, g.z_dim), c, psi=psi)[0])
          for s in seeds]


def latent_sources(g: loading.LoadedGenerator, path: str) -> list[Source]:
  """The ws of a projected_w.npz (or an encoder's .npz with 'w'), with its noise maps."""
  if not os.path.exists(path):
    raise FileNotFoundError(f'--latent {path} does not exist')
  with np.load(path, allow_pickle=False) as data:
    if 'w' not in data.files:
      raise cli_errors.UserError(f'{path} has no "w" (N, num_ws, w_dim): not a projected_w.npz')
    ws = data['w']
    noise = {k[len('noise/'):]: data[k] for k in data.files if k.startswith('noise/')}
  if ws.ndim == 2:
    ws = ws[None]
  if ws.ndim != 3 or ws.shape[1:] != (g.num_ws, g.w_dim):
    raise cli_errors.UserError(f'{path}: w must be (N, {g.num_ws}, {g.w_dim}) for this '
                               f'generator, got {ws.shape}')
  return [Source(f'{path}[{i}]', w, noise or None) for i, w in enumerate(ws)]


def encoded_sources(g: loading.LoadedGenerator, encoder_dir: str, paths: str) -> list[Source]:
  """One row per image of the comma list `paths`, its ws from the encoder run `encoder_dir`."""
  from gan_jax import encoder as encoder_lib  # pylint: disable=g-import-not-at-top
  from gan_jax.tools import translate  # pylint: disable=g-import-not-at-top
  e = encoder_lib.load_encoder(encoder_dir)
  if (e.num_ws, e.w_dim) != (g.num_ws, g.w_dim):
    raise cli_errors.UserError(f'--encoder {encoder_dir} encodes into {e.num_ws} ws of {e.w_dim}, '
                               f'this generator has {g.num_ws} of {g.w_dim}')
  if not np.allclose(e.generator.w_avg, g.w_avg, rtol=1e-4, atol=1e-4):
    print(f'warning: --encoder {encoder_dir} was trained for another generator '
          f'({e.generator.source}); its ws may not mean the same here')
  files = [p for p in paths.split(',') if p]
  for path in files:
    if not os.path.exists(path):
      raise FileNotFoundError(f'--encode {path} does not exist')
  ws = e(translate.load_images(e, files, degraded=True))
  return [Source(f'encoded {path}', w) for path, w in zip(files, ws)]


def direction_step(g: loading.LoadedGenerator, table: dict, name: str) -> tuple[np.ndarray, str]:
  """(sigma * d (w_dim,), the stored layer range) for the direction called name."""
  if int(table['w_dim']) != g.w_dim or int(table['num_ws']) != g.num_ws:
    raise cli_errors.UserError(
        f'the directions are for a generator with w_dim {int(table["w_dim"])} and '
        f'{int(table["num_ws"])} ws, this one has {g.w_dim} and {g.num_ws}')
  if not np.allclose(table['w_avg'], g.w_avg, rtol=1e-4, atol=1e-4):
    print(f'warning: the directions were found on another generator ({table["source"]}); '
          'they may not mean the same here')
  i = directions_lib.lookup(table, name)
  return table['sigma'][i] * table['directions'][i], str(table['layers'][i])


def edit_strip(g: loading.LoadedGenerator, source: Source, step: np.ndarray,
               strengths: Sequence[float], indices: Sequence[int]) -> np.ndarray:
  """uint8 (len(strengths), H, W, C): the source edited at each strength."""
  return source.render(g, np.stack([apply_edit(source.ws, step, s, indices) for s in strengths]))


def main(argv: Optional[Sequence[str]] = None) -> list[str]:
  """Runs the command line; returns the paths written."""
  parser = argparse.ArgumentParser(
      prog='python -m gan_jax.tools.edit',
      description='Edit seeds, projected or encoded images along a direction.')
  cli.add_generator_args(parser)
  parser.add_argument('--directions', required=True, help='file of gan_jax.tools.directions')
  parser.add_argument('--direction', required=True, help='its name in the file')
  parser.add_argument('--strength', required=True,
                      help='S: strengths 0 .. S; A:B: A .. B (in sigmas of the direction)')
  parser.add_argument('--steps', type=int, default=5, help='columns of the strip')
  parser.add_argument('--layers', default=None,
                      help='ws edited: all, coarse, middle, fine or e.g. 0-3 (default: stored)')
  parser.add_argument('--seeds', default=None, help='seeds to edit, e.g. 0-3')
  parser.add_argument('--latent', default=None,
                      help='comma list of projected_w.npz (or encoded W+ .npz with "w")')
  parser.add_argument('--encode', default=None,
                      help='comma list of images to invert with --encoder and edit')
  parser.add_argument('--encoder', default=None, help="an encoder run's workdir (for --encode)")
  parser.add_argument('--trunc', type=float, default=1.0, help='truncation psi of the seeds')
  parser.add_argument('--outdir', required=True)
  parser.add_argument('--no-video', action='store_true')
  parser.add_argument('--video', default='edit.mp4', help='video name in outdir (.mp4 or .gif)')
  parser.add_argument('--frames', type=int, default=30, help='frames from one end to the other')
  parser.add_argument('--fps', type=float, default=30)
  args = parser.parse_args(argv)

  if not args.seeds and not args.latent and not args.encode:
    parser.error('give --seeds, --latent and/or --encode')
  if bool(args.encode) != bool(args.encoder):
    parser.error('--encode and --encoder go together')
  if args.frames < 2:
    parser.error('--frames must be >= 2')
  if not args.no_video:
    video.check_video_path(args.video)
  strengths = parse_strengths(args.strength, args.steps)
  table = directions_lib.load(args.directions)
  g = cli.load_generator(parser, args)
  if not g.family.w_space:
    raise cli_errors.UserError(f'a {g.family.title} generator has no W space to edit in')
  step, stored_layers = direction_step(g, table, args.direction)
  indices = layer_indices(args.layers or stored_layers, g.num_ws)
  sources = []
  if args.seeds:
    sources += seed_sources(g, generate.parse_seeds(args.seeds), args.trunc, args.class_idx)
  for path in (args.latent or '').split(','):
    if path:
      sources += latent_sources(g, path)
  if args.encode:
    sources += encoded_sources(g, args.encoder, args.encode)

  os.makedirs(args.outdir, exist_ok=True)
  written = [os.path.join(args.outdir, 'edit.png')]
  strips = np.stack([edit_strip(g, s, step, strengths, indices) for s in sources])
  save_png(written[0], make_grid(strips.reshape((-1,) + strips.shape[2:]), cols=len(strengths)))
  if not args.no_video:
    sweep = np.linspace(strengths[0], strengths[-1], args.frames)
    sweep = np.concatenate([sweep, sweep[-2:0:-1]])  # there and back: loops seamlessly
    per_source = np.stack([edit_strip(g, s, step, sweep, indices) for s in sources], axis=1)
    frames = np.stack([make_grid(f, cols=len(sources)) for f in per_source])
    if frames.shape[1] % 2 or frames.shape[2] % 2:  # yuv420p needs even sizes: pad with black
      frames = np.pad(frames, ((0, 0), (0, frames.shape[1] % 2), (0, frames.shape[2] % 2),
                               (0, 0)))
    written.append(os.path.join(args.outdir, args.video))
    video.write_video(written[-1], frames, args.fps)
  print(f'{args.direction} at strengths {", ".join(f"{s:g}" for s in strengths)} on ws '
        f'{indices} of {len(sources)} sources; wrote '
        f'{", ".join(os.path.basename(p) for p in written)} to {args.outdir} ({g.source})')
  return written


if __name__ == '__main__':
  cli_errors.run(main)
