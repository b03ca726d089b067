"""Progressive training: the step (one compile per stage, traced alpha, plain Adam, EMA in images),
StyleGAN's growing step, config validation, the loop end to end with a resume in the middle of a
fade-in (bit-identical to the uninterrupted run), and generate/export of a ProGAN run."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gan_jax import config_base
from gan_jax import config_check
from gan_jax import augment
from gan_jax import models
from gan_jax import progressive
from gan_jax import progressive_phases
from gan_jax import progressive_step
from gan_jax import sharding
from gan_jax import state as state_lib
from gan_jax import steps
from gan_jax import train
from gan_jax import schedule as schedule_lib
from gan_jax.models import layers
from gan_jax.models import progan
from gan_jax.models import stylegan
from tests import numerics
from tests.fake_data import write_fake_fashion_mnist
from tests.test_train import RUNS_REL
from tests.test_train import assert_runs_agree

REPO = Path(__file__).resolve().parents[1]
LR = 0.001
N = 8  # batch


def _copy(tree):
  return [np.array(x, copy=True) for x in jax.tree_util.tree_leaves(jax.device_get(tree))]


def _setup(G, D, step_cfg, c_dim=0):
  """(jitted step, fresh state) on one device, as the loop builds them."""
  mesh = sharding.make_mesh(config_base.get_base_config().mesh, jax.devices()[:1])
  rep, bshard = sharding.replicated(mesh), sharding.batch_sharding(mesh)
  g_tx = d_tx = optax.adam(LR, b1=0.0, b2=0.99, eps=1e-8)
  sshard = sharding.state_sharding(mesh, state_lib.abstract(G, D, g_tx, d_tx, c_dim),
                                   config_base.get_base_config().mesh.fsdp_min_size)
  state = jax.jit(lambda k: state_lib.create(G, D, g_tx, d_tx, c_dim, k), out_shardings=sshard)(
      jax.random.PRNGKey(0))
  step = progressive_step.jit_progressive_step(
      progressive_step.make_progressive_step(G, D, g_tx, d_tx, step_cfg, bshard), sshard, bshard,
      rep)
  return step, state


def _batch(stage, seed=0, classes=1):
  rs = np.random.RandomState(seed)
  return {'image': rs.uniform(-1, 1, (N, stage, stage, 1)).astype(np.float32),
          'label': (np.arange(N) % classes).astype(np.int32)}


@pytest.fixture(scope='module')
def progan_run():
  """Three ProGAN steps of the end-to-end test's networks (16 -> 32; the same executables, so
  the session's compilation cache serves the loop): stage 16, then 32 at alpha 0.25 and 0.75."""
  config = config_base.load(str(REPO / 'experiments/celebahq_progan.py') + ':tiny')
  assert (config.optim.g_lr, config.optim.adam_b1, config.optim.adam_b2) == (LR, 0.0, 0.99)
  G, D = models.build(config.model, 32, 1, 0)
  step, state = _setup(G, D, progressive_step.ProgressiveStepConfig.from_config(config, 0))
  before = {'g': _copy(state.g_params), 'd': _copy(state.d_params), 'names': [
      jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(state.g_params)[0]]}
  state, m0 = step(state, _batch(16), np.float32(1.0), np.int32(0), 16, False)
  after0 = {'g': _copy(state.g_params), 'ema': _copy(state.ema_params)}
  metrics = [m0]
  for i, alpha in enumerate((0.25, 0.75)):
    state, m = step(state, _batch(32, i + 1), np.float32(alpha), np.int32(N * (i + 1)), 32,
                    False)
    metrics.append(m)
  return dict(step=step, state=state, before=before, after0=after0,
              metrics=jax.device_get(metrics))


def test_one_compile_per_stage_with_a_traced_alpha(progan_run):
  assert progan_run['step']._cache_size() == 2  # stages 16, 32; alpha moved without recompiling
  alphas = [float(m['progress/alpha']) for m in progan_run['metrics']]
  assert alphas == [1.0, 0.25, 0.75]
  for m in progan_run['metrics']:
    assert int(m['nonfinite']) == 0 and float(m['loss/D_gp_penalty']) > 0
  assert int(progan_run['state'].step) == 3


