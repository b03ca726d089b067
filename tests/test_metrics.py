"""Metrics: name parsing, config validation, the real-statistics cache, sharded extraction (8
devices = 1 device), precision/recall vs brute force, path-length pieces vs direct numpy, FID of a
set against itself through the real Inception, the evaluate CLI and config.evals in training.

Most tests use a cheap stand-in feature network (block means times a fixed matrix) so that they
check the plumbing in milliseconds; the real Inception runs on a handful of images only, in a
test marked slow (minutes at -O0 on 8 fake devices).
"""

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from gan_jax import cli_errors
from gan_jax import config_check
from gan_jax import evaluate
from gan_jax import sharding
from gan_jax import train
from gan_jax.data import pipeline
from gan_jax.metrics import evaluator as evaluator_lib
from gan_jax.metrics import features as features_lib
from gan_jax.metrics import fetch
from gan_jax.metrics import frechet
from gan_jax.metrics import inception
from gan_jax.metrics import periodic
from gan_jax.metrics import ppl
from gan_jax.metrics import precision_recall
from gan_jax.metrics import registry
from tests import numerics
from tests.fake_data import write_fake_fashion_mnist
from tests.test_train import PLAIN, tiny_config

TINY_DIM = 8


@pytest.fixture(scope='module')
def fake_source(tmp_path_factory):
  root = tmp_path_factory.mktemp('fmnist')
  write_fake_fashion_mnist(root / 'src', n_train=48, n_test=8)
  return root


def _mesh(n):
  return sharding.make_mesh(ml_collections.ConfigDict({'data': -1, 'fsdp': 1}),
                            jax.devices()[:n])


def tiny_features(params, images):
  """Stand-in network: uint8 (N, 32, 32, C) -> 4x4 block means of channel 0 @ w -> (N, 8)."""
  x = images[..., 0].astype(jnp.float32) / 255
  n = x.shape[0]
  blocks = x.reshape(n, 4, x.shape[1] // 4, 4, x.shape[2] // 4).mean((2, 4)).reshape(n, 16)
  return blocks @ params['w']


def tiny_features_np(params, images):
  x = np.asarray(images[..., 0], np.float64) / 255
  n = x.shape[0]
  return x.reshape(n, 4, 8, 4, 8).mean((2, 4)).reshape(n, 16) @ np.asarray(params['w'])


TINY_PARAMS = {'w': np.random.default_rng(0).standard_normal((16, TINY_DIM)).astype(np.float32)}


def tiny_extractor(mesh, batch_size=8, network_hash='tiny-v1'):
  return features_lib.Extractor(mesh, TINY_PARAMS, batch_size, fn=tiny_features,
                                feature_dim=TINY_DIM, network_hash=network_hash)


# --------------------------------------------------------------------------------------------
# Names and config.


def test_parse_nvidia_names():
  spec = registry.parse('fid50k_full')
  assert (spec.family, spec.num_gen, spec.num_real) == ('fid', 50000, None)
  spec = registry.parse('fid10k')
  assert (spec.family, spec.num_gen, spec.num_real) == ('fid', 10000, 10000)
  spec = registry.parse('kid50k_full')
  assert (spec.family, spec.num_gen, spec.num_real) == ('kid', 50000, None)
  spec = registry.parse('pr50k3_full')
  assert (spec.family, spec.num_gen, spec.num_real, spec.k) == ('pr', 50000, None, 3)
  assert spec.result_names == ('pr50k3_full_precision', 'pr50k3_full_recall')
  spec = registry.parse('ppl2_wend')
  assert (spec.family, spec.num_gen, spec.epsilon, spec.space, spec.sampling, spec.crop) == (
      'ppl', 50000, 1e-4, 'w', 'end', False)
  assert registry.parse('ppl_wend').crop
  assert registry.parse('fid2k').capped(4).num_gen == 4
  assert registry.parse('fid2k_full').capped(4).num_real == 4
  assert registry.parse('fid2k').capped(None).num_gen == 2000
  assert [s.name for s in registry.parse_list('fid2k, kid2k,')] == ['fid2k', 'kid2k']
  for bad in ('fid', 'fid0k', 'fid50k_ful', 'fid50', 'pr50k', 'ppl', 'is50k'):
    with pytest.raises(ValueError, match='unknown metric'):
      registry.parse(bad)
  with pytest.raises(ValueError, match='twice'):
    registry.parse_list('fid2k,fid2k')


def test_config_refuses_unknown_metrics(fake_source):
  config = tiny_config(fake_source, **{'evals.metrics': 'fid50k_full,fid50k_ful'})
  with pytest.raises(config_check.ConfigError, match="evals.metrics.*'fid50k_ful'"):
    config_check.validate(config, 1)
  config.evals.metrics = 'fid50k_full,kid50k_full,pr50k3_full,ppl2_wend'
  config_check.validate(config, 1)
  config.evals.every_kimg = -1.0
  with pytest.raises(config_check.ConfigError, match='evals.every_kimg'):
    config_check.validate(config, 1)


# --------------------------------------------------------------------------------------------
# Extraction and the cache.


def _images(n, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 1), dtype=np.uint8)


