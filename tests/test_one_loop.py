"""Issue 17: one loop, one step interface, the same numbers as the two loops before the merge.

tests/fixtures/loop_regression/losses.json holds the metrics of the first 20 steps of each
family's `:tiny` config as commit 9ec82d9 computed them (record.py beside it). Today's steps are
fed the same synthetic batches and the random draws as 9ec82d9 derived them (by position,
`legacy_*_draws` below: the only change of derivation since), and must reproduce them to float
tolerance. The step's own draws now come from one key per named phase: a test checks that D's draws
no longer depend on whether path length is due.
"""

import json
import os
from pathlib import Path
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gan_jax import config_base
from gan_jax import models
from gan_jax import progressive_step
from gan_jax import schedule as schedule_lib
from gan_jax import state as state_lib
from gan_jax import step_common
from gan_jax import steps
from gan_jax import train_step
from tests import numerics

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / 'tests' / 'fixtures' / 'loop_regression' / 'losses.json'
# Relative bound on every recorded metric over the 20 steps. Measured here (same code path, other
# draws' derivation only): <= 2e-6; a different CPU's float32 rounding compounds over 20 steps of
# training, hence the margin. A changed loss term or optimizer moves the losses by > 1e-2.
LOOP_REL = 1e-4


def synthetic_batch(i, n, res, channels=1):
  """The batches of record.py: uniform [-1, 1] from RandomState(1000 + i), labels 0."""
  rs = np.random.RandomState(1000 + i)
  return {'image': rs.uniform(-1, 1, (n, res, res, channels)).astype(np.float32),
          'label': np.zeros((n,), np.int32)}