def test_first_step_is_plain_adam_and_leaves_the_unused_blocks_alone(progan_run):
  """Adam with b1 = 0 moves every weight with a gradient by lr * |g| / (|g| + eps) ~ lr in its first
  step (no lazy-regularisation factor); at stage 16 the 32x32 block gets no gradient and stays."""
  before, after = progan_run['before'], progan_run['after0']
  moved = []
  for name, a, b in zip(before['names'], before['g'], after['g']):
    delta = np.abs(b - a)
    if name.startswith("['b32']"):
      np.testing.assert_array_equal(delta, 0, err_msg=name)
    else:
      moved.append(delta[delta > 0])
  moved = np.concatenate(moved)
  assert moved.size > 100
  # Exactly lr where |grad| >> eps (the few below are weights whose gradient is ~1e-7).
  assert np.all(moved <= LR * 1.002) and np.mean(np.abs(moved / LR - 1) < 2e-3) > 0.99


def test_ema_half_life_is_counted_in_images(progan_run):
  """G_ema after the first step = G_1 + (G_0 - G_1) * 0.5 ** (batch / (ema_kimg * 1000))."""
  beta = 0.5 ** (N / 1000.0)  # ema_kimg 1
  np.testing.assert_allclose(progan_run['metrics'][0]['ema_beta'], beta, rtol=1e-6)
  # Element by element on purpose: the EMA is an elementwise lerp (no sum to reorder, e1 ~ g1),
  # so its float32 error is a few ulps of each element on any CPU, while skipping the EMA (e1 =
  # g0) is off by (1 - beta) |g0 - g1| ~ 5e-6, which only the small weights show above 1e-5.
  for g0, g1, e1 in zip(progan_run['before']['g'], progan_run['after0']['g'],
                        progan_run['after0']['ema']):
    np.testing.assert_allclose(e1, g1 + (g0 - g1) * beta, rtol=1e-5, atol=1e-7)
  cfg = progressive_step.ProgressiveStepConfig(c_dim=0, ema_kimg=10.0, ema_rampup=0.05)
  # Ramp-up: the half-life is at most 5% of the 1000 images shown: 50 images.
  np.testing.assert_allclose(progressive_step.ema_beta(16, jnp.int32(1000), cfg), 0.5 ** (16 / 50),
                             rtol=1e-6)


def test_conditional_stylegan_grows_with_mixing_r1_and_w_avg():
  kw = dict(img_resolution=8, img_channels=1, c_dim=3, channel_base=64, channel_max=8)
  G = stylegan.Generator(z_dim=8, w_dim=8, mapping_layers=2, **kw)
  D = stylegan.Discriminator(**kw)
  step, state = _setup(G, D, progressive_step.ProgressiveStepConfig(
      c_dim=3, loss='nonsaturating', r1_gamma=10.0, style_mixing_prob=0.9, ema_kimg=0.02),
                       c_dim=3)
  w_avg0 = np.array(state.g_buffers['mapping']['w_avg'], copy=True)
  state, m = step(state, _batch(8, classes=3), np.float32(0.5), np.int32(N), 8, False)
  assert float(m['loss/D_r1_penalty']) > 0 and int(m['nonfinite']) == 0
  w_avg = np.asarray(state.g_buffers['mapping']['w_avg'])
  assert not np.array_equal(w_avg, w_avg0)  # tracked in the G pass
  np.testing.assert_array_equal(np.asarray(state.ema_buffers['mapping']['w_avg']), w_avg)
  assert progressive_step.ws_in_use(4) == 2 and progressive_step.ws_in_use(8) == 4


def _leaves_named(tree):
  return {jax.tree_util.keystr(p): np.asarray(x)
          for p, x in jax.tree_util.tree_flatten_with_path(jax.device_get(tree))[0]}


