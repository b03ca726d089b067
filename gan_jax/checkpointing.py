"""Orbax checkpoints of the full GANState: save every N steps, keep N, restore-or-init.

Restore order: the workdir's newest intact checkpoint, else `config.resume`, else a fresh state.

A checkpoint counts as committed once Orbax has finished writing it and process 0 has written
its manifest (`gan_jax_manifest.json` in the step directory: size and CRC-32 of every file).
Saves are asynchronous, so the manifest of a step is written when the next save starts, at a
tick after the save finished (`commit_if_done`), or by `commit` (at a stop request and at the
end). Restores verify the manifest first: a damaged checkpoint (a file missing, truncated or
altered) or an uncommitted one is reported, moved to `checkpoints.damaged/`, never deleted, and
the next older intact one is used. Everything is done with etils.epath, so the same code runs on
local disks and on gs://. The integrity checks live in `checkpoint_integrity`.
"""

from absl import logging
from typing import Any, Callable, Optional, Sequence

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from gan_jax import checkpoint_integrity as integrity


class CheckpointError(RuntimeError):
  """A checkpoint could not be written, or none of those asked for can be restored."""


class DamagedCheckpointError(CheckpointError):
  """The checkpoint asked for (config.resume) is damaged or was never committed."""


class ResumeNotFoundError(CheckpointError):
  """config.resume names no directory, or one that holds no checkpoint."""


class ArchitectureMismatchError(CheckpointError):
  """The checkpoint holds another model's arrays (other names or shapes) than the config."""


def workdir_and_step(path: epath.Path) -> tuple[Optional[epath.Path], Optional[int]]:
  """(workdir, step) for a workdir, its checkpoints/ dir or one checkpoints/<step> dir; else
  (None, None) (the tools and config.init name a run's checkpoint these three ways)."""
  if (path / 'checkpoints').is_dir():
    return path, None
  if path.name == 'checkpoints' and (path.parent / 'config.json').exists():
    return path.parent, None
  if path.name.isdigit() and path.parent.name == 'checkpoints':
    return path.parent.parent, int(path.name)
  return None, None


def manager(workdir: str, checkpoint_config) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
      max_to_keep=checkpoint_config.keep, create=True, enable_async_checkpointing=True,
      cleanup_tmp_directories=True)  # half-written saves of a crashed run (reported first)
  return ocp.CheckpointManager(epath.Path(workdir) / 'checkpoints', options=options,
                               item_names=('state', 'meta'))


def save(mngr: ocp.CheckpointManager, state: Any, meta: dict, force: bool = False) -> bool:
  """Starts an (asynchronous) save of `state` at its step; `meta` is small JSON (kimg, ...).

  The previous save is committed first (Orbax waits for it anyway before starting the next)."""
  step = int(jax.device_get(state.step))
  commit(mngr)
  try:
    saved = mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                   meta=ocp.args.JsonSave(meta)), force=force)
  except Exception as e:  # pylint: disable=broad-except
    integrity.release_orbax_waiters()
    raise _save_failed(mngr, f'at step {step}', e) from e
  return saved


def commit(mngr: ocp.CheckpointManager) -> Optional[int]:
  """Waits for the running save, then makes it committed (its manifest); returns the newest
  committed step. Raises CheckpointError, at once, if the save failed."""
  try:
    mngr.wait_until_finished()
    mngr.check_for_errors()
  except Exception as e:  # pylint: disable=broad-except
    integrity.release_orbax_waiters()
    raise _save_failed(mngr, 'in the background', e) from e
  step = mngr.latest_step()
  if step is not None and jax.process_index() == 0:
    try:
      integrity.write_manifest(mngr.directory, step)
    except Exception as e:  # pylint: disable=broad-except
      raise _save_failed(mngr, f'at step {step} (writing its manifest)', e) from e
  return step


def commit_if_done(mngr: ocp.CheckpointManager) -> None:
  """Commits a finished asynchronous save without waiting for a running one (at a tick): the
  window in which a kill loses a checkpoint Orbax already wrote stays short. Single-process runs
  only: a failed save raised here on one process would leave the others in their next collective;
  with several processes the next save, the stop or the end commits, on every process together."""
  if jax.process_count() == 1 and not mngr.is_saving_in_progress():
    commit(mngr)


def commit_after_error(mngr: ocp.CheckpointManager, error: Exception) -> None:
  """Commits the save in flight when the loop fails for another reason (bad data, ...): it holds
  good weights, and an uncommitted one would be set aside at the next start. Not after a failed
  save, nor on a third Ctrl-C (KeyboardInterrupt, not an Exception), which means stop now."""
  if isinstance(error, CheckpointError):
    return
  try:
    commit(mngr)
  except CheckpointError as e:
    logging.error('%s', e)


