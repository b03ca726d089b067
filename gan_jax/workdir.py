"""Workdir safety: refuse to mix experiments in one workdir; report incomplete checkpoints.

A workdir's checkpoints belong to the experiment in its config.json. Starting a different one
(another model, dataset or seed) there is refused unless the user says to start over, and then
the old checkpoints are moved aside, never deleted.
"""

import json
import time

from absl import logging
from etils import epath

from gan_jax import config_base
from gan_jax import config_compat

# The config sections whose change makes existing checkpoints another experiment's.
IDENTITY_KEYS = ('model', 'data.name', 'seed')
# Compute precision, not the parameters (they stay float32): a run may resume with other values.
NOT_IDENTITY = ('model.num_bf16_res', 'model.bf16_backends')


class WorkdirError(RuntimeError):
  """The workdir holds another experiment's checkpoints."""


def _get(tree: dict, dotted: str):
  for part in dotted.split('.'):
    tree = tree.get(part, {}) if isinstance(tree, dict) else None
  return tree


def _flatten(prefix: str, value, out: dict) -> None:
  if isinstance(value, dict):
    for k, v in value.items():
      _flatten(f'{prefix}.{k}', v, out)
  else:
    out[prefix] = value


def identity_diff(old: dict, new: dict) -> list[str]:
  """'key: old -> new' for every identity key that differs between two config dicts. Both are
  read in the current layout (`config_compat.upgrade_saved`): a config.json written before a key
  moved or existed names the same experiment as today's config of the same values."""
  base = config_base.get_base_config().to_dict()
  old, new = config_compat.upgrade_saved(old, base), config_compat.upgrade_saved(new, base)
  a, b = {}, {}
  for key in IDENTITY_KEYS:
    _flatten(key, _get(old, key), a)
    _flatten(key, _get(new, key), b)
  return [f'{k}: {a.get(k)!r} -> {b.get(k)!r}' for k in sorted(set(a) | set(b))
          if a.get(k) != b.get(k) and k not in NOT_IDENTITY]


def _step_dirs(ckpt_dir: epath.Path) -> list[epath.Path]:
  return [p for p in ckpt_dir.iterdir() if p.name.isdigit()] if ckpt_dir.exists() else []


def check_compatible(workdir: epath.Path, config, start_over: bool) -> None:
  """Raises WorkdirError when `workdir` holds checkpoints of a different experiment.

  With `start_over`, its checkpoints/ is renamed to checkpoints.replaced-<time> instead.
  """
  ckpt_dir = workdir / 'checkpoints'
  saved = workdir / 'config.json'
  if not _step_dirs(ckpt_dir) or not saved.exists():
    return
  diff = identity_diff(json.loads(saved.read_text()), json.loads(config.to_json_best_effort()))
  if not diff:
    return
  if start_over:
    aside = workdir / f'checkpoints.replaced-{time.strftime("%Y%m%d-%H%M%S")}'
    ckpt_dir.rename(aside)
    logging.warning('Starting over: moved the previous experiment\'s checkpoints to %s.', aside)
    return
  raise WorkdirError(
      f'{workdir} holds checkpoints of a different experiment ({"; ".join(diff)}). Use a new '
      '--workdir, or pass --config.start_over=True to move those checkpoints aside and start '
      'this config from scratch.')


def report_incomplete(workdir: epath.Path) -> list[str]:
  """Names of checkpoint directories a crash left half-written (Orbax's *-tmp-* dirs).

  Orbax writes a checkpoint under a temporary name and renames it when complete, so these are
  never restored from; they are reported here and removed by the checkpoint manager.
  """
  ckpt_dir = workdir / 'checkpoints'
  if not ckpt_dir.exists():
    return []
  names = sorted(p.name for p in ckpt_dir.iterdir() if 'orbax-checkpoint-tmp' in p.name)
  for name in names:
    logging.warning('Ignoring incomplete checkpoint %s (a save was interrupted); resuming from '
                    'the last complete one.', name)
  return names


def record_start(workdir: epath.Path, config, is_main: bool) -> None:
  """Writes the resolved config to config.json (process 0), once a state has been restored or
  initialised: a start that fails (another model's checkpoint, missing data) changes nothing,
  so the command that made the workdir is not then refused as another experiment."""
  if is_main:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / 'config.json').write_text(config.to_json_best_effort(indent=2))
