"""Orbax checkpoints of the full GANState: save every N steps, keep N, restore-or-init.

Restore order: the workdir's latest checkpoint, else `config.resume`, else a fresh state.
"""

from absl import logging
from typing import Any, Callable, Optional

import jax
import orbax.checkpoint as ocp
from etils import epath


def manager(workdir: str, checkpoint_config) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
      max_to_keep=checkpoint_config.keep, create=True, enable_async_checkpointing=True,
      cleanup_tmp_directories=True)  # half-written saves of a crashed run (reported first)
  return ocp.CheckpointManager(epath.Path(workdir) / 'checkpoints', options=options,
                               item_names=('state', 'meta'))


def save(mngr: ocp.CheckpointManager, state: Any, meta: dict, force: bool = False) -> bool:
  """Starts an (asynchronous) save of `state` at its step; `meta` is small JSON (kimg, ...)."""
  step = int(jax.device_get(state.step))
  try:
    mngr.check_for_errors()  # a failed earlier (asynchronous) save surfaces here
    saved = mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                   meta=ocp.args.JsonSave(meta)), force=force)
  except Exception as e:  # pylint: disable=broad-except
    raise _save_failed(mngr, f'at or before step {step}', e) from e
  return saved


def finish(mngr: ocp.CheckpointManager) -> None:
  """Waits for the last asynchronous save and raises CheckpointError if any save failed."""
  try:
    mngr.wait_until_finished()
    mngr.check_for_errors()
  except Exception as e:  # pylint: disable=broad-except
    raise _save_failed(mngr, 'at the end of the run', e) from e
  mngr.close()


def _save_failed(mngr, when: str, error: Exception) -> 'CheckpointError':
  return CheckpointError(
      f'Saving a checkpoint failed {when} ({type(error).__name__}: {error}). The run stops here '
      f'rather than go on unsaved; the complete checkpoints in {mngr.directory} are intact. Fix '
      'the cause (disk space, permissions) and rerun the same command to resume from them.')


class CheckpointError(RuntimeError):
  """A checkpoint could not be written."""


def restore_step(mngr: ocp.CheckpointManager, step: int, abstract_state: Any):
  restored = mngr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
  return restored['state'], restored['meta']


def _resume_manager(path: str) -> tuple[ocp.CheckpointManager, Optional[int]]:
  """A read-only manager for `config.resume`: a checkpoints/ dir, a workdir, or one step dir."""
  p = epath.Path(path)
  if (p / 'checkpoints').exists():
    p = p / 'checkpoints'
  step = None
  if (p / 'state').exists() and p.name.isdigit():  # a single step directory
    step, p = int(p.name), p.parent
  mngr = ocp.CheckpointManager(p, options=ocp.CheckpointManagerOptions(read_only=True),
                               item_names=('state', 'meta'))
  return mngr, step if step is not None else mngr.latest_step()


def restore_or_init(mngr: ocp.CheckpointManager, abstract_state: Any, init_fn: Callable[[], Any],
                    resume: str = '') -> tuple[Any, dict, str]:
  """Returns (state, meta, where-from). `abstract_state` carries the target shardings."""
  step = mngr.latest_step()
  if step is not None:
    state, meta = restore_step(mngr, step, abstract_state)
    return state, meta, f'workdir checkpoint at step {step}'
  if resume:
    other, rstep = _resume_manager(resume)
    if rstep is None:
      raise FileNotFoundError(f'config.resume={resume!r} holds no checkpoint.')
    state, meta = restore_step(other, rstep, abstract_state)
    other.close()
    return state, meta, f'{resume} at step {rstep}'
  logging.info('No checkpoint found: initialising a fresh state.')
  return init_fn(), {}, 'fresh init'
