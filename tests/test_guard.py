"""Non-finite guard and stop requests (SIGTERM / SIGINT)."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from etils import epath

from gan_jax import checkpoint_integrity
from gan_jax import guard
from gan_jax import preemption
from gan_jax import train
from gan_jax.data import pipeline
from tests.fake_data import write_fake_fashion_mnist
from tests.test_train import PLAIN, cli_flags, tiny_config

REPO = Path(__file__).resolve().parents[1]


def test_check_finite_names_the_first_bad_step():
  ok = {'nonfinite': jnp.int32(0), 'loss/G': jnp.float32(0.7)}
  bad = {'nonfinite': jnp.int32(1), 'loss/G': jnp.float32(np.nan), 'loss/D': jnp.float32(1.2)}
  guard.check_finite([(3, ok), (4, ok)])
  with pytest.raises(guard.NonFiniteError, match=r'step 5 \(loss/D=1.2, loss/G=nan\)'):
    guard.check_finite([(4, ok), (5, bad), (6, bad)])


@pytest.fixture(scope='module')
def fake_source(tmp_path_factory):
  root = tmp_path_factory.mktemp('fmnist_guard')
  write_fake_fashion_mnist(root / 'src', n_train=48, n_test=8)
  return root


def test_nan_halts_before_a_checkpoint_is_written(fake_source, tmp_path, monkeypatch):
  """A NaN batch at step 3: the checkpoint of step 2 stays, none of step 4 is written."""
  original = pipeline.InputPipeline.__next__

  def poisoned(self):
    step = self.step
    batch = original(self)
    if step == 3:
      batch = dict(batch, image=np.full_like(batch['image'], np.nan))
    return batch

  monkeypatch.setattr(pipeline.InputPipeline, '__next__', poisoned)
  config = tiny_config(fake_source, **PLAIN, **{'checkpoint.every_steps': 2})
  workdir = tmp_path / 'run'
  with pytest.raises(guard.NonFiniteError, match='at step 3'):
    train.train_and_evaluate(config, str(workdir), devices=jax.devices()[:1])
  kept = sorted(p.name for p in (workdir / 'checkpoints').iterdir() if p.name.isdigit())
  assert kept == ['2']
  # and committed (its manifest written), so the rerun the message advises resumes from it
  assert checkpoint_integrity.verify(epath.Path(workdir / 'checkpoints' / '2')) is None


def test_nan_with_rollback_restores_the_last_checkpoint_and_goes_on(fake_source, tmp_path,
                                                                    monkeypatch):
  original = pipeline.InputPipeline.__next__
  poisoned_once = []

  def poisoned(self):
    step = self.step
    batch = original(self)
    if step == 3 and not poisoned_once:
      poisoned_once.append(step)
      batch = dict(batch, image=np.full_like(batch['image'], np.nan))
    return batch

  monkeypatch.setattr(pipeline.InputPipeline, '__next__', poisoned)
  config = tiny_config(fake_source, **PLAIN, **{'checkpoint.every_steps': 2,
                                                'train.nonfinite_action': 'rollback'})
  state = train.train_and_evaluate(config, str(tmp_path / 'run'), devices=jax.devices()[:1])
  assert poisoned_once == [3] and int(state.step) == 10
  for leaf in jax.tree_util.tree_leaves(jax.device_get(state)):
    assert np.all(np.isfinite(leaf))


# Slow: the real SIGTERM test below and tests/test_multiprocess.py cover this path in the suite.
@pytest.mark.slow
def test_stop_request_saves_and_stops_at_the_step(fake_source, tmp_path, monkeypatch):
  """A stop request (what SIGTERM sets) ends the loop after the current step, with a checkpoint;
  the same run started again continues to the end."""
  config = tiny_config(fake_source, **{'checkpoint.every_steps': 100})
  calls = []
  real_requested = preemption.StopRequest.requested

  def stop_after_3(self, step, at_tick):
    calls.append(step)
    if step == 3:
      self.request('test')
    return real_requested(self, step, at_tick)

  monkeypatch.setattr(preemption.StopRequest, 'requested', stop_after_3)
  workdir = tmp_path / 'run'
  state = train.train_and_evaluate(config, str(workdir), devices=jax.devices()[:1])
  assert int(state.step) == 3 and calls == [1, 2, 3]
  assert sorted(p.name for p in (workdir / 'checkpoints').iterdir() if p.name.isdigit()) == ['3']
  monkeypatch.setattr(preemption.StopRequest, 'requested', real_requested)
  assert int(train.train_and_evaluate(config, str(workdir), devices=jax.devices()[:1]).step) == 10


def test_sigterm_to_a_real_run_checkpoints_and_exits_0(fake_source, tmp_path):
  src = fake_source / 'src'
  cmd = [sys.executable, '-m', 'gan_jax.main', '--config',
         str(REPO / 'experiments/fashion_mnist.py') + ':tiny', '--workdir', str(tmp_path / 'run'),
         f'--config.data.source_dir={src}', f'--config.data.data_dir={tmp_path / "tfds"}',
         '--config.schedule.kimg=100.0', '--config.checkpoint.every_steps=100000',
         '--config.log.every_steps=1', '--config.log.image_every_steps=100000',
         '--config.mesh.data=1', '--config.loss.style_mixing_prob=0.5',
         '--config.ema.rampup=0.0', '--config.ema.kimg=0.02',
         *cli_flags(PLAIN)]
  env = dict(os.environ, PYTHONPATH=str(REPO))
  proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
  lines = []
  for line in proc.stderr:
    lines.append(line)
    if 'step 3  kimg' in line:
      proc.send_signal(signal.SIGTERM)
      break
  _, rest = proc.communicate(timeout=600)
  log = ''.join(lines) + rest
  assert proc.returncode == 0, log[-3000:]
  assert 'SIGTERM received' in log and 'saved a checkpoint at step' in log
  saved = [int(p.name) for p in (tmp_path / 'run' / 'checkpoints').iterdir() if p.name.isdigit()]
  assert len(saved) == 1 and 3 <= saved[0] < 12500  # stopped early, at a step boundary


def test_a_second_signal_does_not_abort_the_save_a_third_stops_at_once():
  """Real SIGINTs to this process: the first asks for a stop, the second (an impatient Ctrl-C
  during the save) is only logged, the third raises KeyboardInterrupt."""
  before = signal.getsignal(signal.SIGINT)  # Python's default_int_handler, or SIG_IGN when the
  # test runs as a background job of a non-interactive shell (which ignores SIGINT for it)
  with preemption.StopRequest() as stop:
    signal.raise_signal(signal.SIGINT)
    signal.raise_signal(signal.SIGINT)
    assert stop.requested(1, at_tick=False) and stop.reason == 'SIGINT'
    with pytest.raises(KeyboardInterrupt, match='third time'):
      signal.raise_signal(signal.SIGINT)
  assert signal.getsignal(signal.SIGINT) is before  # handler put back
