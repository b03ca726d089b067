"""`directions labels`: InterFaceGAN labelled by the dataset's own labels, through an encoder.

  python -m gan_jax.tools.directions labels --workdir runs/fmnist_cond --out dirs.npz \
      --encoder runs/enc --pair 7,9 [--per_class 500] [--split train] [--name 'sneaker->boot']

The real images of classes A and B (--per_class of each, from the --split of the encoder run's
dataset, in the input pipeline's seed-0 order) are inverted by an inversion encoder run
(`gan_jax.load_encoder`; one trained with degradations is refused: it expects degraded inputs),
each image's W+ averaged over its ws to one w (the encoder's offsets share w_avg, and the
direction is a vector in W), and a logistic regression separating A's ws from B's gives the
unit normal from A to B (`directions.linear_direction`: 80 % to fit, its accuracy on the other
20 %). Unlike `class`, this needs no conditional generator: the labels are the data's. The
strength unit (sigma) comes from --samples ws sampled from the generator, as for `pca`.
"""

import numpy as np

from gan_jax import cli_errors
from gan_jax import encoder as encoder_lib
from gan_jax import encoder_eval
from gan_jax.tools import directions


def add_parser(sub, parents) -> None:
  p = sub.add_parser('labels', parents=parents,
                     help="InterFaceGAN labelled by the dataset's labels, through an encoder")
  p.add_argument('--encoder', required=True, help="an inversion encoder run's workdir")
  p.add_argument('--pair', required=True, help='A,B: the dataset labels of the two sides')
  p.add_argument('--per_class', type=int, default=500, help='real images of each class')
  p.add_argument('--split', default='train', help="the encoder run's dataset split to read")
  p.add_argument('--name', default=None, help='default A->B')


def encoded_sides(e: encoder_lib.LoadedEncoder, pair: tuple[int, int], per_class: int,
                  split: str) -> tuple[np.ndarray, np.ndarray]:
  """(x (N, w_dim): each image's ws averaged, y (N,): 0 for class A, 1 for class B)."""
  xs, ys = [], []
  for side, label in enumerate(pair):
    images, _ = encoder_eval.held_out(e.config, split, per_class, label=label)
    if not len(images):
      raise cli_errors.UserError(f'the {split} split of {e.config.data.name} has no image of '
                                 f'label {label}')
    xs.append(np.asarray(e(images), np.float64).mean(axis=1))
    ys.append(np.full(len(images), side, np.int64))
  return np.concatenate(xs), np.concatenate(ys)


def run(g, args) -> tuple[dict, list[dict]]:
  """(statistics, [the direction's entry]) for `directions.main`."""
  pair = tuple(int(p) for p in args.pair.split(','))
  if len(pair) != 2 or pair[0] == pair[1] or min(pair) < 0:
    raise cli_errors.UserError(f'--pair must be two different labels A,B, got {args.pair}')
  if args.per_class < 2:
    raise cli_errors.UserError(f'--per_class must be >= 2, got {args.per_class}')
  e = encoder_lib.load_encoder(args.encoder)
  if e.degradations:
    raise cli_errors.UserError(f'--encoder {args.encoder} was trained on degraded inputs '
                               f'({e.config.encoder.degradations}); labels need an inversion '
                               'encoder (degradations empty)')
  if (e.num_ws, e.w_dim) != (g.num_ws, g.w_dim):
    raise cli_errors.UserError(f'--encoder {args.encoder} encodes into {e.num_ws} ws of '
                               f'{e.w_dim}; this generator has {g.num_ws} of {g.w_dim}')
  ws = directions.sample_ws(g, args.samples, args.seed, args.trunc, directions.classes_of(g, args))
  stats = directions.statistics(g, ws)
  x, y = encoded_sides(e, pair, args.per_class, args.split)
  direction, accuracy = directions.linear_direction(x, y, args.seed)
  e_row = directions.entry(
      stats, args.name or f'{pair[0]}->{pair[1]}', direction, 'labels',
      directions.layers_of(args.layers, g),
      f'{int((y == 0).sum())} + {int((y == 1).sum())} {args.split} images of labels '
      f'{pair[0]}->{pair[1]} encoded by {args.encoder}', accuracy=accuracy)
  e_row['span'] = directions.span(x, y, direction, e_row['sigma'])
  return stats, [e_row]