def test_sharded_extraction_on_8_devices_equals_1_device():
  assert jax.device_count() == 8, 'conftest.py sets 8 fake CPU devices'
  images = _images(13)  # 2 global batches of 8; the last one padded

  def stats_on(n_devices):
    extractor = tiny_extractor(_mesh(n_devices))
    batches = (images[i:i + 8] for i in range(0, 13, 8))
    return extractor.accumulate(batches, 13, capture_all=True)

  one, eight = stats_on(1), stats_on(8)
  expected = tiny_features_np(TINY_PARAMS, images)
  # float32 features (a 16-term dot product) against float64: measured <= ~3e-7 of the largest
  # feature; a padded image counted, or a feature of another image, is O(1e-1) off. A mean of
  # features can cancel to ~0 and the covariance is E[x x^T] - mean mean^T: they are compared at
  # the scale of the features and of the second moment they come from, not element by element.
  scale = float(np.abs(expected).max())
  moment = float(np.abs(expected.T @ expected).max()) / len(expected)
  numerics.assert_close(one.all_features(), expected, 1e-5, 'features', scale)
  numerics.assert_close(eight.all_features(), one.all_features(), 1e-5, '8 vs 1 device', scale)
  assert one.num_items == eight.num_items == 13
  (mean1, cov1), (mean, cov) = one.mean_cov(), eight.mean_cov()
  numerics.assert_close(mean, mean1, 1e-5, 'mean, 8 vs 1 device', scale)
  numerics.assert_close(cov, cov1, 1e-5, 'cov, 8 vs 1 device', moment)
  numerics.assert_close(mean, expected.mean(0), 1e-5, 'mean', scale)
  numerics.assert_close(cov, np.cov(expected.T, bias=True), 1e-5, 'cov', moment)


class _Counting(features_lib.Extractor):
  calls = 0

  def __call__(self, images):
    _Counting.calls += 1
    return super().__call__(images)


