"""One 3x3 convolution's forward, gradient and R1-style second derivative: XLA's own gradients
against gan_jax.models.conv's (a benchmark, never a test).

  python bench/conv_grad.py                       # batch 32, 128 -> 128 channels, 32x32
  python bench/conv_grad.py --batch 8 --channels 64 --size 16

Prints ms and GFLOP/s (XLA's FLOP count) per function. Run it with nothing else on the machine.
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from gan_jax.models import conv


def xla_conv(x, w, stride, padding):
  return jax.lax.conv_general_dilated(x, w, (stride, stride), padding,
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def timed(fn, *args, reps=3):
  compiled = jax.jit(fn).lower(*args).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  jax.block_until_ready(compiled(*args))
  t0 = time.perf_counter()
  for _ in range(reps):
    out = compiled(*args)
  jax.block_until_ready(out)
  sec = (time.perf_counter() - t0) / reps
  return sec, float((cost or {}).get('flops', float('nan')))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--batch', type=int, default=32)
  parser.add_argument('--channels', type=int, default=128)
  parser.add_argument('--size', type=int, default=32)
  args = parser.parse_args()
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((args.batch, args.size, args.size, args.channels)),
                  jnp.float32)
  w = jnp.asarray(rng.standard_normal((3, 3, args.channels, args.channels)) * 0.05, jnp.float32)
  print(f'{"function":28s} {"ms":>8s} {"GFLOP/s":>8s}')
  for stride, padding in ((1, ((1, 1), (1, 1))), (2, ((0, 1), (0, 1)))):
    for name, fn in (('xla', xla_conv), ('gan_jax', conv.conv2d)):
      loss = lambda x, w, fn=fn: jnp.sum(jnp.tanh(fn(x, w, stride, padding)))
      r1 = lambda x, w, loss=loss: jnp.sum(jnp.square(jax.grad(loss)(x, w)))
      for what, f in (('forward', lambda x, w, fn=fn: fn(x, w, stride, padding)),
                      ('grad x, w', jax.grad(loss, (0, 1))),
                      ('grad_w |grad_x|^2', jax.grad(r1, 1))):
        sec, flops = timed(f, x, w)
        print(f'{f"s{stride} {name} {what}":28s} {sec * 1e3:8.0f} {flops / sec / 1e9:8.1f}')


if __name__ == '__main__':
  from gan_jax import cli_errors  # pylint: disable=g-import-not-at-top
  cli_errors.run(main)  # one-line user errors; no libtpu probing without a TPU
