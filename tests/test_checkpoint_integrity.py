"""Checkpoint trust: damaged checkpoints are found and moved aside, failed starts change nothing,
"saved" means committed, a failed save ends the run at once, and resume errors are one message.

Real checkpoints are really damaged here (a truncated array file, 64 flipped bytes) and real
signals are sent to a real `python -m gan_jax.main`.
"""

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import flax
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from etils import epath

from gan_jax import checkpoint_integrity as integrity
from gan_jax import checkpointing
from gan_jax import config_base
from gan_jax import guard
from gan_jax import train
from tests.fake_data import write_fake_fashion_mnist
from tests.test_train import PLAIN, cli_flags, tiny_config

REPO = Path(__file__).resolve().parents[1]


def _ckpt_config(keep=5):
  config = config_base.get_base_config().checkpoint
  config.keep = keep
  return config


@flax.struct.dataclass
class _Small:
  """A small state with what checkpointing and guard.rollback use of a GANState."""
  step: np.ndarray
  rng: np.ndarray
  w: np.ndarray
  b: dict


def _tree(step):
  return _Small(step=np.int32(step), rng=np.zeros(2, np.uint32),
                w=np.arange(4096, dtype=np.float32) + step,
                b={'x': np.full((8, 8), step, np.float32)})


def _save_steps(workdir, steps):
  mngr = checkpointing.manager(str(workdir), _ckpt_config())
  for step in steps:
    checkpointing.save(mngr, _tree(step), {'step': step})
  checkpointing.finish(mngr)


def _largest_array_file(step_dir: Path) -> Path:
  files = [p for p in (step_dir / 'state').rglob('*') if p.is_file() and '/d/' in str(p)]
  return max(files, key=lambda p: p.stat().st_size)


def _truncate(path: Path):
  data = path.read_bytes()
  path.write_bytes(data[:len(data) // 2])


def _flip_64_bytes(path: Path):
  data = bytearray(path.read_bytes())
  mid = len(data) // 2
  data[mid:mid + 64] = bytes(b ^ 0xFF for b in data[mid:mid + 64])
  path.write_bytes(bytes(data))


def _abstract():
  return jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), _tree(0))


def test_every_committed_step_has_a_manifest_that_verifies(tmp_path):
  _save_steps(tmp_path, [1, 2])
  for step in (1, 2):
    root = epath.Path(tmp_path / 'checkpoints' / str(step))
    manifest = json.loads((root / integrity.MANIFEST).read_text())
    assert manifest['step'] == step and any('/d/' in f for f in manifest['files'])
    assert integrity.verify(root) is None


def test_tools_read_a_step_only_when_it_verifies_and_move_nothing(tmp_path):
  """checkpointing.restore_parts (export, evaluate, load_generator): the parts asked for, as numpy;
  a damaged step is one clear error naming the other steps, and stays where it is."""
  _save_steps(tmp_path, [1, 2])
  checkpoints = tmp_path / 'checkpoints'
  parts, step = checkpointing.restore_parts(checkpoints, ('w', 'b'))
  assert step == 2 and isinstance(parts['w'], np.ndarray)
  np.testing.assert_array_equal(parts['w'], _tree(2).w)
  np.testing.assert_array_equal(parts['b']['x'], _tree(2).b['x'])
  assert checkpointing.read_meta(checkpoints, 1) == {'step': 1}
  _truncate(_largest_array_file(checkpoints / '2'))
  with pytest.raises(checkpointing.DamagedCheckpointError, match=r'2 is not usable.*truncated.*'
                     r'steps: \[1, 2\]'):
    checkpointing.restore_parts(checkpoints, ('w',))
  assert (checkpoints / '2').exists() and not (tmp_path / 'checkpoints.damaged').exists()
  np.testing.assert_array_equal(checkpointing.restore_parts(checkpoints, ('w',), 1)[0]['w'],
                                _tree(1).w)


@pytest.mark.parametrize('damage,problem', [(_truncate, 'truncated'),
                                            (_flip_64_bytes, 'CRC-32 mismatch')])
def test_a_damaged_latest_checkpoint_is_moved_aside_and_the_previous_restored(
    tmp_path, damage, problem, caplog):
  _save_steps(tmp_path, [1, 2])
  damaged = _largest_array_file(tmp_path / 'checkpoints' / '2')
  damage(damaged)
  mngr = checkpointing.manager(str(tmp_path), _ckpt_config())
  state, meta, source = checkpointing.restore_or_init(
      mngr, _abstract(), init_fn=lambda: pytest.fail('must restore, not init'))
  mngr.close()
  assert meta == {'step': 1} and source == 'workdir checkpoint at step 1'
  np.testing.assert_array_equal(state.w, _tree(1).w)
  assert not (tmp_path / 'checkpoints' / '2').exists()
  (aside,) = (tmp_path / 'checkpoints.damaged').iterdir()
  assert aside.name.startswith('2-')
  assert (aside / damaged.relative_to(tmp_path / 'checkpoints' / '2')).is_file()  # kept
  assert problem in caplog.text and str(tmp_path / 'checkpoints' / '2') in caplog.text
  assert 'so 1 steps are redone' in caplog.text


