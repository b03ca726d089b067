"""2-D convolutions (NHWC x HWIO) with backward passes that run fast on XLA:CPU.

XLA:CPU runs a forward 3x3 convolution at close to matmul speed, but its weight gradient of a
stride-1 convolution is an order of magnitude slower (measured on 2 cores: batch 32, 128 -> 128
channels, 32x32: forward 0.10 s, input gradient 0.10 s, weight gradient 2.4 s; see
bench/README.md). So on the CPU backend `conv2d` carries its own gradient (`jax.custom_vjp`):

* input gradient of a stride-1 conv: the stride-1 conv of the output gradient with the flipped,
  in/out-swapped kernel (itself `conv2d`, so second derivatives stay on the fast path);
* input gradient of a strided conv: the transposed convolution `conv_transpose2d`, phase by phase
  as stride-1 `conv2d`s;
* weight gradient: for each kernel tap, one matmul of the (strided) shifted input slice with the
  output gradient, contracting over batch and pixels; plain jnp ops, so it is differentiable (R1
  and path length differentiate through gradients).

Other backends use `jax.lax.conv_general_dilated` and XLA's own gradients. Both compute the same
linear maps; tests compare values, gradients and second derivatives with XLA's. The choice is made
at trace time from the default backend, or from `target_platform` (gan_jax.aot traces for TPU on
a CPU host).
"""

import contextlib
import contextvars
import functools

import jax
import jax.numpy as jnp

Array = jax.Array
_DIMS = ('NHWC', 'HWIO', 'NHWC')
_TARGET_PLATFORM = contextvars.ContextVar('gan_jax_conv_target_platform', default=None)


@contextlib.contextmanager
def target_platform(platform: str):
  """Within this context, convolutions are traced for `platform` ('cpu', 'gpu', 'tpu') rather
  than for the default backend."""
  token = _TARGET_PLATFORM.set(platform)
  try:
    yield
  finally:
    _TARGET_PLATFORM.reset(token)


def _xla_conv(x: Array, w: Array, stride: int, padding) -> Array:
  return jax.lax.conv_general_dilated(x, w.astype(x.dtype), (stride, stride), padding,
                                      dimension_numbers=_DIMS)


# Below this many multiply-adds a conv keeps XLA's own gradient: small convs are quick either
# way, and the custom one compiles ~30% slower (a tiny train step at -O0: 37 s against 28 s).
CUSTOM_GRAD_MIN_MACS = 10_000_000


def conv2d(x: Array, w: Array, stride: int = 1, padding=((0, 0), (0, 0)),
           min_macs: int = CUSTOM_GRAD_MIN_MACS) -> Array:
  """Cross-correlation of x (N, H, W, I) with w (kh, kw, I, O): XLA's `conv_general_dilated` with
  explicit ((top, bottom), (left, right)) zero padding; w is cast to x's dtype. On the CPU
  backend, convs of at least `min_macs` multiply-adds carry the custom gradient."""
  padding = tuple((int(a), int(b)) for a, b in padding)
  kh, kw = w.shape[:2]
  # The custom gradient needs padding < kernel size (true of every layer here); else XLA's own.
  fits = all(0 <= p < k for pair, k in zip(padding, (kh, kw)) for p in pair)
  macs = x.shape[0] * x.shape[1] * x.shape[2] * w.shape[2] * w.shape[3] * kh * kw
  macs //= stride * stride
  platform = _TARGET_PLATFORM.get() or jax.default_backend()
  if platform != 'cpu' or not fits or macs < min_macs:
    return _xla_conv(x, w, stride, padding)
  return _conv_cpu(x, w, int(stride), padding)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_cpu(x: Array, w: Array, stride: int, padding) -> Array:
  return _xla_conv(x, w, stride, padding)


def _conv_cpu_fwd(x, w, stride, padding):
  return _conv_cpu(x, w, stride, padding), (x, w)


def _conv_cpu_bwd(stride, padding, residuals, g):
  x, w = residuals
  return (input_grad(g, w, x.shape, stride, padding),
          weight_grad(x, g, w.shape, stride, padding).astype(w.dtype))


_conv_cpu.defvjp(_conv_cpu_fwd, _conv_cpu_bwd)


def input_grad(g: Array, w: Array, x_shape, stride: int, padding) -> Array:
  """d(sum(conv2d(x, w) * g)) / dx, in g's dtype."""
  kh, kw = w.shape[:2]
  (py0, py1), (px0, px1) = padding
  w_t = jnp.swapaxes(w[::-1, ::-1], 2, 3).astype(g.dtype)  # (kh, kw, O, I), flipped
  h, wd = x_shape[1], x_shape[2]
  if stride == 1:
    return conv2d(g, w_t, 1, ((kh - 1 - py0, kh - 1 - py1), (kw - 1 - px0, kw - 1 - px1)),
                  min_macs=0)
  # Every output pixel i scattered w[t] onto padded input pixel stride * i + t.
  dx = conv_transpose2d(g, jnp.swapaxes(w, 2, 3).astype(g.dtype), stride, min_macs=0)
  dx = dx[:, py0:py0 + h, px0:px0 + wd]
  # Input rows/columns no window reached (trailing ones) get zero gradient.
  return jnp.pad(dx, ((0, 0), (0, h - dx.shape[1]), (0, wd - dx.shape[2]), (0, 0)))


