"""Config validation names the key and what is allowed, before anything runs."""

from pathlib import Path
import re

import ml_collections
import pytest

from gan_jax import config_base
from gan_jax import config_check
from gan_jax import config_compat

REPO = Path(__file__).resolve().parents[1]


def _tiny():
  return config_base.load(str(REPO / 'experiments/fashion_mnist.py') + ':tiny')


def test_the_shipped_configs_pass():
  for name in ('fashion_mnist.py', 'fashion_mnist.py:tiny', 'ffhq.py', 'ffhq.py:256', 'ffhq.py:tiny',
               'ffhq_stylegan.py', 'ffhq_stylegan.py:tiny', 'lfw_faces.py', 'lfw_faces_ada.py',
               'celebahq_progan.py:tiny'):
    config_check.validate(config_base.load(str(REPO / 'experiments' / name)), num_devices=8)
  config_check.validate(config_base.load(str(REPO / 'experiments/celebahq_progan.py')), 1)


def _numeric_leaves(node, prefix=''):
  for key, value in node.items():
    path = f'{prefix}{key}'
    if path in config_compat.RENAMED:  # a deprecated key's placeholder (None once migrated)
      continue
    if isinstance(value, ml_collections.ConfigDict):
      yield from _numeric_leaves(value, path + '.')
    elif node.get_type(key) in (int, float) and not isinstance(value, bool):
      yield path, node.get_type(key)


def test_every_numeric_knob_has_a_range():
  # A knob added to config_base without a line in config_check.NUMBERS would go unchecked.
  leaves = dict(_numeric_leaves(config_base.get_base_config()))
  assert 'augment.target' in leaves and 'optim.adam_eps' in leaves  # the walk sees them all
  assert sorted(leaves) == sorted(config_check.NUMBERS)


@pytest.mark.parametrize('key', sorted(config_check.NUMBERS))
def test_non_finite_and_out_of_range_values_are_refused(key):
  low, high, _ = config_check.NUMBERS[key]
  kind = dict(_numeric_leaves(config_base.get_base_config()))[key]
  bad = []
  if kind is float:
    bad += [float('nan'), float('inf'), float('-inf')]
  for end, step in ((low, -1), (high, 1)):
    if end is not None:
      bound, is_open = (end[0], True) if isinstance(end, tuple) else (end, False)
      bad.append(kind(bound) if is_open else kind(bound + step))
  if key == 'mesh.data':
    bad.append(0)
  assert bad, key  # every knob has a value that must be refused
  section, _, leaf = key.rpartition('.')
  for value in bad:
    config = _tiny()
    (config[section] if section else config)[leaf] = value
    with pytest.raises(config_check.ConfigError, match=f'config.{re.escape(key)}='):
      config_check.validate(config, num_devices=1)


def test_ranges_accept_their_ends():
  assert config_check.in_range(0.0, 0, (1, config_check.OPEN))
  assert not config_check.in_range(1.0, 0, (1, config_check.OPEN))
  assert not config_check.in_range(0.0, (0, config_check.OPEN), None)
  assert config_check.in_range(1e-30, (0, config_check.OPEN), None)
  assert not config_check.in_range(True, 0, 1)  # a bool is not a number here


@pytest.mark.parametrize('key,value,message', [
    ('schedule.batch_size', 0, 'config.schedule.batch_size=0 .*positive integer'),
    ('schedule.batch_size', 12, 'divisible by the 8 devices'),
    ('schedule.kimg', -1.0, 'config.schedule.kimg=-1.0 .*positive finite number'),
    ('schedule.kimg', float('inf'), 'config.schedule.kimg=inf .*positive finite number'),
    ('optim.g_lr', float('inf'), 'config.optim.g_lr=inf .*positive finite learning rate'),
    ('optim.d_lr', 0.0, 'config.optim.d_lr=0.0 .*positive'),
    ('optim.adam_eps', -1.0, 'config.optim.adam_eps=-1.0 .*positive finite epsilon'),
    ('optim.adam_b1', 1.0, r'config.optim.adam_b1=1.0 .*\[0, 1\)'),
    ('ema.kimg', float('inf'), 'config.ema.kimg=inf'),
    ('loss.r1_gamma', -1.0, 'config.loss.r1_gamma=-1.0 .*>= 0'),
    ('log.grid_psi', float('nan'), 'config.log.grid_psi=nan .*finite'),
    ('augment.target', float('nan'), 'config.augment.target=nan'),
    ('mesh.data', 0, 'config.mesh.data=0 .*-1 \\(all devices\\)'),
    ('loss.pl_batch_shrink', 9, 'config.loss.pl_batch_shrink=9 .*at most schedule.batch_size=8'),
    ('loss.r1_gamma', float('nan'), 'config.loss.r1_gamma=nan .*finite number'),
    ('loss.style_mixing_prob', 1.5, r'config.loss.style_mixing_prob=1.5 .*\[0, 1\]'),
    ('optim.adam_b2', 1.0, 'config.optim.adam_b2=1.0 .*below 1'),
    ('checkpoint.every_steps', 0, 'config.checkpoint.every_steps=0'),
    ('model.mbstd_group_size', 3, 'config.model.mbstd_group_size=3 .*dividing schedule.batch_size=8'),
])
def test_impossible_values_are_refused(key, value, message):
  config = _tiny()
  section, leaf = key.split('.')
  config[section][leaf] = value
  with pytest.raises(config_check.ConfigError, match=message):
    config_check.validate(config, num_devices=8)


def test_resolution_must_be_a_power_of_two():
  config_check.validate_resolution(32)
  for bad in (48, 33, 2, 0):
    with pytest.raises(config_check.ConfigError, match='power-of-two'):
      config_check.validate_resolution(bad)


def test_unknown_keys_and_wrong_types_are_refused_by_the_config_itself():
  config = _tiny()
  with pytest.raises(TypeError):
    config.schedule.batch_size = 'eight'
  config.lock()
  with pytest.raises(AttributeError):
    config.train.batchsize = 8