def test_an_uncommitted_save_is_reported_with_the_steps_it_redoes(tmp_path, caplog):
  _save_steps(tmp_path, [3, 6])
  (tmp_path / 'checkpoints' / '6' / integrity.MANIFEST).unlink()  # Orbax wrote it, never committed
  mngr = checkpointing.manager(str(tmp_path), _ckpt_config())
  _, meta, _ = checkpointing.restore_or_init(mngr, _abstract(), init_fn=pytest.fail,
                                             interrupted=['9.orbax-checkpoint-tmp-123'])
  mngr.close()
  assert meta == {'step': 3}
  assert 'has no manifest' in caplog.text
  assert 'step 9 was not committed' in caplog.text and 'so 6 steps are redone' in caplog.text


def test_checkpoints_written_before_manifests_are_adopted(tmp_path):
  mngr = checkpointing.manager(str(tmp_path), _ckpt_config())
  mngr.save(4, args=ocp.args.Composite(state=ocp.args.StandardSave(_tree(4)),
                                       meta=ocp.args.JsonSave({'step': 4})))
  mngr.wait_until_finished()  # what an older gan_jax left: no manifest, no marker
  assert checkpointing.latest_intact(mngr) == 4
  assert integrity.verify(epath.Path(tmp_path / 'checkpoints' / '4')) is None
  mngr.close()


def test_rollback_skips_a_damaged_checkpoint(tmp_path):
  _save_steps(tmp_path, [2, 4])
  _flip_64_bytes(_largest_array_file(tmp_path / 'checkpoints' / '4'))
  mngr = checkpointing.manager(str(tmp_path), _ckpt_config())
  train_config = config_base.get_base_config().train
  train_config.nonfinite_action = 'rollback'
  error = guard.NonFiniteError('Non-finite loss at step 5.')
  state, meta = guard.rollback(error, mngr, _abstract(), train_config, rollbacks=1)
  assert meta == {'step': 2}
  np.testing.assert_array_equal(state.w, _tree(2).w)
  assert not np.array_equal(state.rng, _tree(2).rng)  # fresh random draws after a rollback
  mngr.close()
  assert [p.name[:2] for p in (tmp_path / 'checkpoints.damaged').iterdir()] == ['4-']


def test_resume_from_a_missing_directory_is_one_clear_error(tmp_path):
  mngr = checkpointing.manager(str(tmp_path / 'new'), _ckpt_config())
  with pytest.raises(checkpointing.ResumeNotFoundError,
                     match=r"config.resume='/nonexistent/run' does not exist"):
    checkpointing.restore_or_init(mngr, _abstract(), init_fn=pytest.fail,
                                  resume='/nonexistent/run')
  mngr.close()


def test_resume_of_another_architecture_is_one_clear_error(tmp_path):
  _save_steps(tmp_path / 'other', [1])
  mngr = checkpointing.manager(str(tmp_path / 'new'), _ckpt_config())
  wider = _abstract().replace(w=jax.ShapeDtypeStruct((8192,), np.float32))
  with pytest.raises(checkpointing.ArchitectureMismatchError,
                     match=r'1 arrays differ in shape, e.g. w \(4096,\) saved vs \(8192,\) here'):
    checkpointing.restore_or_init(mngr, wider, init_fn=pytest.fail, resume=str(tmp_path / 'other'))
  mngr.close()


_FAILING_SAVE = textwrap.dedent('''
    import sys
    import numpy as np
    from gan_jax import checkpointing, config_base
    from tests.test_checkpoint_integrity import _tree
    mngr = checkpointing.manager(sys.argv[1], config_base.get_base_config().checkpoint)
    # checkpoints/ turned into a regular file: creating the step's directory there fails, as on
    # a read-only disk, whoever runs the test (root ignores permissions).
    mngr.directory.rmdir()
    mngr.directory.write_text('in the way')
    checkpointing.save(mngr, _tree(7), {'step': 7})
    checkpointing.finish(mngr)
''')


def test_a_failed_save_ends_the_process_naming_the_path(tmp_path):
  env = dict(os.environ, PYTHONPATH=str(REPO))
  # Orbax's writer threads used to hold the process for 300 s; the limit here only catches that.
  out = subprocess.run([sys.executable, '-c', _FAILING_SAVE, str(tmp_path)], env=env,
                       capture_output=True, text=True, timeout=200)
  assert out.returncode != 0
  assert 'CheckpointError: Saving a checkpoint in ' + str(tmp_path / 'checkpoints') in out.stderr


