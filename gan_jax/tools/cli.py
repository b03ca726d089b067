"""Command-line pieces shared by the figure tools (style mixing, interpolation, projector):
where the generator comes from, and its class label."""

import argparse
import sys
from typing import Optional

import numpy as np

from gan_jax import cli_errors
from gan_jax.tools import loading


def add_generator_args(parser: argparse.ArgumentParser, labels: bool = True) -> None:
  """--workdir | --checkpoint, --step and (with `labels`) --class."""
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument('--workdir', help='training workdir: G_ema of its latest checkpoint')
  source.add_argument('--checkpoint', help='export dir, checkpoints/<step> dir, or NVIDIA weights '
                      '(.pkl/.npz/.pt)')
  parser.add_argument('--step', type=int, default=None, help='with --workdir: checkpoint step')
  if labels:
    parser.add_argument('--class', dest='class_idx', type=int, default=None,
                        help='class label (conditional generators)')


def load_generator(parser: argparse.ArgumentParser,
                   args: argparse.Namespace) -> loading.LoadedGenerator:
  """The generator named by --workdir/--checkpoint (and --step)."""
  if args.step is not None and not args.workdir:
    parser.error('--step goes with --workdir (a checkpoints/<step> dir works as --checkpoint)')
  return loading.load_generator(args.workdir or args.checkpoint, step=args.step)


def class_label(g: loading.LoadedGenerator, class_idx: Optional[int]) -> Optional[np.ndarray]:
  """(1,) class index for a conditional generator, None for an unconditional one."""
  if g.c_dim:
    if class_idx is None:
      raise cli_errors.UserError(f'the generator is conditional ({g.c_dim} classes): pass --class')
    if not 0 <= class_idx < g.c_dim:
      raise cli_errors.UserError(f'--class must lie in [0, {g.c_dim}), got {class_idx}')
    return np.array([class_idx])
  if class_idx is not None:
    print(f'warning: --class={class_idx} ignored: the generator is unconditional',
          file=sys.stderr)
  return None


def add_transform_args(parser: argparse.ArgumentParser, what: str = 'the images') -> None:
  """--translate X,Y and --rotate DEG: StyleGAN3's input transform (NVIDIA's gen_images.py)."""
  parser.add_argument('--translate', default=None,
                      help=f'StyleGAN3: translate {what} by X,Y image widths, e.g. 0.2,-0.1')
  parser.add_argument('--rotate', type=float, default=None,
                      help=f'StyleGAN3: rotate {what} by this many degrees')


def parse_translate(text: Optional[str]) -> tuple[float, float]:
  """'0.2,-0.1' -> (0.2, -0.1); None -> (0, 0)."""
  if text is None:
    return 0.0, 0.0
  parts = text.split(',')
  try:
    if len(parts) != 2:
      raise ValueError
    return float(parts[0]), float(parts[1])
  except ValueError:
    raise cli_errors.UserError(f'--translate takes X,Y (two numbers), got {text!r}') from None


def input_transform(args: argparse.Namespace, fraction: float = 1.0) -> Optional[np.ndarray]:
  """The (3, 3) input transform for `fraction` of --translate / --rotate (None when neither is
  given): inv(make_transform(translate, rotate)), as NVIDIA's gen_images.py sets it."""
  if args.translate is None and args.rotate is None:
    return None
  tx, ty = parse_translate(args.translate)
  from gan_jax.models import stylegan3  # pylint: disable=g-import-not-at-top
  return stylegan3.user_transform((tx * fraction, ty * fraction),
                                  (args.rotate or 0.0) * fraction)
