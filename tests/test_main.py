"""The command line: config files and variants, overrides, and a real `python -m gan_jax.main`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gan_jax import config_base
from gan_jax import train
from tests.fake_data import write_fake_fashion_mnist
from tests.test_train import PLAIN, cli_flags

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(p.name for p in (REPO / 'experiments').glob('*.py'))


@pytest.mark.parametrize('name', EXPERIMENTS)
def test_every_experiment_has_a_tiny_variant_for_the_cpu(name):
  config = config_base.load(str(REPO / 'experiments' / name))
  tiny = config_base.load(str(REPO / 'experiments' / name) + ':tiny')
  assert tiny.schedule.batch_size % 8 == 0, 'runs on 1, 2, 4 or 8 devices'
  assert tiny.data.name in ('fashion_mnist_local', 'lfw_faces'), 'tiny variants use embedded data'
  assert train.total_steps(tiny) <= 20
  assert config.schedule.kimg > tiny.schedule.kimg
  with pytest.raises(Exception, match='Unknown variant'):
    config_base.load(str(REPO / 'experiments' / name) + ':nonsense')


def test_ffhq_is_config_f():
  config = config_base.load(str(REPO / 'experiments/ffhq.py'))
  assert config.data.name == 'ffhq/1024'
  assert (config.model.channel_base, config.model.channel_max) == (32768, 512)
  assert config.model.mapping_layers == 8 and config.loss.r1_gamma == 10
  assert config_base.load(str(REPO / 'experiments/ffhq.py') + ':256').data.name == 'ffhq/256'


def test_main_trains_resumes_and_writes_the_resolved_config(tmp_path):
  src = write_fake_fashion_mnist(tmp_path / 'src', n_train=24, n_test=8)
  workdir = tmp_path / 'run'
  # A relative --workdir, as users type it (Orbax itself needs absolute paths).
  cmd = [sys.executable, '-m', 'gan_jax.main', '--config',
         str(REPO / 'experiments/fashion_mnist.py') + ':tiny', '--workdir', 'run', f'--config.data.source_dir={src}',
         f'--config.data.data_dir={tmp_path / "tfds"}', '--config.train.max_steps=2',  # old key
         '--config.checkpoint.every_steps=1', '--config.log.every_steps=1',
         # As tests/test_guard.py's runs (no lazy regulariser: one step variant), so the compiled
         # step comes from the shared cache.
         '--config.mesh.data=1', '--config.loss.style_mixing_prob=0.5',
         '--config.ema.rampup=0.0', '--config.ema.kimg=0.02', *cli_flags(PLAIN)]
  env = dict(os.environ, PYTHONPATH=str(REPO))
  out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'step 2  kimg 0.02  sec/kimg' in out.stderr and 'ETA' in out.stderr
  assert ('config.train.max_steps is deprecated: use config.schedule.max_steps; moved its value '
          'there.') in out.stderr  # issue 17: a renamed key keeps working for one release
  saved = json.loads((workdir / 'config.json').read_text())
  assert saved['schedule']['max_steps'] == 2  # the override reached the run
  assert saved['train']['max_steps'] is None
  assert (workdir / 'checkpoints' / '2').is_dir()
  # The same command with a longer budget continues from step 2 instead of starting over.
  cmd[cmd.index('--config.train.max_steps=2')] = '--config.schedule.max_steps=3'
  out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'workdir checkpoint at step 2' in out.stderr
  assert (workdir / 'checkpoints' / '3').is_dir()
