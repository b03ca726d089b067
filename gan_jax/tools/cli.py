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