def finish(mngr: ocp.CheckpointManager) -> None:
  """Commits the last asynchronous save and raises CheckpointError if any save failed."""
  commit(mngr)
  mngr.close()


def _save_failed(mngr, when: str, error: Exception) -> CheckpointError:
  return CheckpointError(
      f'Saving a checkpoint in {mngr.directory} failed {when} ({type(error).__name__}: '
      f'{error}). The run stops here rather than go on unsaved; the committed checkpoints there '
      'are intact. Fix the cause (disk space, permissions) and rerun the same command to resume '
      'from them.')


def restore_step(mngr: ocp.CheckpointManager, step: int, abstract_state: Any):
  """(state, meta) of `step`; ArchitectureMismatchError when its arrays are not the config's."""
  step_dir = integrity.step_dir(mngr.directory, step)
  check_architecture(step_dir, abstract_state)
  try:
    restored = mngr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
  except Exception as e:  # pylint: disable=broad-except
    raise CheckpointError(
        f'Restoring {step_dir} failed ({type(e).__name__}: {str(e).splitlines()[0][:300]}). '
        'Move that step directory aside to resume from an older checkpoint.') from e
  return restored['state'], restored['meta']


def _names_and_shapes(tree) -> dict:
  flat = ocp.tree.to_flat_dict(tree, sep='/')
  return {k: tuple(getattr(v, 'shape', ())) for k, v in flat.items()}


def check_architecture(step_dir: epath.Path, abstract_state: Any) -> None:
  """Raises ArchitectureMismatchError when the arrays saved in `step_dir` differ in names or
  shapes from `abstract_state` (Orbax would fail with a long traceback, or silently crop)."""
  try:
    saved = ocp.StandardCheckpointHandler().metadata(step_dir / 'state')
    saved = _names_and_shapes(getattr(saved, 'tree', saved))
    expected = _names_and_shapes(ocp.tree.serialize_tree(abstract_state))
  except Exception as e:  # pylint: disable=broad-except
    logging.warning('Could not compare %s with the config\'s arrays (%s); restoring anyway.',
                    step_dir, e)
    return
  differ = [f'{k} {saved[k]} saved vs {expected[k]} here' for k in sorted(saved.keys() & expected)
            if saved[k] != expected[k]]
  missing = sorted(expected.keys() - saved.keys())
  extra = sorted(saved.keys() - expected.keys())
  if not (differ or missing or extra):
    return
  parts = []
  if differ:
    parts.append(f'{len(differ)} arrays differ in shape, e.g. {differ[0]}')
  if missing:
    parts.append(f'{len(missing)} arrays are missing, e.g. {missing[0]}')
  if extra:
    parts.append(f'{len(extra)} arrays are not in this model, e.g. {extra[0]}')
  raise ArchitectureMismatchError(
      f'The checkpoint {step_dir} holds another architecture than this config ('
      f'{"; ".join(parts)}). Resume it with the config it was trained with (its workdir\'s '
      'config.json), or start this config in a new --workdir without --config.resume.')


def _agree(value: int) -> int:
  """Process 0's value on every process (-2: process 0 failed)."""
  if jax.process_count() == 1:
    return value
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return int(multihost_utils.broadcast_one_to_all(np.int32(value)))


def latest_intact(mngr: ocp.CheckpointManager, move_aside: bool = True,
                  interrupted: Sequence[str] = ()) -> Optional[int]:
  """The newest step that verifies against its manifest, the same on every process.

  Process 0 checks the steps newest first; each damaged or uncommitted one is reported and (with
  `move_aside`) moved to checkpoints.damaged/. `interrupted` names the saves a crash left
  half-written (reported before Orbax removed them): the log says how many steps are redone."""
  step = -2
  if jax.process_index() == 0:
    try:
      step = integrity.newest_intact(mngr.directory, mngr.all_steps(), move_aside, interrupted)
    finally:
      step = _agree(-1 if step is None else step)
  else:
    step = _agree(-2)
  if step == -2:
    raise CheckpointError(f'Process 0 could not check the checkpoints in {mngr.directory}; '
                          'its log says why.')
  mngr.reload()  # steps may have been moved aside
  return None if step < 0 else step


def read_only_manager(checkpoints: epath.Path) -> ocp.CheckpointManager:
  """A manager that reads a checkpoints/ directory and never writes to it (tools, resume)."""
  return ocp.CheckpointManager(epath.Path(checkpoints),
                               options=ocp.CheckpointManagerOptions(read_only=True),
                               item_names=('state', 'meta'))