def test_real_stats_cache_hits_on_equal_key_and_misses_on_changed_key(fake_source, tmp_path):
  data = tiny_config(fake_source).data
  extractor = _Counting(_mesh(8), TINY_PARAMS, 8, fn=tiny_features, feature_dim=TINY_DIM,
                        network_hash='tiny-v1')
  _Counting.calls = 0
  first = features_lib.real_stats(data, 12, extractor, cache_dir=tmp_path)
  assert _Counting.calls == 2 and len(list(tmp_path.glob('*.npz'))) == 1
  # The reals are the first 12 images of the split, through the pipeline's own reading.
  source = pipeline.load_builder(data).as_data_source('train')
  reals = np.stack([source[i]['image'] for i in range(12)])
  want = tiny_features_np(TINY_PARAMS, reals)
  numerics.assert_close(first.mean_cov()[0], want.mean(0), 1e-5, 'mean of the reals',
                        scale=float(np.abs(want).max()))  # another image's features: O(1e-1)

  again = features_lib.real_stats(data, 12, extractor, cache_dir=tmp_path)
  assert _Counting.calls == 2  # equal key: read back, nothing recomputed
  np.testing.assert_array_equal(again.sum_outer, first.sum_outer)
  assert again.num_items == 12

  features_lib.real_stats(data, 11, extractor, cache_dir=tmp_path)  # another count
  assert _Counting.calls == 4
  extractor.network_hash = 'tiny-v2'  # another feature network
  features_lib.real_stats(data, 12, extractor, cache_dir=tmp_path)
  assert _Counting.calls == 6 and len(list(tmp_path.glob('*.npz'))) == 3
  captured = features_lib.real_stats(data, 12, extractor, capture_all=True, cache_dir=tmp_path)
  assert _Counting.calls == 8 and captured.all_features().shape == (12, TINY_DIM)
  # An entry with features serves a request for statistics only.
  extractor.network_hash = 'tiny-v3'
  features_lib.real_stats(data, 12, extractor, capture_all=True, cache_dir=tmp_path)
  calls = _Counting.calls
  features_lib.real_stats(data, 12, extractor, capture_all=False, cache_dir=tmp_path)
  assert _Counting.calls == calls
  # A file whose stored key differs (e.g. copied from elsewhere) is not trusted.
  key = features_lib.cache_key(data.name, 'train', 32, 12, 'tiny-v2', False)
  path = features_lib.cache_path(tmp_path, key)
  assert features_lib.load_cached(path, dict(key, network='other')) is None
  assert features_lib.load_cached(path, key) is not None


# --------------------------------------------------------------------------------------------
# Numerics.


def _brute_force_pr(real, fake, k):
  def radii(x):
    d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    return np.sort(d, axis=1)[:, k]  # index 0 is the point itself

  def cover(manifold, r, probes):
    d = np.sqrt(((probes[:, None] - manifold[None]) ** 2).sum(-1))
    return (d <= r[None]).any(1).mean()

  return cover(real, radii(real), fake), cover(fake, radii(fake), real)


@pytest.mark.parametrize('k', [1, 3])
def test_precision_recall_matches_brute_force(k):
  rng = np.random.default_rng(k)
  real = rng.standard_normal((41, 6))
  fake = rng.standard_normal((29, 6)) * 1.3 + 0.4
  expected = _brute_force_pr(real, fake, k)
  got = precision_recall.precision_recall(real, fake, k=k, block=7)  # several blocks each way
  np.testing.assert_allclose(got, expected, atol=1e-12)
  assert 0 < got[0] < 1 and 0 < got[1] < 1
  radii = precision_recall.manifold_radii(real, k, block=7)
  d = np.sqrt(((real[:, None] - real[None]) ** 2).sum(-1))
  np.testing.assert_allclose(np.sqrt(radii), np.sort(d, 1)[:, k], rtol=1e-4)
  same = precision_recall.precision_recall(real, real, k=k, block=16)
  assert same == (1.0, 1.0)


