"""The keys that moved when the config was split into sections (issue 17), and their migration.

The old keys keep working for one release. The base config holds each one as a placeholder of
value None (typed, so `--config.train.r1_gamma=1` still parses); `migrate` moves every old key
that was set to its new place, logs one warning per key naming the new key, and puts the
placeholder back to None. Configs are migrated (`config_base.migrate`) where they are loaded
(gan_jax.main, gan_jax.aot, `config_base.load`) and again, idempotently, when training starts.

When an old key and its new key are both set to different values, which one wins:
  * set on the command line (or in `config_base.load`'s overrides) beats set in the file;
  * both on the command line, or both in the file: RenamedKeyError names the two keys.
"Set in the file" for a new key means: different from the base config's default.

`upgrade_saved` applies the same moves to a config.json written before the split, so that a
resumed old run is recognised as the same experiment (gan_jax.workdir).
"""

import copy
from typing import Iterable, Optional

from absl import logging
import ml_collections

# old key -> new key. Keep until the release after the split; then drop the old keys.
RENAMED = {
    'train.batch_size': 'schedule.batch_size',
    'train.kimg': 'schedule.kimg',
    'train.max_steps': 'schedule.max_steps',
    'train.g_lr': 'optim.g_lr',
    'train.d_lr': 'optim.d_lr',
    'train.adam_b1': 'optim.adam_b1',
    'train.adam_b2': 'optim.adam_b2',
    'train.adam_eps': 'optim.adam_eps',
    'train.loss': 'loss.name',
    'train.r1_gamma': 'loss.r1_gamma',
    'train.r1_interval': 'loss.r1_interval',
    'train.pl_weight': 'loss.pl_weight',
    'train.pl_interval': 'loss.pl_interval',
    'train.pl_decay': 'loss.pl_decay',
    'train.pl_batch_shrink': 'loss.pl_batch_shrink',
    'train.style_mixing_prob': 'loss.style_mixing_prob',
    'train.wgan_lambda': 'loss.wgan_lambda',
    'train.wgan_target': 'loss.wgan_target',
    'train.wgan_drift': 'loss.wgan_drift',
    'train.ema_kimg': 'ema.kimg',
    'train.ema_rampup': 'ema.rampup',
    'train.w_avg_beta': 'model.w_avg_beta',
    'progressive.enabled': 'schedule.growing.grow',
    'progressive.start_resolution': 'schedule.growing.start_resolution',
    'progressive.fade_kimg': 'schedule.growing.fade_kimg',
    'progressive.stabilize_kimg': 'schedule.growing.stabilize_kimg',
    'progressive.batch_sizes': 'schedule.growing.batch_sizes',
    'progressive.default_batch_size': 'schedule.batch_size',
    'progressive.reset_optimizer': 'schedule.growing.reset_optimizer',
}
# Migrated in this order: growing first (the meaning of train.loss and of the two batch keys
# depends on it).
_ORDER = sorted(RENAMED, key=lambda k: (not k.startswith('progressive.'), k))


class RenamedKeyError(ValueError):
  """An old key and its new key were both set, to different values."""


def _get(tree, dotted: str, default=None):
  for part in dotted.split('.'):
    if not hasattr(tree, 'get'):
      return default
    tree = tree.get(part, None)
    if tree is None:
      return default
  return tree


def _set(config, dotted: str, value) -> None:
  *parents, leaf = dotted.split('.')
  node = config
  for part in parents:
    node = node[part]
  node[leaf] = value


def add_placeholders(config: ml_collections.ConfigDict) -> None:
  """Adds every old key as None, typed as its new key (which must already be in `config`)."""
  for old, new in RENAMED.items():
    *parents, leaf = old.split('.')
    node = config
    for part in parents:
      if part not in node:
        node[part] = ml_collections.ConfigDict()
      node = node[part]
    node[leaf] = ml_collections.FieldReference(None, field_type=type(_get(config, new)))


def _old_loss(value: str, growing: bool) -> str:
  """train.loss -> loss.name: 'nonsaturating' without growing trained StyleGAN2's step."""
  return 'stylegan2' if value == 'nonsaturating' and not growing else value


