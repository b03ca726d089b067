"""Issue 17: the config's sections, and the old keys that keep working for one release.

tests/fixtures/config_185dcf3/ holds three experiment files and two config.json files as commit
185dcf3 (before the sections) had them: forks of the old layout must load to the same values as
today's experiments, and a workdir of that commit must resume as the same experiment.
"""

import json
import logging
from pathlib import Path
import subprocess
import sys

from absl import flags
import jax
from ml_collections import config_flags
import numpy as np
import pytest
from etils import epath

from gan_jax import config_base
from gan_jax import config_check
from gan_jax import config_compat
from gan_jax import models
from gan_jax import steps
from gan_jax import workdir as workdir_lib

REPO = Path(__file__).resolve().parents[1]
OLD = REPO / 'tests' / 'fixtures' / 'config_185dcf3'
EXPERIMENTS = ['fashion_mnist.py', 'fashion_mnist.py:tiny', 'fashion_mnist.py:bench32',
               'fashion_mnist.py:nvidia32', 'ffhq.py', 'ffhq.py:256', 'ffhq.py:tiny',
               'ffhq_stylegan.py', 'ffhq_stylegan.py:fmnist', 'ffhq_stylegan.py:tiny',
               'celebahq_progan.py', 'celebahq_progan.py:fmnist', 'celebahq_progan.py:tiny',
               'lfw_faces.py', 'lfw_faces.py:tiny', 'lfw_faces_ada.py', 'lfw_faces_ada.py:tiny']


def _flat(tree, prefix=''):
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_flat(value, f'{prefix}{key}.'))
    else:
      out[f'{prefix}{key}'] = value
  return out


def _current(config) -> dict:
  """The config's values without the deprecated placeholders."""
  return {k: v for k, v in _flat(config.to_dict()).items() if k not in config_compat.RENAMED}


def _warnings(caplog) -> list[str]:
  return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def _parse_cli(spec: str, *overrides: str):
  """The config as gan_jax.main gets it from `--config=spec --config.KEY=VALUE ...`."""
  argv = ['prog', f'--config={REPO / "experiments" / spec}', *overrides]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, flag_values=flag_values, lock_config=True,
                                  sys_argv=argv)
  flag_values(argv)
  return config_base.migrate(flag_values.config,
                             config_flags.get_override_values(flag_values['config']))


def test_every_deprecated_key_maps_to_an_existing_new_key():
  base = config_base.get_base_config()
  new_keys = {}
  for old, new in config_compat.RENAMED.items():
    value = config_compat._get(base, new)
    assert value is not None, (old, new)  # the new key exists, with a default
    section, leaf = old.split('.')
    assert leaf in base[section] and base[section][leaf] is None, old  # the placeholder, unset
    assert base[section].get_type(leaf) is type(value), old  # typed as the new key
    new_keys.setdefault(new, []).append(old)
  # Only the batch has two old names (train.batch_size, progressive.default_batch_size).
  assert {n: o for n, o in new_keys.items() if len(o) > 1} == {
      'schedule.batch_size': ['train.batch_size', 'progressive.default_batch_size']}
  # What stays in config.train is the step's mechanics (and which layers it freezes).
  kept = {k for k in base.train if f'train.{k}' not in config_compat.RENAMED}
  assert kept == {'remat', 'nonfinite_action', 'max_rollbacks', 'freeze_d', 'freeze_g_mapping',
                  'freeze_g_res'}


@pytest.mark.parametrize('spec', EXPERIMENTS)
def test_every_experiment_loads_and_validates_with_no_old_key_set(spec):
  config = config_base.load(str(REPO / 'experiments' / spec))
  config_check.validate(config, 1 if spec == 'celebahq_progan.py' else 8)
  assert all(config_compat._get(config, old) is None for old in config_compat.RENAMED)
  assert config.data.source_dir == ''  # the builders' own defaults
  assert steps.name_for(config) == config.loss.name


def test_old_key_on_the_command_line_moves_with_a_warning(caplog):
  caplog.set_level(logging.WARNING)
  config = _parse_cli('fashion_mnist.py:tiny', '--config.train.r1_gamma=0.5',
                      '--config.train.kimg=3', '--config.progressive.reset_optimizer=False')
  assert config.loss.r1_gamma == 0.5 and config.schedule.kimg == 3.0
  assert config.schedule.growing.reset_optimizer is False
  assert config.train.r1_gamma is None and config.train.kimg is None
  assert sorted(_warnings(caplog)) == [
      'config.progressive.reset_optimizer is deprecated: use '
      'config.schedule.growing.reset_optimizer; moved its value there.',
      'config.train.kimg is deprecated: use config.schedule.kimg; moved its value there.',
      'config.train.r1_gamma is deprecated: use config.loss.r1_gamma; moved its value there.']
  # The command line beats the file: fashion_mnist.py sets loss.r1_gamma = 1.0 itself.
  assert config_base.load(str(REPO / 'experiments/fashion_mnist.py:tiny')).loss.r1_gamma == 1.0
  config_base.migrate(config)  # idempotent: nothing left to move, nothing warned
  assert len(_warnings(caplog)) == 3


