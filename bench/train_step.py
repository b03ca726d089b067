"""Train-step throughput, compile time, FLOPs and memory for a config (a benchmark, never a test).

  python bench/train_step.py --config experiments/fashion_mnist.py:bench32 --steps 5
  python bench/train_step.py --config experiments/fashion_mnist.py --batch 32 --steps 5
  python bench/train_step.py --config experiments/ffhq.py:tiny

Uses random images (no data reading) so it measures the step alone: of the dataset's shape, or of
the config's `bench` group (resolution, channels) when it has one, or of --resolution/--channels.
Per regularisation variant (plain / path length / R1 / R1 + path length, those the schedule runs) it
prints the compile time, seconds per step, img/s, XLA's FLOP count per step, the achieved GFLOP/s
and XLA's memory estimate; then the schedule-weighted mean, and the GFLOP/s of a 4096^2 float32
matmul on the same machine (--matmul) as the ceiling to compare with. The last line is
`img/s <number>` (schedule-weighted). Run it with nothing else on the machine: a second busy
process halves every figure; compare configs back to back, as ratios.
"""

import argparse
import resource
import time

import jax
import jax.numpy as jnp
import numpy as np

from gan_jax import config_base
from gan_jax import sharding
from gan_jax import state as state_lib
from gan_jax import train
from gan_jax.data import pipeline

NAMES = {(False, False): 'plain', (False, True): 'pl', (True, False): 'r1', (True, True): 'r1+pl'}


def data_info(config, resolution: int, channels: int) -> pipeline.DataInfo:
  """The image shape to time: flags, else config.bench, else the dataset's own."""
  bench = config.get('bench', None)
  if resolution and channels:
    return pipeline.DataInfo(resolution, channels, 0, num_examples=0)
  if bench is not None:
    return pipeline.DataInfo(resolution or bench.resolution, channels or bench.channels, 0,
                             num_examples=0)
  return pipeline.dataset_info(config.data)


def flops_of(compiled) -> float:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  return float((cost or {}).get('flops', float('nan')))


def memory_of(compiled) -> str:
  mem = compiled.memory_analysis()
  if mem is None:
    return 'n/a'
  mib = lambda b: b / 2 ** 20
  return (f'args {mib(mem.argument_size_in_bytes):.0f} MiB, temp '
          f'{mib(mem.temp_size_in_bytes):.0f} MiB, out {mib(mem.output_size_in_bytes):.0f} MiB')


