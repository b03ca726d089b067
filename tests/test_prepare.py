"""Tests for gan_jax.data.prepare / image_files and CelebA-HQ via TFDS.

Sources are written here: tiny PNGs and JPEGs of mixed sizes and modes, a
corrupt file, a zip, a class-folder tree and an NVIDIA dataset.json. Prepared
datasets are read back through `pipeline` by name ('prepared/NAME'). Expected
pixels come from numpy (block means, crops, pads) on what PIL decodes.
"""

import functools
import io
import json
import os
import pathlib
import tarfile
import zipfile

import ml_collections
import numpy as np
import pytest
from PIL import Image

from gan_jax import config_base
from gan_jax import train
from gan_jax.data import celeb_a_hq
from gan_jax.data import image_files
from gan_jax.data import pipeline
from gan_jax.data import prepare

RES = 8


def pattern(seed, shape):
  return np.random.RandomState(seed).randint(0, 256, shape, np.uint8)


def encoded(array, mode=None, format='PNG'):
  buffer = io.BytesIO()
  image = Image.fromarray(array, mode) if mode else Image.fromarray(array)
  image.save(buffer, format=format)
  return buffer.getvalue()


def write(root, files):
  for name, data in files.items():
    path = pathlib.Path(root) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def block_mean(image, factor=2):
  h, w, c = image.shape
  return image.reshape(h // factor, factor, w // factor, factor, c).astype(
      np.float64).mean((1, 3))


def data_config(name, data_dir):
  return ml_collections.ConfigDict(dict(
      name=name, data_dir=str(data_dir), split='train', xflip=False,
      num_workers=1, prefetch=2,
      source_dir=''))  # the builders' own defaults, as the base config


def records(builder):
  source = builder.as_data_source('train')
  return [source[i] for i in range(len(source))]


# One labelled tree: class folders, mixed modes/sizes/formats, junk.
TREE = {
    'cat/a.png': encoded(pattern(0, (16, 16, 3))),
    'cat/b.jpg': encoded(pattern(1, (16, 16, 3)), format='JPEG'),
    'cat/c.png': encoded(pattern(2, (16, 16)), 'L'),  # grayscale
    'dog/d.png': encoded(pattern(3, (16, 16, 4)), 'RGBA'),
    'dog/deep/e.png': encoded(pattern(4, (16, 24, 3))),  # 24x16: crop
    'dog/f.png': b'\x89PNG\r\n\x1a\n corrupt',
    'dog/notes.txt': b'not an image, ignored',
}
TREE_USABLE = ('cat/a.png', 'cat/b.jpg', 'cat/c.png', 'dog/d.png',
               'dog/deep/e.png')


@pytest.fixture(scope='module')
def tree(tmp_path_factory):
  """(source folder, data_dir, reader) of TREE prepared with class labels."""
  root = tmp_path_factory.mktemp('tree')
  write(root / 'src', TREE)
  builder = prepare.prepare(root / 'src', 'tree', RES, root / 'tfds',
                            labels='subfolders', resize_filter='box',
                            progress=False)
  return root / 'src', root / 'tfds', builder


def test_tree_counts_labels_and_report(tree):
  src, data_dir, builder = tree
  meta = builder.info.metadata
  assert builder.info.splits['train'].num_examples == 5
  assert builder.info.file_format.value == 'array_record'
  assert (meta['resolution'], meta['channels'], meta['resize_filter'],
          meta['fit'], meta['num_classes'], meta['class_names']) == (
              RES, 3, 'box', 'crop', 2, ['cat', 'dog'])
  assert (meta['num_source_files'], meta['num_skipped']) == (6, 1)
  assert meta['skipped_files'] == ['dog/f.png']
  report = pathlib.Path(builder.data_dir) / prepare.SKIPPED_REPORT
  name, reason = report.read_text().splitlines()[0].split('\t')
  assert name == 'dog/f.png' and reason.startswith('unreadable')
  assert pathlib.Path(builder.data_dir) == (
      data_dir / 'prepared' / 'tree' / prepare.VERSION)
  assert os.listdir(data_dir / 'prepared') == ['tree']  # no temporary left
  got = {r['filename'].decode(): int(r['label']) for r in records(builder)}
  assert got == {'cat/a.png': 0, 'cat/b.jpg': 0, 'cat/c.png': 0,
                 'dog/d.png': 1, 'dog/deep/e.png': 1}


