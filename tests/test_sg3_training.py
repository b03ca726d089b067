"""StyleGAN3 (experiments/ffhq_stylegan3.py:tiny) in the training loop as StyleGAN2 is tested in
tests/test_train.py: with the blur of D's inputs fading, an interrupted and resumed run ends
bit-identical to an uninterrupted one (magnitude EMAs, w_avg and the blur's fade included), and the
same run on 8 devices agrees with it to float tolerance (measured: at most 3.8e-7 of a group's
largest |value|, Adam's first moments of D; RUNS_REL is 1e-5); `python -m gan_jax.aot` compiles
its step for a TPU slice (slow). ADA's step with StyleGAN3: tests/test_stylegan3_train.py."""

from pathlib import Path

import jax
import numpy as np
import pytest

from gan_jax import aot
from gan_jax import config_base
from gan_jax import train
from tests import numerics
from tests.test_aot import _run_cli
from tests.test_aot import needs_libtpu
from tests.test_train import RUNS_REL
from tests.test_train import fake_source  # pylint: disable=unused-import (a fixture)

REPO = Path(__file__).resolve().parents[1]


def _config(fake_source):
  # 6 steps of 8 images (R1 every other step: both step variants), checkpoints every 3; the blur
  # (sigma 2 fading over 64 images) is on in all of them.
  return config_base.load(str(REPO / 'experiments/ffhq_stylegan3.py') + ':tiny', {
      'data.source_dir': str(fake_source / 'src'), 'data.data_dir': str(fake_source / 'tfds'),
      'schedule.kimg': 0.048, 'checkpoint.every_steps': 3, 'log.every_steps': 3,
      'log.image_every_steps': 100})


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree_util.tree_leaves(jax.device_get(tree))]


def test_stylegan3_resumes_bit_identically_and_shards(fake_source, tmp_path):
  config = _config(fake_source)
  assert config.loss.blur_init_sigma > 0 and config.loss.blur_fade_kimg * 1e3 > 6 * 8
  one = jax.devices()[:1]
  full = jax.device_get(train.train_and_evaluate(config, str(tmp_path / 'full'), devices=one))
  assert int(full.step) == 6
  # The state moved what StyleGAN3 keeps beside the weights.
  emas = [np.asarray(v) for p, v in jax.tree_util.tree_leaves_with_path(full.g_buffers)
          if 'magnitude_ema' in jax.tree_util.keystr(p)]
  assert emas and all(float(e) != 1.0 for e in emas)  # initialised at 1
  assert float(np.max(np.abs(full.g_buffers['mapping']['w_avg']))) > 0

  config.schedule.max_steps = 3  # "interrupted" after step 3 (a checkpoint step)
  train.train_and_evaluate(config, str(tmp_path / 'split'), devices=one)
  config.schedule.max_steps = 0
  resumed = train.train_and_evaluate(config, str(tmp_path / 'split'), devices=one)
  assert int(resumed.step) == 6
  for a, b in zip(_leaves(full), _leaves(resumed)):
    np.testing.assert_array_equal(a, b)

  eight = train.train_and_evaluate(config, str(tmp_path / 'eight'), devices=jax.devices())
  assert jax.device_count() == 8 and int(eight.step) == 6
  numerics.assert_trees_close(jax.device_get(eight), full, RUNS_REL, '8 vs 1 device',
                              by_group=True)


# Slow: the r1 variant's TPU compile ran 636 s on the shared 2 cores (ffhq.py:tiny's plain variant
# at 4x4 pixels is the suite's AOT check).
@pytest.mark.slow
@needs_libtpu
def test_aot_compiles_the_stylegan3_step():
  r = _run_cli('--config', 'experiments/ffhq_stylegan3.py:tiny', '--topology', 'v5e-4',
               timeout=3600)
  assert r.returncode == aot.EXIT_FITS, r.stderr[-3000:]
  assert 'variant r1 (R1 on, path length off)' in r.stdout
  assert 'RESULT: fits v5e-4' in r.stdout
