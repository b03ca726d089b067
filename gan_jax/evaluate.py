"""Metrics of a trained run's G_ema, sharded over every device.

  python -m gan_jax.evaluate --workdir runs/fmnist --metrics fid50k_full,kid50k_full
  python -m gan_jax.evaluate --workdir runs/fmnist --step 3000 --metrics fid2k --data_dir DIR

Restores G_ema from the workdir's Orbax checkpoint (the latest, or --step), reads the real images
of the dataset in the workdir's config.json (--data_dir overrides its TFDS data_dir), computes
each metric (gan_jax/metrics/registry.py names) and ends with one line per result:

  fid50k_full 4.1234
  kid50k_full 0.001234

A checkpoint of a progressive run (ProGAN, StyleGAN) is evaluated as it was then: at the stage
and fade-in alpha its Orbax meta records, its images nearest-upsampled to the full resolution
(`gan_jax.metrics.evaluator`), against the same full-resolution reals as a finished run; the
output then starts with that stage and alpha:

  # step 5: progressive run at stage 32x32, alpha 0.5000 (upsampled to 32x32)

Real-image statistics are cached (~/.cache/gan_jax/stats, or --cache_dir) per dataset, split,
resolution, count and feature-network hash. --max_images caps every count, for smoke tests
only (the names then no longer mean what they say; the output says so). Multi-process runs:
pass --distributed to call jax.distributed.initialize() first.
"""

import argparse
import json
import os
from typing import NamedTuple, Optional, Sequence

from absl import logging
import jax
import ml_collections

from gan_jax import cli_errors
from gan_jax import models
from gan_jax import sharding
from gan_jax.metrics import evaluator as evaluator_lib
from gan_jax.metrics import registry
from gan_jax.tools import export


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog='python -m gan_jax.evaluate',
                                   description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', required=True, help='training workdir (config.json, '
                      'checkpoints/)')
  parser.add_argument('--step', type=int, default=None, help='checkpoint step (default: latest)')
  parser.add_argument('--metrics', default='fid50k_full',
                      help='comma-separated: fid<N>k[_full], kid<N>k[_full], pr<N>k<K>[_full], '
                      'ppl2_wend, eqt<N>k_int, eqt<N>k_frac, eqr<N>k (default fid50k_full)')
  parser.add_argument('--data_dir', default=None, help="TFDS data_dir (default: the run's)")
  parser.add_argument('--batch_size', type=int, default=64, help='global feature batch')
  parser.add_argument('--inception_weights', default=None,
                      help='default_1.pt (default: the cached `python -m gan_jax.metrics.fetch`)')
  parser.add_argument('--cache_dir', default=None, help='real statistics cache '
                      '(default ~/.cache/gan_jax/stats)')
  parser.add_argument('--seed', type=int, default=0, help='latents and noise of the fakes')
  parser.add_argument('--max_images', type=int, default=0,
                      help='cap every image count (smoke tests; 0: the metrics\' own counts)')
  parser.add_argument('--distributed', action='store_true',
                      help='call jax.distributed.initialize() (multi-process)')
  return parser.parse_args(argv)


def data_config(workdir: str, data_dir: Optional[str]) -> ml_collections.ConfigDict:
  """`config.data` of the run, from its config.json (`data_dir` overrides)."""
  path = os.path.join(workdir, 'config.json')
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path} not found: --workdir must be a training workdir')
  data = ml_collections.ConfigDict(json.loads(open(path).read())['data'])
  if data_dir is not None:
    data.data_dir = data_dir
  return data


class Evaluation(NamedTuple):
  results: dict[str, float]  # {result name: value}
  step: int  # the checkpoint's
  growth: Optional[dict]  # {'stage', 'alpha'} of a progressive run's checkpoint, else None
  resolution: int  # G's full resolution, the data's


def run(args: argparse.Namespace) -> Evaluation:
  """Computes the metrics of the workdir's checkpoint (a progressive one at its stage/alpha)."""
  try:
    specs = registry.parse_list(args.metrics)  # bad names fail before anything is loaded
  except ValueError as error:
    raise cli_errors.UserError(f'--metrics={args.metrics}: {error}') from None
  if not specs:
    raise cli_errors.UserError('--metrics is empty')
  if args.max_images < 0:
    raise cli_errors.UserError(f'--max_images must be >= 0, got {args.max_images}')
  G, variables, step = export.restore_workdir(args.workdir, args.step)
  logging.info('G_ema of %s at step %d', args.workdir, step)
  growth = export.growth_of(args.workdir, step)
  if growth is not None:
    logging.info('step %d of a progressive run: stage %d, alpha %.4f', step, growth['stage'],
                 growth['alpha'])
  family = models.family_of(G)
  if not family.w_space and any(s.family == 'ppl' for s in specs):
    raise cli_errors.UserError(f'ppl metrics walk the W space; a {family.title} generator has '
                                'none (fid, kid and pr work)')
  if not family.input_transform and any(s.family == 'eq' for s in specs):
    raise cli_errors.UserError(f'equivariance metrics transform the input of a StyleGAN3 '
                                f'generator; a {family.title} generator has none')
  mesh = sharding.make_mesh(ml_collections.ConfigDict({'data': -1, 'fsdp': 1}))
  evaluator = evaluator_lib.Evaluator(
      data_config(args.workdir, args.data_dir), mesh, batch_size=args.batch_size,
      weights=args.inception_weights, cache_dir=args.cache_dir,
      max_images=args.max_images or None, seed=args.seed)
  results = evaluator.evaluate(G, variables, [s.name for s in specs], **(growth or {}))
  return Evaluation(results, step, growth, G.img_resolution)


def main(argv: Optional[Sequence[str]] = None) -> None:
  args = parse_args(argv)
  logging.set_verbosity(logging.INFO)
  if args.distributed:
    jax.distributed.initialize()
  evaluation = run(args)
  if jax.process_index() == 0:
    if evaluation.growth is not None:
      stage, res = evaluation.growth['stage'], evaluation.resolution
      print(f'# step {evaluation.step}: progressive run at stage {stage}x{stage}, alpha '
            f'{evaluation.growth["alpha"]:.4f} (upsampled to {res}x{res})')
    if args.max_images:
      print(f'# image counts capped at --max_images={args.max_images}')
    for name, value in evaluation.results.items():
      print(f'{name} {value:.6g}')


if __name__ == '__main__':
  cli_errors.run(main)
