"""Tests for gan_jax.data on a tiny fake Fashion-MNIST (40 train, 10 test)."""

import gzip
import os
import threading

import ml_collections
import numpy as np
import pytest

from gan_jax.data import fashion_mnist
from gan_jax.data import pipeline
from gan_jax.data import sampler as sampler_lib
from tests.fake_data import fake_images
from tests.fake_data import fake_labels
from tests.fake_data import idx_bytes
from tests.fake_data import write_fake_fashion_mnist

N_TRAIN, N_TEST = 40, 10


def make_config(source_dir, data_dir, **overrides):
  config = ml_collections.ConfigDict(dict(
      name='fashion_mnist_local', data_dir=str(data_dir),
      source_dir=str(source_dir), split='train', xflip=False,
      num_workers=1, prefetch=2))
  config.update(overrides)
  return config


@pytest.fixture(scope='module')
def built(tmp_path_factory):
  """Config of a fake dataset built once for the whole module."""
  root = tmp_path_factory.mktemp('fake_fmnist')
  source = write_fake_fashion_mnist(root / 'src', n_train=N_TRAIN,
                                    n_test=N_TEST)
  config = make_config(source, root / 'tfds')
  pipeline.load_builder(config)
  return config


def take(data_config, steps, seed=0, global_batch=8, **kwargs):
  with pipeline.InputPipeline(data_config, global_batch, seed,
                              **kwargs) as data:
    return [next(data) for _ in range(steps)]


def to_uint8(images):
  return np.rint((images + 1.0) * 127.5).astype(np.uint8)


def source_index(image_u8):
  """Recovers which fake example a padded, unflipped uint8 image is."""
  first = fake_images(N_TRAIN)[:, 0, 0]  # unique per example
  return int(np.flatnonzero(first == image_u8[2, 2, 0])[0])


# --- builder ----------------------------------------------------------------


def test_built_counts_and_info(built):
  builder = pipeline.load_builder(built, build=False)
  assert builder.is_prepared()
  assert builder.info.splits['train'].num_examples == N_TRAIN
  assert builder.info.splits['test'].num_examples == N_TEST
  assert builder.info.file_format.value == 'array_record'
  meta = builder.info.metadata
  assert (meta['resolution'], meta['channels'], meta['padding']) == (32, 1, 2)
  assert builder.info.features['label'].names[9] == 'Ankle boot'
  assert pipeline.dataset_info(built) == pipeline.DataInfo(
      resolution=32, channels=1, num_classes=10, num_examples=N_TRAIN)


@pytest.mark.parametrize('split,n', [('train', N_TRAIN), ('test', N_TEST)])
def test_padding_pixels_and_labels_round_trip(built, split, n):
  source = pipeline.load_builder(built).as_data_source(split)
  assert len(source) == n
  expected_images, expected_labels = fake_images(n), fake_labels(n)
  for i in range(n):
    example = source[i]
    image = example['image']
    assert image.shape == (32, 32, 1) and image.dtype == np.uint8
    border = np.ones((32, 32), bool)
    border[2:30, 2:30] = False
    assert not image[..., 0][border].any()
    np.testing.assert_array_equal(image[2:30, 2:30, 0], expected_images[i])
    assert example['label'] == expected_labels[i]


def test_missing_source_dir_raises_with_apt_hint(tmp_path):
  config = make_config(tmp_path / 'nowhere', tmp_path / 'tfds')
  with pytest.raises(pipeline.DatasetError) as e:
    pipeline.load_builder(config)
  assert 'apt-get install dataset-fashion-mnist' in str(e.value)
  assert 'config.data.source_dir' in str(e.value)


def test_unknown_dataset_name_raises(tmp_path):
  config = make_config(tmp_path, tmp_path, name='imagenet_from_nowhere')
  with pytest.raises(pipeline.DatasetError, match='fashion_mnist_local'):
    pipeline.load_builder(config)