def test_ppl_distance_normalisation_and_epsilon():
  rng = np.random.default_rng(0)
  maps0 = [rng.standard_normal((3, s, s, c)).astype(np.float32) for s, c in ((5, 4), (2, 7))]
  maps1 = [m + 0.1 * rng.standard_normal(m.shape).astype(np.float32) for m in maps0]
  expected = np.zeros(3)
  for f0, f1 in zip(maps0, maps1):
    f0, f1 = np.float64(f0), np.float64(f1)
    n0 = f0 / (np.linalg.norm(f0, axis=-1, keepdims=True) + 1e-10)
    n1 = f1 / (np.linalg.norm(f1, axis=-1, keepdims=True) + 1e-10)
    expected += ((n0 - n1) ** 2).sum(-1).mean((1, 2))
  got = ppl.distance_from_maps([jnp.asarray(m) for m in maps0], [jnp.asarray(m) for m in maps1])
  numerics.assert_close(got, expected, 1e-5, 'ppl distance')  # no epsilon/normalisation: O(1)
  # Scale invariance of the normalised maps: a positive rescaling changes nothing (unit vectors:
  # float32 rounding is ~1e-7 of 1; without the normalisation the distance would be ~1).
  numerics.assert_close(ppl.distance_from_maps(maps0, [2 * m for m in maps0]), 0, 1e-6,
                        'rescaled maps', scale=1.0)

  w0, w1 = rng.standard_normal((2, 4, 3, 5)).astype(np.float32)
  a, b = ppl.endpoint_ws(jnp.asarray(w0), jnp.asarray(w1), jnp.zeros(4), 1e-4)
  np.testing.assert_array_equal(a, w0)
  np.testing.assert_allclose(b, w0 + 1e-4 * (w1 - w0), rtol=1e-6, atol=1e-9)

  values = rng.exponential(size=1000) * 100
  # numpy's 1st percentile of 1000 values sits at index 9.99 ('lower': 9), the 99th at 989.01
  # ('higher': 990).
  lo, hi = np.sort(values)[9], np.sort(values)[990]
  kept = values[(values >= lo) & (values <= hi)]
  assert len(kept) == 982
  assert ppl.aggregate(values) == pytest.approx(kept.mean(), rel=1e-12)

  img = rng.uniform(-1, 1, (1, 512, 512, 1)).astype(np.float32)
  prepared = np.asarray(ppl.prepare_images(jnp.asarray(img), crop=True))
  crop = img[:, 192:448, 128:384]  # rows 3/8..7/8, columns 2/8..6/8 of 512
  np.testing.assert_allclose(prepared, (crop + 1) * 127.5, rtol=1e-6, atol=1e-4)
  down = np.asarray(ppl.prepare_images(jnp.asarray(img), crop=False))
  np.testing.assert_allclose(down, (img.reshape(1, 256, 2, 256, 2, 1).mean((2, 4)) + 1) * 127.5,
                             rtol=1e-5, atol=1e-3)

  buffers = {'mapping': {'w_avg': jnp.ones(3)}, 'b4': {'conv1': {'noise_const': jnp.zeros((4, 4))}}}
  fresh = ppl.randomize_noise(buffers, jax.random.PRNGKey(0))
  np.testing.assert_array_equal(fresh['mapping']['w_avg'], 1)
  assert float(jnp.std(fresh['b4']['conv1']['noise_const'])) > 0.3


# --------------------------------------------------------------------------------------------
# The real network, the CLI and training.


@pytest.fixture(scope='module')
def inception_params():
  try:
    path = fetch.weights_path()
  except FileNotFoundError:
    path = fetch.fetch()
  return path, inception.load_params(path)


def _check_fid_against_itself(extractor, data, cache_dir):
  real = features_lib.real_stats(data, 5, extractor, capture_all=True, cache_dir=cache_dir)
  source = pipeline.load_builder(data).as_data_source('train')
  images = np.stack([source[i]['image'] for i in range(5)])
  again = extractor.accumulate([images], 5, capture_all=True)
  fid = frechet.frechet_distance(*real.mean_cov(), *again.mean_cov())
  assert abs(fid) < 1e-6 * float(np.trace(real.mean_cov()[1]))
  other = extractor.accumulate([images[::-1][:4]], 4)
  assert frechet.frechet_distance(*real.mean_cov(), *other.mean_cov()) > 1e-3
  return images, real


def test_fid_of_a_set_against_itself_is_zero(fake_source, tmp_path):
  """Reals through the cache path vs the same images fed as batches (stand-in network)."""
  _check_fid_against_itself(tiny_extractor(_mesh(8)), tiny_config(fake_source).data, tmp_path)


@pytest.mark.slow  # the real network at -O0 on 8 fake devices: minutes on 2 cores
def test_fid_of_a_set_against_itself_is_zero_through_inception(fake_source, tmp_path,
                                                                inception_params):
  path, params = inception_params
  extractor = features_lib.Extractor(_mesh(8), params, batch_size=8,
                                     network_hash=fetch.sha1_of(path))
  images, real = _check_fid_against_itself(extractor, tiny_config(fake_source).data, tmp_path)
  # The sharded, padded path gives the unsharded features of the same images.
  numerics.assert_close(real.all_features()[:3],
                        inception.inception_features(images[:3], params, batch_size=3), 1e-4,
                        'sharded inception features')


