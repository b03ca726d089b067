"""`directions labels` (gan_jax.tools.directions): InterFaceGAN labelled by the dataset's own
labels, through an encoder.

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


def inversion_encoder(path: str, g) -> encoder_lib.LoadedEncoder:
  """The encoder run at `path`, refused unless it inverts (no degradations) into g's W+."""
  e = encoder_lib.load_encoder(path)
  if e.degradations:
    raise cli_errors.UserError(f'--encoder {path} was trained on degraded inputs '
                               f'({e.config.encoder.degradations}); labels need an inversion '
                               'encoder (degradations empty)')
  if (e.num_ws, e.w_dim) != (g.num_ws, g.w_dim):
    raise cli_errors.UserError(f'--encoder {path} encodes into {e.num_ws} ws of {e.w_dim}; this '
                               f'generator has {g.num_ws} of {g.w_dim}')
  return e