def matmul_gflops(n: int = 4096, reps: int = 5) -> tuple[float, float]:
  """(jitted JAX, numpy) GFLOP/s of an n x n float32 matmul."""
  a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
  f = jax.jit(lambda x, y: x @ y)
  xa = jnp.asarray(a)
  f(xa, xa).block_until_ready()
  t0 = time.perf_counter()
  for _ in range(reps):
    f(xa, xa).block_until_ready()
  t_jax = (time.perf_counter() - t0) / reps
  a @ a
  t0 = time.perf_counter()
  for _ in range(reps):
    a @ a
  t_np = (time.perf_counter() - t0) / reps
  return 2 * n ** 3 / t_jax / 1e9, 2 * n ** 3 / t_np / 1e9


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', required=True, help='FILE[:VARIANT]')
  parser.add_argument('--batch', type=int, default=0, help='global batch (default: the config)')
  parser.add_argument('--steps', type=int, default=5, help='timed steps per variant')
  parser.add_argument('--devices', type=int, default=-1, help='mesh size (-1: all)')
  parser.add_argument('--resolution', type=int, default=0, help='image size (default: config)')
  parser.add_argument('--channels', type=int, default=0, help='image channels (default: config)')
  parser.add_argument('--num_bf16_res', type=int, default=-1,
                      help='override model.num_bf16_res (mixed precision; -1: the config)')
  parser.add_argument('--matmul', action='store_true', help='also time a 4096^2 float32 matmul')
  parser.add_argument('--variants', default='',
                      help='comma list of variants to time (plain, pl, r1, r1+pl; default: all '
                      'the schedule runs); the schedule-weighted mean needs all of them')
  args = parser.parse_args()

  config = config_base.load(args.config)
  if args.batch:
    config.schedule.batch_size = args.batch
  if args.num_bf16_res >= 0:
    config.model.num_bf16_res = args.num_bf16_res
  config.mesh.data = args.devices
  info = data_info(config, args.resolution, args.channels)
  G, D, c_dim = train.build(config, info)
  mesh = sharding.make_mesh(config.mesh)
  _, state_shard, bshard, step_def, step_fn = train.sharded_step(config, mesh, G, D, c_dim)
  g_tx, d_tx = step_def.g_tx, step_def.d_tx
  state = jax.jit(lambda k: state_lib.create(G, D, g_tx, d_tx, c_dim, k),
                  out_shardings=state_shard)(jax.random.PRNGKey(0))
  n = config.schedule.batch_size
  rng = np.random.default_rng(0)
  batch = sharding.global_batch(
      {'image': rng.uniform(-1, 1, (n, info.resolution, info.resolution, info.channels)
                            ).astype(np.float32),
       'label': rng.integers(0, max(info.num_classes, 1), n).astype(np.int32)}, bshard, n)

  print(f'config {args.config}  batch {n}  {info.resolution}x{info.resolution}x{info.channels}  '
        f'devices {mesh.size}  {jax.devices()[0].platform}  bf16 res '
        f'{config.model.get("num_bf16_res", 0)}  G {state_lib.param_count(state.g_params):,} '
        f'params  D {state_lib.param_count(state.d_params):,} params')
  schedule = [step_def.variant(s) for s in range(64)]
  variants = {NAMES[f]: f for f in sorted(set(schedule))}
  if args.variants:
    unknown = set(args.variants.split(',')) - set(variants)
    if unknown:
      parser.error(f'--variants {sorted(unknown)} not in this schedule: {sorted(variants)}')
    variants = {k: v for k, v in variants.items() if k in args.variants.split(',')}
  sec, flops = {}, {}
  print(f'{"variant":8s} {"compile s":>10s} {"s/step":>8s} {"img/s":>8s} {"GFLOP":>8s} '
        f'{"GFLOP/s":>8s}  XLA memory estimate')
  for name, flags in variants.items():
    t0 = time.perf_counter()
    stage_args = (np.float32(1), np.int32(0), info.resolution, flags)
    compiled = step_fn.lower(state, batch, *stage_args).compile()
    compile_s = time.perf_counter() - t0
    state, m = compiled(state, batch, *stage_args[:2])  # warm-up
    jax.block_until_ready(m)
    t0 = time.perf_counter()
    for _ in range(args.steps):
      state, m = compiled(state, batch, *stage_args[:2])
    jax.block_until_ready((state, m))
    sec[flags] = (time.perf_counter() - t0) / args.steps
    flops[flags] = flops_of(compiled)
    print(f'{name:8s} {compile_s:10.1f} {sec[flags]:8.3f} {n / sec[flags]:8.1f} '
          f'{flops[flags] / 1e9:8.1f} {flops[flags] / sec[flags] / 1e9:8.1f}  {memory_of(compiled)}')
  timed = [f for f in schedule if f in sec] if len(sec) < len(set(schedule)) else schedule
  mean_s = float(np.mean([sec[f] for f in timed]))
  mean_flops = float(np.mean([flops[f] for f in timed]))
  peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 10
  what = 'schedule-weighted' if timed is schedule else f'timed variants only ({args.variants})'
  print(f'{what}: {mean_s:.3f} s/step  {n / mean_s:.1f} img/s  '
        f'{mean_s * 1000 / n:.1f} sec/kimg  {mean_flops / mean_s / 1e9:.1f} GFLOP/s  '
        f'peak RSS {peak_rss:.0f} MiB')
  if args.matmul:
    g_jax, g_np = matmul_gflops()
    print(f'4096^2 float32 matmul: {g_jax:.1f} GFLOP/s (jitted JAX), {g_np:.1f} (numpy)')
  print(f'img/s {n / mean_s:.2f}')


if __name__ == '__main__':
  from gan_jax import cli_errors  # pylint: disable=g-import-not-at-top
  cli_errors.run(main)  # one-line user errors; no libtpu probing without a TPU