@pytest.fixture(scope='module')
def tiny_workdir(fake_source, tmp_path_factory):
  """A one-checkpoint run of the tiny config (the train step as in tests/test_train.py)."""
  workdir = tmp_path_factory.mktemp('run') / 'w'
  config = tiny_config(fake_source, **PLAIN, **{'schedule.max_steps': 2, 'checkpoint.every_steps': 2})
  train.train_and_evaluate(config, str(workdir), devices=jax.devices()[:1])
  return workdir


def test_evaluate_cli_end_to_end(tiny_workdir, tmp_path, capsys, monkeypatch):
  # The stand-in network (the real one is checked above): the CLI's restore, data and output.
  real_evaluator = evaluator_lib.Evaluator

  def with_tiny_network(data_config, mesh, **kwargs):
    return real_evaluator(data_config, mesh, **kwargs, extractor=tiny_extractor(mesh))

  monkeypatch.setattr(evaluate.evaluator_lib, 'Evaluator', with_tiny_network)
  evaluate.main(['--workdir', str(tiny_workdir), '--metrics', 'fid2k,kid2k,pr2k1',
                 '--max_images', '4', '--batch_size', '8', '--cache_dir', str(tmp_path)])
  lines = capsys.readouterr().out.strip().splitlines()
  assert lines[0] == '# image counts capped at --max_images=4'
  names = [line.split()[0] for line in lines[1:]]
  assert names == ['fid2k', 'kid2k', 'pr2k1_precision', 'pr2k1_recall']
  values = dict((n, float(v)) for n, v in (line.split() for line in lines[1:]))
  assert values['fid2k'] > 1  # an untrained G is far from the data
  assert 0 <= values['pr2k1_precision'] <= 1 and 0 <= values['pr2k1_recall'] <= 1
  assert len(list(tmp_path.glob('*.npz'))) == 1  # FID reused KID's captured reals
  with pytest.raises(cli_errors.UserError, match='unknown metric'):
    evaluate.main(['--workdir', str(tiny_workdir), '--metrics', 'fid50k_ful'])


def test_config_evals_write_metrics_jsonl(fake_source, tmp_path, monkeypatch):
  made = []

  def cheap_evaluator(self):
    if self._evaluator is None:  # pylint: disable=protected-access
      self._evaluator = evaluator_lib.Evaluator(  # pylint: disable=protected-access
          self.config.data, self.mesh, cache_dir=tmp_path / 'stats',
          extractor=tiny_extractor(self.mesh))
      made.append(self._evaluator)  # pylint: disable=protected-access
    return self._evaluator  # pylint: disable=protected-access

  monkeypatch.setattr(periodic.PeriodicEvals, 'evaluator', cheap_evaluator)
  config = tiny_config(fake_source, **PLAIN, **{'evals.metrics': 'fid2k,kid2k',
                                                'evals.every_kimg': 0.016, 'evals.max_images': 6,
                                                'schedule.max_steps': 4})
  workdir = tmp_path / 'run'
  train.train_and_evaluate(config, str(workdir), devices=jax.devices()[:1])
  records = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
  # Every 0.016 kimg = 2 steps of 8 images: steps 2 and 4 (also the end).
  assert [(r['step'], r['metric']) for r in records] == [
      (2, 'fid2k'), (2, 'kid2k'), (4, 'fid2k'), (4, 'kid2k')]
  assert records[0]['kimg'] == pytest.approx(0.016) and records[2]['kimg'] == pytest.approx(0.032)
  assert all(r['value'] > 0 and r['seconds'] >= 0 and r['num_gen'] == 6 for r in records)
  assert len(made) == 1  # one evaluator for the run
  assert records[0]['value'] != records[2]['value']  # G_ema moved between the evaluations