def test_path_length_is_its_own_g_update_at_the_stage():
  """StyleGAN's lazy path length at stage 8 mid-fade of a 16x16 G: with the same draws, a step
  with it due and one without agree on D and on G main; the PL phase moves pl_mean and G's
  mapping and blocks up to 8 once more, and leaves the 16x16 block alone."""
  kw = dict(img_resolution=16, img_channels=1, c_dim=0, channel_base=64, channel_max=8)
  G = stylegan.Generator(z_dim=8, w_dim=8, mapping_layers=2, **kw)
  D = stylegan.Discriminator(**kw)
  cfg = progressive_step.ProgressiveStepConfig(
      c_dim=0, loss='nonsaturating', r1_gamma=1.0, style_mixing_prob=0.9, ema_kimg=0.02,
      pl_weight=2.0, pl_interval=4, pl_batch_shrink=2)
  assert [cfg.variant(i) for i in range(5)] == [(True,), (False,), (False,), (False,), (True,)]
  tx = optax.adam(LR, b1=0.0, b2=0.99, eps=1e-8)
  step = jax.jit(progressive_step.make_progressive_step(G, D, tx, tx, cfg),
                 static_argnums=(4, 5))
  state = state_lib.create(G, D, tx, tx, 0, jax.random.PRNGKey(0))
  batch = _batch(8)
  draws = progressive_step.draw(jax.random.PRNGKey(1), G, cfg, jnp.asarray(batch['label']), 8,
                                do_pl=True)
  args = (batch, np.float32(0.5), np.int32(N), 8)
  with_pl, m_pl = step(state, *args, True, draws)
  without, m = step(state, *args, False, draws._replace(g_pl=None, pl_noise=None))
  for key in ('loss/D', 'loss/D_r1_penalty', 'loss/G', 'scores/fake', 'scores/real'):
    numerics.assert_close(m_pl[key], m[key], 1e-6, key)
  numerics.assert_trees_close(with_pl.d_params, without.d_params, 1e-6, 'D')
  assert float(m_pl['loss/G_pl_penalty']) > 0 and int(m_pl['nonfinite']) == 0
  assert float(state.pl_mean) == float(without.pl_mean) == 0.0
  assert float(with_pl.pl_mean) == float(m_pl['pl_mean']) > 0
  start, g_pl, g_main = (_leaves_named(s.g_params) for s in (state, with_pl, without))
  moved_by_pl = {k for k in start if not np.array_equal(g_pl[k], g_main[k])}
  assert any(k.startswith("['mapping']") for k in moved_by_pl)
  assert any(k.startswith("['synthesis']['b8']") for k in moved_by_pl)
  for k in start:
    if "['b16']" in k or 'torgb16' in k:  # not read at stage 8: neither phase moves it
      np.testing.assert_array_equal(g_pl[k], start[k], err_msg=k)
      np.testing.assert_array_equal(g_main[k], start[k], err_msg=k)
  # ProGAN has no w space: no path length.
  with pytest.raises(ValueError, match='needs a generator with a w space'):
    progressive_step.make_progressive_step(
        progan.Generator(z_dim=8, **kw), progan.Discriminator(**kw), tx, tx, cfg)


def test_ada_moves_p_on_a_progressive_run():
  """ProGAN's tiny run with ADA (pipe bgc, target 0.6, p from 0.5): D sees augmented images at
  4x4 and 8x8; p moves by batch * interval / (ada_kimg * 1000) = 0.32 every 4th step."""
  config = config_base.load(str(REPO / 'experiments/celebahq_progan.py') + ':tiny', {
      'augment.pipe': 'bgc', 'augment.p': 0.5, 'augment.ada_kimg': 0.1})
  config_check.validate(config, 1)
  G, D = models.build(config.model, 32, 1, 0)
  step_def = steps.make(config, G, D, 0)
  fn = jax.jit(step_def.fn, static_argnums=(4, 5))
  state = state_lib.create(G, D, step_def.g_tx, step_def.d_tx, 0, jax.random.PRNGKey(0),
                           config.augment.p)
  start = state
  ps = []
  for i, stage in enumerate((4, 4, 8, 8)):
    state, m = fn(state, _batch(stage, i), np.float32(1.0), np.int32(N * i), stage,
                  step_def.variant(i))
    ps.append(float(m['aug/p']))
    assert int(m['nonfinite']) == 0
  assert ps[:3] == [0.5] * 3 and ps[3] == pytest.approx(0.5 + 0.32 * np.sign(float(m['aug/rt'])
                                                                              - 0.6))
  assert float(state.ada_p) == ps[3] and float(state.ada_stats[1]) == 0  # the window restarts
  # p is what D sees: the same step at p = 0 scores other reals.
  _, m0 = fn(start.replace(ada_p=jnp.float32(0.0)), _batch(4), np.float32(1.0), np.int32(0), 4,
             (False,))
  _, m5 = fn(start, _batch(4), np.float32(1.0), np.int32(0), 4, (False,))
  assert float(m0['scores/real']) != float(m5['scores/real'])


