"""Transfer learning (config.init, gan_jax/transfer.py) and frozen layers (config.train.freeze_*).

A genuine NVIDIA pickle (tests/fixtures/nvlabs) starts a state whose G_ema makes NVIDIA's images;
NVIDIA's D of tests/fixtures/nvlabs_step, imported the same way, gives NVIDIA's D scores. Frozen
leaves get no update and no Adam state, the others exactly the Adam update of an unfrozen run. A
fine-tuning run of the loop starts from one of our workdirs, keeps its frozen layers, and resumes
exactly without reading the source again.
"""

import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from etils import epath

from gan_jax import checkpointing
from gan_jax import config_base
from gan_jax import config_check
from gan_jax import models
from gan_jax import optim
from gan_jax import state as state_lib
from gan_jax import train
from gan_jax import transfer
from gan_jax import workdir as workdir_lib
from gan_jax.tools import nvlabs
from tests import numerics
from tests.fake_data import write_fake_fashion_mnist

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / 'tests' / 'fixtures'
PICKLE = FIXTURES / 'nvlabs' / 'network-uncond-nosrc.pkl'
PLAIN = {'loss.r1_interval': 0, 'loss.pl_interval': 0}


def _npz(path):
  return dict(np.load(path, allow_pickle=False))


def nvidia_config(**init):
  """The fixtures' architecture (tests/fixtures/nvlabs/README.md) with init.source = the pickle."""
  config = config_base.get_base_config()
  config.model.update(z_dim=64, w_dim=64, mapping_layers=2, channel_base=2048, channel_max=64,
                      mbstd_group_size=4)
  config.init.source = str(PICKLE)
  config.init.update(init)
  return config


_FRESH = {}


def fresh_state(config, resolution=32, channels=3, c_dim=0):
  """(G, D, a fresh state) for `config`'s model and optimizers, made once per shapes and config
  (the init compiles for each new architecture)."""
  key = (config.model.to_json(), config.train.to_json(), config.augment.p, resolution, channels,
         c_dim)
  if key not in _FRESH:
    G, D = models.build(config.model, resolution, channels, c_dim)
    g_tx, d_tx = optim.make_optimizers(config)
    state = jax.jit(lambda k: state_lib.create(G, D, g_tx, d_tx, c_dim, k, config.augment.p))(
        jax.random.PRNGKey(0))
    _FRESH[key] = G, D, state
  return _FRESH[key]


def abstract_state(config, resolution=32, channels=3, c_dim=0):
  G, D = models.build(config.model, resolution, channels, c_dim)
  return state_lib.abstract(G, D, *optim.make_optimizers(config), c_dim)


def flat(tree):
  return {'/'.join(str(getattr(k, 'key', k)) for k in kp): np.asarray(v)
          for kp, v in jax.tree_util.tree_flatten_with_path(jax.device_get(tree))[0]}


@pytest.fixture(scope='module')
def pickle_source():
  return transfer.read_source(str(PICKLE))


# --------------------------------------------------------------------------------------------
# NVIDIA's networks.


