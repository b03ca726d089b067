"""The train step on 1 vs 8 devices, exact resume, and train_and_evaluate end to end."""

import json
from pathlib import Path

import jax
import numpy as np
import pytest

from gan_jax import config_base
from gan_jax import optim
from gan_jax import sharding
from gan_jax import state as state_lib
from gan_jax import train
from gan_jax import train_step as train_step_lib
from gan_jax.data import pipeline
from tests import numerics
from tests.fake_data import write_fake_fashion_mnist

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def fake_source(tmp_path_factory):
  root = tmp_path_factory.mktemp('fmnist')
  write_fake_fashion_mnist(root / 'src', n_train=48, n_test=8)
  return root


# No lazy regulariser: one train-step variant to trace and compile per run. For the tests of the
# loop, tools and processes; the regularised variants are tested here.
PLAIN = {'loss.r1_interval': 0, 'loss.pl_interval': 0}


def cli_flags(overrides: dict) -> list[str]:
  """Config overrides as `python -m gan_jax.main` flags."""
  return [f'--config.{k}={v}' for k, v in overrides.items()]


def tiny_config(fake_source, **overrides):
  # Every test shares these settings, so the single-device train steps compile once per session
  # (tests/conftest.py keeps a persistent compilation cache).
  base = {'data.source_dir': str(fake_source / 'src'), 'data.data_dir': str(fake_source / 'tfds'),
          'loss.style_mixing_prob': 0.5, 'ema.rampup': 0.0, 'ema.kimg': 0.02}
  base.update(overrides)
  return config_base.load(str(REPO / 'experiments/fashion_mnist.py') + ':tiny', base)


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree_util.tree_leaves(jax.device_get(tree))]


# Two runs of the same steps by differently partitioned programs (1 vs 8 devices, FSDP, 2
# processes) agree up to float32 summation order: measured (3 steps, 1 vs 8 devices; 1 step,
# FSDP; 12 steps, 2 processes) at most 4.3e-7 of each metric, 7.9e-7 of an Adam moment group's
# largest |value| and 6.2e-8 of the weights'. A sharding bug (a device's gradient or batch rows lost, keys drawn per
# device) moves parameters by ~a learning-rate step (2.5e-3, weights are ~1).
RUNS_REL = 1e-5


def assert_runs_agree(metrics_a, metrics_b, state_a, state_b, what, rel=RUNS_REL):
  """Per-step metrics at their own scale; states leaf by leaf at the scale of their group
  (numerics.assert_trees_close by_group: Adam's scalars near zero carry their gradient's noise)."""
  assert len(metrics_a) == len(metrics_b)
  for i, (a, b) in enumerate(zip(metrics_a, metrics_b)):
    assert a.keys() == b.keys()
    for k in a:
      numerics.assert_close(b[k], a[k], rel, f'{what}: step {i} {k}')
  numerics.assert_trees_close(jax.device_get(state_b), jax.device_get(state_a), rel, what,
                              by_group=True)


def _run_steps(config, devices, num_steps, keep_states=False):
  """Runs `num_steps` steps from a fresh state: (final state, host metrics per step), and with
  `keep_states` the host copy of the state after every step as a third element."""
  info = pipeline.dataset_info(config.data)
  G, D, c_dim = train.build(config, info)
  g_tx, d_tx = optim.make_optimizers(config)
  mesh = sharding.make_mesh(config.mesh, devices)
  rep, bshard = sharding.replicated(mesh), sharding.batch_sharding(mesh)
  sshard = sharding.state_sharding(mesh, state_lib.abstract(G, D, g_tx, d_tx, c_dim))
  state = jax.jit(lambda k: state_lib.create(G, D, g_tx, d_tx, c_dim, k),
                  out_shardings=sshard)(jax.random.PRNGKey(config.seed))
  cfg = train_step_lib.StepConfig.from_config(config, c_dim)
  step_fn = train_step_lib.jit_train_step(
      train_step_lib.make_train_step(G, D, g_tx, d_tx, cfg, bshard), sshard, bshard, rep)
  all_metrics, states = [], []
  with pipeline.InputPipeline(config.data, config.schedule.batch_size, config.seed, 0, 1) as data:
    for step in range(num_steps):
      batch = sharding.global_batch(next(data), bshard, config.schedule.batch_size)
      state, metrics = step_fn(state, batch, *cfg.regularize(step))
      all_metrics.append(metrics)
      if keep_states:
        states.append(jax.device_get(state))  # before the next step donates it
  if keep_states:
    return state, jax.device_get(all_metrics), states
  return state, jax.device_get(all_metrics)


@pytest.fixture(scope='module')
def one_device_run(fake_source):
  """Steps 0 (R1 + path length), 1 (plain), 2 (path length) on one device, every state kept."""
  return _run_steps(tiny_config(fake_source), jax.devices()[:1], 3, keep_states=True)


def test_train_step_on_1_and_8_devices_agree(fake_source, one_device_run):
  assert jax.device_count() == 8, 'conftest.py sets 8 fake CPU devices'
  s1, m1, _ = one_device_run
  s8, m8 = _run_steps(tiny_config(fake_source), jax.devices(), 3)
  assert_runs_agree(m1, m8, s1, s8, '8 vs 1 device')
  assert 'loss/D_r1_penalty' in m1[0] and 'loss/G_pl_penalty' in m1[2]
  assert 'loss/D_r1_penalty' not in m1[1]


