"""The encoder (issue 19): degradations, config refusals, an encoder run through the one loop on a
tiny generator (its loss falls, its inversion beats its random init on held-out images, it
resumes bit for bit), gan_jax.load_encoder, and the translate / edit --encode command lines."""

import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import gan_jax
from gan_jax import cli_errors
from gan_jax import config_base
from gan_jax import config_check
from gan_jax import degradations
from gan_jax import encoder_step
from gan_jax import train
from gan_jax.data import pipeline
from gan_jax.images import to_uint8
from gan_jax.models import encoder as encoder_model
from gan_jax.tools import directions
from gan_jax.tools import directions_labels
from gan_jax.tools import edit
from gan_jax.tools import translate
from tests import tiny_generator
from tests.fake_data import write_fake_fashion_mnist

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------
# Degradations and config.


def _images(n=3, res=32, ch=1, seed=0):
  return jnp.asarray(np.random.RandomState(seed).uniform(-1, 1, (n, res, res, ch)), jnp.float32)


def test_downsample_is_the_box_average_at_full_size():
  x = _images()
  for k in (4, 8):
    out = degradations.apply(x, degradations.parse(f'down{k}'), jax.random.PRNGKey(0))
    assert out.shape == x.shape
    box = np.asarray(x).reshape(3, 32 // k, k, 32 // k, k, 1).mean(axis=(2, 4))
    np.testing.assert_allclose(np.asarray(out)[:, ::k, ::k], box, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(out)[:, 1::k, 1::k], np.asarray(out)[:, ::k, ::k])


def test_mask_sets_one_half_size_square_per_image_and_keeps_the_rest():
  x = _images(n=4)
  key = jax.random.PRNGKey(3)
  out = np.asarray(degradations.apply(x, degradations.parse('mask'), key))
  masks = np.asarray(degradations.random_masks(jax.random.fold_in(key, 0), 4, 32))
  for m, o, xi in zip(masks[..., 0], out, np.asarray(x)):
    rows, cols = np.nonzero(m)
    assert m.sum() == 16 * 16 and rows.max() - rows.min() == 15 and cols.max() - cols.min() == 15
    assert np.all(o[m > 0] == degradations.MASK_VALUE)
    np.testing.assert_array_equal(o[m == 0], xi[m == 0])


def test_edges_are_white_on_black_where_the_image_changes():
  x = -np.ones((1, 32, 32, 1), np.float32)
  x[:, 8:24, 8:24] = 1.0  # a white square on black
  out = np.asarray(degradations.edges(jnp.asarray(x)))
  assert out.shape == x.shape and out[0, 16, 16, 0] == -1 and out[0, 2, 2, 0] == -1
  assert out[0, 16, 8, 0] == 1 and out[0, 8, 16, 0] == 1  # the square's border


def test_degradation_specs():
  assert [d.name for d in degradations.parse(' down4, mask ,edges')] == ['down4', 'mask', 'edges']
  assert degradations.class_pair(degradations.parse('class:7>9')).target == 9
  for bad, message in (('blur', 'unknown degradation'), ('down3', 'power of two'),
                       ('down1', 'power of two'), ('class:1>2,mask', 'combines with no other')):
    with pytest.raises(ValueError, match=message):
      degradations.parse(bad)
  with pytest.raises(ValueError, match='below the resolution'):
    degradations.parse('down32', resolution=32)
  with pytest.raises(ValueError, match='conditional generator'):
    degradations.parse('class:1>2', c_dim=0)


def _config(**overrides):
  return config_base.load(str(REPO / 'experiments/fashion_mnist_encoder.py') + ':tiny', overrides)


def test_config_check_refuses_an_encoder_run_without_a_generator_and_bad_degradations():
  with pytest.raises(config_check.ConfigError, match='init.source.*G stays frozen'):
    config_check.validate(_config(), 1)
  with pytest.raises(config_check.ConfigError, match="unknown degradation 'blur'"):
    config_check.validate(_config(**{'init.source': 'g', 'encoder.degradations': 'blur'}), 1)
  with pytest.raises(config_check.ConfigError, match='encoder.images'):
    config_check.validate(_config(**{'init.source': 'g', 'encoder.images': 'fakes'}), 1)
  for variant in ('', ':down4', ':down8', ':mask', ':edges', ':class'):
    config_check.validate(config_base.load(
        str(REPO / 'experiments/fashion_mnist_encoder.py') + variant), 8)


def test_encoder_shapes_and_groups():
  assert [list(g) for g in encoder_model.ws_groups(8)] == [[0, 1, 2], [3, 4, 5], [6, 7]]
  assert [len(g) for g in encoder_model.ws_groups(18)] == [6, 6, 6]
  E = encoder_model.Encoder(32, 1, num_ws=8, w_dim=16, channels=8, max_channels=16)
  params = E.init(jax.random.PRNGKey(0), _images(n=2))
  assert E.apply(params, _images(n=2)).shape == (2, 8, 16)


# --------------------------------------------------------------------------------------------
# An encoder run through the one loop.


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  """A tiny generator (export), fake Fashion-MNIST, and a 10-step encoder run with checkpoints
  at steps 5 and 10."""
  root = tmp_path_factory.mktemp('encoder')
  write_fake_fashion_mnist(root / 'src', n_train=48, n_test=16)
  source = tiny_generator.make_export(root / 'g', noise_strength=0.1)
  overrides = {'init.source': source, 'data.source_dir': str(root / 'src'),
               'data.data_dir': str(root / 'tfds'), 'log.image_every_steps': 10}
  state = train.train_and_evaluate(_config(**overrides), str(root / 'run'), jax.devices()[:1])
  return root, overrides, jax.device_get(state)


def _flat(tree):
  return {'/'.join(str(getattr(k, 'key', k)) for k in kp): np.asarray(v)
          for kp, v in jax.tree_util.tree_flatten_with_path(jax.device_get(tree))[0]}


def _initial_encoder_params(config, G, E):
  """The encoder's random init of the run (state.create's D key for config.seed)."""
  _, d_key, _, _ = jax.random.split(jax.random.PRNGKey(config.seed), 4)
  return E.init({'params': d_key}, jnp.zeros((1, 32, 32, 1)), jnp.zeros((1, 0)))['params']


def test_the_run_trains_only_the_encoder_and_its_loss_falls(run):
  root, overrides, state = run
  config = _config(**overrides)
  G, E, c_dim = train.build(config, pipeline.dataset_info(config.data))
  assert isinstance(E, encoder_model.Encoder) and int(state.step) == 10
  g = gan_jax.load_generator(overrides['init.source'])
  for k, v in _flat(g.variables['params']).items():  # G and G_ema: the source's, untouched
    np.testing.assert_array_equal(_flat(state.ema_params)[k], v, err_msg=k)
    np.testing.assert_array_equal(_flat(state.g_params)[k], v, err_msg=k)
  losses = encoder_step.Losses(G, E, config.encoder)
  with pipeline.InputPipeline(config.data, 8, config.seed) as data:
    batch = data.batch_at(0)['image']
  loss = lambda p: float(losses(p, state.ema_params, state.ema_buffers, batch, batch)[0])
  before, after = loss(_initial_encoder_params(config, G, E)), loss(state.d_params)
  assert after < 0.8 * before, (before, after)
  # The sample grid shows input | reconstruction | clean triplets of step 0's reals.
  grid = np.asarray(Image.open(root / 'run' / 'samples_0000010.png'))
  reals = np.asarray(Image.open(root / 'run' / 'reals.png'))
  assert grid.shape == (2 * 32, 12 * 32)
  np.testing.assert_array_equal(grid[:32, 64:96], reals[:32, :32])  # clean = the first real


def test_load_encoder_inverts_held_out_images_better_than_its_random_init(run):
  root, overrides, _ = run
  config = _config(**overrides)
  e = gan_jax.load_encoder(root / 'run')
  assert (e.num_ws, e.w_dim, e.img_resolution) == (8, 16, 32) and e.degradations == ()
  test_config = config.data.copy_and_resolve_references()
  test_config.split = 'test'
  with pipeline.InputPipeline(test_config, 16, 0) as data:
    held_out = data.batch_at(0)['image']
  trained = np.mean(np.square(e.reconstruct(held_out) - held_out))
  untrained = e.generator.synthesis(
      np.asarray(e.generator.w_avg + e.module.apply(
          {'params': _initial_encoder_params(config, None, e.module)}, held_out)))
  assert trained < 0.8 * np.mean(np.square(untrained - held_out)), trained
  assert e(held_out).shape == (16, 8, 16)
  with pytest.raises(cli_errors.UserError, match='not an encoder run'):
    fake = root / 'not_encoder'
    (fake / 'checkpoints').mkdir(parents=True)
    (fake / 'config.json').write_text(json.dumps({'loss': {'name': 'stylegan2'}}))
    gan_jax.load_encoder(fake)


@pytest.mark.slow
def test_an_encoder_run_resumes_bit_for_bit(run, tmp_path):
  root, overrides, full = run
  split = tmp_path / 'split'
  shutil.copytree(root / 'run', split)
  shutil.rmtree(split / 'checkpoints' / '10')  # as if stopped after step 5
  resumed = train.train_and_evaluate(_config(**overrides), str(split), jax.devices()[:1])
  assert int(resumed.step) == 10
  for k, v in _flat(full).items():
    np.testing.assert_array_equal(_flat(resumed)[k], v, err_msg=k)


def test_translate_and_edit_command_lines(run, tmp_path):
  root, overrides, _ = run
  folder = tmp_path / 'in'
  folder.mkdir()
  images = np.random.RandomState(1).randint(0, 256, (3, 32, 32), np.uint8)
  for i, image in enumerate(images):
    Image.fromarray(image).save(folder / f'img{i}.png')
  written = translate.main(['--workdir', str(root / 'run'), '--input', str(folder),
                            '--outdir', str(tmp_path / 'out')])
  assert sorted(Path(p).relative_to(tmp_path / 'out').as_posix() for p in written) == sorted(
      [f'{d}/img{i}.png' for d in ('inputs', 'outputs') for i in range(3)] +
      ['grid.png', 'encoded_w.npz'])
  grid = np.asarray(Image.open(tmp_path / 'out' / 'grid.png'))
  assert grid.shape == (3 * 32, 3 * 32)  # input | output | original, one row per image
  np.testing.assert_array_equal(grid[:32, 64:], images[0])  # inversion: input = original
  e = gan_jax.load_encoder(root / 'run')
  ws = np.load(tmp_path / 'out' / 'encoded_w.npz')['w']
  x = (images[..., None].astype(np.float32) - 128) / 127.5
  np.testing.assert_allclose(ws, e(x), atol=1e-5)
  rendered = to_uint8(e.generator.synthesis(ws[1:2]))[0, ..., 0]
  np.testing.assert_array_equal(grid[32:64, 32:64], rendered)
  with pytest.raises(cli_errors.UserError, match="trained for 'invert'"):
    translate.main(['--workdir', str(root / 'run'), '--task', 'down4', '--input', str(folder),
                    '--outdir', str(tmp_path / 'x')])
  # edit --encode: encode -> a direction in steps -> grid; strength 0 is the reconstruction.
  dirs = tmp_path / 'dirs.npz'
  directions.main(['pca', '--checkpoint', overrides['init.source'], '--out', str(dirs),
                   '--components', '1', '--samples', '200'])
  edit.main(['--checkpoint', overrides['init.source'], '--directions', str(dirs), '--direction',
             'pc0', '--strength', '3', '--steps', '3', '--encode',
             f'{folder / "img0.png"},{folder / "img2.png"}', '--encoder', str(root / 'run'),
             '--outdir', str(tmp_path / 'edit'), '--no-video'])
  strip = np.asarray(Image.open(tmp_path / 'edit' / 'edit.png'))
  assert strip.shape == (2 * 32, 3 * 32)
  np.testing.assert_array_equal(strip[32:, :32], to_uint8(e.generator.synthesis(ws[2:3]))[0,
                                                                                          ..., 0])
  assert np.abs(strip[:32, 64:].astype(int) - strip[:32, :32]).max() > 10  # edited


def test_directions_labelled_by_the_data_through_the_encoder(run, tmp_path):
  """`directions labels`: the dataset's own labels on encoded real images (no conditional G)
  give a unit direction pointing from class A's encoded ws to class B's; bad input refused."""
  root, overrides, _ = run
  dirs = tmp_path / 'dirs.npz'
  args = ['labels', '--checkpoint', overrides['init.source'], '--out', str(dirs), '--samples',
          '200', '--encoder', str(root / 'run'), '--per_class', '4', '--pair']
  table = directions.main(args + ['0,1'])
  i = directions.lookup(table, '0->1')
  assert table['method'][i] == 'labels'
  d = table['directions'][i].astype(np.float64)
  np.testing.assert_allclose(np.linalg.norm(d), 1.0, rtol=1e-5)
  e = gan_jax.load_encoder(root / 'run')
  x, y = directions_labels.encoded_sides(e, (0, 1), 4, 'train')
  assert len(x) == 8 and (y == 1).sum() == 4
  assert (x[y == 1].mean(axis=0) - x[y == 0].mean(axis=0)) @ d > 0  # from A towards B
  with pytest.raises(cli_errors.UserError, match='two different labels'):
    directions.main(args + ['2,2'])