def test_both_keys_on_the_command_line_must_agree():
  with pytest.raises(config_compat.RenamedKeyError,
                     match=r'config.train.r1_gamma=0.5 and config.loss.r1_gamma=2.0 are both set'):
    _parse_cli('fashion_mnist.py:tiny', '--config.train.r1_gamma=0.5',
               '--config.loss.r1_gamma=2')
  same = _parse_cli('fashion_mnist.py:tiny', '--config.train.r1_gamma=2',
                    '--config.loss.r1_gamma=2')
  assert same.loss.r1_gamma == 2.0


def test_new_key_on_the_command_line_beats_an_old_key_in_a_forked_file(tmp_path, caplog):
  caplog.set_level(logging.WARNING)
  fork = tmp_path / 'fork.py'
  fork.write_text('from gan_jax import config_base\n\ndef get_config():\n'
                  '  config = config_base.get_base_config()\n'
                  '  config.train.g_lr = 0.01\n  return config\n')
  config = config_base.load(str(fork), {'optim.g_lr': 0.003})
  assert config.optim.g_lr == 0.003 and config.train.g_lr is None
  assert _warnings(caplog) == ['config.train.g_lr is deprecated: use config.optim.g_lr; its value '
                               '0.01 is dropped (--config.optim.g_lr=0.003 wins).']


def test_a_forked_file_that_sets_both_keys_differently_is_refused(tmp_path):
  fork = tmp_path / 'fork.py'
  fork.write_text('from gan_jax import config_base\n\ndef get_config():\n'
                  '  config = config_base.get_base_config()\n'
                  '  config.optim.g_lr = 0.001\n  config.train.g_lr = 0.01\n  return config\n')
  with pytest.raises(config_compat.RenamedKeyError,
                     match='config.train.g_lr=0.01 and config.optim.g_lr=0.001 are both set: '
                           'config.train.g_lr is the deprecated name of config.optim.g_lr'):
    config_base.load(str(fork))


def test_the_cli_names_both_keys_in_one_line(tmp_path):
  result = subprocess.run(
      [sys.executable, '-m', 'gan_jax.main', f'--config={REPO}/experiments/fashion_mnist.py:tiny',
       '--config.train.r1_gamma=0.5', '--config.loss.r1_gamma=2', f'--workdir={tmp_path}/w'],
      capture_output=True, text=True, cwd=REPO, timeout=300)
  assert result.returncode == 2, result.stderr[-2000:]
  assert result.stderr.strip().splitlines()[-1] == (
      'error: config.train.r1_gamma=0.5 and config.loss.r1_gamma=2.0 are both set: '
      'config.train.r1_gamma is the deprecated name of config.loss.r1_gamma; set only '
      'config.loss.r1_gamma.')
  assert not (tmp_path / 'w').exists()


@pytest.mark.parametrize('spec', ['fashion_mnist.py', 'fashion_mnist.py:tiny',
                                  'fashion_mnist.py:nvidia32', 'ffhq_stylegan.py',
                                  'ffhq_stylegan.py:fmnist', 'ffhq_stylegan.py:tiny',
                                  'celebahq_progan.py', 'celebahq_progan.py:fmnist'])
def test_old_experiment_files_load_to_todays_values(spec, caplog):
  caplog.set_level(logging.WARNING)
  name, _, variant = spec.partition(':')
  old = config_base.load(str(OLD / name) + (f':{variant}' if variant else ''))
  new = config_base.load(str(REPO / 'experiments' / spec))
  assert _warnings(caplog) and all('is deprecated: use config.' in w  # every moved key said so
                                   for w in _warnings(caplog))
  got, want = _current(old), _current(new)
  del got['data.source_dir'], want['data.source_dir']  # the old base named Fashion-MNIST's
  assert got == want
  config_check.validate(old, 1 if spec == 'celebahq_progan.py' else 8)


def test_old_growing_flag_off_keeps_training_stylegan2s_step(caplog):
  config = _parse_cli('ffhq_stylegan.py:tiny', '--config.progressive.enabled=False')
  assert not config.schedule.growing.grow and config.loss.name == 'stylegan2'
  config_check.validate(config, 8)
  # The new keys say it themselves; the step of a growing run at a fixed resolution is refused.
  config = _parse_cli('ffhq_stylegan.py:tiny', '--config.schedule.growing.grow=False')
  with pytest.raises(config_check.ConfigError, match="config.loss.name='nonsaturating'"):
    config_check.validate(config, 8)


def test_with_growing_schedule_batch_size_is_the_batch_of_the_unlisted_resolutions():
  from gan_jax import schedule as schedule_lib  # pylint: disable=g-import-not-at-top
  config = config_base.load(str(REPO / 'experiments/celebahq_progan.py:tiny'),
                            {'schedule.batch_size': 4})
  assert schedule_lib.Schedule(config, 32).batch_sizes() == {4: 4, 8: 4, 16: 4, 32: 8}