def _drop_unused_batch(config) -> None:
  """Both old batch keys set, differently: keep the one the run used (the growing loop read
  progressive.default_batch_size, the fixed-resolution one train.batch_size), drop the other."""
  fixed, growing = _get(config, 'train.batch_size'), _get(config, 'progressive.default_batch_size')
  if fixed is None or growing is None or fixed == growing:
    return
  grow = _get(config, 'progressive.enabled', config.schedule.growing.grow)
  unused, used = ('train.batch_size', 'progressive.default_batch_size') if grow else (
      'progressive.default_batch_size', 'train.batch_size')
  logging.warning("config.%s is deprecated: use config.schedule.batch_size; its value %r is "
                  "dropped (the run's batch was config.%s=%r).", unused, _get(config, unused),
                  used, _get(config, used))
  _set(config, unused, None)


def migrate(config: ml_collections.ConfigDict, base: ml_collections.ConfigDict,
            overrides: Optional[Iterable[str]] = None) -> ml_collections.ConfigDict:
  """Moves every old key that is set to its new key (in place; returns `config`).
  `config_base.migrate` calls it with the base config.

  Args:
    config: a config built from `config_base.get_base_config()`.
    base: the base config (its values are the defaults: a new key that differs was set).
    overrides: the dotted keys set on the command line (config_flags.get_override_values), or in
      `config_base.load`'s overrides; they win over values set in the experiment file.
  Raises:
    RenamedKeyError: an old and a new key set to different values at the same level.
  """
  overrides = set(overrides or ())
  _drop_unused_batch(config)
  moved = {}
  for old in _ORDER:
    value = _get(config, old)
    if value is None:
      continue
    new = RENAMED[old]
    if old == 'train.loss':
      value = _old_loss(value, bool(config.schedule.growing.grow))
    current, default = _get(config, new), _get(base, new)
    old_cli, new_cli = old in overrides, new in overrides
    if current != value and ((old_cli and new_cli) or
                             (not old_cli and not new_cli and current != default)):
      raise RenamedKeyError(
          f'config.{old}={value!r} and config.{new}={current!r} are both set: config.{old} is '
          f'the deprecated name of config.{new}; set only config.{new}.')
    if new_cli and not old_cli and current != value:
      logging.warning('config.%s is deprecated: use config.%s; its value %r is dropped '
                      '(--config.%s=%r wins).', old, new, value, new, current)
    else:
      logging.warning('config.%s is deprecated: use config.%s; moved its value there.', old, new)
      _set(config, new, value)
    moved[old] = value
    _set(config, old, None)
  if (moved.get('progressive.enabled') is False and config.loss.name == 'nonsaturating'):
    # The fixed-resolution run of a StyleGAN recipe trained StyleGAN2's step (see steps.py).
    logging.warning("config.progressive.enabled=False with config.loss.name='nonsaturating': "
                    "trains StyleGAN2's step at a fixed resolution, as before; say "
                    "config.loss.name='stylegan2' with config.schedule.growing.grow=False.")
    config.loss.name = 'stylegan2'
  return config


def upgrade_saved(saved: dict, base: dict) -> dict:
  """A config.json's dict (from any version) in the current layout: old keys moved to their new
  place (the new key wins when both are there), keys it lacks filled with those of `base` (the
  base config's dict: a key added later defaults to the earlier behaviour)."""
  saved = copy.deepcopy(saved)
  for old in _ORDER:
    value = _get(saved, old)
    if value is None or _get(saved, RENAMED[old]) is not None:
      continue
    growing = bool(_get(saved, 'progressive.enabled', False))
    if (old == 'train.batch_size' and growing) or (
        old == 'progressive.default_batch_size' and not growing):
      continue  # the batch key the run did not use
    if old == 'train.loss':
      value = _old_loss(value, growing)
    *parents, leaf = RENAMED[old].split('.')
    node = saved
    for part in parents:
      node = node.setdefault(part, {})
    node[leaf] = value
  return _fill(saved, base)


def _fill(tree: dict, defaults: dict) -> dict:
  for key, default in defaults.items():
    if isinstance(default, dict):
      tree[key] = _fill(tree.get(key) if isinstance(tree.get(key), dict) else {}, default)
    elif tree.get(key) is None:
      tree[key] = default
  return tree
