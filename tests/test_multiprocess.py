"""Two processes x 4 CPU devices train like one process with 8, share checkpoints with it, and stop
together when one of them gets SIGTERM.

One module-scoped set of runs serves the default tests (each process compiles its own step: on
CPU, multi-process runs do not use the persistent compilation cache, see gan_jax/main.py):
  R   one process, 8 devices (in this pytest process): fresh -> N steps, checkpoints every 4.
  A   two processes (`python -m gan_jax.main --coordinator_address ...`) starting from R's
      1-process checkpoint of step 4 (config.resume); SIGTERM to process 1 only after step 5 ->
      both stop at one step s and save one checkpoint.
  A2  the same two-process command again: resumes at s, runs to N; must end where R ended.
  B   one process starting from A's 2-process checkpoint of step s (config.resume) -> N.
The default runs only the regulariser-free step variant (one compile per program); the slow test
trains the tiny config (R1 and path-length steps too) from scratch on 2 processes and on 1.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from etils import epath

from gan_jax import checkpoint_integrity
from gan_jax import checkpointing
from gan_jax import sharding
from gan_jax import train
from gan_jax.data import pipeline
from tests.fake_data import write_fake_fashion_mnist
from tests import numerics
from tests.test_train import PLAIN, RUNS_REL, cli_flags, tiny_config

REPO = Path(__file__).resolve().parents[1]
N = 12  # steps of every run
TIMEOUT = 1200  # seconds for one two-process run (compiles on a loaded 2-core machine)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _env() -> dict:
  """The pytest process's environment (compile cache, XLA -O0) with 4 devices per process."""
  flags = [f for f in os.environ.get('XLA_FLAGS', '').split()
           if not f.startswith('--xla_force_host_platform_device_count')]
  return dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS='cpu',
              XLA_FLAGS=' '.join(flags + ['--xla_force_host_platform_device_count=4']))


class TwoProcessRun:
  """Both processes of one run, logging to files; always reaped (killed on failure)."""

  def __init__(self, tmp: Path, name: str, overrides: dict, tag: str = ''):
    port = _free_port()
    self.logs = [tmp / f'{name}{tag}.p{i}.log' for i in range(2)]
    self.procs = []
    for i, log in enumerate(self.logs):
      cmd = [sys.executable, '-m', 'gan_jax.main', '--config',
             str(REPO / 'experiments/fashion_mnist.py') + ':tiny', '--workdir', str(tmp / name),
             '--coordinator_address', f'127.0.0.1:{port}', '--num_processes', '2',
             '--process_id', str(i)] + cli_flags(overrides)
      with open(log, 'w') as f:
        self.procs.append(subprocess.Popen(cmd, cwd=tmp, env=_env(), stdout=f,
                                           stderr=subprocess.STDOUT))

  def text(self, i: int) -> str:
    return self.logs[i].read_text()

  def wait_for(self, i: int, needle: str, timeout: float = TIMEOUT) -> None:
    deadline = time.time() + timeout
    while needle not in self.text(i):
      if time.time() > deadline or any(p.poll() is not None for p in self.procs):
        self.kill()
        raise AssertionError(f'no {needle!r} in process {i}\'s log:\n{self.text(i)[-3000:]}')
      time.sleep(0.05)

  def finish(self, timeout: float = TIMEOUT) -> list[int]:
    deadline = time.time() + timeout
    try:
      return [p.wait(timeout=max(deadline - time.time(), 1)) for p in self.procs]
    except subprocess.TimeoutExpired:
      self.kill()
      raise

  def kill(self) -> None:
    for p in self.procs:
      if p.poll() is None:
        p.kill()
        p.wait(timeout=60)


def _target(tmp: Path):
  """The abstract train state on this process's 8-device mesh: what a checkpoint restores into,
  whichever layout wrote it."""
  config = tiny_config(tmp, **PLAIN)
  G, D, c_dim = train.build(config, pipeline.dataset_info(config.data))
  abstract, *_ = train.sharded_step(config, sharding.make_mesh(config.mesh), G, D, c_dim)
  return abstract


def _final(workdir: Path):
  """(step, state as numpy) of a workdir's latest checkpoint."""
  mngr = ocp.CheckpointManager(workdir / 'checkpoints',
                               options=ocp.CheckpointManagerOptions(read_only=True),
                               item_names=('state', 'meta'))
  step = mngr.latest_step()
  state, _ = checkpointing.restore_step(mngr, step, _target(workdir.parent))
  mngr.close()
  return step, jax.device_get(state)


def _steps(workdir: Path) -> list[int]:
  return sorted(int(p.name) for p in (workdir / 'checkpoints').iterdir() if p.name.isdigit())


def _assert_close(a, b, what):
  # Each state group at its largest |value| (numerics.assert_trees_close by_group): after 12
  # steps the runs here differ by at most 2.3e-7 of it (measured), 40x below RUNS_REL.
  numerics.assert_trees_close(a, b, RUNS_REL, what, by_group=True)


def _overrides(tmp: Path, extra: dict) -> dict:
  return {'data.source_dir': str(tmp / 'src'), 'data.data_dir': str(tmp / 'tfds'),
          'loss.style_mixing_prob': 0.5, 'ema.rampup': 0.0, 'ema.kimg': 0.02,
          'schedule.kimg': 100.0, 'schedule.max_steps': N, 'log.every_steps': 1,
          'log.image_every_steps': 100000, **extra}


def _one_process(tmp: Path, name: str, overrides: dict):
  config = tiny_config(tmp, **overrides)
  return train.train_and_evaluate(config, str(tmp / name), devices=jax.devices())


