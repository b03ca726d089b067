"""Float comparisons at the scale of the tensor, so that they hold on any CPU.

float32 results of the same maths differ between machines and between differently fused programs
(AVX2 vs AVX-512 vs NEON, XLA's fusion and thread split change the summation order): each element
moves by a few ulps *of the sums it came from*, not of itself. An element that happens to be near
zero (a cancelling sum, a gradient that is almost zero) therefore fails a relative tolerance
(`rtol`) on one machine and passes on another. `assert_close` compares the worst element's error
with `rel` times the tensor's largest magnitude instead, so the bound does not depend on which
elements are small, and it names the worst element when it fails.

A test picks `rel` from the float32 spread it measured (about 10x of it) and far below the effect
of the bug the test is there to catch; `relative_error` lets a test check that a buggy variant
would indeed fail.
"""

from typing import Any

import jax
import numpy as np


def relative_error(actual: Any, expected: Any, scale: float | None = None) -> float:
  """max|actual - expected| / scale, where scale defaults to max|expected| (NaN if any is NaN)."""
  a, e = _pair(actual, expected)
  if not a.size:
    return 0.0
  if scale is None:
    scale = float(np.max(np.abs(e)))
  err = float(np.max(np.abs(a - e)))
  if np.isnan(err):
    return err
  return err / scale if scale > 0 else (0.0 if err == 0 else float('inf'))


def assert_close(actual: Any, expected: Any, rel: float, what: str = '',
                 scale: float | None = None) -> None:
  """Asserts max|actual - expected| <= rel * scale (scale: max|expected| unless given).

  `expected` broadcasts to `actual`'s shape (a scalar expected value is fine). Pass `scale` where
  the expected tensor is zero, or where the errors scale with another quantity (the size of the
  inputs rather than of a difference).
  """
  a, e = _pair(actual, expected)
  if not a.size:
    return
  if scale is None:
    scale = float(np.max(np.abs(e)))
  bound = rel * scale
  diff = np.abs(a - e)
  if not np.isnan(diff).any() and diff.max() <= bound:
    return
  where = tuple(int(i) for i in np.unravel_index(
      int(np.argmax(np.where(np.isnan(diff), np.inf, diff))), a.shape))
  raise AssertionError(
      f'{what or "values"}: max|actual - expected| = {float(diff[where]):.3g} at {where} '
      f'(actual {float(a[where]):.6g}, expected {float(e[where]):.6g}) > bound {bound:.3g} '
      f'= {rel:g} * scale {scale:.3g}; shape {a.shape}')


def assert_trees_close(actual: Any, expected: Any, rel: float, what: str = '',
                       by_group: bool = False) -> None:
  """assert_close leaf by leaf; the trees must have one structure.

  Each leaf is compared at its own scale, or with `by_group` at the largest |value| of its group:
  the leaves that share the path up to the first dict key (`.g_params`, `.g_opt[0].nu`, ...), i.e.
  one kind of quantity across all layers. Use that for states trained by Adam: a scalar such as a
  noise strength, a few learning-rate steps from zero, carries the float32 noise of its
  gradient's cancelling sum at ~1e-4 of its own size (measured, 1 vs 8 devices), which is
  < 1e-7 of the weights next to it.
  """
  a_leaves, a_def = jax.tree_util.tree_flatten_with_path(actual)
  e_leaves, e_def = jax.tree_util.tree_flatten(expected)
  assert a_def == e_def, f'{what}: tree structures differ: {a_def} vs {e_def}'
  groups = [_group(path) if by_group else i for i, (path, _) in enumerate(a_leaves)]
  scales = {}
  for g, e in zip(groups, e_leaves):
    e = np.asarray(e)
    if np.issubdtype(e.dtype, np.inexact) and e.size:
      scales[g] = max(scales.get(g, 0.0), float(np.max(np.abs(e))))
  for g, (path, a), e in zip(groups, a_leaves, e_leaves):
    name = f'{what}{jax.tree_util.keystr(path)}'
    if not np.issubdtype(np.asarray(e).dtype, np.inexact):  # steps, keys, counts: exact
      np.testing.assert_array_equal(a, e, err_msg=name)
    else:
      assert_close(a, e, rel, name, scales.get(g, 0.0))


def _group(path) -> tuple:
  for i, key in enumerate(path):
    if isinstance(key, jax.tree_util.DictKey):
      return tuple(path[:i])
  return tuple(path)


def _pair(actual: Any, expected: Any) -> tuple[np.ndarray, np.ndarray]:
  a = np.asarray(actual, np.float64)
  e = np.asarray(expected, np.float64)
  try:
    return a, np.broadcast_to(e, a.shape)
  except ValueError:
    raise AssertionError(
        f'expected shape {e.shape} does not broadcast to actual shape {a.shape}') from None


# Our StyleGAN2 against NVIDIA's stored float32 outputs (tests/fixtures/nvlabs): measured at most
# 1.5e-6 of the largest |value| for images and 4.8e-7 for ws (AVX-512, and XLA limited to SSE4.2;
# the old absolute bounds were 1e-4 and 1e-5 whatever the scale), and NVIDIA's own fused
# and unfused modulated convolutions differ by 1.1e-6 of it (fixtures README). A wrong gain, a
# misplaced noise or style, or a transposed kernel moves images by >= ~1e-2 of it.
NVIDIA_REL = 1e-5