def test_augmentation_works_at_every_stage():
  """bgc at 4x4 and 8x8; image-space filtering (43 taps, 21-pixel margin) is skipped up to
  16x16, where augment.band_filter cannot run, and kept from 32x32 on."""
  full = augment.preset('bgcfnc')
  for res in (4, 8, 16):
    assert progressive_phases.augment_at(full, res).imgfilter == 0
  assert progressive_phases.augment_at(full, 32) is full
  assert progressive_phases.augment_at(None, 4) is None
  for res in (4, 8):
    x = jnp.asarray(np.random.RandomState(res).uniform(-1, 1, (N, res, res, 1)), jnp.float32)
    y = augment.augment(jax.random.PRNGKey(0), x, 1.0, progressive_phases.augment_at(full, res))
    assert y.shape == x.shape and bool(jnp.all(jnp.isfinite(y))) and not np.array_equal(x, y)


def test_box_downsample_matches_a_loop_and_the_model():
  x = np.random.RandomState(0).randn(2, 8, 8, 3).astype(np.float32)
  got = progressive_step.box_downsample(x, 2)
  want = np.array([[[x[n, 4 * i:4 * i + 4, 4 * j:4 * j + 4].astype(np.float64).mean(axis=(0, 1))
                     for j in range(2)] for i in range(2)] for n in range(2)])
  scale = float(np.abs(x).max())  # means of 16 values; a wrong box is O(1e-1) of the values
  numerics.assert_close(got, want, 1e-6, 'box downsample', scale)
  numerics.assert_close(got, layers.downsample_avg(jnp.asarray(x), 4), 1e-6, 'vs the model', scale)
  assert progressive_step.box_downsample(x, 8) is x
  with pytest.raises(ValueError, match='cannot box-filter'):
    progressive_step.box_downsample(x, 3)


def test_batch_sizes_parse_and_bad_ones_are_refused():
  assert progressive.parse_batch_sizes('256:14, 512:6,1024:3') == {256: 14, 512: 6, 1024: 3}
  assert progressive.parse_batch_sizes('') == {}
  for bad in ('256-14', '100:4', '8:0', '8:4,8:8'):
    with pytest.raises(ValueError, match='bad batch size|power of two'):
      progressive.parse_batch_sizes(bad)
  assert progressive.stages(32, 4) == [4, 8, 16, 32]


def test_position_comes_from_the_checkpoint_meta_or_a_replay():
  config = config_base.load(str(REPO / 'experiments/celebahq_progan.py') + ':tiny')
  schedule = schedule_lib.Schedule(config, 32)
  assert schedule.position({}, 0) == (0, None)
  meta = {'nimg': 40, 'stage': 16, 'alpha': 0.5}
  assert schedule.position(meta, 5) == (40, (16, False))
  # Without the meta: 5 steps of 8 images; the 5th (32 images shown) was at stage 8, alpha 1.
  assert schedule.at(32)[:2] == (8, 1.0) and schedule.at(24)[:2] == (8, 0.5)
  assert schedule.position({}, 5) == (40, (8, True))
  assert schedule.position({}, 4) == (32, (8, False))


def test_schedule_replay_sums_the_batches():
  config = config_base.load(str(REPO / 'experiments/celebahq_progan.py'))
  schedule = schedule_lib.Schedule(config, 1024)
  nimg = 0
  for _ in range(50):
    nimg += schedule.at(nimg).batch_size
  assert schedule.replay(50) == nimg == 800  # 16 per step at 4x4
  assert schedule.at(9_600_000)[:2] == (1024, 1.0) and schedule.at(9_600_000).batch_size == 3
  assert schedule.at(9_300_000)[:2] == (1024, 0.5)
  assert schedule.at(9_000_000)[:2] == (512, 1.0)  # the exact start of a fade: the stage below