def legacy_stylegan2_draws(key, G, cfg, labels, do_pl):
  """train_step.draw as 9ec82d9 wrote it: 16 keys taken in order, so the fakes D sees shifted with
  do_pl; augmentation keys from fold_in(key, 1)."""
  n, z_dim = cfg.batch_size, G.z_dim
  keys = iter(jax.random.split(key, 16))

  def g_draws(num):
    z = jax.random.normal(next(keys), (num, z_dim))
    c = step_common.fake_labels(next(keys), labels, cfg.c_dim)[:num]
    k_mix, k_noise = next(keys), next(keys)
    cutoff, mix_z = jnp.asarray(G.num_ws, jnp.int32), None
    if cfg.style_mixing_prob > 0:
      k_cut, k_prob, k_z = jax.random.split(k_mix, 3)
      cutoff = jax.random.randint(k_cut, (), 1, G.num_ws)
      cutoff = jnp.where(jax.random.uniform(k_prob, ()) < cfg.style_mixing_prob, cutoff,
                         G.num_ws)
      mix_z = jax.random.normal(k_z, z.shape, z.dtype)
    return train_step.GDraws(z, c, cutoff, mix_z, k_noise)

  g_main = g_draws(n)
  g_pl = pl_noise = None
  if do_pl:
    g_pl = g_draws(max(n // cfg.pl_batch_shrink, 1))
    res = G.img_resolution
    pl_noise = jax.random.normal(next(keys), (g_pl.z.shape[0], res, res, G.img_channels))
  d_main = g_draws(n)
  aug = jax.random.split(jax.random.fold_in(key, 1), 4)
  return train_step.StepDraws(g_main, g_pl, pl_noise, d_main, aug)


def legacy_progressive_draws(key, G, cfg, labels, stage):
  """The draws of 9ec82d9's make_progressive_step: 8 keys of the step key taken in order (D's
  latents, D's generator key, the GP key, G's latents, G's labels, G's generator key), each
  generator key split into (cutoff, mixing probability, mixing latents, noise)."""
  n = labels.shape[0]
  keys = iter(jax.random.split(key, 8))
  is_style = models.family_of(G).w_space

  def g_draws(z, c, gen_key):
    k_cut, k_prob, k_z, k_noise = jax.random.split(gen_key, 4)
    cutoff = mix_z = None
    if is_style and cfg.style_mixing_prob > 0:
      cutoff = jax.random.randint(k_cut, (), 1, progressive_step.ws_in_use(stage))
      cutoff = jnp.where(jax.random.uniform(k_prob, ()) < cfg.style_mixing_prob, cutoff,
                         G.num_ws)
      mix_z = jax.random.normal(k_z, z.shape, z.dtype)
    return progressive_step.GDraws(z, c, cutoff, mix_z, k_noise)

  c_real = step_common.real_labels(labels, cfg.c_dim)
  d_main = g_draws(jax.random.normal(next(keys), (n, G.z_dim)), c_real, next(keys))
  k_gp = next(keys)
  z = jax.random.normal(next(keys), (n, G.z_dim))
  c = step_common.fake_labels(next(keys), labels, cfg.c_dim)
  g_main = g_draws(z, c, next(keys))
  aug = jax.random.split(jax.random.fold_in(key, 99), 3)  # 9ec82d9 had no augmentation
  return progressive_step.StepDraws(d_main, k_gp, g_main, None, None, aug)


@pytest.fixture(scope='module')
def recorded():
  return json.loads(FIXTURE.read_text())


def _compare(got, want, spec):
  assert len(got) == len(want) == 20
  for i, (g, w) in enumerate(zip(got, want)):
    assert set(w) <= set(g), (spec, i, sorted(set(w) - set(g)))
  for key in sorted({k for w in want for k in w}):
    pairs = [(g[key], w[key]) for g, w in zip(got, want) if key in w]
    if key in ('stage', 'alpha', 'batch', 'nonfinite'):
      assert [a for a, _ in pairs] == [b for _, b in pairs], (spec, key)
      continue
    numerics.assert_close(np.array([a for a, _ in pairs]), np.array([b for _, b in pairs]),
                          LOOP_REL, f'{spec} {key}')


def test_stylegan2_step_reproduces_the_recorded_losses(recorded):
  spec = 'experiments/fashion_mnist.py:tiny'
  config = config_base.load(str(REPO / spec.split(':')[0]) + ':tiny')
  G, D = models.build(config.model, 32, 1, 0)
  step_def = steps.make(config, G, D, 0)
  assert step_def.name == 'stylegan2'
  cfg = train_step.StepConfig.from_config(config, 0)
  inner = train_step.make_train_step(G, D, step_def.g_tx, step_def.d_tx, cfg)

  run = jax.jit(lambda s, b, d, r1, pl: inner(s, b, r1, pl, d), static_argnums=(3, 4))
  state = state_lib.create(G, D, step_def.g_tx, step_def.d_tx, 0,
                           jax.random.PRNGKey(config.seed), config.augment.p)
  got = []
  for i in range(20):
    batch = synthetic_batch(i, cfg.batch_size, 32)
    flags = step_def.variant(i)
    draws = legacy_stylegan2_draws(step_common.step_key(state.rng, state.step), G, cfg,
                                   jnp.asarray(batch['label']), flags[1])
    state, m = run(state, batch, draws, *flags)
    got.append({k: float(v) for k, v in jax.device_get(m).items()})
  _compare(got, recorded['runs'][spec], spec)
  # It learns: the losses move over the run.
  assert np.ptp([m['loss/G'] for m in got]) > 1e-2 and np.ptp([m['loss/D'] for m in got]) > 1e-2


def test_d_draws_do_not_depend_on_path_length():
  config = config_base.load(str(REPO / 'experiments/fashion_mnist.py') + ':tiny')
  G, _ = models.build(config.model, 32, 1, 0)
  cfg = train_step.StepConfig.from_config(config, 0)
  key, labels = jax.random.PRNGKey(3), jnp.zeros((cfg.batch_size,), jnp.int32)
  with_pl = train_step.draw(key, G, cfg, labels, do_pl=True)
  without = train_step.draw(key, G, cfg, labels, do_pl=False)
  for a, b in zip(jax.tree_util.tree_leaves((with_pl.g_main, with_pl.d_main, with_pl.aug)),
                  jax.tree_util.tree_leaves((without.g_main, without.d_main, without.aug))):
    np.testing.assert_array_equal(a, b)
  # ... while the derivation by position shifted them.
  old_pl = legacy_stylegan2_draws(key, G, cfg, labels, True)
  old = legacy_stylegan2_draws(key, G, cfg, labels, False)
  assert not np.array_equal(old_pl.d_main.z, old.d_main.z)
  # Distinct phases draw distinct latents.
  assert not np.array_equal(with_pl.g_main.z, with_pl.d_main.z)


def test_progressive_draws_do_not_depend_on_path_length():
  config = config_base.load(str(REPO / 'experiments/ffhq_stylegan.py') + ':tiny',
                            {'loss.pl_weight': 2.0})
  G, _ = models.build(config.model, 32, 1, 0)
  cfg = progressive_step.ProgressiveStepConfig.from_config(config, 0)
  key, labels = jax.random.PRNGKey(3), jnp.zeros((8,), jnp.int32)
  with_pl = progressive_step.draw(key, G, cfg, labels, 16, do_pl=True)
  without = progressive_step.draw(key, G, cfg, labels, 16, do_pl=False)
  assert without.g_pl is None and with_pl.g_pl.z.shape == (4, G.z_dim)  # pl_batch_shrink 2
  assert with_pl.pl_noise.shape == (4, 16, 16, 1)  # at the stage's resolution
  for a, b in zip(jax.tree_util.tree_leaves((with_pl.d_main, with_pl.d_gp, with_pl.g_main,
                                             with_pl.aug)),
                  jax.tree_util.tree_leaves((without.d_main, without.d_gp, without.g_main,
                                             without.aug))):
    np.testing.assert_array_equal(a, b)
  assert not np.array_equal(with_pl.g_main.z, with_pl.d_main.z)
  assert not np.array_equal(with_pl.g_pl.z, with_pl.g_main.z[:4])
  # Mixing crossovers fall among the ws the stage reads: 6 at 16x16 (of 8 at 32x32).
  cutoffs = {int(progressive_step.draw(jax.random.PRNGKey(i), G, cfg, labels, 16,
                                       False).g_main.mix_cutoff) for i in range(60)}
  assert cutoffs <= {1, 2, 3, 4, 5, G.num_ws} and {1, 5, G.num_ws} <= cutoffs


def test_registry_picks_the_step_from_the_loss():
  fixed = config_base.load(str(REPO / 'experiments/fashion_mnist.py') + ':tiny')
  progan = config_base.load(str(REPO / 'experiments/celebahq_progan.py') + ':tiny')
  style = config_base.load(str(REPO / 'experiments/ffhq_stylegan.py') + ':tiny')
  assert steps.name_for(fixed) == 'stylegan2'
  assert steps.name_for(progan) == 'wgan_gp'
  assert steps.name_for(style) == 'nonsaturating'
  fixed.loss.name = 'hinge'
  with pytest.raises(ValueError, match='names no train step; known: encoder, nonsaturating, '
                     'stylegan2, wgan_gp'):
    steps.make(fixed, None, None, 0)


def test_fixed_resolution_is_the_one_stage_schedule():
  config = config_base.load(str(REPO / 'experiments/fashion_mnist.py') + ':tiny')
  s = schedule_lib.Schedule(config, 32)
  assert not s.growing and s.resolutions == [32]
  assert s.at(0) == s.at(10 ** 6) == (32, 1.0, 8)
  assert s.num_steps == 10 and s.done(10, 80) and not s.done(9, 72)
  assert s.replay(7) == 56 and s.position({}, 7) == (56, (32, True))
  config.schedule.max_steps = 4
  assert schedule_lib.Schedule(config, 32).num_steps == 4


def run_progressive_as_recorded(spec: str) -> list[dict]:
  """record.py's run_progressive with today's step: the schedule's stages, alpha and batches,
  the optimizer resets at each fade-in's start and end, the legacy draws (derived inside the jit,
  as 9ec82d9's step derived them)."""
  config = config_base.load(str(REPO / spec.split(':')[0]) + ':tiny')
  G, D = models.build(config.model, 32, 1, 0)
  step_def = steps.make(config, G, D, 0)
  assert step_def.name == config.loss.name and step_def.variant(0) == (False,)
  cfg = progressive_step.ProgressiveStepConfig.from_config(config, 0)
  inner = progressive_step.make_progressive_step(G, D, step_def.g_tx, step_def.d_tx, cfg)

  def legacy_step(state, batch, alpha, nimg, stage):
    draws = legacy_progressive_draws(step_common.step_key(state.rng, state.step), G, cfg,
                                     batch['label'], stage)
    return inner(state, batch, alpha, nimg, stage, False, draws)

  run = jax.jit(legacy_step, static_argnums=(4,))
  reset = jax.jit(lambda s: s.replace(g_opt=step_def.g_tx.init(s.g_params),
                                      d_opt=step_def.d_tx.init(s.d_params)))
  schedule = schedule_lib.Schedule(config, 32)
  state = state_lib.create(G, D, step_def.g_tx, step_def.d_tx, 0,
                           jax.random.PRNGKey(config.seed))
  nimg, last, got = 0, None, []
  for i in range(20):
    stage = schedule.at(nimg)
    phase = schedule.phase(stage)
    if schedule.reset_optimizer and last not in (None, phase):
      state = reset(state)
    batch = synthetic_batch(i, stage.batch_size, 32)
    batch['image'] = progressive_step.box_downsample(batch['image'], stage.resolution)
    state, m = run(state, batch, np.float32(stage.alpha), np.int32(nimg), stage.resolution)
    m = {k: float(v) for k, v in jax.device_get(m).items()}
    m.update(stage=stage.resolution, alpha=stage.alpha, batch=stage.batch_size)
    got.append(m)
    nimg += stage.batch_size
    last = phase
  return got


# StyleGAN's tiny growing run is chaotic (Adam b1 0, restarted at each fade-in): bit for bit on
# the machine that recorded it, but another CPU's float32 rounding can move it by 1e-1 within the
# 20 steps, so it runs with -m slow; ProGAN's (8.6e-6 even under the suite's flags) stays in CI.
@pytest.mark.parametrize('spec', [
    pytest.param('experiments/ffhq_stylegan.py:tiny', marks=pytest.mark.slow),
    'experiments/celebahq_progan.py:tiny'])
def test_progressive_step_reproduces_the_recorded_losses(recorded, spec):
  """`run_progressive_as_recorded` in a subprocess with XLA's default flags, as record.py ran.

  Not under this suite's flags (conftest.py: optimisation level 0, the older fusion emitters):
  there 9ec82d9's own step is off its recording by 1.9e-3 at step 0 and by up to 1.7e-1 within
  the 20 steps of ffhq_stylegan:tiny (and today's step by exactly as much), the StyleGAN run being
  chaotic: Adam with b1 = 0 restarted at each fade-in (an update of about lr * sign(g)) turns ulp
  differences into large ones. With the default flags both configs are reproduced bit for bit on
  the machine that recorded them (measured: difference 0). Scoring D's fakes before its reals
  (the same maths, another XLA program: D's weights 1e-9 off after one step) moved the StyleGAN
  run's metrics by up to 1.2e-1, so on another CPU this comparison may fail with no loss term
  changed.
  """
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  out = subprocess.run([sys.executable, '-m', 'tests.test_one_loop', spec], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=1200, check=False)
  assert out.returncode == 0, out.stderr[-4000:]
  got = json.loads(out.stdout.strip().splitlines()[-1])
  want = recorded['runs'][spec]
  _compare(got, want, spec)
  worst = max(numerics.relative_error([g[k] for g in got], [w[k] for w in want])
              for k in want[0] if k not in ('stage', 'alpha', 'batch', 'nonfinite'))
  print(f'{spec}: largest relative difference to 9ec82d9 {worst:.2e}')
  # It learns: the losses move over the run.
  assert np.ptp([m['loss/G'] for m in got]) > 1e-2 and np.ptp([m['loss/D'] for m in got]) > 1e-2


if __name__ == '__main__':  # python -m tests.test_one_loop SPEC: the run's metrics as JSON
  print(json.dumps(run_progressive_as_recorded(sys.argv[1])))
