"""Where a train step's time goes: G and D forward, G main, D main, D main + R1 fused and R1
alone, each jitted on its own, for a config's networks (a benchmark, never a test).

  python bench/train_phases.py --config experiments/fashion_mnist.py:bench32

Random images of the config's `bench` shape (or --resolution/--channels); unconditional. Prints
ms, XLA's GFLOP and GFLOP/s per phase. Run it with nothing else on the machine.
"""

import argparse
import time

import jax
import jax.numpy as jnp

from gan_jax import config_base
from gan_jax import losses
from gan_jax import train
from gan_jax.data import pipeline


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', required=True, help='FILE[:VARIANT]')
  parser.add_argument('--batch', type=int, default=0, help='default: the config')
  parser.add_argument('--resolution', type=int, default=0)
  parser.add_argument('--channels', type=int, default=0)
  args = parser.parse_args()
  config = config_base.load(args.config)
  bench = config.get('bench', None)
  res = args.resolution or (bench.resolution if bench is not None else 32)
  ch = args.channels or (bench.channels if bench is not None else 3)
  G, D, _ = train.build(config, pipeline.DataInfo(res, ch, 0, num_examples=0))
  n = args.batch or config.schedule.batch_size
  key = jax.random.PRNGKey(0)
  z = jax.random.normal(key, (n, G.z_dim))
  c = jnp.zeros((n, 0))
  g_vars = G.init({'params': key, 'noise': key}, z, c)
  d_params = D.init({'params': key}, jnp.zeros((n, res, res, ch)), c)['params']
  reals = jax.random.uniform(key, (n, res, res, ch), minval=-1, maxval=1)

  def generate(g_params):
    variables = {'params': g_params, 'buffers': g_vars['buffers']}
    ws = G.apply(variables, z, c, method='map')
    return G.apply(variables, ws, method='synthesize', rngs={'noise': key})

  def discriminate(params, images):
    return D.apply({'params': params}, images, c)

  def d_fused(params, fakes):
    def loss(params):
      logits, penalty = losses.logits_and_r1(lambda x: discriminate(params, x), reals)
      return losses.d_logistic(logits, discriminate(params, fakes)) + jnp.mean(penalty)
    return jax.grad(loss)(params)

  fakes = jax.jit(generate)(g_vars['params'])
  phases = [
      ('G forward', generate, (g_vars['params'],)),
      ('D forward', lambda p: discriminate(p, reals), (d_params,)),
      ('G main (through D)', jax.grad(lambda p: losses.g_nonsaturating(
          discriminate(d_params, generate(p)))), (g_vars['params'],)),
      ('D main', lambda p, f: jax.grad(lambda p: losses.d_logistic(
          discriminate(p, reals), discriminate(p, f)))(p), (d_params, fakes)),
      ('D main + R1 fused', d_fused, (d_params, fakes)),
      ('D R1 alone', jax.grad(lambda p: jnp.mean(losses.r1_penalty(
          lambda x: discriminate(p, x), reals))), (d_params,)),
  ]
  print(f'{args.config}  batch {n}  {res}x{res}x{ch}')
  print(f'{"phase":22s} {"ms":>8s} {"GFLOP":>8s} {"GFLOP/s":>8s}')
  for name, fn, fn_args in phases:
    compiled = jax.jit(fn).lower(*fn_args).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float((cost or {}).get('flops', float('nan')))
    jax.block_until_ready(compiled(*fn_args))
    t0 = time.perf_counter()
    for _ in range(3):
      out = compiled(*fn_args)
    jax.block_until_ready(out)
    sec = (time.perf_counter() - t0) / 3
    print(f'{name:22s} {sec * 1e3:8.0f} {flops / 1e9:8.1f} {flops / sec / 1e9:8.1f}')


if __name__ == '__main__':
  from gan_jax import cli_errors  # pylint: disable=g-import-not-at-top
  cli_errors.run(main)  # one-line user errors; no libtpu probing without a TPU