def weight_grad(x: Array, g: Array, w_shape, stride: int, padding) -> Array:
  """d(sum(conv2d(x, w) * g)) / dw: per tap, the shifted input slice contracted with g over
  batch and pixels (float32 accumulation)."""
  kh, kw = w_shape[:2]
  (py0, py1), (px0, px1) = padding
  xp = jnp.pad(x, ((0, 0), (py0, py1), (px0, px1), (0, 0)))
  ho, wo = g.shape[1], g.shape[2]
  g = g.astype(x.dtype)
  taps = []
  for ty in range(kh):
    for tx in range(kw):
      xs = jax.lax.slice(xp, (0, ty, tx, 0),
                         (xp.shape[0], ty + stride * (ho - 1) + 1, tx + stride * (wo - 1) + 1,
                          xp.shape[3]), (1, stride, stride, 1))
      taps.append(_contract(xs, g))
  return jnp.stack(taps).reshape(w_shape)


def _contract(xs: Array, g: Array) -> Array:
  """sum over (n, h, w) of xs[..., i] * g[..., o] -> (i, o), float32.

  One matmul with a long contraction and a small (i, o) result runs at ~30 GFLOP/s on XLA:CPU;
  split into 8 chunks contracted as one batched matmul and then summed, ~45 (batch 32, 128
  channels, 32x32 on 2 cores; bench/README.md).
  """
  rows = xs.shape[0] * xs.shape[1] * xs.shape[2]
  chunks = 8 if rows % 8 == 0 and rows >= 4096 else 1
  xs = xs.reshape(chunks, rows // chunks, xs.shape[3])
  g = g.reshape(chunks, rows // chunks, g.shape[3])
  return jnp.einsum('bki,bko->bio', xs, g, preferred_element_type=jnp.float32).sum(0)


def conv_transpose2d(x: Array, w: Array, stride: int, pad_y: int = 0, pad_x: int = 0,
                     min_macs: int = CUSTOM_GRAD_MIN_MACS) -> Array:
  """PyTorch conv_transpose2d semantics (w as (kh, kw, in, out)): every input pixel scatters the
  kernel as stored; output (H - 1) * stride + kh - 2 * pad_y.

  Computed phase by phase, because XLA:CPU is slow on input-dilated convolutions and their
  gradients: output pixel s*m + r only sees kernel taps r, r + s, ..., so each of the s*s output
  phases is a small stride-1 convolution of the undilated input with those taps, and the phases
  are interleaved. Exactly the scatter's products (k*k taps per input pixel), no zero-stuffing.
  Each phase conv pads its input explicitly on the low side and passes the rest as 'same'-style
  high padding: the layout XLA:CPU runs fast for forward, gradient and double gradient.
  """
  s = stride
  kh, kw, _, cout = w.shape
  n, h, wd, _ = x.shape
  mh, mw = h + -(-kh // s) - 1, wd + -(-kw // s) - 1  # phase length (the longest phase)
  w = w.astype(x.dtype)
  rows = []
  for ry in range(s):
    cols = []
    for rx in range(s):
      sub = w[ry::s, rx::s]  # taps of this phase: out[m] = sum_j x[m - j] * sub[j]
      a, b = sub.shape[:2]
      if a == 0 or b == 0:  # kernel smaller than the stride: this phase is empty
        cols.append(jnp.zeros((n, mh, mw, cout), x.dtype))
        continue
      xp = jnp.pad(x, ((0, 0), (a - 1, 0), (b - 1, 0), (0, 0)))
      y = conv2d(xp, sub[::-1, ::-1], padding=((0, a - 1), (0, b - 1)),  # (n, h+a-1, w+b-1, o)
                 min_macs=min_macs)
      cols.append(jnp.pad(y, ((0, 0), (0, mh - y.shape[1]), (0, mw - y.shape[2]), (0, 0))))
    rows.append(jnp.stack(cols, axis=3))  # (n, mh, mw, s, o)
  y = jnp.stack(rows, axis=2).reshape(n, mh * s, mw * s, cout)  # interleave (depth-to-space)
  out_h, out_w = (h - 1) * s + kh, (wd - 1) * s + kw
  return y[:, pad_y:out_h - pad_y, pad_x:out_w - pad_x]