def test_nvidia_pickle_starts_a_fresh_run(tmp_path, pickle_source):
  config = nvidia_config()
  config.augment.p = 0.25
  G, _, fresh = fresh_state(config)
  state = transfer.start_state(config, fresh, epath.Path(tmp_path), True, pickle_source)
  io = _npz(FIXTURES / 'nvlabs' / 'io_uncond.npz')
  images = G.apply({'params': state.ema_params, 'buffers': state.ema_buffers},
                   jnp.asarray(io['z']), None, noise_mode='const')
  numerics.assert_close(images, io['img_psi1_const'].transpose(0, 2, 3, 1), numerics.NVIDIA_REL,
                        'G_ema images')
  truncated = G.apply({'params': state.ema_params, 'buffers': state.ema_buffers},
                      jnp.asarray(io['z']), None, truncation_psi=0.5, noise_mode='const')
  numerics.assert_close(truncated, io['img_psi05_const'].transpose(0, 2, 3, 1),
                        numerics.NVIDIA_REL, 'w_avg kept: truncated images')
  # G and D are the pickle's, converted; everything else is a fresh run's.
  from gan_jax.tools import nvlabs_pickle  # pylint: disable=g-import-not-at-top
  network = nvlabs_pickle.load_network_pickle(PICKLE)
  want_d = nvlabs.variables_tree(network['D'])['params']
  assert flat(state.d_params).keys() == flat(want_d).keys()
  for k, v in flat(want_d).items():
    np.testing.assert_array_equal(flat(state.d_params)[k], v, err_msg=k)
  for k, v in flat(nvlabs.variables_tree(network['G'])['params']).items():
    np.testing.assert_array_equal(flat(state.g_params)[k], v, err_msg=k)
  assert int(state.step) == 0 and float(state.ada_p) == 0.25 and float(state.pl_mean) == 0
  opt_leaves = list(flat(state.g_opt).values()) + list(flat(state.d_opt).values())
  assert opt_leaves and not any(np.any(x) for x in opt_leaves)  # Adam's count and moments: 0
  for got, want in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(fresh)):
    assert got.sharding == want.sharding
  record = json.loads((tmp_path / transfer.RECORD_FILE).read_text())
  assert record['kind'] == 'nvlabs-stylegan2' and record['source'] == str(PICKLE)
  assert record['copied'] == sum(len(flat(getattr(state, n))) for n in transfer.NETWORKS)
  assert not record['reinitialised'] and not record['dropped']
  assert len(record['sha256']) == 64
  no_w_avg = transfer.start_state(nvidia_config(w_avg=False), fresh, epath.Path(tmp_path), True,
                                  pickle_source)
  assert not np.any(np.asarray(no_w_avg.ema_buffers['mapping']['w_avg']))
  assert np.any(np.asarray(state.ema_buffers['mapping']['w_avg']))
  np.testing.assert_array_equal(no_w_avg.ema_buffers['synthesis']['b8']['conv0']['noise_const'],
                                state.ema_buffers['synthesis']['b8']['conv0']['noise_const'])


SG3_PICKLE = FIXTURES / 'nvlabs_sg3' / 'network-t-nosrc.pkl'


def test_nvidia_stylegan3_pickle_starts_a_fresh_run(tmp_path):
  """NVIDIA's StyleGAN3-T pickle (tests/fixtures/nvlabs_sg3): G_ema makes NVIDIA's images at
  psi 1 and 0.5 (1e-5 absolute, the StyleGAN3 import's tolerance), D is the pickle's D; a
  StyleGAN2 config is refused with the family to set, a wider one with the channels to set."""
  config = nvidia_config()
  config.init.source = str(SG3_PICKLE)
  config.model.update(name='stylegan3', channel_base=512, channel_max=32, conv_kernel=3,
                      use_radial_filters=False)
  source = transfer.read_source(str(SG3_PICKLE))
  assert (source.kind, source.model) == ('nvlabs-stylegan3', 'stylegan3')
  G, _, fresh = fresh_state(config)
  state = transfer.start_state(config, fresh, epath.Path(tmp_path), True, source)
  io = _npz(FIXTURES / 'nvlabs_sg3' / 'io_t.npz')
  variables = {'params': state.ema_params, 'buffers': state.ema_buffers}
  for psi, want in ((1.0, io['img_psi1']), (0.5, io['img_psi05'])):
    images = np.asarray(G.apply(variables, jnp.asarray(io['z']), None, truncation_psi=psi))
    err = np.abs(images - want.transpose(0, 2, 3, 1)).max()
    assert err <= 1e-5, f'psi {psi}: max abs error {err:.2e}'
  from gan_jax.tools import nvlabs_pickle  # pylint: disable=g-import-not-at-top
  network = nvlabs_pickle.load_network_pickle(SG3_PICKLE)
  for k, v in flat(nvlabs.variables_tree(network['D'])['params']).items():
    np.testing.assert_array_equal(flat(state.d_params)[k], v, err_msg=k)
  assert int(state.step) == 0
  record = json.loads((tmp_path / transfer.RECORD_FILE).read_text())
  assert record['kind'] == 'nvlabs-stylegan3' and record['model'] == 'StyleGAN3'
  with pytest.raises(transfer.TransferError, match=r"config.model.name='stylegan3'"):
    transfer.check_architecture(source, 'stylegan2', {}, {})
  theirs = transfer.describe(source.ema_params)
  wider = dict(theirs, layers=[k.replace('_32', '_64') for k in theirs['layers']])
  with pytest.raises(transfer.TransferError,
                     match=r'(?s)StyleGAN3 layers.*--config.model.channel_base=512 '
                           r'--config.model.channel_max=32 --config.model.conv_kernel=3'):
    transfer.check_architecture(source, 'stylegan3', wider, theirs)