def restore_parts(checkpoints: epath.Path, keys: Sequence[str], step: Optional[int] = None
                  ) -> tuple[dict, int]:
  """({key: subtree as numpy} of the state's top-level `keys`, step) of a checkpoints/ directory's
  newest step (or `step`), restored without a model to build the target from (its shapes come
  from the checkpoint's metadata) and checked against its manifest first (a damaged step is an
  error here: tools never move anything)."""
  mngr = ocp.CheckpointManager(
      epath.Path(checkpoints), options=ocp.CheckpointManagerOptions(read_only=True),
      item_handlers={'state': ocp.PyTreeCheckpointHandler(), 'meta': ocp.JsonCheckpointHandler()})
  try:
    steps = mngr.all_steps()
    if not steps:
      raise FileNotFoundError(f'{checkpoints} holds no checkpoint')
    step = max(steps) if step is None else int(step)
    if step not in steps:
      raise FileNotFoundError(f'{checkpoints} has no step {step} (steps: {sorted(steps)})')
    legacy = not (epath.Path(mngr.directory) / integrity.MARKER).exists()  # before manifests
    problem = None if legacy else integrity.verify(integrity.step_dir(mngr.directory, step))
    if problem:
      raise DamagedCheckpointError(f'{checkpoints}/{step} is not usable: {problem}. Pick another '
                                   f'step (steps: {sorted(steps)}).')
    tree = mngr.item_metadata(step)['state'].tree
    target = {k: jax.tree_util.tree_map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), tree[k])
              for k in keys}
    restore_args = jax.tree_util.tree_map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray),
                                          target)
    restored = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
        item=target, restore_args=restore_args, partial_restore=True)))['state']
  finally:
    mngr.close()
  return {k: restored[k] for k in keys}, step


def read_meta(checkpoints: epath.Path, step: int) -> dict:
  """The JSON meta saved with a step (step, kimg, nimg; stage and alpha of growing runs)."""
  mngr = read_only_manager(checkpoints)
  try:
    return mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta'] or {}
  finally:
    mngr.close()


def _resume_manager(path: str) -> tuple[ocp.CheckpointManager, Optional[int]]:
  """A read-only manager for `config.resume`: a checkpoints/ dir, a workdir, or one step dir;
  and the step asked for (None: the newest intact one)."""
  p = epath.Path(path)
  if not p.exists():
    raise ResumeNotFoundError(
        f'config.resume={path!r} does not exist. Give a workdir, its checkpoints/ directory or '
        'one step directory in it, or leave config.resume empty to start fresh.')
  if (p / 'checkpoints').exists():
    p = p / 'checkpoints'
  step = None
  if (p / 'state').exists() and p.name.isdigit():  # a single step directory
    step, p = int(p.name), p.parent
  return read_only_manager(p), step


def _restore_resume(resume: str, abstract_state: Any) -> tuple[Any, dict, str]:
  other, step = _resume_manager(resume)
  try:
    if step is None:
      step = latest_intact(other, move_aside=False)
      if step is None:
        raise ResumeNotFoundError(
            f'config.resume={resume!r} holds no intact checkpoint (see the warnings above). '
            'Point it at another run, or leave it empty to start fresh.')
    else:
      problem = integrity.verify(integrity.step_dir(other.directory, step))
      if problem and problem != integrity.NO_MANIFEST:  # one step dir: a legacy one is fine
        raise DamagedCheckpointError(
            f'config.resume={resume!r} is damaged: {problem}. Point it at an older step '
            'directory of that run, or at the run\'s checkpoints/ to take its newest intact one.')
    state, meta = restore_step(other, step, abstract_state)
  finally:
    other.close()
  return state, meta, f'{resume} at step {step}'


def restore_or_init(mngr: ocp.CheckpointManager, abstract_state: Any, init_fn: Callable[[], Any],
                    resume: str = '', interrupted: Sequence[str] = ()
                    ) -> tuple[Any, dict, str]:
  """Returns (state, meta, where-from). `abstract_state` carries the target shardings."""
  step = latest_intact(mngr, interrupted=interrupted)
  if step is not None:
    state, meta = restore_step(mngr, step, abstract_state)
    return state, meta, f'workdir checkpoint at step {step}'
  if resume:
    return _restore_resume(resume, abstract_state)
  logging.info('No checkpoint found: initialising a fresh state.')
  return init_fn(), {}, 'fresh init'


def restore_latest(mngr: ocp.CheckpointManager, abstract_state: Any):
  """(state, meta) of the newest intact checkpoint (after waiting for the running save), or None:
  the non-finite rollback, which must not reload a damaged checkpoint either."""
  commit(mngr)
  step = latest_intact(mngr)
  if step is None:
    return None
  return restore_step(mngr, step, abstract_state)
