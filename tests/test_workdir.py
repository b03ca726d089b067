"""Workdir safety: another experiment's checkpoints, incomplete checkpoints, failed saves."""

from pathlib import Path

import numpy as np
import orbax.checkpoint as ocp
import pytest
from etils import epath

from gan_jax import checkpointing
from gan_jax import config_base
from gan_jax import workdir as workdir_lib

REPO = Path(__file__).resolve().parents[1]


def _config(**overrides):
  return config_base.load(str(REPO / 'experiments/fashion_mnist.py') + ':tiny', overrides)


def _workdir_with_checkpoint(tmp_path, config):
  (tmp_path / 'checkpoints' / '5' / 'state').mkdir(parents=True)
  (tmp_path / 'config.json').write_text(config.to_json_best_effort())
  return epath.Path(tmp_path)


def test_same_experiment_resumes_even_with_other_run_lengths(tmp_path):
  workdir = _workdir_with_checkpoint(tmp_path, _config())
  workdir_lib.check_compatible(workdir, _config(**{'schedule.kimg': 5.0}), start_over=False)


def test_another_experiment_is_refused_naming_what_differs(tmp_path):
  workdir = _workdir_with_checkpoint(tmp_path, _config())
  with pytest.raises(workdir_lib.WorkdirError,
                     match=r'model.channel_max: 8 -> 16.*--config.start_over=True'):
    workdir_lib.check_compatible(workdir, _config(**{'model.channel_max': 16}), start_over=False)
  assert (tmp_path / 'checkpoints' / '5').is_dir()  # nothing touched


def test_start_over_moves_the_old_checkpoints_aside(tmp_path):
  workdir = _workdir_with_checkpoint(tmp_path, _config())
  workdir_lib.check_compatible(workdir, _config(seed=7), start_over=True)
  assert not (tmp_path / 'checkpoints').exists()
  (aside,) = tmp_path.glob('checkpoints.replaced-*')
  assert (aside / '5' / 'state').is_dir()


def test_incomplete_checkpoints_are_reported_and_never_restored(tmp_path):
  mngr = checkpointing.manager(str(tmp_path), _config().checkpoint)
  mngr.save(3, args=ocp.args.Composite(state=ocp.args.StandardSave({'w': np.arange(3.0)}),
                                       meta=ocp.args.JsonSave({'step': 3})))
  mngr.wait_until_finished()
  mngr.close()
  # What a SIGKILL in the middle of saving step 4 leaves behind.
  half = tmp_path / 'checkpoints' / '4.orbax-checkpoint-tmp-1234567'
  (half / 'state').mkdir(parents=True)
  assert workdir_lib.report_incomplete(epath.Path(tmp_path)) == [half.name]
  mngr = checkpointing.manager(str(tmp_path), _config().checkpoint)
  assert mngr.latest_step() == 3
  state, meta, source = checkpointing.restore_or_init(
      mngr, {'w': np.zeros(3)}, init_fn=lambda: pytest.fail('must restore, not init'))
  np.testing.assert_array_equal(state['w'], np.arange(3.0))
  assert meta == {'step': 3} and 'step 3' in source
  mngr.close()


class _FakeState:
  def __init__(self, step):
    self.step = np.int32(step)


def test_a_failed_save_stops_the_run_with_a_clear_error(tmp_path, monkeypatch):
  mngr = checkpointing.manager(str(tmp_path), _config().checkpoint)

  def disk_full(*args, **kwargs):
    raise OSError(28, 'No space left on device')

  monkeypatch.setattr(mngr, 'save', disk_full)
  with pytest.raises(checkpointing.CheckpointError,
                     match='at step 7 .*No space left.*rerun the same command'):
    checkpointing.save(mngr, _FakeState(7), {'step': 7})
  mngr.close()