def test_export_starts_g_and_g_ema_from_its_weights(tmp_path):
  """An export (G_ema only): G and G_ema both start as its weights and buffers, D keeps its random
  init, and the record says so."""
  from tests import tiny_generator  # pylint: disable=g-import-not-at-top
  path = tiny_generator.make_export(tmp_path / 'export')
  config = config_base.get_base_config()
  kw = tiny_generator.KWARGS
  config.model.update(z_dim=kw['z_dim'], w_dim=kw['w_dim'], mapping_layers=kw['mapping_layers'],
                      channel_base=kw['channel_base'], channel_max=kw['channel_max'],
                      mbstd_group_size=4)
  config.init.source = str(path)
  _, _, fresh = fresh_state(config, channels=kw['img_channels'])
  state = transfer.start_state(config, fresh, epath.Path(tmp_path / 'run'), True)
  from gan_jax.tools import export  # pylint: disable=g-import-not-at-top
  _, variables, _ = export.read_export(path)
  for network in ('g', 'ema'):
    for part in ('params', 'buffers'):
      got = flat(getattr(state, f'{network}_{part}'))
      want = flat(variables[part])
      assert got.keys() == want.keys(), (network, part)
      for k, v in want.items():
        np.testing.assert_array_equal(got[k], v, err_msg=f'{network}_{part}/{k}')
  for k, v in flat(fresh.d_params).items():
    np.testing.assert_array_equal(flat(state.d_params)[k], v, err_msg=k)
  record = json.loads((tmp_path / 'run' / transfer.RECORD_FILE).read_text())
  assert record['kind'] == 'export'
  assert any('d_params' in item for item in record['reinitialised'])
  assert any('G_ema only' in note for note in record['notes'])


def test_imported_d_scores_equal_nvidias(tmp_path):
  """NVIDIA's D of the step fixtures (d.npz), loaded through init, scores the recorded reals as
  NVIDIA's StyleGAN2Loss did (Loss/scores/real of the Dmain phase)."""
  g_sd = _npz(FIXTURES / 'nvlabs' / 'g_uncond.npz')
  network = {'G': g_sd, 'G_ema': g_sd, 'D': _npz(FIXTURES / 'nvlabs_step' / 'd.npz')}
  source = transfer.nvlabs_source(network, 'fixtures')
  config = nvidia_config()
  _, D, fresh = fresh_state(config)
  state = transfer.start_state(config, fresh, epath.Path(tmp_path), False, source)
  step = _npz(FIXTURES / 'nvlabs_step' / 'step_Dmain.npz')
  reals = jnp.asarray(step['in/real_img'].transpose(0, 2, 3, 1))
  scores = D.apply({'params': state.d_params}, reals, None)
  numerics.assert_close(scores, step['report/Loss/scores/real'][:, 0], numerics.NVIDIA_REL,
                        'D(reals)')
  assert not (tmp_path / transfer.RECORD_FILE).exists()  # only process 0 writes the record


