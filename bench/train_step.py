"""Train-step throughput and compile time for a config (a benchmark, never a test).

  python bench/train_step.py --config experiments/fashion_mnist.py --batch 32 --steps 5
  python bench/train_step.py --config experiments/ffhq.py:tiny

Uses random images of the dataset's shape (no data reading) so it measures the step alone. Prints a
table: per regularisation variant (none / path length / R1 + path length) the compile time and the
steady-state seconds per step and img/s, and the schedule-weighted average img/s and sec/kimg.
Run it with nothing else on the machine; compare configs back to back, as ratios.
"""

import argparse
import time

import jax
import numpy as np

from gan_jax import config_base
from gan_jax import optim
from gan_jax import sharding
from gan_jax import state as state_lib
from gan_jax import train
from gan_jax import train_step as train_step_lib
from gan_jax.data import pipeline


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', required=True, help='FILE[:VARIANT]')
  parser.add_argument('--batch', type=int, default=0, help='global batch (default: the config)')
  parser.add_argument('--steps', type=int, default=5, help='timed steps per variant')
  parser.add_argument('--devices', type=int, default=-1, help='mesh size (-1: all)')
  args = parser.parse_args()

  config = config_base.load(args.config)
  if args.batch:
    config.train.batch_size = args.batch
  config.mesh.data = args.devices
  info = pipeline.dataset_info(config.data)
  G, D, c_dim = train.build(config, info)
  g_tx, d_tx = optim.make_optimizers(config.train)
  mesh = sharding.make_mesh(config.mesh)
  rep, bshard = sharding.replicated(mesh), sharding.batch_sharding(mesh)
  abstract = state_lib.abstract(G, D, g_tx, d_tx, c_dim)
  sshard = sharding.state_sharding(mesh, abstract)
  state = jax.jit(lambda k: state_lib.create(G, D, g_tx, d_tx, c_dim, k),
                  out_shardings=sshard)(jax.random.PRNGKey(0))
  cfg = train_step_lib.StepConfig.from_config(config.train, c_dim)
  step_fn = train_step_lib.jit_train_step(
      train_step_lib.make_train_step(G, D, g_tx, d_tx, cfg, bshard), sshard, bshard, rep)
  n = config.train.batch_size
  rng = np.random.default_rng(0)
  batch = sharding.global_batch(
      {'image': rng.uniform(-1, 1, (n, info.resolution, info.resolution, info.channels)
                            ).astype(np.float32),
       'label': rng.integers(0, max(info.num_classes, 1), n).astype(np.int32)}, bshard, n)

  print(f'config {args.config}  batch {n}  devices {mesh.size}  {jax.devices()[0].platform}  '
        f'G {state_lib.param_count(state.g_params):,} params  '
        f'D {state_lib.param_count(state.d_params):,} params')
  schedule = [cfg.regularize(s) for s in range(64)]
  names = {(False, False): 'plain', (False, True): 'pl', (True, False): 'r1', (True, True): 'r1+pl'}
  variants = {names[f]: f for f in sorted(set(schedule))}
  sec = {}
  print(f'{"variant":8s} {"compile s":>10s} {"s/step":>8s} {"img/s":>8s}')
  for name, flags in variants.items():
    t0 = time.perf_counter()
    compiled = step_fn.lower(state, batch, *flags).compile()
    compile_s = time.perf_counter() - t0
    state, m = compiled(state, batch)  # warm-up
    jax.block_until_ready(m)
    t0 = time.perf_counter()
    for _ in range(args.steps):
      state, m = compiled(state, batch)
    jax.block_until_ready((state, m))
    sec[flags] = (time.perf_counter() - t0) / args.steps
    print(f'{name:8s} {compile_s:10.1f} {sec[flags]:8.3f} {n / sec[flags]:8.1f}')
  mean_s = np.mean([sec[f] for f in schedule])
  print(f'schedule-weighted: {mean_s:.3f} s/step  {n / mean_s:.1f} img/s  '
        f'{mean_s * 1000 / n:.1f} sec/kimg')


if __name__ == '__main__':
  main()
