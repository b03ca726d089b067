"""tests/numerics.py: the scale-based comparison the numeric tests share."""

import numpy as np
import pytest

from tests import numerics


def test_near_zero_elements_are_judged_at_the_tensor_scale():
  expected = np.array([3.0, -2.0, 1e-9])
  actual = expected + np.array([1e-7, -1e-7, 1e-7])  # 100x the near-zero element, 3e-8 of 3
  with pytest.raises(AssertionError):
    np.testing.assert_allclose(actual, expected, rtol=1e-3)  # what the old checks did
  numerics.assert_close(actual, expected, 1e-6)
  assert numerics.relative_error(actual, expected) == pytest.approx(1e-7 / 3)


def test_an_error_above_the_bound_fails_and_names_the_worst_element():
  expected = np.arange(12.0).reshape(3, 4)
  actual = expected.copy()
  actual[2, 1] += 0.02  # 0.02 / 11 = 1.8e-3 of the scale
  with pytest.raises(AssertionError, match=r'lerp: .*at \(2, 1\).*expected 9\b'):
    numerics.assert_close(actual, expected, 1e-3, 'lerp')
  numerics.assert_close(actual, expected, 2e-3, 'lerp')
  with pytest.raises(AssertionError, match='scale 1'):
    numerics.assert_close(actual, expected, 1e-2, scale=1.0)  # an explicit scale


def test_nan_and_shapes_fail():
  with pytest.raises(AssertionError):
    numerics.assert_close(np.array([1.0, np.nan]), np.array([1.0, 2.0]), 1.0)
  with pytest.raises(AssertionError, match='does not broadcast'):
    numerics.assert_close(np.zeros(3), np.zeros(4), 1.0)
  numerics.assert_close(np.zeros((2, 3)), 0.0, 0.0)  # a scalar expected value broadcasts


def test_trees_by_leaf_or_by_group():
  expected = {'w': {'a': np.full(4, 2.0), 'b': np.array([1e-3])}, 'step': np.int32(3)}
  actual = {'w': {'a': np.full(4, 2.0), 'b': np.array([1e-3 + 1e-6])}, 'step': np.int32(3)}
  with pytest.raises(AssertionError, match=r"\['w'\]\['b'\]"):  # 1e-3 of its own scale
    numerics.assert_trees_close(actual, expected, 1e-4, 'state')
  numerics.assert_trees_close(actual, expected, 1e-4, 'state', by_group=True)  # 5e-7 of 2
  with pytest.raises(AssertionError):  # integers stay exact
    numerics.assert_trees_close(dict(actual, step=np.int32(4)), expected, 1.0, by_group=True)