def test_label_count_change_reinitialises_the_embeddings(tmp_path, pickle_source):
  config = nvidia_config()
  _, _, fresh = fresh_state(config, c_dim=5)
  state = transfer.start_state(config, fresh, epath.Path(tmp_path), True, pickle_source)
  got, init, src = flat(state.g_params), flat(fresh.g_params), flat(pickle_source.g_params)
  np.testing.assert_array_equal(got['mapping/embed/weight'], init['mapping/embed/weight'])
  np.testing.assert_array_equal(got['mapping/fc0/weight'][:64], src['mapping/fc0/weight'])
  np.testing.assert_array_equal(got['mapping/fc0/weight'][64:], init['mapping/fc0/weight'][64:])
  np.testing.assert_array_equal(got['synthesis/b32/conv0/weight'],
                                src['synthesis/b32/conv0/weight'])
  d_got, d_init, d_src = flat(state.d_params), flat(fresh.d_params), flat(pickle_source.d_params)
  assert any(k.startswith('mapping/') for k in d_got)
  for k, v in d_got.items():
    want = d_init[k] if k.startswith(('mapping/', 'b4/out/')) else d_src[k]
    np.testing.assert_array_equal(v, want, err_msg=k)
  record = json.loads((tmp_path / transfer.RECORD_FILE).read_text())
  assert 'g_params/mapping/embed/weight' in record['reinitialised']
  assert 'd_params/b4/out/weight' in record['reinitialised']
  assert any(p.startswith('g_params/mapping/fc0/weight') for p in record['partly_copied'])
  assert not record['dropped']
  # And back: the conditional run's networks into an unconditional one drop its label layers.
  cond = transfer.Source('workdir', 'cond', 'stylegan2', **{n: getattr(state, n)
                                                            for n in transfer.NETWORKS})
  back = transfer.start_state(config, fresh_state(config)[2], epath.Path(tmp_path), True, cond)
  np.testing.assert_array_equal(flat(back.g_params)['mapping/fc0/weight'],
                                src['mapping/fc0/weight'])
  dropped = json.loads((tmp_path / transfer.RECORD_FILE).read_text())['dropped']
  assert 'g_params/mapping/embed/weight' in dropped and 'd_params/mapping/fc0/weight' in dropped


def test_refusals_name_the_problem(tmp_path, pickle_source):
  wd = epath.Path(tmp_path)
  config = nvidia_config()
  # The architecture is checked on shapes, before any value is read: abstract states suffice.
  with pytest.raises(transfer.TransferError, match=r'makes 32x32 images, this run\'s data is '
                     r'16x16.*neither grows nor crops'):
    transfer.start_state(config, abstract_state(config, resolution=16), wd, True, pickle_source)
  wide = nvidia_config()
  wide.model.update(z_dim=128, channel_base=4096, channel_max=128)
  with pytest.raises(transfer.TransferError, match=r'z_dim: source 64, this run 128(.|\n)*'
                     r'--config.model.z_dim=64 --config.model.channel_base=2048 '
                     r'--config.model.channel_max=64'):
    transfer.start_state(wide, abstract_state(wide), wd, True, pickle_source)
  # RGB source, grayscale run: strict lists the tensors; strict=False starts them fresh.
  with pytest.raises(transfer.TransferError, match=r'synthesis/b32/torgb/weight: source '
                     r'\(1, 1, 64, 3\), ours \(1, 1, 64, 1\)(.|\n)*d_params/b32/fromrgb/weight'):
    transfer.start_state(config, fresh_state(config, channels=1)[2], wd, True, pickle_source)
  loose = nvidia_config(strict=False)
  _, _, gray = fresh_state(loose, channels=1)
  state = transfer.start_state(loose, gray, wd, True, pickle_source)
  np.testing.assert_array_equal(flat(state.d_params)['b32/fromrgb/weight'],
                                flat(gray.d_params)['b32/fromrgb/weight'])
  np.testing.assert_array_equal(flat(state.d_params)['b32/conv0/weight'],
                                flat(pickle_source.d_params)['b32/conv0/weight'])
  assert 'ema_params/synthesis/b32/torgb/weight: source (1, 1, 64, 3), ours (1, 1, 64, 1)' in \
      json.loads((tmp_path / transfer.RECORD_FILE).read_text())['reinitialised']
  with pytest.raises(transfer.TransferError, match='records no ADA p'):
    transfer.start_state(nvidia_config(ada_p=True), fresh_state(config)[2], wd, True,
                         pickle_source)
  with pytest.raises(transfer.TransferError, match='does not exist'):
    transfer.read_source(str(tmp_path / 'nothing.pkl'))
  with pytest.raises(transfer.TransferError, match='neither a training workdir'):
    transfer.read_source(str(tmp_path))
  progan = nvidia_config()
  progan.model.name = 'progan'
  with pytest.raises(transfer.TransferError, match="set config.model.name='stylegan2'"):
    transfer.start_state(progan, abstract_state(config), wd, True, pickle_source)
  both = nvidia_config()
  both.resume = str(tmp_path)
  with pytest.raises(config_check.ConfigError, match='init.source'):
    config_check.validate(both, 1)
  progan.train.freeze_d = 2
  with pytest.raises(config_check.ConfigError, match='train.freeze_d'):
    config_check.validate(progan, 1)


