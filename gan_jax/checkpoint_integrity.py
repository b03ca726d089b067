"""Checkpoint manifests: what makes a saved step committed, and how a damaged one is found.

Orbax does not checksum array files (a few flipped bytes restore silently, a truncated file ends
the restore with a long traceback), so process 0 writes `gan_jax_manifest.json` into each step
directory once Orbax has finished it: the size and CRC-32 of every file. A step without one was
never committed. `checkpoints/GAN_JAX_MANIFESTS` marks a directory whose steps all carry one;
checkpoints written before manifests existed are adopted (their manifests written) on first use.
Only etils.epath calls: the same code runs on local disks and on gs://.
"""

import json
import re
import time
import zlib
from typing import Iterable, Optional

from absl import logging
from etils import epath

MANIFEST = 'gan_jax_manifest.json'
MARKER = 'GAN_JAX_MANIFESTS'
NO_MANIFEST = 'it has no manifest, so its save was interrupted before it was committed'
_CHUNK = 16 << 20


def step_dir(directory: epath.Path, step: int) -> epath.Path:
  return epath.Path(directory) / str(step)


def _crc32(path: epath.Path) -> int:
  crc = 0
  with path.open('rb') as f:
    while chunk := f.read(_CHUNK):
      crc = zlib.crc32(chunk, crc)
  return crc


def _files(root: epath.Path) -> dict:
  """{relative path: {'size', 'crc32'}} of every file under `root` but the manifest."""
  out = {}
  for folder, _, names in root.walk():
    for name in names:
      path = epath.Path(folder) / name
      rel = str(path)[len(str(root)):].lstrip('/')
      if rel != MANIFEST:
        out[rel] = {'size': path.stat().length, 'crc32': _crc32(path)}
  return out


def write_manifest(directory: epath.Path, step: int) -> bool:
  """Commits `step`: writes its manifest unless it has one (True when written)."""
  root = step_dir(directory, step)
  if (root / MANIFEST).exists():
    return False
  marker = epath.Path(directory) / MARKER
  if not marker.exists():
    marker.write_text('Every committed step directory here holds a gan_jax_manifest.json.\n')
  manifest = {'format': 1, 'step': step, 'files': _files(root)}
  tmp = root / (MANIFEST + '.tmp')  # a manifest is either whole or absent
  tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
  tmp.rename(root / MANIFEST)
  return True


def verify(root: epath.Path) -> Optional[str]:
  """None when every file of the step directory `root` matches its manifest; else what is wrong."""
  try:
    manifest = json.loads((root / MANIFEST).read_text())
  except FileNotFoundError:
    return NO_MANIFEST
  except (ValueError, OSError) as e:
    return f'its manifest is unreadable ({e})'
  for rel, want in sorted(manifest['files'].items()):
    path = root / rel
    if not path.exists():
      return f'{rel} is missing'
    size = path.stat().length
    if size != want['size']:
      return f'{rel} is {size} bytes, {want["size"]} when committed (truncated or overwritten)'
    if _crc32(path) != want['crc32']:
      return f'{rel} has changed since it was committed (CRC-32 mismatch)'
  return None


def move_aside(root: epath.Path) -> epath.Path:
  """Moves a step directory to <workdir>/checkpoints.damaged/<step>-<time>; never deletes it.

  A rename where the file system has one; else (e.g. directories on gs://) a copy, then the
  original is removed once the copy is complete."""
  aside_dir = root.parent.parent / f'{root.parent.name}.damaged'
  aside_dir.mkdir(parents=True, exist_ok=True)
  dest = aside_dir / f'{root.name}-{time.strftime("%Y%m%d-%H%M%S")}'
  try:
    root.rename(dest)
  except Exception:  # pylint: disable=broad-except
    for folder, _, names in root.walk():
      rel = str(folder)[len(str(root)):].lstrip('/')
      (dest / rel).mkdir(parents=True, exist_ok=True)
      for name in names:
        (epath.Path(folder) / name).copy(dest / rel / name, overwrite=True)
    root.rmtree()
  return dest


def newest_intact(directory: epath.Path, steps: Iterable[int], move: bool,
                  interrupted: Iterable[str] = ()) -> Optional[int]:
  """The newest step of `directory` that verifies; damaged or uncommitted newer ones are
  reported and, with `move`, moved aside; `interrupted` names the half-written saves Orbax left
  (workdir.report_incomplete), for the count of redone steps. Runs on process 0 only."""
  directory = epath.Path(directory)
  steps = sorted(steps, reverse=True)
  if steps and not (directory / MARKER).exists():
    logging.warning('The checkpoints in %s were written without manifests (by an older gan_jax): '
                    'they are trusted as Orbax finished them%s.', directory,
                    ', and their manifests are written now' if move else '')
    if not move:
      return steps[0]
    for step in steps:
      write_manifest(directory, step)
  lost = [int(m.group(1)) for name in interrupted
          if (m := re.match(r'(\d+)\.orbax-checkpoint-tmp', name))]
  chosen = None
  for step in steps:
    problem = verify(step_dir(directory, step))
    if problem is None:
      chosen = step
      break
    lost.append(step)
    if move:
      dest = move_aside(step_dir(directory, step))
      logging.warning('The checkpoint %s is not usable: %s. Moved it to %s.',
                      step_dir(directory, step), problem, dest)
    else:
      logging.warning('Skipping the checkpoint %s: %s.', step_dir(directory, step), problem)
  if lost and (chosen is None or max(lost) > chosen):
    where = f'step {chosen}, the newest intact checkpoint' if chosen is not None else 'step 0'
    logging.warning('The checkpoint of step %d was not committed or is damaged: resuming from %s, '
                    'so %d steps are redone.', max(lost), where, max(lost) - (chosen or 0))
  return chosen


def release_orbax_waiters() -> None:
  """After a failed save: lets Orbax's background writers go.

  When the step directory cannot be created (read-only or missing parent), Orbax 0.12's writer
  threads keep waiting up to 300 s for a 'directory created' signal that never comes, and hold
  the process open after the run has stopped. Sending that signal makes them fail at once."""
  try:
    from orbax.checkpoint._src.futures import future  # pylint: disable=g-import-not-at-top
    from orbax.checkpoint._src.futures import synchronization  # pylint: disable=g-import-not-at-top
    signals = synchronization.HandlerAwaitableSignal
    future.set_signals([signals.STEP_DIRECTORY_CREATION, signals.ITEM_DIRECTORY_CREATION],
                       operation_id=synchronization.OperationIdGenerator.get_current_operation_id())
  except Exception as e:  # pylint: disable=broad-except  (another Orbax version: best effort)
    logging.warning('Could not release Orbax\'s waiting save threads (%s).', e)
