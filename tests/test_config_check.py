"""Config validation names the key and what is allowed, before anything runs."""

from pathlib import Path

import pytest

from gan_jax import config_base
from gan_jax import config_check

REPO = Path(__file__).resolve().parents[1]


def _tiny():
  return config_base.load(str(REPO / 'experiments/fashion_mnist.py') + ':tiny')


def test_the_shipped_configs_pass():
  for name in ('fashion_mnist.py', 'fashion_mnist.py:tiny', 'ffhq.py', 'ffhq.py:256', 'ffhq.py:tiny'):
    config_check.validate(config_base.load(str(REPO / 'experiments' / name)), num_devices=8)


@pytest.mark.parametrize('key,value,message', [
    ('train.batch_size', 0, 'config.train.batch_size=0 .*positive integer'),
    ('train.batch_size', 12, 'divisible by the 8 devices'),
    ('train.kimg', -1.0, 'config.train.kimg=-1.0 .*positive number'),
    ('train.r1_gamma', float('nan'), 'config.train.r1_gamma=nan .*finite number'),
    ('train.style_mixing_prob', 1.5, r'config.train.style_mixing_prob=1.5 .*\[0, 1\]'),
    ('train.adam_b2', 1.0, 'config.train.adam_b2=1.0 .*below 1'),
    ('checkpoint.every_steps', 0, 'config.checkpoint.every_steps=0'),
    ('model.mbstd_group_size', 3, 'config.model.mbstd_group_size=3 .*dividing train.batch_size=8'),
])
def test_impossible_values_are_refused(key, value, message):
  config = _tiny()
  section, leaf = key.split('.')
  config[section][leaf] = value
  with pytest.raises(config_check.ConfigError, match=message):
    config_check.validate(config, num_devices=8)


def test_resolution_must_be_a_power_of_two():
  config_check.validate_resolution(32)
  with pytest.raises(config_check.ConfigError, match='power-of-two'):
    config_check.validate_resolution(48)


def test_unknown_keys_and_wrong_types_are_refused_by_the_config_itself():
  config = _tiny()
  with pytest.raises(TypeError):
    config.train.batch_size = 'eight'
  config.lock()
  with pytest.raises(AttributeError):
    config.train.batchsize = 8