# --------------------------------------------------------------------------------------------
# Freezing.


def test_frozen_layers_get_no_update_and_no_optimizer_state():
  config = nvidia_config()
  config.train.freeze_d = 7  # b32 (fromrgb, conv0, conv1, skip) and b16 (conv0, conv1, skip)
  config.train.freeze_g_mapping = True
  config.train.freeze_g_res = 8  # synthesis b4 and b8
  _, _, state = fresh_state(nvidia_config())  # the same networks; only the optimizers differ
  assert optim.d_layer_order(state.d_params)[:7] == [
      ('b32', 'fromrgb'), ('b32', 'conv0'), ('b32', 'conv1'), ('b32', 'skip'),
      ('b16', 'conv0'), ('b16', 'conv1'), ('b16', 'skip')]
  g_tx, d_tx = optim.make_optimizers(config)
  plain_g, plain_d = optim.make_optimizers(nvidia_config())
  for params, tx, plain, frozen_prefixes in (
      (state.g_params, g_tx, plain_g, ('mapping/', 'synthesis/b4/', 'synthesis/b8/')),
      (state.d_params, d_tx, plain_d, ('b32/', 'b16/'))):
    opt, plain_opt = tx.init(params), plain.init(params)
    # No moments for the frozen leaves: the state holds exactly the trained leaves' (mu and nu).
    trained = {k: v for k, v in flat(params).items() if not k.startswith(frozen_prefixes)}
    assert 0 < len(trained) < len(flat(params))
    moments = [x for x in jax.tree_util.tree_leaves(opt) if x.ndim > 0 or x.dtype != jnp.int32]
    assert sum(x.size for x in moments) == 2 * sum(v.size for v in trained.values())
    for step in range(3):  # twice the Adam step: its count and moments move on
      grads = jax.tree_util.tree_map(
          lambda p, s=step: jax.random.normal(jax.random.PRNGKey(s), p.shape), params)
      updates, opt = tx.update(grads, opt, params)
      plain_updates, plain_opt = plain.update(grads, plain_opt, params)
      new, plain_new = optax.apply_updates(params, updates), optax.apply_updates(params,
                                                                                plain_updates)
      for k, v in flat(new).items():
        if k.startswith(frozen_prefixes):
          np.testing.assert_array_equal(v, flat(params)[k], err_msg=k)
        else:  # the lazy-regularisation Adam of an unfrozen run, unchanged
          np.testing.assert_array_equal(v, flat(plain_new)[k], err_msg=k)
          assert np.any(v != flat(params)[k]), k
      params = new
  g_count, d_count = optim.frozen_counts(config, state.g_params, state.d_params)
  assert g_count == sum(v.size for k, v in flat(state.g_params).items()
                        if k.startswith(('mapping/', 'synthesis/b4/', 'synthesis/b8/')))
  assert d_count == sum(v.size for k, v in flat(state.d_params).items()
                        if k.startswith(('b32/', 'b16/')))
  config.train.freeze_d = 11
  with pytest.raises(ValueError, match='freeze_d=11, but this D has 10 layers'):
    optim.make_optimizers(config)[1].init(state.d_params)


# --------------------------------------------------------------------------------------------
# The loop: fine-tune one of our runs, resume it exactly without the source.