def test_tree_pixels_are_box_means_of_rgb(tree):
  src, _, builder = tree
  for record in records(builder):
    name = record['filename'].decode()
    rgb = np.asarray(Image.open(src / name).convert('RGB'))
    if name == 'dog/deep/e.png':  # 24 wide, 16 high: centre columns 4..19
      rgb = rgb[:, 4:20]
    if name == 'cat/c.png':
      assert (rgb[..., 0] == rgb[..., 2]).all()
    if name == 'dog/d.png':  # alpha dropped, colour kept
      np.testing.assert_array_equal(rgb, pattern(3, (16, 16, 4))[..., :3])
    assert record['image'].shape == (RES, RES, 3)
    np.testing.assert_allclose(record['image'], block_mean(rgb), atol=1,
                               err_msg=name)


def test_pipeline_reads_prepared_by_name(tree):
  _, data_dir, builder = tree
  config = data_config('prepared/tree', data_dir)
  assert pipeline.dataset_info(config) == pipeline.DataInfo(
      resolution=RES, channels=3, num_classes=2, num_examples=5)
  stored = records(builder)
  with pipeline.InputPipeline(config, 4, seed=1) as data:
    batch = next(data)
    indices = data._sampler.local_batch(0)[0]
  np.testing.assert_array_equal(
      batch['image'],
      pipeline.to_model_range(np.stack([stored[i]['image'] for i in indices])))
  np.testing.assert_array_equal(batch['label'],
                                [stored[i]['label'] for i in indices])


def test_conditional_model_gets_class_count_from_dataset(tree):
  _, data_dir, _ = tree
  config = config_base.get_base_config()
  config.data.name = 'prepared/tree'
  config.data.data_dir = str(data_dir)
  config.model.conditional = True
  _, _, c_dim = train.build(config, pipeline.dataset_info(config.data))
  assert c_dim == 2
  config.model.conditional = False
  assert train.build(config, pipeline.dataset_info(config.data))[2] == 0


def test_missing_prepared_dataset_gives_recipe(tmp_path):
  with pytest.raises(pipeline.DatasetError,
                     match=r'prepared/nope not found(.|\n)*python -m '
                           r'gan_jax.data.prepare --source DIR_OR_ZIP '
                           r'--name nope'):
    pipeline.dataset_info(data_config('prepared/nope', tmp_path))


def test_zip_with_dataset_json_grayscale_and_upscale(tmp_path):
  gray = pattern(5, (4, 4))
  files = {
      'imgs/x.png': encoded(pattern(6, (8, 8, 3))),  # at RES: stored as is
      'imgs/y.png': encoded(gray, 'L'),  # 4x4: upscaled
      'imgs/z.png': encoded(pattern(7, (8, 8, 3))),  # not in dataset.json
  }
  labels = {'labels': [['imgs/x.png', 2], ['./imgs/y.png', 0]]}
  path = tmp_path / 'src.zip'
  with zipfile.ZipFile(path, 'w') as zf:
    for name, data in files.items():
      zf.writestr(name, data)
    zf.writestr('dataset.json', json.dumps(labels))
  builder = prepare.prepare(path, 'zipped', RES, tmp_path / 'tfds',
                            labels='dataset.json', small='upscale',
                            channels=1, resize_filter='box', progress=False)
  meta = builder.info.metadata
  assert (meta['num_classes'], meta['num_skipped'], meta['channels']) == (
      3, 1, 1)
  assert meta['skipped_files'] == ['imgs/z.png']
  x, y = records(builder)
  assert (x['filename'], int(x['label']), int(y['label'])) == (
      b'imgs/x.png', 2, 0)
  luma = np.asarray(Image.fromarray(pattern(6, (8, 8, 3))).convert('L'))
  np.testing.assert_array_equal(x['image'][..., 0], luma)
  # Box upscale 4 -> 8 repeats each pixel 2x2.
  np.testing.assert_array_equal(y['image'][..., 0],
                                np.repeat(np.repeat(gray, 2, 0), 2, 1))
  assert pipeline.dataset_info(
      data_config('prepared/zipped', tmp_path / 'tfds')).channels == 1