@pytest.mark.parametrize('overrides, match', [
    ({'schedule.batch_size': 12}, 'config.schedule.batch_size=12 .*divisible by the 8 devices'),
    ({'schedule.growing.batch_sizes': '256:14'}, 'batch 14 at resolution 256 must be divisible by '
     'the 8 devices.*mesh.data'),
    ({'schedule.growing.grow': False}, "'progan' trains only with config.schedule.growing.grow"),
    ({'loss.pl_weight': 2.0}, "0 with model 'progan': path length needs a w space"),
    ({'schedule.growing.fade_kimg': 0.0, 'schedule.growing.stabilize_kimg': 0.0}, 'not both 0'),
    ({'schedule.growing.start_resolution': 6}, 'power of two'),
    ({'loss.name': 'hinge'}, 'one of stylegan2, nonsaturating, wgan_gp'),
    ({'evals.metrics': 'fid2k,ppl2_wend'}, "without ppl for model 'progan'"),
    ({'schedule.growing.batch_sizes': '32:24', 'model.mbstd_group_size': 16},
     'dividing the batch 24 at resolution 32'),
    ({'schedule.growing.batch_sizes': '32:x'}, 'RES:BATCH pairs'),
])
def test_config_check_refuses_bad_progressive_values(overrides, match):
  config = config_base.load(str(REPO / 'experiments/celebahq_progan.py') + ':fmnist', overrides)
  with pytest.raises(config_check.ConfigError, match=match):
    config_check.validate(config, 8)


def test_experiment_configs_validate():
  for spec, devices in (('celebahq_progan.py', 1), ('celebahq_progan.py:fmnist', 8),
                        ('celebahq_progan.py:tiny', 8), ('ffhq_stylegan.py', 8),
                        ('ffhq_stylegan.py:fmnist', 8), ('ffhq_stylegan.py:tiny', 8)):
    config_check.validate(config_base.load(str(REPO / 'experiments' / spec)), devices)
  # StyleGAN (w space) grows with path length and ADA; R1 stays in every D step.
  config_check.validate(config_base.load(str(REPO / 'experiments/ffhq_stylegan.py:tiny'), {
      'loss.pl_weight': 2.0, 'augment.pipe': 'bgc'}), 8)
  with pytest.raises(config_check.ConfigError, match='no lazy R1'):
    config_check.validate(config_base.load(str(REPO / 'experiments/ffhq_stylegan.py:tiny'),
                                           {'loss.r1_interval': 16}), 8)
  with pytest.raises(config_check.ConfigError, match='wgan_gp.*schedule.growing.grow=True'):
    config_check.validate(config_base.load(str(REPO / 'experiments/fashion_mnist.py'),
                                           {'loss.name': 'wgan_gp'}), 8)
  paper = config_base.load(str(REPO / 'experiments/celebahq_progan.py'))
  assert paper.data.name == 'celeb_a_hq/1024' and paper.loss.wgan_drift == 0.001
  with pytest.raises(config_check.ConfigError, match='batch 14 at resolution 256'):
    config_check.validate(paper, 8)


def test_build_passes_each_model_only_its_arguments():
  config = config_base.load(str(REPO / 'experiments/celebahq_progan.py'))
  G, D = models.build(config.model, 1024, 3, 0)
  assert isinstance(G, progan.Generator) and G.channel_base == 16384 and G.z_dim == 512
  assert D.mbstd_group_size is None  # 0: the whole minibatch
  config = config_base.load(str(REPO / 'experiments/ffhq_stylegan.py'))
  G, D = models.build(config.model, 1024, 3, 0)
  assert isinstance(G, stylegan.Generator) and G.mapping_layers == 8 and D.mbstd_group_size == 4


# --------------------------------------------------------------------------------------------
# The loop end to end: 16 -> 32 on fake Fashion-MNIST, 8 images per step; the 32x32 blocks fade
# in over steps 3-6 (alpha 0.25, 0.5, 0.75, then 1 at step 6); 8 steps in all.


def _loop_config(root, **overrides):
  base = {'data.source_dir': str(root / 'src'), 'data.data_dir': str(root / 'tfds'),
          'schedule.growing.start_resolution': 16, 'schedule.growing.fade_kimg': 0.032,
          'schedule.growing.stabilize_kimg': 0.016, 'schedule.kimg': 0.064,
          'checkpoint.every_steps': 5, 'log.image_every_steps': 4}
  base.update(overrides)
  return config_base.load(str(REPO / 'experiments/celebahq_progan.py') + ':tiny', base)


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree_util.tree_leaves(jax.device_get(tree))]