@pytest.fixture(scope='module')
def fake_source(tmp_path_factory):
  root = tmp_path_factory.mktemp('fmnist')
  write_fake_fashion_mnist(root / 'src', n_train=48, n_test=8)
  return root


def tiny_config(fake_source, **overrides):
  base = {'data.source_dir': str(fake_source / 'src'), 'data.data_dir': str(fake_source / 'tfds'),
          'loss.style_mixing_prob': 0.0, 'ema.rampup': 0.0, 'ema.kimg': 0.02,
          'log.image_every_steps': 100, **PLAIN}
  base.update(overrides)
  return config_base.load(str(REPO / 'experiments/fashion_mnist.py') + ':tiny', base)


def _source_workdir(config, path: epath.Path):
  """A workdir of ours as a run leaves it (config.json, a checkpoint at step 3), its state made
  directly (training it first would only cost a compile)."""
  from gan_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  G, D, c_dim = train.build(config, pipeline.dataset_info(config.data))
  g_tx, d_tx = optim.make_optimizers(config)
  state = state_lib.create(G, D, g_tx, d_tx, c_dim, jax.random.PRNGKey(config.seed))
  state = state.replace(step=jnp.int32(3), ada_p=jnp.float32(0.125))
  mngr = checkpointing.manager(str(path), config.checkpoint)
  checkpointing.save(mngr, state, {'step': 3, 'kimg': 0.024, 'nimg': 24})
  checkpointing.finish(mngr)
  workdir_lib.record_start(path, config, True)
  return jax.device_get(state)


def test_fine_tune_freezes_and_resumes_without_the_source(fake_source, tmp_path):
  devices = jax.devices()[:1]
  source_dir = epath.Path(tmp_path / 'source')
  source = _source_workdir(tiny_config(fake_source, seed=7), source_dir)
  tune = dict(seed=0, **{'init.source': str(source_dir), 'init.ada_p': True,
                         'train.freeze_d': 4, 'train.freeze_g_res': 4})
  # Uninterrupted: 4 steps. Split: 2 steps, the source removed, then resumed to 4.
  full = train.train_and_evaluate(tiny_config(fake_source, **tune, **{'schedule.kimg': 0.032}),
                                  str(tmp_path / 'full'), devices)
  train.train_and_evaluate(tiny_config(fake_source, **tune, **{'schedule.kimg': 0.016}),
                           str(tmp_path / 'split'), devices)
  record = (tmp_path / 'split' / transfer.RECORD_FILE).read_text()
  shutil.rmtree(source_dir)
  resumed = train.train_and_evaluate(
      tiny_config(fake_source, **tune, **{'schedule.kimg': 0.032}), str(tmp_path / 'split'),
      devices)
  assert (tmp_path / 'split' / transfer.RECORD_FILE).read_text() == record
  assert int(resumed.step) == int(full.step) == 4
  assert float(full.ada_p) == 0.125  # the source's p (init.ada_p; no augmentation moves it here)
  for k, v in flat(full).items():
    np.testing.assert_array_equal(flat(resumed)[k], v, err_msg=k)
  # The frozen layers are the source's; the others started there and moved by a few lr steps.
  got, src = flat(full.d_params), flat(source.d_params)
  for k, v in got.items():
    if k.startswith('b32/'):
      np.testing.assert_array_equal(v, src[k], err_msg=k)
    else:
      # 4 Adam steps of lr 0.0025, each at most ~1.4 lr with beta1 = 0.
      assert np.any(v != src[k]) and np.max(np.abs(v - src[k])) <= 4 * 2 * 0.0025, k
  g_got, g_src = flat(full.g_params), flat(source.g_params)
  for k, v in g_got.items():
    assert np.array_equal(v, g_src[k]) == k.startswith('synthesis/b4/'), k
  opt_paths = list(flat(full.d_opt))  # Adam state for the trained layers only
  assert any('/b16/' in k for k in opt_paths) and not any('/b32/' in k for k in opt_paths)
  saved = json.loads(record)
  assert saved['kind'] == 'workdir' and saved['step'] == 3 and saved['ada_p'] == 0.125
  assert not saved['reinitialised'] and not saved['dropped']