def test_train_step_updates_and_ema(one_device_run):
  # tiny_config: EMA half-life 20 images, batch 8, so beta = 0.5 ** (8 / 20).
  _, m, (s0, s1, _) = one_device_run
  beta = 0.5 ** (8 / 20)
  np.testing.assert_allclose(m[1]['ema_beta'], beta, rtol=1e-6)
  # G_ema after step 2 = G_2 + (G_ema_1 - G_2) * beta, leaf by leaf.
  # At the scale of the weights (measured: equal here); an EMA left out of the step would be off
  # by (1 - beta) |e1 - g2|, a quarter of the learning-rate steps between them.
  want = jax.tree_util.tree_map(lambda e1, g2: g2 + (e1 - g2) * beta, s0.ema_params, s1.g_params)
  numerics.assert_trees_close(s1.ema_params, want, 1e-6, 'G_ema', by_group=True)
  assert int(s1.step) == 2
  assert any(not np.array_equal(a, b) for a, b in zip(_leaves(s0.d_params), _leaves(s1.d_params)))
  # The path-length target moved off zero on step 0 and the buffers follow G.
  assert float(s0.pl_mean) > 0
  for a, b in zip(_leaves(s1.ema_buffers), _leaves(s1.g_buffers)):
    np.testing.assert_array_equal(a, b)


def _final_state(workdir):
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  mngr = ocp.CheckpointManager(Path(workdir) / 'checkpoints',
                               options=ocp.CheckpointManagerOptions(read_only=True),
                               item_names=('state', 'meta'))
  step = mngr.latest_step()
  restored = mngr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()))
  return step, restored['state'], restored['meta']


def test_train_and_evaluate_end_to_end(fake_source, tmp_path):
  # No lazy regulariser: one step variant to compile, shared with tests/test_guard.py's runs
  # (the variants themselves are checked in test_train_step_on_1_and_8_devices_agree, in
  # tests/test_one_loop.py and tests/test_kill_resume.py).
  config = tiny_config(fake_source, **PLAIN)
  workdir = tmp_path / 'run'
  state = train.train_and_evaluate(config, str(workdir), devices=jax.devices()[:1])
  assert int(state.step) == 10  # kimg 0.08 at batch 8
  saved = json.loads((workdir / 'config.json').read_text())
  assert saved['schedule']['batch_size'] == 8 and saved['data']['name'] == 'fashion_mnist_local'
  pngs = sorted(p.name for p in workdir.glob('samples_*.png'))
  assert pngs == ['samples_0000000.png', 'samples_0000005.png', 'samples_0000010.png']
  from PIL import Image  # pylint: disable=g-import-not-at-top
  grid = np.asarray(Image.open(workdir / 'samples_0000010.png'))
  assert grid.shape == (2 * 32, 4 * 32)  # 2 x 4 grayscale tiles
  first = np.asarray(Image.open(workdir / 'samples_0000000.png')).astype(int)
  assert np.abs(grid.astype(int) - first).mean() > 1  # it learns: G_ema's grid changed
  reals = np.asarray(Image.open(workdir / 'reals.png'))
  assert reals.shape == (2 * 32, 4 * 32)  # the 8 reals of step 0
  assert reals[:2].max() == 0 and reals[2:30, 2:30].min() > 0  # padded border, non-zero fakes
  assert list(workdir.glob('events.out.tfevents.*'))
  step, restored, meta = _final_state(workdir)
  assert step == 10 and meta['kimg'] == pytest.approx(0.08)
  assert meta['nimg'] == 80 and 'stage' not in meta  # stage and alpha: growing runs only
  for leaf in jax.tree_util.tree_leaves(restored):
    assert np.all(np.isfinite(leaf))
  kept = sorted(int(p.name) for p in (workdir / 'checkpoints').iterdir() if p.name.isdigit())
  assert kept == [5, 10]
  # Running the finished run again resumes at its end and does no more steps.
  again = train.train_and_evaluate(config, str(workdir), devices=jax.devices()[:1])
  assert int(again.step) == 10


# Slow: tests/test_kill_resume.py checks the same bit-identity in the suite, with a real SIGKILL.
@pytest.mark.slow
def test_interrupted_and_resumed_equals_uninterrupted(fake_source, tmp_path):
  config = tiny_config(fake_source, **{'checkpoint.every_steps': 3})
  full = train.train_and_evaluate(config, str(tmp_path / 'full'), devices=jax.devices()[:1])
  config.schedule.max_steps = 6  # "interrupted" after step 6 (a checkpoint step)
  train.train_and_evaluate(config, str(tmp_path / 'split'), devices=jax.devices()[:1])
  config.schedule.max_steps = 0
  resumed = train.train_and_evaluate(config, str(tmp_path / 'split'), devices=jax.devices()[:1])
  assert int(full.step) == int(resumed.step) == 10
  for a, b in zip(_leaves(full), _leaves(resumed)):
    np.testing.assert_array_equal(a, b)