@pytest.fixture(scope='module')
def loop_runs(tmp_path_factory):
  root = tmp_path_factory.mktemp('progressive')
  write_fake_fashion_mnist(root / 'src', n_train=48, n_test=8)
  dev = jax.devices()[:1]
  full = train.train_and_evaluate(_loop_config(root), str(root / 'full'), devices=dev)
  # Interrupted after step 5 (a checkpoint step, alpha 0.5), then the same command again.
  train.train_and_evaluate(_loop_config(root, **{'schedule.max_steps': 5}), str(root / 'split'),
                           devices=dev)
  resumed = train.train_and_evaluate(_loop_config(root), str(root / 'split'), devices=dev)
  return dict(root=root, full=full, resumed=resumed)


def _meta(workdir, step):
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  mngr = ocp.CheckpointManager(Path(workdir) / 'checkpoints',
                               options=ocp.CheckpointManagerOptions(read_only=True),
                               item_names=('state', 'meta'))
  return mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']


def test_resumed_mid_fade_equals_uninterrupted(loop_runs):
  full, resumed = loop_runs['full'], loop_runs['resumed']
  assert int(full.step) == int(resumed.step) == 8
  for a, b in zip(_leaves(full), _leaves(resumed)):
    np.testing.assert_array_equal(a, b)
  meta = _meta(loop_runs['root'] / 'split', 5)
  assert meta['nimg'] == 40 and meta['stage'] == 32 and meta['alpha'] == pytest.approx(0.5)
  assert meta['batch'] == 8 and meta['kimg'] == pytest.approx(0.04)
  assert _meta(loop_runs['root'] / 'full', 8)['alpha'] == 1.0


def test_loop_writes_grids_at_the_full_size(loop_runs):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  workdir = loop_runs['root'] / 'full'
  names = sorted(p.name for p in workdir.glob('samples_*.png'))
  assert names == ['samples_0000000.png', 'samples_0000004.png', 'samples_0000008.png']
  grid = np.asarray(Image.open(workdir / 'samples_0000000.png'))
  assert grid.shape == (2 * 32, 4 * 32)
  tile = grid[:32, :32].astype(int)  # stage 16 upsampled: 2x2 blocks of one value
  np.testing.assert_array_equal(tile[0::2, 0::2], tile[1::2, 1::2])
  last = np.asarray(Image.open(workdir / 'samples_0000008.png')).astype(int)
  assert np.abs(last - grid).mean() > 1  # it learns (and grows): the grid changed


def test_generate_and_export_a_progan_run(loop_runs, tmp_path):
  import gan_jax  # pylint: disable=g-import-not-at-top
  from gan_jax.tools import export, generate  # pylint: disable=g-import-not-at-top
  workdir = loop_runs['root'] / 'full'
  g = gan_jax.load_generator(workdir)
  assert g.growth is None and g.img_resolution == 32 and g.w_dim == 0
  z = np.random.RandomState(0).randn(1, g.z_dim)
  images = g(z)
  assert images.shape == (1, 32, 32, 1) and np.all(np.isfinite(images))
  ema = loop_runs['full'].ema_params
  want = progan.Generator(**export.module_kwargs(g.module)).apply({'params': ema},
                                                                  jnp.asarray(z, jnp.float32))
  numerics.assert_close(images, want, 1e-5, 'exported G_ema')  # another network: O(1)
  with pytest.raises(ValueError, match='no mapping network'):
    g.mapping(z)
  with pytest.raises(ValueError, match='no truncation'):
    g(z, psi=0.7)
  # Step 5 of the interrupted run is mid-fade: 32x32 at alpha 0.5.
  mid = gan_jax.load_generator(loop_runs['root'] / 'split' / 'checkpoints' / '5')
  assert mid.growth == {'stage': 32, 'alpha': 0.5}
  dest = export.export_from_workdir(workdir, tmp_path / 'export')
  np.testing.assert_array_equal(gan_jax.load_generator(dest)(z), images)
  written = generate.main(['--workdir', str(workdir), '--seeds', '0-1', '--outdir',
                           str(tmp_path / 'out')])
  assert [Path(p).name for p in written] == ['seed0000.png', 'seed0001.png']


