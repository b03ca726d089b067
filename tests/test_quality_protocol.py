"""bench/quality_protocol.py: NVIDIA's fid2k protocol on a handful of images.

A stand-in feature network (tests/test_metrics.py's) replaces Inception; the fake Fashion-MNIST
files replace the real ones. The FID the script reports is recomputed here from its definition
(z per seed as NVIDIA's generate.py, G_ema with psi 1 and constant noise, the first test images
padded to 32x32), so a wrong split, latent, noise mode or generator would show.
"""

import gzip
import json

import jax
import ml_collections
import numpy as np
import pytest

from bench import quality_protocol
from gan_jax import config_base
from gan_jax import sharding
from gan_jax.data import fashion_mnist
from gan_jax.metrics import frechet
from gan_jax.models import stylegan2
from tests.fake_data import FILES
from tests.fake_data import fake_images
from tests.fake_data import idx_bytes
from tests.fake_data import write_fake_fashion_mnist
from tests.test_metrics import TINY_PARAMS
from tests.test_metrics import tiny_extractor
from tests.test_metrics import tiny_features_np
from tests.test_train import REPO

N_TEST = 8
NUM = 5  # scored images: not a multiple of the batch (4), so the last batch is padded


def _test_images():
  """The fake test split's images: the train pattern inverted, so the splits differ."""
  return 255 - fake_images(N_TEST)


@pytest.fixture(scope='module')
def fake_source(tmp_path_factory):
  root = tmp_path_factory.mktemp('fmnist')
  write_fake_fashion_mnist(root / 'src', n_train=48, n_test=N_TEST)
  with gzip.open(root / 'src' / FILES['test'][0], 'wb') as f:
    f.write(idx_bytes(_test_images()))
  return root


def _data_flags(fake_source):
  return [f'data.source_dir={fake_source / "src"}', f'data.data_dir={fake_source / "tfds"}']


def _mesh():
  return sharding.make_mesh(ml_collections.ConfigDict({'data': -1, 'fsdp': 1}), jax.devices()[:1])


def test_latents_are_nvidia_generate_py_seeds():
  z = quality_protocol.seed_latents([0, 7, 1999], 512)
  assert z.dtype == np.float32 and z.shape == (3, 512)
  for row, seed in zip(z, [0, 7, 1999]):
    np.testing.assert_array_equal(row, np.random.RandomState(seed).randn(1, 512)[0]
                                  .astype(np.float32))


def test_laplacian_energy_of_known_patterns():
  flat = np.full((2, 6, 6, 1), 77, np.uint8)
  assert quality_protocol.laplacian_energy(flat) == 0.0
  # A checkerboard of +-a around 128: the 5-point Laplacian is 8 (+-a) at every interior pixel.
  a = 20
  board = 128 + a * (-1) ** np.add.outer(np.arange(6), np.arange(6))
  assert quality_protocol.laplacian_energy(board[None, :, :, None]) == 64 * a ** 2
  # One bright pixel v inside a 5x5 image (9 interior pixels): 4v there, -v at its 4 neighbours.
  dot = np.zeros((1, 5, 5, 1))
  dot[0, 2, 2, 0] = 10.0
  assert quality_protocol.laplacian_energy(dot) == pytest.approx((16 + 4) * 100 / 9)


def test_without_noise_removes_exactly_the_noise_inputs():
  G = stylegan2.Generator(img_resolution=16, img_channels=1, z_dim=8, w_dim=8, mapping_layers=1,
                          channel_base=64, channel_max=8)
  z = np.random.RandomState(0).randn(3, 8).astype(np.float32)
  c = np.zeros((3, 0), np.float32)
  variables = G.init(jax.random.PRNGKey(0), z, c)
  noisy = jax.tree_util.tree_map_with_path(  # strength 0.7 everywhere, so the noise shows
      lambda path, x: x + 0.7 if 'noise_strength' in jax.tree_util.keystr(path) else x, variables)
  quiet = quality_protocol.without_noise(noisy)
  strengths = quality_protocol.noise_strengths(noisy)
  assert sorted(strengths) == ['b16/conv0', 'b16/conv1', 'b4/conv1', 'b8/conv0', 'b8/conv1']
  assert all(v == pytest.approx(0.7) for v in strengths.values())
  assert set(quality_protocol.noise_strengths(quiet).values()) == {0.0}
  for (path, a), (_, b) in zip(jax.tree_util.tree_flatten_with_path(noisy)[0],
                               jax.tree_util.tree_flatten_with_path(quiet)[0]):
    if 'noise_strength' not in jax.tree_util.keystr(path):
      np.testing.assert_array_equal(a, b)
  const = G.apply(noisy, z, c, noise_mode='const')
  np.testing.assert_array_equal(G.apply(quiet, z, c, noise_mode='const'),
                                G.apply(noisy, z, c, noise_mode='none'))
  assert np.abs(const - G.apply(noisy, z, c, noise_mode='none')).max() > 0.01