@pytest.fixture(scope='module')
def fake_source(tmp_path_factory):
  root = tmp_path_factory.mktemp('fmnist_integrity')
  write_fake_fashion_mnist(root / 'src', n_train=48, n_test=8)
  return root


def test_real_run_damaged_checkpoints_and_a_failed_start(fake_source, tmp_path, caplog):
  """A real run's checkpoints 4 (64 bytes flipped) and 6 (an array file truncated): another
  model size fails to start without touching config.json; the run's own command then resumes
  from step 2, the newest intact checkpoint, and trains on to step 6."""
  overrides = dict(PLAIN, **{'checkpoint.every_steps': 2, 'checkpoint.keep': 3,
                             'schedule.max_steps': 6})
  workdir = tmp_path / 'run'
  one = jax.devices()[:1]
  train.train_and_evaluate(tiny_config(fake_source, **overrides), str(workdir), devices=one)
  ckpts = workdir / 'checkpoints'
  assert sorted(int(p.name) for p in ckpts.iterdir() if p.name.isdigit()) == [2, 4, 6]
  _flip_64_bytes(_largest_array_file(ckpts / '4'))
  _truncate(_largest_array_file(ckpts / '6'))
  saved_config = (workdir / 'config.json').read_text()
  (workdir / 'config.json').unlink()  # so the workdir check cannot tell the model changed
  wider = tiny_config(fake_source, **overrides, **{'model.channel_max': 16})
  with pytest.raises(checkpointing.ArchitectureMismatchError, match='another architecture'):
    train.train_and_evaluate(wider, str(workdir), devices=one)
  assert not (workdir / 'config.json').exists()  # the failed start wrote nothing
  # It did find the damaged checkpoints first, and moved them aside.
  assert 'so 4 steps are redone' in caplog.text and 'CRC-32 mismatch' in caplog.text
  assert sorted(p.name[:2] for p in (workdir / 'checkpoints.damaged').iterdir()) == ['4-', '6-']
  (workdir / 'config.json').write_text(saved_config)
  caplog.clear()
  caplog.set_level(logging.INFO, logger='absl')  # whatever verbosity earlier code set
  state = train.train_and_evaluate(tiny_config(fake_source, **overrides), str(workdir),
                                   devices=one)
  assert 'Start from workdir checkpoint at step 2 ' in caplog.text
  assert int(state.step) == 6
  for step in (2, 4, 6):
    assert integrity.verify(epath.Path(ckpts / str(step))) is None
  fresh = tmp_path / 'fresh'  # a resume from nowhere: one clear error, nothing written
  with pytest.raises(checkpointing.ResumeNotFoundError, match='does not exist'):
    train.train_and_evaluate(tiny_config(fake_source, **overrides, resume='/nonexistent'),
                             str(fresh), devices=one)
  assert not (fresh / 'config.json').exists()


def test_two_sigints_still_save_and_the_rerun_resumes_there(fake_source, tmp_path):
  cmd = [sys.executable, '-m', 'gan_jax.main', '--config',
         str(REPO / 'experiments/fashion_mnist.py') + ':tiny', '--workdir', str(tmp_path / 'run'),
         f'--config.data.source_dir={fake_source / "src"}',
         f'--config.data.data_dir={tmp_path / "tfds"}',
         '--config.schedule.kimg=100.0', '--config.checkpoint.every_steps=2',
         '--config.log.every_steps=1', '--config.log.image_every_steps=100000',
         '--config.mesh.data=1', '--config.loss.style_mixing_prob=0.5',
         '--config.ema.rampup=0.0', '--config.ema.kimg=0.02', *cli_flags(PLAIN)]
  env = dict(os.environ, PYTHONPATH=str(REPO))
  proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
  lines = []
  for line in proc.stderr:
    lines.append(line)
    if 'step 5  kimg' in line:
      proc.send_signal(signal.SIGINT)
    if 'SIGINT received: finishing' in line:
      proc.send_signal(signal.SIGINT)  # the impatient second Ctrl-C, while it saves
      break
  _, rest = proc.communicate(timeout=600)
  log = ''.join(lines) + rest
  assert proc.returncode == 0, log[-3000:]
  assert 'SIGINT received again: still finishing the step and saving' in log
  saved = int(log.split('saved a checkpoint at step ')[1].split()[0])
  assert saved >= 5
  assert integrity.verify(epath.Path(tmp_path / 'run' / 'checkpoints' / str(saved))) is None
  cmd[cmd.index('--config.schedule.kimg=100.0')] = f'--config.schedule.max_steps={saved}'
  out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  assert f'Start from workdir checkpoint at step {saved} ' in out.stderr