def test_luma_matches_itu_601():
  rgb = pattern(8, (RES, RES, 3))
  got = image_files.decode(encoded(rgb), channels=1)
  expected = rgb.astype(np.float64) @ [0.299, 0.587, 0.114]
  np.testing.assert_allclose(np.asarray(got), expected, atol=1)


def test_crop_and_pad_geometry():
  """A 6 wide x 2 high image of known columns, fitted to a square of 4."""
  wide = np.tile(np.arange(1, 7, dtype=np.uint8)[None, :, None] * 40,
                 (2, 1, 3))
  raw = encoded(wide)
  crop = image_files.Conversion(2, fit='crop', resize_filter='box')
  cropped = np.asarray(Image.open(io.BytesIO(image_files.convert(raw, crop))))
  np.testing.assert_array_equal(cropped, wide[:, 2:4])  # centre 2 columns
  pad = image_files.Conversion(6, fit='pad', small='upscale')
  padded = np.asarray(Image.open(io.BytesIO(image_files.convert(raw, pad))))
  expected = np.zeros((6, 6, 3), np.uint8)
  expected[2:4] = wide  # rows (6 - 2) // 2 = 2 .. 3
  np.testing.assert_array_equal(padded, expected)
  tall = np.ascontiguousarray(wide[:, :5].transpose(1, 0, 2))  # 5 high, 2 wide
  padded = np.asarray(Image.open(io.BytesIO(image_files.convert(
      encoded(tall), image_files.Conversion(5, fit='pad')))))
  expected = np.zeros((5, 5, 3), np.uint8)
  expected[:, 1:3] = tall  # columns (5 - 2) // 2 = 1 .. 2
  np.testing.assert_array_equal(padded, expected)
  with pytest.raises(image_files.Unusable, match='not square'):
    image_files.convert(raw, image_files.Conversion(2, fit='refuse'))


def test_small_image_rejected_or_upscaled():
  raw = encoded(pattern(9, (4, 4, 3)))
  with pytest.raises(image_files.Unusable, match='smaller than the resolution'):
    image_files.convert(raw, image_files.Conversion(RES, small='reject'))
  out = image_files.convert(raw, image_files.Conversion(
      RES, small='upscale', resize_filter='lanczos'))
  assert np.asarray(Image.open(io.BytesIO(out))).shape == (RES, RES, 3)


def test_small_reject_counts_in_prepare(tmp_path):
  write(tmp_path / 'src', {'big.png': encoded(pattern(0, (16, 16, 3))),
                           'small.png': encoded(pattern(1, (4, 4, 3)))})
  builder = prepare.prepare(tmp_path / 'src', 'small', RES, tmp_path / 'tfds',
                            progress=False)
  assert builder.info.metadata['skipped_files'] == ['small.png']
  assert builder.info.splits['train'].num_examples == 1


def test_failed_reprepare_leaves_dataset_intact(tree, tmp_path):
  src, _, _ = tree
  data_dir = tmp_path / 'tfds'
  prepare.prepare(src, 'keep', RES, data_dir, progress=False)
  before = records(prepare.load('keep', data_dir))
  junk = tmp_path / 'junk'
  write(junk, {'a.png': b'junk', 'b.jpg': b'junk too'})
  with pytest.raises(pipeline.DatasetError, match='None of the 2 image files'):
    prepare.prepare(junk, 'keep', RES, data_dir, progress=False)
  assert os.listdir(data_dir / 'prepared') == ['keep']
  after = records(prepare.load('keep', data_dir))
  assert [r['filename'] for r in after] == [r['filename'] for r in before]
  # A good re-prepare replaces it (here: another resolution).
  assert prepare.main(['--source', str(src), '--name', 'keep',
                       '--resolution', '4', '--data_dir', str(data_dir)]) == 0
  assert prepare.load('keep', data_dir).info.metadata['resolution'] == 4
  assert os.listdir(data_dir / 'prepared') == ['keep']


