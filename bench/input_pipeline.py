"""Input-pipeline throughput (img/s) next to the train step's (a benchmark, never a test).

  python bench/input_pipeline.py                                   # fashion_mnist + a synthetic prepared set
  python bench/input_pipeline.py --prepared NAME --data_dir DIR    # your prepared/NAME instead
  python bench/input_pipeline.py --train_config experiments/fashion_mnist.py   # + train-step img/s

For each dataset: img/s of `pipeline.InputPipeline` (random access into ArrayRecord, PNG decode,
x-flip, [-1, 1], prefetch threads) over --steps batches after a warm-up, with the config's
num_workers / prefetch. Without --prepared, a synthetic source of --synthetic random 128x128 JPEGs
is prepared at --resolution into a temporary data_dir (the prepare img/s is printed too). With
--train_config, bench/train_step.py runs on that config and its schedule-weighted img/s is printed
last: the pipeline keeps up when its img/s is above the step's. Run it with nothing else on the
machine.
"""

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from gan_jax import config_base
from gan_jax.data import pipeline
from gan_jax.data import prepare

BENCH = pathlib.Path(__file__).resolve().parent


def pipeline_img_per_s(data_config, batch: int, steps: int, warmup: int = 3) -> float:
  """Images per second that InputPipeline delivers to a consumer that only takes batches."""
  with pipeline.InputPipeline(data_config, batch, seed=0) as data:
    for _ in range(warmup):
      next(data)
    t0 = time.perf_counter()
    for _ in range(steps):
      next(data)
    return batch * steps / (time.perf_counter() - t0)


def synthetic_prepared(root: str, count: int, resolution: int) -> tuple[str, float]:
  """Prepares `count` random 128x128 JPEGs as prepared/bench; returns (data_dir, prepare img/s)."""
  source = os.path.join(root, 'src')
  os.makedirs(source)
  rng = np.random.default_rng(0)
  for i in range(count):
    pixels = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(os.path.join(source, f'{i:05d}.jpg'), quality=90)
  data_dir = os.path.join(root, 'tfds')
  t0 = time.perf_counter()
  prepare.prepare(source, 'bench', resolution, data_dir, progress=False)
  return data_dir, count / (time.perf_counter() - t0)


def train_step_line(config: str, batch: int, steps: int) -> str:
  """bench/train_step.py's schedule-weighted line for `config`."""
  cmd = [sys.executable, str(BENCH / 'train_step.py'), '--config', config, '--steps', str(steps)]
  if batch:
    cmd += ['--batch', str(batch)]
  out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
  return [line for line in out.splitlines() if line.startswith('schedule-weighted')][-1]


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--batch', type=int, default=32, help='global batch')
  parser.add_argument('--steps', type=int, default=100, help='timed batches per dataset')
  parser.add_argument('--workers', type=int, default=0, help='reader threads (0: the config)')
  parser.add_argument('--prepared', help='NAME of a prepared/NAME dataset to read')
  parser.add_argument('--data_dir', help='data_dir of --prepared')
  parser.add_argument('--synthetic', type=int, default=512, help='images of the synthetic set')
  parser.add_argument('--resolution', type=int, default=64, help='resolution of the synthetic set')
  parser.add_argument('--train_config', default='', help='FILE[:VARIANT] for bench/train_step.py')
  parser.add_argument('--train_steps', type=int, default=5)
  args = parser.parse_args()
  tfds.disable_progress_bar()

  base = config_base.get_base_config().data
  if args.workers:
    base.num_workers = args.workers
  with tempfile.TemporaryDirectory() as tmp:
    datasets = [('fashion_mnist_local', base.data_dir)]
    if args.prepared:
      datasets.append((prepare.PREFIX + args.prepared, args.data_dir))
    else:
      data_dir, prep_rate = synthetic_prepared(tmp, args.synthetic, args.resolution)
      print(f'prepare: {args.synthetic} random 128x128 JPEGs -> {args.resolution}x'
            f'{args.resolution} PNGs (lanczos): {prep_rate:.0f} img/s')
      datasets.append((prepare.PREFIX + 'bench', data_dir))
    print(f'batch {args.batch}  steps {args.steps}  num_workers {base.num_workers}  '
          f'prefetch {base.prefetch}  cpus {os.cpu_count()}')
    print(f'{"dataset":28s} {"shape":>12s} {"img/s":>9s} {"img/s xflip":>12s}')
    for name, data_dir in datasets:
      config = base.copy_and_resolve_references()
      config.name, config.data_dir = name, data_dir
      info = pipeline.dataset_info(config)
      plain = pipeline_img_per_s(config, args.batch, args.steps)
      config.xflip = True
      flipped = pipeline_img_per_s(config, args.batch, args.steps)
      shape = f'{info.resolution}x{info.resolution}x{info.channels}'
      print(f'{name:28s} {shape:>12s} {plain:9.0f} {flipped:12.0f}')
  if args.train_config:
    print(f'train step ({args.train_config}): '
          f'{train_step_line(args.train_config, 0, args.train_steps)}')


if __name__ == '__main__':
  from gan_jax import cli_errors  # pylint: disable=g-import-not-at-top
  cli_errors.run(main)  # one-line user errors; no libtpu probing without a TPU
