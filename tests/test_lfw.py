"""Tests for gan_jax.data.lfw (the 100-face `lfw_faces` dataset) and its config.

The stored 32x32 pixels are checked against a float64 numpy re-implementation
of PIL's separable Lanczos-3 resampling (its coefficient windows and
normalization), applied to skimage's faces directly.
"""

import pathlib

import ml_collections
import numpy as np
import pytest
from skimage import data as skimage_data

from gan_jax import config_base
from gan_jax import config_check
from gan_jax.data import lfw
from gan_jax.data import pipeline

REPO = pathlib.Path(__file__).resolve().parents[1]


def lanczos_matrix(n_in, n_out, a=3):
  """(n_out, n_in) weights of PIL's Lanczos resize along one axis."""
  scale = n_in / n_out
  filterscale = max(scale, 1.0)
  support = a * filterscale
  weights = np.zeros((n_out, n_in))
  for i in range(n_out):
    center = (i + 0.5) * scale
    lo = max(int(center - support + 0.5), 0)
    hi = min(int(center + support + 0.5), n_in)
    x = (np.arange(lo, hi) - center + 0.5) / filterscale
    w = np.sinc(x) * np.sinc(x / a) * (np.abs(x) < a)
    weights[i, lo:hi] = w / w.sum()
  return weights


def reference_faces():
  faces = skimage_data.lfw_subset()[:100].astype(np.float64)
  m = lanczos_matrix(25, 32)
  resized = np.einsum('ij,njk,lk->nil', m, faces, m)
  return np.rint(np.clip(resized * 255, 0, 255)).astype(np.uint8)


def make_config(data_dir, **overrides):
  config = ml_collections.ConfigDict(dict(
      name='lfw_faces', data_dir=str(data_dir), split='train', xflip=False,
      num_workers=1, prefetch=2,
      source_dir='/usr/share/datasets/fashion-mnist'))
  config.update(overrides)
  return config


@pytest.fixture(scope='module')
def built(tmp_path_factory):
  config = make_config(tmp_path_factory.mktemp('lfw_tfds'))
  return config, pipeline.load_builder(config)


def test_info_and_metadata(built):
  config, builder = built
  assert pipeline.dataset_info(config) == pipeline.DataInfo(
      resolution=32, channels=1, num_classes=0, num_examples=100)
  assert builder.info.file_format.value == 'array_record'
  meta = builder.info.metadata
  assert (meta['resolution'], meta['channels'], meta['source_resolution'],
          meta['resize_filter']) == (32, 1, 25, 'lanczos')


def test_pixels_are_lanczos_of_skimage_faces(built):
  _, builder = built
  source = builder.as_data_source('train')
  stored = np.stack([source[i]['image'][..., 0] for i in range(len(source))])
  expected = reference_faces()
  diff = np.abs(stored.astype(int) - expected)
  assert diff.max() <= 1  # PIL accumulates in float32: rare rounding flips
  assert (diff == 0).mean() > 0.99


def test_pipeline_batches_with_flips(built):
  config, builder = built
  source = builder.as_data_source('train')
  flipped = make_config(config.data_dir, xflip=True)
  with pipeline.InputPipeline(flipped, 8, seed=2) as data:
    batch = next(data)
    indices, flips = data._sampler.local_batch(0)
  assert flips.any() and not flips.all()
  for image, i, flip in zip(batch['image'], indices, flips):
    stored = source[int(i)]['image']
    expected = stored[:, ::-1] if flip else stored
    np.testing.assert_array_equal(image, pipeline.to_model_range(expected))


def test_experiment_config_reads_lfw(built):
  config, _ = built
  for variant in ('', ':tiny'):
    exp = config_base.load(f'{REPO / "experiments" / "lfw_faces.py"}{variant}',
                           {'data.data_dir': config.data_dir})
    assert exp.data.name == 'lfw_faces' and exp.data.xflip
    config_check.validate(exp, num_devices=8)
    assert pipeline.dataset_info(exp.data).num_examples == 100