def test_empty_and_bad_sources(tmp_path):
  (tmp_path / 'empty').mkdir()
  write(tmp_path / 'empty', {'readme.txt': b'no images here'})
  with pytest.raises(pipeline.DatasetError, match='No image files'):
    prepare.prepare(tmp_path / 'empty', 'e', RES, tmp_path / 'tfds')
  with pytest.raises(pipeline.DatasetError, match='does not exist'):
    prepare.prepare(tmp_path / 'missing', 'e', RES, tmp_path / 'tfds')
  write(tmp_path / 'flat', {'a.png': encoded(pattern(0, (8, 8, 3)))})
  with pytest.raises(pipeline.DatasetError, match='not in a class folder'):
    prepare.prepare(tmp_path / 'flat', 'e', RES, tmp_path / 'tfds',
                    labels='subfolders')
  with pytest.raises(pipeline.DatasetError, match='no dataset.json'):
    prepare.prepare(tmp_path / 'flat', 'e', RES, tmp_path / 'tfds',
                    labels='dataset.json')
  write(tmp_path / 'flat', {'dataset.json': b'{"labels": [["a.png", 1.5]]}'})
  with pytest.raises(pipeline.DatasetError, match='class indices'):
    prepare.prepare(tmp_path / 'flat', 'e', RES, tmp_path / 'tfds',
                    labels='dataset.json')
  with pytest.raises(pipeline.DatasetError, match='Dataset name'):
    prepare.prepare(tmp_path / 'flat', '../e', RES, tmp_path / 'tfds')
  assert not (tmp_path / 'tfds' / 'prepared' / 'e').exists()
  with pytest.raises(pipeline.DatasetError, match='No image files'):
    prepare.main(['--source', str(tmp_path / 'empty'), '--name', 'e', '--resolution', '8'])


def test_command_line_reports_counts(tree, tmp_path, capsys):
  src, _, _ = tree
  assert prepare.main(['--source', str(src), '--name', 'cli', '--resolution',
                       str(RES), '--data_dir', str(tmp_path), '--labels',
                       'subfolders', '--fit', 'pad', '--filter', 'box']) == 0
  out = capsys.readouterr().out
  assert ('prepared/cli: 5 images written, 1 of 6 files skipped; 8x8, '
          '3 channels, 2 classes (subfolders), fit=pad, box resize') in out
  assert prepare.SKIPPED_REPORT in out


# --- CelebA-HQ through TFDS's own builder ------------------------------------


def test_celeb_a_hq_registered_and_missing_gives_recipe(tmp_path):
  for r in (1024, 512, 256, 128):
    assert pipeline.DATASETS[f'celeb_a_hq/{r}'].builder_cls.name == 'celeb_a_hq'
  with pytest.raises(pipeline.DatasetError) as e:
    pipeline.dataset_info(data_config('celeb_a_hq/256', tmp_path))
  manual = tmp_path / 'downloads' / 'manual'
  assert str(e.value) == celeb_a_hq.recipe(256, tmp_path, manual)
  assert (f'tfds build celeb_a_hq/256 --manual_dir {manual} --data_dir '
          f'{tmp_path} --file_format array_record') in str(e.value)
  assert 'data256x256.tar' in str(e.value)


def test_celeb_a_hq_fake_tar_through_pipeline(tmp_path, monkeypatch):
  """TFDS's builder on a 3-image tar at 8x8 (its config '8')."""
  manual = tmp_path / 'manual'
  manual.mkdir()
  images = [pattern(i, (RES, RES, 3)) for i in range(3)]
  with tarfile.open(manual / celeb_a_hq.tar_name(RES), 'w') as tar:
    for i, image in enumerate(images):
      data = encoded(image)
      info = tarfile.TarInfo(f'imgHQ{i:05d}.png')
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))
  monkeypatch.setitem(pipeline.DATASETS, 'celeb_a_hq/8', pipeline.DatasetEntry(
      celeb_a_hq.builder_cls(), functools.partial(celeb_a_hq.builder_kwargs,
                                                  RES), celeb_a_hq.prepare))
  config = data_config('celeb_a_hq/8', tmp_path / 'tfds')
  config.source_dir = str(manual)
  assert pipeline.dataset_info(config) == pipeline.DataInfo(RES, 3, 0, 3)
  with pipeline.InputPipeline(config, 3, seed=0) as data:
    batch = next(data)
  got = sorted(tuple(x.ravel()) for x in np.rint(
      (batch['image'] + 1) * 127.5).astype(np.uint8))
  assert len(set(got)) == 3  # three different images ...
  assert set(got) <= {tuple(x.ravel()) for x in images}  # ... of the tar's
