"""The non-finite guard: NaN/Inf in losses or weights stops the run before anything bad is saved.

The train step computes a `nonfinite` flag on the device every step (no host sync); the loop
hands the flags here when it logs a tick or is about to save, so a checkpoint is never written
from non-finite weights and the last good one is kept.
"""

from typing import Sequence

from absl import logging
import jax
import numpy as np

from gan_jax import checkpointing


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
          'state. Lower the learning rates or raise loss.r1_gamma, then rerun the same '
          'command: it resumes from the newest checkpoint that verifies against its manifest.')


def rollback(error: NonFiniteError, ckpt, abstract, train_config, rollbacks: int):
  """After `check_finite` raised: (state, meta) of the newest intact checkpoint (a damaged one is
  moved aside, as at a start) with fresh random draws (so the same latents do not lead to the same
  blow-up), for train.nonfinite_action='rollback' within train.max_rollbacks; otherwise re-raises
  `error`. `rollbacks` counts this one."""
  checkpointing.commit(ckpt)  # the save in flight was of good weights: the rerun may use it
  if (train_config.nonfinite_action != 'rollback' or rollbacks > train_config.max_rollbacks):
    raise error
  restored = checkpointing.restore_latest(ckpt, abstract)
  if restored is None:
    raise error
  state, meta = restored
  state = state.replace(rng=jax.random.fold_in(state.rng, rollbacks))
  logging.warning('%s Rolled back to the checkpoint of step %d (rollback %d of at most %d).',
                  error, int(jax.device_get(state.step)), rollbacks, train_config.max_rollbacks)
  return state, meta
