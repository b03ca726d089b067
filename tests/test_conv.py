"""gan_jax.models.conv: the CPU convolution with its own gradients against XLA's autodiff."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gan_jax.models import conv
from tests import numerics

# float32 against XLA's own convolution / a float64 numpy loop: measured spread <= ~1e-6 of each
# tensor's largest element; a wrong tap, padding or stride is an O(1) error.
REL = 1e-5

CASES = [  # (kernel, stride, padding)
    (3, 1, ((1, 1), (1, 1))),
    (3, 1, ((0, 2), (2, 0))),
    (2, 1, ((0, 1), (1, 0))),
    (1, 1, ((0, 0), (0, 0))),
    (3, 2, ((0, 1), (0, 1))),
    (3, 2, ((1, 1), (0, 0))),
    (1, 2, ((0, 0), (0, 0))),
]


def xla_conv(x, w, stride, padding):
  return jax.lax.conv_general_dilated(x, w.astype(x.dtype), (stride, stride), padding,
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def inputs(k, seed=0, size=7):
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.standard_normal((2, size, size, 3)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((k, k, 3, 4)), jnp.float32)
  return x, w


def test_cpu_path_has_its_own_gradient():
  x, w = inputs(3)
  ours = lambda x, w: conv.conv2d(x, w, 1, ((1, 1), (1, 1)), min_macs=0)
  assert 'custom_vjp' in str(jax.make_jaxpr(ours)(x, w))
  with conv.target_platform('tpu'):  # as gan_jax.aot traces: XLA's own gradients
    again = lambda x, w: conv.conv2d(x, w, 1, ((1, 1), (1, 1)), min_macs=0)  # a fresh trace
    assert 'custom_vjp' not in str(jax.make_jaxpr(again)(x, w))


@pytest.mark.parametrize('k,stride,padding', CASES)
def test_value_and_gradients_match_xla(k, stride, padding):
  x, w = inputs(k)
  ours = lambda x, w, stride, padding: conv.conv2d(x, w, stride, padding, min_macs=0)
  numerics.assert_close(ours(x, w, stride, padding), xla_conv(x, w, stride, padding), REL, 'conv')

  def loss(f):  # a non-linear read-out so every output pixel gets its own cotangent
    return lambda x, w: jnp.sum(jnp.tanh(f(x, w, stride, padding)) * jnp.arange(4.0))

  want = jax.grad(loss(xla_conv), (0, 1))(x, w)
  got = jax.grad(loss(ours), (0, 1))(x, w)
  for g, e, what in zip(got, want, ('dx', 'dw')):
    numerics.assert_close(g, e, REL, what)

  # Second order, as R1 needs it: the gradient norm's gradient w.r.t. weights and inputs.
  def r1(f):
    return lambda x, w: jnp.sum(jnp.square(jax.grad(loss(f))(x, w)))

  want = jax.grad(r1(xla_conv), (0, 1))(x, w)
  got = jax.grad(r1(ours), (0, 1))(x, w)
  for g, e, what in zip(got, want, ('d(|grad|^2)/dx', 'd(|grad|^2)/dw')):
    numerics.assert_close(g, e, REL, what)


def test_weight_grad_against_numpy():
  x, w = inputs(3, seed=1, size=6)
  g = np.random.default_rng(2).standard_normal((2, 3, 3, 4))
  xp = np.pad(np.asarray(x, np.float64), ((0, 0), (0, 1), (0, 1), (0, 0)))
  want = np.zeros((3, 3, 3, 4))
  for ty in range(3):
    for tx in range(3):
      for i in range(3):
        for j in range(3):
          want[ty, tx] += xp[:, 2 * i + ty, 2 * j + tx].T @ g[:, i, j]
  got = conv.weight_grad(x, jnp.asarray(g, jnp.float32), w.shape, 2, ((0, 1), (0, 1)))
  numerics.assert_close(got, want, REL, 'weight grad')


def test_weight_grad_in_chunks_against_numpy():
  # 2 x 64 x 64 = 8192 rows: contracted in 8 chunks.
  rng = np.random.default_rng(3)
  x = rng.standard_normal((2, 64, 64, 2)).astype(np.float32)
  g = rng.standard_normal((2, 64, 64, 3)).astype(np.float32)
  xp = np.pad(x.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
  want = np.stack([np.einsum('nhwi,nhwo->io', xp[:, ty:ty + 64, tx:tx + 64], g)
                   for ty in range(3) for tx in range(3)]).reshape(3, 3, 2, 3)
  got = conv.weight_grad(jnp.asarray(x), jnp.asarray(g), (3, 3, 2, 3), 1, ((1, 1), (1, 1)))
  numerics.assert_close(got, want, REL, 'chunked weight grad')  # a lost chunk: >= 1/8 off


def test_bfloat16_keeps_dtypes():
  x, w = inputs(3)
  xb = x.astype(jnp.bfloat16)
  y = conv.conv2d(xb, w, 1, ((1, 1), (1, 1)))
  assert y.dtype == jnp.bfloat16
  ours = lambda x, w: conv.conv2d(x, w, 1, ((1, 1), (1, 1)), min_macs=0)
  gx, gw = jax.grad(lambda x, w: jnp.sum(ours(x, w).astype(jnp.float32)), (0, 1))(xb, w)
  assert gx.dtype == jnp.bfloat16 and gw.dtype == jnp.float32
  want = jax.grad(lambda w: jnp.sum(xla_conv(x, w, 1, ((1, 1), (1, 1)))))(w)
  # bfloat16 inputs (8 bits of mantissa): measured 3.5e-3 of the scale; a wrong tap is O(1).
  numerics.assert_close(gw, want, 2e-2, 'bfloat16 weight grad')


def test_small_convs_keep_xla_gradients():
  x, w = inputs(3)  # 2 * 7 * 7 * 3 * 4 * 9 multiply-adds
  jaxpr = str(jax.make_jaxpr(lambda x, w: conv.conv2d(x, w, 1, ((1, 1), (1, 1))))(x, w))
  assert 'custom_vjp' not in jaxpr


def test_conv_transpose_matches_xla():
  x, w = inputs(3, size=5)
  want = jax.lax.conv_transpose(x, w[::-1, ::-1], (2, 2), 'VALID',
                                dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  numerics.assert_close(conv.conv_transpose2d(x, w, 2, min_macs=0), want, REL, 'conv transpose')