def _prepared(tmp_path_factory, name):
  assert jax.device_count() == 8, 'conftest.py sets 8 fake CPU devices'
  tmp = tmp_path_factory.mktemp(name)
  write_fake_fashion_mnist(tmp / 'src', n_train=48, n_test=8)
  pipeline.dataset_info(tiny_config(tmp).data)  # prepare the TFDS dir once, before any run
  return tmp


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  tmp = _prepared(tmp_path_factory, 'multiprocess')
  _one_process(tmp, 'R', _overrides(tmp, {**PLAIN, 'checkpoint.every_steps': 4,
                                           'checkpoint.keep': 5}))
  rest = _overrides(tmp, {**PLAIN, 'checkpoint.every_steps': 100000,
                          'resume': str(tmp / 'R' / 'checkpoints' / '4')})
  a = TwoProcessRun(tmp, 'A', rest)
  a.wait_for(0, 'step 5  kimg')
  a.procs[1].send_signal(signal.SIGTERM)
  a_rc, a_logs = a.finish(), [a.text(0), a.text(1)]
  a_steps = _steps(tmp / 'A')
  a2 = TwoProcessRun(tmp, 'A', rest, tag='2')
  a2_rc, a2_logs = a2.finish(), [a2.text(0), a2.text(1)]
  b_state = None
  if a_steps:
    b_state = _one_process(tmp, 'B', {**rest, 'resume': str(tmp / 'A' / 'checkpoints' /
                                                            str(a_steps[0]))})
  return dict(tmp=tmp, a_rc=a_rc, a_logs=a_logs, a_steps=a_steps, a2_rc=a2_rc, a2_logs=a2_logs,
              b_step=None if b_state is None else int(b_state.step))


def test_sigterm_to_one_process_stops_both_at_the_same_step(runs):
  assert runs['a_rc'] == [0, 0], runs['a_logs'][1][-3000:]
  assert 'checkpoints/4 at step 4' in runs['a_logs'][0]  # a 1-process checkpoint, restored
  assert 'SIGTERM caught' in runs['a_logs'][1]  # JAX's preemption notifier, on process 1 only
  assert 'SIGTERM caught' not in runs['a_logs'][0]
  stops = []
  for log in runs['a_logs']:
    line = [l for l in log.splitlines() if 'Stop requested (preemption notice)' in l]
    assert len(line) == 1, log[-3000:]
    stops.append(int(line[0].split('checkpoint at step ')[1].split(' ')[0]))
  assert stops[0] == stops[1] and 5 < stops[0] < N
  assert runs['a_steps'] == [stops[0]]  # one checkpoint, the stop's


def test_rerun_after_the_stop_continues_to_the_end(runs):
  assert runs['a2_rc'] == [0, 0], runs['a2_logs'][0][-3000:]
  s = runs['a_steps'][0]
  for log in runs['a2_logs']:
    assert f'Start from workdir checkpoint at step {s} ' in log
    assert f'step {N}  kimg' in log and f'step {s}  kimg' not in log
  assert _steps(runs['tmp'] / 'A') == [s, N]
  for step in (s, N):  # committed by process 0, manifests covering both processes' files
    root = epath.Path(runs['tmp'] / 'A' / 'checkpoints' / str(step))
    assert checkpoint_integrity.verify(root) is None
    files = json.loads((root / checkpoint_integrity.MANIFEST).read_text())['files']
    assert any('ocdbt.process_1/' in f for f in files), sorted(files)


def test_two_processes_reach_the_parameters_of_one_process_with_8_devices(runs):
  """R: 12 steps on 1 process. A: R's step 4, 2 processes, SIGTERM, resumed to 12: same weights."""
  tmp = runs['tmp']
  step_r, r = _final(tmp / 'R')
  step_a, a = _final(tmp / 'A')
  assert step_r == step_a == N
  _assert_close(a, r, '2 processes vs 1 process')


def test_two_process_checkpoint_continues_on_one_process(runs):
  assert runs['b_step'] == N
  _, a = _final(runs['tmp'] / 'A')
  _, b = _final(runs['tmp'] / 'B')
  _assert_close(b, a, '2-process checkpoint continued on 1 process')


def test_reals_samples_and_summaries_are_written_once_and_right(runs):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  tmp = runs['tmp']
  read = lambda p: np.asarray(Image.open(p)).astype(np.int32)  # pylint: disable=unnecessary-lambda-assignment
  # The global batch of step 0 (rows from both processes), as the 1-process run saw it.
  np.testing.assert_array_equal(read(tmp / 'A' / 'reals.png'), read(tmp / 'R' / 'reals.png'))
  name = f'samples_{N:07d}.png'  # G_ema at the end, gathered from all devices of 2 processes
  assert np.abs(read(tmp / 'A' / name) - read(tmp / 'R' / name)).max() <= 1
  assert not (tmp / 'A' / 'samples_0000000.png').exists()  # A started at step 4
  assert len(list((tmp / 'A').glob('events.out.tfevents.*'))) == 2  # process 0 of A and of A2


@pytest.mark.slow
def test_tiny_config_from_scratch_on_two_processes_equals_one(tmp_path_factory):
  """Every step variant (R1, path length, plain), fresh init on both sides."""
  tmp = _prepared(tmp_path_factory, 'multiprocess_slow')
  overrides = _overrides(tmp, {})
  state = _one_process(tmp, 'R', overrides)
  run = TwoProcessRun(tmp, 'A', overrides)
  assert run.finish() == [0, 0], run.text(0)[-3000:]
  step_r, r = _final(tmp / 'R')
  step_a, a = _final(tmp / 'A')
  assert step_r == step_a == int(state.step) == N
  _assert_close(a, r, 'fresh tiny run, 2 processes vs 1')