def _old_workdir(tmp_path, name):
  (tmp_path / 'checkpoints' / '5' / 'state').mkdir(parents=True)
  (tmp_path / 'config.json').write_text((OLD / f'{name}.config.json').read_text())
  return epath.Path(tmp_path)


@pytest.mark.parametrize('name, spec', [('fashion_mnist_tiny', 'fashion_mnist.py:tiny'),
                                        ('ffhq_stylegan_tiny', 'ffhq_stylegan.py:tiny')])
def test_a_workdir_of_the_old_layout_resumes_as_the_same_experiment(tmp_path, name, spec):
  workdir = _old_workdir(tmp_path, name)
  saved = json.loads((tmp_path / 'config.json').read_text())
  assert 'w_avg_beta' not in saved['model'] and saved['train']['w_avg_beta'] == 0.995
  config = config_base.load(str(REPO / 'experiments' / spec))
  workdir_lib.check_compatible(workdir, config, start_over=False)  # no error
  config.model.w_avg_beta = 0.99
  with pytest.raises(workdir_lib.WorkdirError, match=r'model.w_avg_beta: 0.995 -> 0.99'):
    workdir_lib.check_compatible(workdir, config, start_over=False)


def test_upgrade_saved_moves_the_old_keys_of_a_config_json():
  saved = json.loads((OLD / 'ffhq_stylegan_tiny.config.json').read_text())
  base = config_base.get_base_config().to_dict()
  up = config_compat.upgrade_saved(saved, base)
  assert up['schedule']['growing']['grow'] is True and up['loss']['name'] == 'nonsaturating'
  assert up['schedule']['batch_size'] == saved['progressive']['default_batch_size'] == 8
  assert up['model']['w_avg_beta'] == 0.995 and up['ema']['kimg'] == saved['train']['ema_kimg']
  fixed = config_compat.upgrade_saved(json.loads(
      (OLD / 'fashion_mnist_tiny.config.json').read_text()), base)
  assert fixed['loss']['name'] == 'stylegan2' and fixed['schedule']['batch_size'] == 8


@pytest.mark.parametrize('name', ['stylegan2', 'stylegan'])
def test_model_w_avg_beta_drives_the_tracked_average(name):
  config = config_base.get_base_config()
  m = config.model
  m.name, m.z_dim, m.w_dim, m.mapping_layers, m.channel_base, m.channel_max = name, 8, 8, 1, 64, 8
  z = jax.random.normal(jax.random.PRNGKey(1), (4, 8))
  got = {}
  for beta in (0.995, 0.5):
    m.w_avg_beta = beta
    G, _ = models.build(m, 8, 1, 0)
    assert G.w_avg_beta == beta
    variables = G.init({'params': jax.random.PRNGKey(0)}, z, None, noise_mode='const')
    ws, mutated = G.apply(variables, z, None, update_w_avg=True, method='map',
                          mutable=['buffers'])
    # From w_avg 0: lerp(mean, 0, beta) = (1 - beta) * mean of the batch's w.
    mean = np.asarray(ws[:, 0], np.float64).mean(axis=0)
    got[beta] = np.asarray(mutated['buffers']['mapping']['w_avg'])
    np.testing.assert_allclose(got[beta], (1 - beta) * mean, rtol=1e-4, atol=1e-6)
  assert np.abs(got[0.5] - got[0.995]).max() > 10 * np.abs(got[0.995]).max()


def test_the_checked_loss_names_are_the_registrys():
  assert set(config_check.LOSSES) == set(steps.REGISTRY)
  assert set(config_check.GROWING_LOSSES) < set(steps.REGISTRY)


def test_an_experiment_that_loads_another_keeps_its_own_globals(tmp_path):
  """ml_collections executes a config file into an existing module of the same name: an
  experiment that loads a base experiment with config_base.load, then calls a helper of its own,
  must get its own helper (not the base file's), whether it is loaded by --config or by load."""
  (tmp_path / 'base.py').write_text(
      'from gan_jax import config_base\n'
      'def tweak(config):\n  config.seed = 1\n  return config\n'
      'def get_config(variant=""):\n  return config_base.get_base_config()\n')
  (tmp_path / 'child.py').write_text(
      'from pathlib import Path\nfrom gan_jax import config_base\n'
      'def tweak(config):\n  config.seed = 7\n  return config\n'
      'def get_config(variant=""):\n'
      '  config = config_base.load(str(Path(__file__).with_name("base.py")))\n'
      '  return tweak(config)\n')
  assert config_base.load(str(tmp_path / 'child.py')).seed == 7
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, flag_values=flag_values)
  flag_values(['prog', f'--config={tmp_path / "child.py"}'])
  assert flag_values.config.seed == 7