def test_truncated_gzip_raises_clear_error_from_builder(tmp_path):
  source = write_fake_fashion_mnist(tmp_path / 'src', n_train=4, n_test=2)
  path = os.path.join(source, 'train-images-idx3-ubyte.gz')
  with open(path, 'rb') as f:
    data = f.read()
  with open(path, 'wb') as f:
    f.write(data[:len(data) // 2])
  with pytest.raises(pipeline.DatasetError, match='corrupt or truncated'):
    pipeline.load_builder(make_config(source, tmp_path / 'tfds'))


def _write_gz(path, payload):
  with gzip.open(path, 'wb') as f:
    f.write(payload)
  return path


def test_idx_validation(tmp_path):
  images = fake_images(3)
  good = _write_gz(tmp_path / 'good.gz', idx_bytes(images))
  np.testing.assert_array_equal(fashion_mnist.read_idx(good, 0x803), images)
  # A labels file where an images file belongs: wrong magic number.
  labels = _write_gz(tmp_path / 'labels.gz', idx_bytes(fake_labels(3)))
  with pytest.raises(pipeline.DatasetError, match='magic'):
    fashion_mnist.read_idx(labels, 0x803)
  # Valid gzip, but the payload is shorter than the header says.
  short = _write_gz(tmp_path / 'short.gz', idx_bytes(images)[:-5])
  with pytest.raises(pipeline.DatasetError, match='truncated'):
    fashion_mnist.read_idx(short, 0x803)
  not_gzip = tmp_path / 'plain.gz'
  not_gzip.write_bytes(idx_bytes(images))
  with pytest.raises(pipeline.DatasetError, match='corrupt'):
    fashion_mnist.read_idx(not_gzip, 0x803)


def test_mismatched_counts_raise(tmp_path):
  source = write_fake_fashion_mnist(tmp_path, n_train=4, n_test=2)
  _write_gz(os.path.join(source, 'train-labels-idx1-ubyte.gz'),
            idx_bytes(fake_labels(3)))
  with pytest.raises(pipeline.DatasetError, match='4 images but 3 labels'):
    fashion_mnist.read_split(source, 'train')


# --- sampler ----------------------------------------------------------------


def test_each_epoch_visits_every_example_once():
  n, batch = N_TRAIN, 12  # 40 % 12 != 0: batches straddle epoch boundaries
  sampler = sampler_lib.Sampler(n, batch, seed=3)
  flat = np.concatenate([sampler.global_indices(s) for s in range(20)])
  for epoch in range(len(flat) // n):
    visited = flat[epoch * n:(epoch + 1) * n]
    np.testing.assert_array_equal(np.sort(visited), np.arange(n))
    np.testing.assert_array_equal(visited,
                                  sampler_lib.epoch_order(3, epoch, n))
  # Epochs are shuffled differently.
  assert not np.array_equal(flat[:n], flat[n:2 * n])


def test_global_batch_larger_than_dataset():
  sampler = sampler_lib.Sampler(5, 12, seed=1)
  flat = np.concatenate([sampler.global_indices(s) for s in range(5)])
  for epoch in range(len(flat) // 5):
    assert sorted(flat[epoch * 5:(epoch + 1) * 5]) == list(range(5))


def test_sampler_validates_arguments():
  with pytest.raises(ValueError, match='divisible'):
    sampler_lib.Sampler(40, 10, seed=0, process_index=0, process_count=3)
  with pytest.raises(ValueError, match='seed'):
    sampler_lib.Sampler(40, 8, seed=-1)


# --- input pipeline ---------------------------------------------------------


def test_batches_are_scaled_source_images(built):
  with pipeline.InputPipeline(built, 8, seed=5) as data:
    batch = next(data)
    indices, _ = data._sampler.local_batch(0)
  assert batch['image'].dtype == np.float32 and batch['image'].shape == (
      8, 32, 32, 1)
  assert batch['label'].dtype == np.int32
  padded = fashion_mnist.pad_images(fake_images(N_TRAIN))[indices]
  np.testing.assert_array_equal(batch['image'],
                                padded.astype(np.float32) / 127.5 - 1.0)
  np.testing.assert_array_equal(batch['label'], fake_labels(N_TRAIN)[indices])
  assert batch['image'].min() == -1.0  # the zero border
  np.testing.assert_array_equal(
      pipeline.to_model_range(np.array([0, 255], np.uint8)), [-1.0, 1.0])


def test_same_seed_same_batches_other_seed_other_order(built):
  a = take(built, 6, seed=1)
  b = take(built, 6, seed=1)
  c = take(built, 6, seed=2)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x['image'], y['image'])
    np.testing.assert_array_equal(x['label'], y['label'])
  assert any(not np.array_equal(x['image'], z['image']) for x, z in zip(a, c))


def test_each_epoch_of_batches_holds_every_image_once(built):
  batches = take(built, 10, seed=4)  # 80 images = 2 epochs of 40
  images = to_uint8(np.concatenate([b['image'] for b in batches]))
  seen = [source_index(im) for im in images]
  assert sorted(seen[:N_TRAIN]) == list(range(N_TRAIN))
  assert sorted(seen[N_TRAIN:]) == list(range(N_TRAIN))
  assert seen[:N_TRAIN] != seen[N_TRAIN:]


@pytest.mark.parametrize('k', [3, 5])  # 5 * 8 = 40: resume on an epoch edge
def test_resume_at_step_k_matches_uninterrupted(built, k):
  full = take(built, k + 4, seed=7, global_batch=8)
  with pipeline.InputPipeline(built, 8, seed=7, start_step=k) as data:
    assert data.step == k
    resumed = [next(data) for _ in range(4)]
    assert data.step == k + 4
  for x, y in zip(full[k:], resumed):
    np.testing.assert_array_equal(x['image'], y['image'])
    np.testing.assert_array_equal(x['label'], y['label'])


def test_two_processes_concatenate_to_global_batch(built):
  config = make_config(built.source_dir, built.data_dir, xflip=True)
  whole = take(config, 7, seed=9, global_batch=12)
  halves = [take(config, 7, seed=9, global_batch=12, process_index=p,
                 process_count=2) for p in (0, 1)]
  for step, batch in enumerate(whole):
    assert halves[0][step]['image'].shape[0] == 6
    for key in ('image', 'label'):
      np.testing.assert_array_equal(
          np.concatenate([halves[0][step][key], halves[1][step][key]]),
          batch[key])


def test_xflip_flips_exactly_the_decided_examples(built):
  config = make_config(built.source_dir, built.data_dir, xflip=True)
  batch_size, steps, seed = 10, 4, 11
  batches = take(config, steps, seed=seed, global_batch=batch_size)
  sampler = sampler_lib.Sampler(N_TRAIN, batch_size, seed)
  padded = fashion_mnist.pad_images(fake_images(N_TRAIN))
  n_flipped = 0
  for step, batch in enumerate(batches):
    decided = sampler_lib.flip_decisions(seed, step, batch_size)
    images = to_uint8(batch['image'])
    for j, i in enumerate(sampler.global_indices(step)):
      expected = padded[i, :, ::-1] if decided[j] else padded[i]
      np.testing.assert_array_equal(images[j], expected)
      n_flipped += int(decided[j])
  assert 0 < n_flipped < steps * batch_size


def test_xflip_off_never_flips(built):
  batch = take(built, 1, seed=11, global_batch=10)[0]
  sampler = sampler_lib.Sampler(N_TRAIN, 10, 11)
  padded = fashion_mnist.pad_images(fake_images(N_TRAIN))
  np.testing.assert_array_equal(to_uint8(batch['image']),
                                padded[sampler.global_indices(0)])


def test_batch_not_divisible_by_processes_raises(built):
  with pytest.raises(ValueError, match='multiple of process_count'):
    pipeline.InputPipeline(built, 9, seed=0, process_index=0, process_count=2)


def test_close_stops_threads(built):
  def data_threads():
    return [t for t in threading.enumerate()
            if t.name.startswith('gan_jax_data')]
  config = make_config(built.source_dir, built.data_dir, num_workers=2,
                       prefetch=3)
  with pipeline.InputPipeline(config, 8, seed=0) as data:
    next(data)
    assert data_threads()
  assert not data_threads()
  with pytest.raises(RuntimeError, match='closed'):
    next(data)