def test_evaluate_refuses_ppl_for_progan(loop_runs):
  """(A run caught mid-growth is evaluated at its stage: tests/test_metrics_growing.py.)"""
  from gan_jax import cli_errors  # pylint: disable=g-import-not-at-top
  from gan_jax import evaluate  # pylint: disable=g-import-not-at-top
  full = loop_runs['root'] / 'full'
  with pytest.raises(cli_errors.UserError, match='a ProGAN generator has none'):
    evaluate.main(['--workdir', str(full), '--metrics', 'ppl2_wend'])


@pytest.mark.slow
def test_step_on_1_and_8_devices_agree():
  config = config_base.load(str(REPO / 'experiments/celebahq_progan.py') + ':tiny')
  G, D = models.build(config.model, 32, 1, 0)
  g_tx, d_tx = progressive_step.make_optimizers(config)
  step_cfg = progressive_step.ProgressiveStepConfig.from_config(config, 0)
  results = []
  for devices in (jax.devices()[:1], jax.devices()):
    mesh = sharding.make_mesh(config.mesh, devices)
    rep, bshard = sharding.replicated(mesh), sharding.batch_sharding(mesh)
    sshard = sharding.state_sharding(mesh, state_lib.abstract(G, D, g_tx, d_tx, 0))
    state = jax.jit(lambda k: state_lib.create(G, D, g_tx, d_tx, 0, k), out_shardings=sshard)(
        jax.random.PRNGKey(0))
    step = progressive_step.jit_progressive_step(
        progressive_step.make_progressive_step(G, D, g_tx, d_tx, step_cfg, bshard), sshard,
        bshard, rep)
    metrics = []
    for i, (stage, alpha) in enumerate(((16, 1.0), (32, 0.5))):
      state, m = step(state, _batch(stage, i), np.float32(alpha), np.int32(N * i), stage,
                      False)
      metrics.append(m)
    results.append((jax.device_get(state), jax.device_get(metrics)))
  (s1, m1), (s8, m8) = results
  # The metrics at their own scale, but at least 1e-3: a batch mean of D's scores can cancel to
  # ~1e-4 (step 0's scores/fake: -1.8e-4, 4e-9 apart on 8 devices, 2e-5 of itself), while a
  # sharding bug moves the scores by a learning-rate step's effect.
  for i, (a, b) in enumerate(zip(m1, m8)):
    assert a.keys() == b.keys()
    for k in a:
      numerics.assert_close(b[k], a[k], RUNS_REL, f'8 vs 1 device: step {i} {k}',
                            max(abs(float(a[k])), 1e-3))
  assert_runs_agree([], [], s1, s8, '8 vs 1 device')


def test_nonfinite_rolls_back_to_the_last_checkpoint(loop_runs, monkeypatch):
  from gan_jax import guard  # pylint: disable=g-import-not-at-top
  real_check, calls = guard.check_finite, []

  def check(step_metrics):  # a NaN reported at the end of the run (step 7), once
    calls.append([s for s, _ in step_metrics])
    if len(calls) == 1 and step_metrics and step_metrics[-1][0] == 7:
      raise guard.NonFiniteError('Non-finite loss at step 7 (injected).')
    real_check(step_metrics)

  monkeypatch.setattr(train.guard, 'check_finite', check)
  root = loop_runs['root']
  config = _loop_config(root, **{'train.nonfinite_action': 'rollback'})
  # Resume the interrupted run's copy at its step-5 checkpoint: steps 5-7, NaN, back to 5, 5-7.
  import shutil  # pylint: disable=g-import-not-at-top
  workdir = root / 'rollback'
  shutil.copytree(root / 'split', workdir)
  shutil.rmtree(workdir / 'checkpoints' / '8')
  state = train.train_and_evaluate(config, str(workdir), devices=jax.devices()[:1])
  assert int(state.step) == 8 and calls[0] == [5, 6, 7]
  assert _meta(workdir, 8)['nimg'] == 64
  # New draws after the rollback: not the uninterrupted run's weights.
  assert any(not np.array_equal(a, b) for a, b in zip(_leaves(state.g_params),
                                                      _leaves(loop_runs['full'].g_params)))
