"""The non-finite guard: NaN/Inf in losses or weights stops the run before anything bad is saved.

The train step computes a `nonfinite` flag on the device every step (no host sync); the loop
hands the flags here when it logs a tick or is about to save, so a checkpoint is never written
from non-finite weights and the last good one is kept.
"""

from typing import Sequence

import jax
import numpy as np


class NonFiniteError(FloatingPointError):
  """Training produced NaN or Inf; the message names the step and the losses."""


def check_finite(step_metrics: Sequence[tuple[int, dict]]) -> None:
  """Raises NonFiniteError for the first (step, metrics) whose `nonfinite` flag is set."""
  if not step_metrics:
    return
  flags = jax.device_get([m['nonfinite'] for _, m in step_metrics])
  for (step, metrics), flag in zip(step_metrics, flags):
    if int(flag):
      values = jax.device_get({k: v for k, v in metrics.items() if k.startswith('loss/')})
      losses = ', '.join(f'{k}={float(np.asarray(v)):.4g}' for k, v in sorted(values.items()))
      raise NonFiniteError(
          f'Non-finite loss or weights at step {step} ({losses}). Nothing was saved from this '
          'state: the last checkpoint in the workdir is intact. Lower the learning rates or '
          'raise train.r1_gamma, then rerun the same command to resume from that checkpoint.')