def test_nvidia32_holds_the_protocol_hyperparameters():
  config = config_base.load(str(REPO / 'experiments/fashion_mnist.py') + ':nvidia32')
  m, l, o, s = config.model, config.loss, config.optim, config.schedule
  assert (m.name, m.z_dim, m.w_dim, m.mapping_layers, m.channel_base, m.channel_max,
          m.mbstd_group_size, m.conv_clamp) == ('stylegan2', 512, 512, 2, 4096, 128, 4, 256)
  assert (s.batch_size, o.g_lr, o.d_lr, l.r1_gamma, l.r1_interval, l.pl_weight, l.pl_interval,
          l.style_mixing_prob, config.ema.kimg, config.ema.rampup, s.kimg) == (
              32, 0.0025, 0.0025, 0.1, 16, 2.0, 4, 0.9, 10.0, 0.05, 10.0)
  assert config.data.xflip and config.data.name == 'fashion_mnist_local' and config.seed == 0


def test_untrained_run_scores_fid_as_defined_and_caches_the_reals(fake_source, tmp_path):
  results, cache = tmp_path / 'results.jsonl', tmp_path / 'stats'
  argv = ['--seeds', '0,1', '--kimg', '0', '--config', 'experiments/fashion_mnist.py:tiny',
          '--root', str(tmp_path / 'runs'), '--results', str(results), '--num_images', str(NUM),
          '--batch_size', '4', '--cache_dir', str(cache)]
  for flag in _data_flags(fake_source):
    argv += ['--set', flag]
  summary = quality_protocol.main(argv, extractor=tiny_extractor(_mesh(), batch_size=4))

  rows = [json.loads(line) for line in results.read_text().splitlines()]
  assert [(r['seed'], r['kimg'], r['step']) for r in rows] == [(0, 0.0, 0), (1, 0.0, 0)]
  assert len(list(cache.glob('*.npz'))) == 1  # the second seed read the reals from the cache
  assert (tmp_path / 'runs/kimg0_seed0/fid_samples.png').is_file()

  # The definition: first NUM test images, padded; G_ema of the initial state, z per seed.
  reals = fashion_mnist.pad_images(_test_images())[:NUM]
  real = frechet.FeatureStats(8)
  real.append(tiny_features_np(TINY_PARAMS, reals))
  for row in rows:
    overrides = dict(quality_protocol.parse_overrides(_data_flags(fake_source)),
                     seed=row['seed'], **{'schedule.kimg': 0.0})
    config = config_base.load(str(REPO / 'experiments/fashion_mnist.py') + ':tiny', overrides)
    G, variables = quality_protocol.untrained_generator(config)
    z = np.stack([np.random.RandomState(s).randn(G.z_dim) for s in range(NUM)]).astype(np.float32)
    images = G.apply(variables, z, np.zeros((NUM, 0), np.float32), noise_mode='const')
    images = np.clip(np.asarray(images) * 127.5 + 128, 0, 255).astype(np.uint8)
    fake = frechet.FeatureStats(8)
    fake.append(tiny_features_np(TINY_PARAMS, images))
    expected = frechet.frechet_distance(*real.mean_cov(), *fake.mean_cov())
    np.testing.assert_allclose(row[f'fid{NUM}'], expected, rtol=1e-4)
  assert rows[0][f'fid{NUM}'] != rows[1][f'fid{NUM}']  # another seed, another generator
  for row in rows:  # untrained: every noise strength is 0, so the noise changes no pixel
    speckle = row['speckle']
    assert row['noise'] == 'on' and set(speckle['noise_strength'].values()) == {0.0}
    assert speckle['laplacian_fake'] == speckle['laplacian_fake_no_noise'] > 0
    reals64 = fashion_mnist.pad_images(_test_images())
    assert speckle['laplacian_real'] == quality_protocol.laplacian_energy(reals64)

  values = [r[f'fid{NUM}'] for r in rows]
  assert summary['seeds'] == [0, 1] and summary['min'] == min(values)
  assert summary['max'] == max(values) and summary['mean'] == pytest.approx(np.mean(values))

  # --no_noise: an ablation row of its own, summarised apart (untrained, so the same FID).
  ablation = quality_protocol.main(argv[:1] + ['0'] + argv[2:] + ['--no_noise'],
                                   extractor=tiny_extractor(_mesh(), batch_size=4))
  row = json.loads(results.read_text().splitlines()[-1])
  assert row['noise'] == 'off' and row[f'fid{NUM}'] == pytest.approx(values[0], rel=1e-6)
  assert ablation['seeds'] == [0]
  assert (tmp_path / 'runs/kimg0_seed0/fid_samples_no_noise.png').is_file()


# A full gan_jax.main run under the protocol (~30 s idle): -m slow; the untrained run above keeps
# the scoring path in the default suite.
@pytest.mark.slow
def test_trained_run_goes_through_gan_jax_main(fake_source, tmp_path):
  results = tmp_path / 'results.jsonl'
  argv = ['--seeds', '3', '--kimg', '0.016', '--config', 'experiments/fashion_mnist.py:tiny',
          '--root', str(tmp_path / 'runs'), '--results', str(results), '--num_images', str(NUM),
          '--batch_size', '4', '--cache_dir', str(tmp_path / 'stats')]
  for flag in _data_flags(fake_source) + ['loss.r1_interval=0', 'loss.pl_interval=0']:
    argv += ['--set', flag]
  quality_protocol.main(argv, extractor=tiny_extractor(_mesh(), batch_size=4))
  row = json.loads(results.read_text())
  assert row['step'] == 2 and row['train_s'] > 0 and np.isfinite(row[f'fid{NUM}'])
  workdir = tmp_path / 'runs/kimg0.016_seed3'
  assert json.loads((workdir / 'config.json').read_text())['seed'] == 3
